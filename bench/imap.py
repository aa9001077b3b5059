#!/usr/bin/env python3
"""IMAP drain benchmark: N mixed messages from a real Dovecot into a fresh desk.

    python3 bench/imap.py [--n 10000] [--runs 3]

Needs dovecot-imapd (`.ci/run` installs it) and root (Dovecot's mail user).
Each run starts from a fresh data directory and an INBOX holding the whole
workload, and times `maildesk fetch` (start-up, FETCH in batches, tickets,
acknowledgements, commit, MOVE). In the same round it times `maildesk
ingest` of the same messages as one mbox, so the ratio shows what IMAP costs.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, prepare, run_child, update  # noqa: E402
from dovecot import Dovecot  # noqa: E402


def fill(d: Dovecot, emls: list[Path]) -> None:
    with d.client() as c:
        if c.folder_exists("maildesk.processed"):
            c.select_folder("maildesk.processed")
            uids = c.search(["ALL"])
            if uids:
                c.move(uids, "INBOX")
            return
        for i in range(0, len(emls), 200):
            c.multiappend("INBOX", [p.read_bytes().replace(b"\n", b"\r\n")
                                    for p in emls[i:i + 200]])


def main() -> int:
    args, tmp, work, counts = prepare(__doc__ or "", 10000, "maildesk-imapbench-")
    emls = sorted((work / "eml").iterdir())
    d = Dovecot().start()
    try:
        cfg = tmp / "maildesk.yaml"
        cfg.write_text(yaml.safe_dump({
            "data_dir": "data", "desk": {"addresses": ["support@example.com"]},
            "imap": [d.mailbox(batch_size=200)]}))
        imap_t, rss, ingest_t = [], [], []
        for i in range(args.runs):
            fill(d, emls)
            subprocess.run(["rm", "-rf", str(tmp / "data")], check=True)
            t, r, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config",
                                              str(cfg), "fetch", "--format", "json"], tmp)
            if code != 0:
                sys.stderr.write(err.decode())
                return 1
            got = json.loads(out)["support"]
            if (got["new_tickets"], got["follow_ups"]) != (counts["new_requests"],
                                                           counts["replies"]):
                sys.stderr.write(f"wrong counts: {got}\n")
                return 1
            imap_t.append(t)
            rss.append(r)
            subprocess.run(["rm", "-rf", str(tmp / "data")], check=True)
            ti, _r, _o, _e, _c = run_child([sys.executable, "-m", "maildesk", "--config",
                                            str(cfg), "ingest", "--no-progress",
                                            str(work / "mbox")], tmp)
            ingest_t.append(ti)
            print(f"run {i + 1}: fetch {args.n / t:.0f} msgs/s ({t:.1f} s, {r / 1024:.0f} MiB), "
                  f"ingest {args.n / ti:.0f} msgs/s")
    finally:
        d.cleanup()
    t, ti = statistics.median(imap_t), statistics.median(ingest_t)
    section = (
        f"## IMAP drain: {args.n} mixed messages from Dovecot "
        f"(`python3 bench/imap.py --n {args.n}`)\n\n"
        f"Machine: {machine()}. Median of {args.runs} runs: a real Dovecot 2.3 on loopback "
        f"(STARTTLS), INBOX holding the whole workload, fresh data directory, `maildesk fetch` "
        f"with batches of 200 (FETCH BODY.PEEK[], commit, MOVE).\n\n"
        f"| | msgs/s | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk fetch` (IMAP) | {args.n / t:.0f} | {t:.1f} | "
        f"{statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| `maildesk ingest` of the same mbox | {args.n / ti:.0f} | {ti:.1f} | - |\n\n"
        f"IMAP over ingest: {t / ti:.2f}x the time. Every run opened exactly "
        f"{counts['new_requests']} tickets with {counts['replies']} follow-ups.\n"
        f"Runs (fetch msgs/s): {', '.join(f'{args.n / x:.0f}' for x in imap_t)}.\n")
    print(section)
    update(args.out, f"## IMAP drain: {args.n} mixed", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
