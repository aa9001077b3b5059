#!/usr/bin/env python3
"""`maildesk blobs gc` on a desk of --n blobs, half of them garbage.

    python3 bench/gc.py [--n 10000] [--pack-size 1MiB] [--runs 3]

Builds the desk straight through the blob store: --n random blobs of 4 to 16 KiB
appended by batches of 200 to packs of --pack-size, every other one named by an
inbound row (the rest indexed and referred to by nothing), and n/5 loose files,
half unreferenced, all two hours old. Times `blobs gc --format json` as a whole
process on a copy of that desk, --runs times (the first run frees the garbage:
unreferenced rows, loose files, and compacts every pack, which is half garbage),
then a second gc on the collected desk (nothing to do: the cost of running it
from cron). `blobs verify` must pass afterwards. Writes the medians to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common import ROOT, machine, publish, run_child
from sqlalchemy import insert

from maildesk.app import App
from maildesk.config.load import load_settings
from maildesk.store.blobs import FileBlobs
from maildesk.store.tables import T_INBOUND


def build(cfg: Path, n: int) -> tuple[int, int]:
    """The desk; (packs, bytes of blobs)."""
    app = App.open(load_settings(cfg))
    rng = random.Random(21)
    total = 0
    now = datetime.now(timezone.utc)
    try:
        assert isinstance(app.blobs, FileBlobs)
        for start in range(0, n, 200):
            with app.engine.begin() as conn:
                batch = app.blobs.batch(conn)
                rows = []
                for k in range(start, min(n, start + 200)):
                    data = rng.randbytes(rng.randint(4096, 16384))
                    total += len(data)
                    digest = batch.put(data)
                    if k % 2 == 0:
                        rows.append({"received_at": now, "source": "pipe", "digest": digest,
                                     "size": len(data), "state": "processed", "attempts": 1,
                                     "rcpt_to": []})
                batch.finish()
                if rows:
                    conn.execute(insert(T_INBOUND), rows)
        loose = []
        with app.engine.begin() as conn:
            for k in range(n // 5):
                data = rng.randbytes(rng.randint(4096, 16384))
                digest = app.blobs.put(data)
                loose.append(app.blobs.loose_path(digest))
                if k % 2 == 0:
                    conn.execute(insert(T_INBOUND).values(
                        received_at=now, source="smtp", digest=digest, size=len(data),
                        state="processed", attempts=1, rcpt_to=[]))
    finally:
        app.close()
    old = time.time() - 7200
    packs = list((cfg.parent / "data" / "blobs" / "packs").glob("*.pack"))
    for p in [*loose, *packs]:
        os.utime(p, (old, old))
    return len(packs), total


def gc(cfg: Path) -> tuple[float, int, dict[str, object]]:
    t, rss, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config",
                                        str(cfg), "blobs", "gc", "--format", "json"], cfg.parent)
    if code != 0:
        raise SystemExit(f"gc failed ({code}): {err.decode()}")
    return t, rss, json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--pack-size", default="1MiB")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-gc-"))
    base = tmp / "base"
    base.mkdir()
    cfg = base / "maildesk.yaml"
    cfg.write_text(f"data_dir: data\nstorage: {{pack_size: {args.pack_size}}}\n")
    packs, size = build(cfg, args.n)
    first, second, rss = [], [], []
    result: dict[str, object] = {}
    for i in range(args.runs):
        desk = tmp / f"run{i}"
        shutil.copytree(base, desk, copy_function=shutil.copy2)   # mtimes kept
        t, r, result = gc(desk / "maildesk.yaml")
        t2, _, again = gc(desk / "maildesk.yaml")
        first.append(t)
        second.append(t2)
        rss.append(r)
        _, _, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config",
                                          str(desk / "maildesk.yaml"), "blobs", "verify",
                                          "--format", "json"], desk)
        if code != 0:
            raise SystemExit(f"verify failed after gc: {out.decode()[:500]}")
        print(f"run {i + 1}: gc {t:.2f} s ({r / 1024:.0f} MiB), again {t2:.2f} s: {result}")
        shutil.rmtree(desk)
    section = (
        f"## Blob gc: {args.n:,} packed blobs, half garbage (`python3 bench/gc.py --n {args.n} "
        f"--pack-size {args.pack_size}`)\n\n"
        f"Machine: {machine()}. {args.n:,} blobs of 4-16 KiB ({size / 1024**2:,.0f} MiB) in "
        f"{packs} packs, every other one referred to by an inbound row, and {args.n // 5:,} "
        f"loose files, half referred to; all two hours old. Median of {args.runs} runs, whole "
        f"process (start-up included), on SQLite.\n\n"
        f"| | seconds | peak RSS |\n|---|---:|---:|\n"
        f"| `maildesk blobs gc` (frees {result['loose']:,} loose files, {result['rows']:,} "
        f"index rows, compacts {result['packs_compacted']:,} packs, "
        f"{int(str(result['bytes'])) / 1024**2:,.0f} MiB) | {statistics.median(first):.2f} | "
        f"{statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| the same again (nothing to free) | {statistics.median(second):.2f} | - |\n\n"
        f"`blobs verify` passes after every run.\n")
    publish(args.out, "## Blob gc", section, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
