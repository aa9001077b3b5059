#!/usr/bin/env python3
"""Ingest benchmark: the shared mixed workload as one mbox, through `maildesk ingest`.

    python3 bench/ingest.py [--n 3000] [--runs 3]

Each run starts from a fresh data directory and times the whole process
(start-up, schema creation, parse, threading, acknowledgements, fsync and
commit). In the same rounds it times a bare mail-parser parse of the same
mbox, so the ratio shows what the rest of the pipeline costs. It checks that
every reply landed on the ticket the workload's manifest expects, and writes
the medians to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT.parent / "shared" / "bench" / "gen_workload.py"
BARE = """
import mailbox, sys, mailparser
box = mailbox.mbox(sys.argv[1])
for key in box.iterkeys():
    mailparser.parse_from_bytes(box.get_bytes(key))
"""


def run_child(cmd: list[str], cwd: Path) -> tuple[float, int, bytes, bytes, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    return elapsed, usage.ru_maxrss, out, err, os.waitstatus_to_exitcode(status)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def check_threading(work: Path, data: Path) -> str:
    """Every reply on the ticket the manifest expects (ticket k = k-th new request)."""
    import sqlalchemy as sa
    eng = sa.create_engine(f"sqlite:///{data / 'maildesk.db'}")
    with eng.connect() as c:
        where = dict(c.execute(sa.text(
            "SELECT m.message_id, t.number FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE m.direction = 'in'")).all())
    eng.dispose()
    wrong = missing = 0
    for line in (work / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        got = where.get(rec["message_id"])
        if got is None:
            missing += 1
        elif got != rec["expected_ticket"]:
            wrong += 1
    return f"{wrong} on a wrong ticket, {missing} missing"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-bench-"))
    work = tmp / "workload"
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(work),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    counts = json.loads((work / "workload.json").read_text())
    cfg = tmp / "maildesk.yaml"
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n")
    mbox = work / "mbox"
    ours, rss, bare, checks = [], [], [], []
    for i in range(args.runs):
        data = tmp / "data"
        subprocess.run(["rm", "-rf", str(data)], check=True)
        t, r, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config", str(cfg),
                                          "ingest", "--no-progress", "--format", "json",
                                          str(mbox)], tmp)
        if code != 0:
            sys.stderr.write(err.decode())
            return 1
        summary = json.loads(out)
        expect = (counts["new_requests"], counts["replies"])
        if (summary["new_tickets"], summary["follow_ups"]) != expect:
            sys.stderr.write(f"wrong counts: {summary} != {expect}\n")
            return 1
        checks.append(check_threading(work, data))
        ours.append(t)
        rss.append(r)
        tb, _rb, _o, _e, _c = run_child([sys.executable, "-c", BARE, str(mbox)], tmp)
        bare.append(tb)
        print(f"run {i + 1}: maildesk {args.n / t:.0f} msgs/s ({t:.2f} s, {r / 1024:.0f} MiB), "
              f"bare mail-parser {args.n / tb:.0f} msgs/s; {checks[-1]}")
    t, tb = statistics.median(ours), statistics.median(bare)
    result = (
        f"## Ingest: {args.n} mixed messages as one mbox (`python3 bench/ingest.py --n {args.n}`)\n\n"
        f"Machine: {machine()}. Median of {args.runs} runs, whole process, start-up, schema "
        f"creation and fsync included; fresh SQLite data directory each run.\n\n"
        f"| | msgs/s | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk ingest` | {args.n / t:.0f} | {t:.2f} | {statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| bare mail-parser parse, no storage | {args.n / tb:.0f} | {tb:.2f} | - |\n\n"
        f"Pipeline cost over a bare parse: {t / tb:.1f}x. Threading: {checks[-1]} "
        f"({counts['new_requests']} tickets, {counts['replies']} follow-ups, as the manifest says).\n"
        f"Runs (msgs/s): {', '.join(f'{args.n / x:.0f}' for x in ours)}.\n")
    print(result)
    update(args.out, f"## Ingest: {args.n} mixed", result)
    return 0


def update(path: Path, key: str, section: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md, keep the others."""
    text = path.read_text() if path.exists() else "# maildesk benchmarks\n\n"
    parts = text.split("\n## ")
    kept = [parts[0].rstrip() + "\n"] + ["## " + p.rstrip() + "\n" for p in parts[1:]
                                         if not ("## " + p).startswith(key)]
    path.write_text("\n".join(kept + [section]))


if __name__ == "__main__":
    raise SystemExit(main())
