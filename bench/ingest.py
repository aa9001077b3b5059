#!/usr/bin/env python3
"""Ingest benchmark: the shared mixed workload as one mbox, through `maildesk ingest`.

    python3 bench/ingest.py [--n 3000] [--runs 3] [--baseline DIR]

Each run starts from a fresh data directory and times the whole process
(start-up, schema creation, parse, threading, acknowledgements, fsync and
commit). In the same rounds it times a bare mail-parser parse of the same
mbox, so the ratio shows what the rest of the pipeline costs. It checks that
every reply landed on the ticket the workload's manifest expects, and writes
the medians to BENCHMARKS.md.

--baseline DIR: a checkout of another commit (`git worktree add DIR COMMIT`),
timed in the same rounds, in alternating order, on the same workload: a
change's cost measured paired, not against figures of another day.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import commit_of, machine, prepare, run_child, update

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


def ingest(tmp: Path, work: Path, counts: dict[str, int], tree: Path | None
           ) -> tuple[float, int, str]:
    """One `maildesk ingest` of the workload into a fresh data directory: seconds, peak
    RSS, threading check. tree: run that checkout's maildesk instead of this one."""
    cfg = tmp / "maildesk.yaml"
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n")
    data = tmp / "data"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    t, r, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config", str(cfg),
                                      "ingest", "--no-progress", "--format", "json",
                                      str(work / "mbox")], tmp, env)
    if code != 0:
        raise SystemExit(err.decode())
    summary = json.loads(out)
    expect = (counts["new_requests"], counts["replies"])
    if (summary["new_tickets"], summary["follow_ups"]) != expect:
        raise SystemExit(f"wrong counts: {summary} != {expect}")
    return t, r, check_threading(work, data)


def main() -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--baseline", type=Path)
    known, rest = ap.parse_known_args()
    sys.argv[1:] = rest
    args, tmp, work, counts = prepare(__doc__ or "", 3000, "maildesk-bench-")
    mbox = work / "mbox"
    ours, rss, bare, checks, before = [], [], [], [], []
    for i in range(args.runs):
        if known.baseline and i % 2:      # alternate which goes first
            before.append(ingest(tmp, work, counts, known.baseline)[0])
        t, r, check = ingest(tmp, work, counts, None)
        if known.baseline and not i % 2:
            before.append(ingest(tmp, work, counts, known.baseline)[0])
        checks.append(check)
        ours.append(t)
        rss.append(r)
        tb, _rb, _o, _e, _c = run_child([sys.executable, "-c", BARE, str(mbox)], tmp)
        bare.append(tb)
        print(f"run {i + 1}: maildesk {args.n / t:.0f} msgs/s ({t:.2f} s, {r / 1024:.0f} MiB), "
              + (f"baseline {args.n / before[-1]:.0f} msgs/s, " if before else "")
              + f"bare mail-parser {args.n / tb:.0f} msgs/s; {checks[-1]}")
    t, tb = statistics.median(ours), statistics.median(bare)
    paired = statistics.median([b / o for b, o in zip(before, ours)]) if before else 0.0
    result = (
        f"## Ingest: {args.n} mixed messages as one mbox "
        f"(`python3 bench/ingest.py --n {args.n}`)\n\n"
        f"Machine: {machine()}. Median of {args.runs} runs, whole process, start-up, schema "
        f"creation and fsync included; fresh SQLite data directory each run.\n\n"
        f"| | msgs/s | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk ingest` | {args.n / t:.0f} | {t:.2f} | "
        f"{statistics.median(rss) / 1024:.0f} MiB |\n"
        + (f"| the baseline, {commit_of(known.baseline)}, same rounds | "
           f"{args.n / statistics.median(before):.0f} | {statistics.median(before):.2f} | - |\n"
           if before else "")
        + f"| bare mail-parser parse, no storage | {args.n / tb:.0f} | {tb:.2f} | - |\n\n"
        + (f"Paired with the baseline: {paired:.2f}x its time per run"
           " (median of the per-round ratios; above 1: faster now).\n"
           if before else "")
        + f"Pipeline cost over a bare parse: {t / tb:.1f}x. Threading: {checks[-1]} "
        f"({counts['new_requests']} tickets, {counts['replies']} follow-ups, "
        f"as the manifest says).\n"
        f"Runs (msgs/s): {', '.join(f'{args.n / x:.0f}' for x in ours)}.\n")
    print(result)
    update(args.out, f"## Ingest: {args.n} mixed", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
