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

import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import machine, prepare, run_child, update

BARE = """
import mailbox, sys, mailparser
box = mailbox.mbox(sys.argv[1])
for key in box.iterkeys():
    mailparser.parse_from_bytes(box.get_bytes(key))
"""


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
    args, tmp, work, counts = prepare(__doc__ or "", 3000, "maildesk-bench-")
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
        f"## Ingest: {args.n} mixed messages as one mbox "
        f"(`python3 bench/ingest.py --n {args.n}`)\n\n"
        f"Machine: {machine()}. Median of {args.runs} runs, whole process, start-up, schema "
        f"creation and fsync included; fresh SQLite data directory each run.\n\n"
        f"| | msgs/s | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk ingest` | {args.n / t:.0f} | {t:.2f} | "
        f"{statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| bare mail-parser parse, no storage | {args.n / tb:.0f} | {tb:.2f} | - |\n\n"
        f"Pipeline cost over a bare parse: {t / tb:.1f}x. Threading: {checks[-1]} "
        f"({counts['new_requests']} tickets, {counts['replies']} follow-ups, "
        f"as the manifest says).\n"
        f"Runs (msgs/s): {', '.join(f'{args.n / x:.0f}' for x in ours)}.\n")
    print(result)
    update(args.out, f"## Ingest: {args.n} mixed", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
