#!/usr/bin/env python3
"""Blobs on the filesystem or in PostgreSQL (storage.backend), and bytea beside large objects.

    python3 bench/blobs_backend.py [--n 2000] [--runs 3] [--pg URL]

The shared workload's mails, three ways, each run on a fresh PostgreSQL schema and data
directory, median of --runs:

1. `maildesk ingest` of the mbox as a whole process (tickets, acknowledgements and all),
   storage.backend filesystem, then database: what a desk pays for several nodes.
2. The blob store alone: the same mails through app.blobs.batch() in batches of 200, a
   commit each (the ingest worker's shape), then every one read back with get() (checked).
3. Raw PostgreSQL, no maildesk: the mails as bytea rows, then as large objects
   (lo_from_bytea, an oid a row), in the same batches; read back with SELECT data /
   lo_get. Why blob_data is bytea.

Writes the medians to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import mailbox
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import GEN, ROOT, machine, run_child, update
from sqlalchemy import create_engine, text

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
# what the figures say; the same words in BENCHMARKS.md
NOTE = ("Why: a database desk's batch has one fsync fewer (the pack's; the commit's WAL flush"
        " is paid either way), so whole ingest is no slower, within this machine's spread; "
        'the store alone is slower because each put() first asks for a row (one round trip a '
        'blob, to check a stored copy as FileBatch does). blob_data is bytea: at mail sizes '
        '(10 KiB on average) large objects store no faster and read back slower, are not '
        'deleted with their row (an orphan until `vacuumlo`), and SQLite has none, so one '
        'table serves both databases.')
BATCH = 200


@contextmanager
def schema(pg: str) -> Iterator[str]:
    """A URL whose tables go to a new schema, dropped afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield f"{pg}?options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def config(folder: Path, url: str, backend: str) -> Path:
    folder.mkdir(parents=True)
    cfg = folder / "maildesk.yaml"
    cfg.write_text(json.dumps({"data_dir": str(folder / "data"), "database": {"url": url},
                               "storage": {"backend": backend},
                               "desk": {"addresses": ["support@example.com"]}}))
    return cfg


def ingest(tmp: Path, pg: str, mbox: Path, backend: str, run: int) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one `maildesk ingest`."""
    with schema(pg) as url:
        cfg = config(tmp / f"ingest-{backend}-{run}", url, backend)
        t, rss, _out, err, code = run_child(
            [sys.executable, "-m", "maildesk", "--config", str(cfg), "ingest", "--no-progress",
             "--format", "json", str(mbox)], ROOT)
        if code != 0:
            raise SystemExit(f"ingest failed ({code}): {err.decode()[-2000:]}")
        return t, rss


def store(tmp: Path, pg: str, mails: list[bytes], backend: str, run: int
          ) -> tuple[float, float]:
    """Seconds to store the mails through the blob store, and to read them back."""
    from maildesk.app import App
    from maildesk.config.schema import Settings
    with schema(pg) as url:
        folder = tmp / f"store-{backend}-{run}"
        settings = Settings.model_validate(json.loads(config(folder, url, backend).read_text()))
        app = App.open(settings)
        try:
            start = time.perf_counter()
            digests = []
            for k in range(0, len(mails), BATCH):
                with app.engine.begin() as conn:
                    batch = app.blobs.batch(conn)
                    digests += [batch.put(m) for m in mails[k:k + BATCH]]
                    batch.finish()
            stored = time.perf_counter() - start
            start = time.perf_counter()
            with app.engine.connect() as conn:
                for d in digests:
                    app.blobs.get(d, conn)
            return stored, time.perf_counter() - start
        finally:
            app.close()


def raw_pg(pg: str, mails: list[bytes], kind: str) -> tuple[float, float]:
    """Seconds to store the mails as bytea rows or large objects, and to read them back."""
    import psycopg
    with schema(pg) as url:
        search = url.split("search_path%3D", 1)[1]
        with psycopg.connect(pg.replace("postgresql+psycopg", "postgresql")) as c:
            c.execute(f'SET search_path TO "{search}"')
            column = "data bytea" if kind == "bytea" else "data oid"
            c.execute(f"CREATE TABLE b (id int PRIMARY KEY, {column})")
            c.commit()
            value = "%s" if kind == "bytea" else "lo_from_bytea(0, %s)"
            start = time.perf_counter()
            for k in range(0, len(mails), BATCH):
                with c.cursor() as cur:
                    cur.executemany(f"INSERT INTO b VALUES (%s, {value})",
                                    [(k + i, m) for i, m in enumerate(mails[k:k + BATCH])])
                c.commit()
            stored = time.perf_counter() - start
            read = "data" if kind == "bytea" else "lo_get(data)"
            start = time.perf_counter()
            with c.cursor() as cur:
                for i in range(len(mails)):
                    cur.execute(f"SELECT {read} FROM b WHERE id = %s", (i,))
                    assert cur.fetchone()[0] == mails[i]      # type: ignore[index]
            if kind != "bytea":
                c.execute("SELECT lo_unlink(data) FROM b")     # not dropped with the schema
            c.commit()
            return stored, time.perf_counter() - start


def median(runs: int, one: Callable[[int], tuple[float, ...]]) -> tuple[float, ...]:
    results = [one(r) for r in range(runs)]
    return tuple(statistics.median(x) for x in zip(*results))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pg", default=PG)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-blobs-"))
    work = tmp / "workload"
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(work),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    mbox = work / "mbox"
    box = mailbox.mbox(str(mbox))
    mails = [box.get_bytes(k) for k in box.iterkeys()]
    box.close()
    mib = sum(map(len, mails)) / 1024**2
    n = len(mails)
    rows: list[str] = []
    figures: dict[str, Any] = {}
    for backend in ("filesystem", "database"):
        t, rss = median(args.runs, lambda r, b=backend: ingest(tmp, args.pg, mbox, b, r))
        figures[f"ingest {backend}"] = t
        rows.append(f"| `maildesk ingest`, {backend} | {n / t:,.0f} msgs/s | {mib / t:.1f} | "
                    f"{t:.2f} s | {rss / 1024:.0f} MiB |")
    for backend in ("filesystem", "database"):
        put, get = median(args.runs, lambda r, b=backend: store(tmp, args.pg, mails, b, r))
        figures[f"store {backend}"] = (put, get)
        rows.append(f"| blob store alone, {backend}: batch put / get | "
                    f"{n / put:,.0f} / {n / get:,.0f} msgs/s | {mib / put:.1f} / {mib / get:.1f} "
                    f"| {put:.2f} / {get:.2f} s | - |")
    for kind in ("bytea", "large object"):
        put, get = median(args.runs, lambda r, k=kind: raw_pg(args.pg, mails, k))
        figures[kind] = (put, get)
        rows.append(f"| raw PostgreSQL, {kind}: insert / select | {n / put:,.0f} / "
                    f"{n / get:,.0f} msgs/s | {mib / put:.1f} / {mib / get:.1f} | "
                    f"{put:.2f} / {get:.2f} s | - |")
    slower = figures["ingest database"] / figures["ingest filesystem"]
    lo_put = figures["large object"][0] / figures["bytea"][0]
    lo_get = figures["large object"][1] / figures["bytea"][1]
    section = (
        f"## Blobs: filesystem or database backend, {n} mails "
        f"(`python3 bench/blobs_backend.py --n {args.n}`)\n\n"
        f"Machine: {machine()}; PostgreSQL on the same host (loopback, fsync and "
        f"synchronous_commit on). The shared workload, {n} mails, {mib:.1f} MiB; every run on "
        f"a fresh schema and data directory, median of {args.runs} runs. MiB/s counts the "
        f"mails' bytes.\n\n"
        f"| | rate | MiB/s | seconds | peak RSS |\n|---|---:|---:|---:|---:|\n"
        + "\n".join(rows) + "\n\n"
        f"Ingest with blobs in the database: {slower:.2f}x the time of the filesystem "
        f"backend. Large objects against bytea: {lo_put:.1f}x the time to store, "
        f"{lo_get:.1f}x to read back.\n\n" + NOTE + "\n")
    update(args.out, "## Blobs: filesystem or database backend", section)
    print(section)
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
