#!/usr/bin/env python3
"""SMTP benchmark (issue 22): `maildesk serve`'s listener against a bare aiosmtpd that
writes and fsyncs each mail before its 250, the same mails from the same clients, paired
in each round.

    python3 bench/smtp.py [--n 3000] [--runs 3] [--clients 16] [--base REV] [--rate R]

The shared mixed workload (`../shared/bench/gen_workload.py`) is sent by --clients
threads over persistent connections (tests/nodes.py's client). Per side and round:

- accepted msgs/s: mails that got 250, over the time from the first send to the last 250;
- accept latency p50 and p99: from the end of DATA to the 250;
- for maildesk, end to end: until no inbound mail is queued (every mail ticketed or
  otherwise settled), the time from each mail's 250 to its ticket (the inbound row's
  processed_at less its received_at, p50 and p99), and the daemon's peak RSS (its own
  process; the listener's beside it).

--rate R sends R mails a second in all (a steady flow rather than as fast as the
clients can), and writes a section of its own: the time from 250 to ticket at that
rate is the measure there; the bare listener is not run.

--base REV runs that commit's maildesk too (from a `git worktree` of it), in the same
rounds: the figures before and after a change. maildesk runs on its default store
(SQLite, blobs on the filesystem).
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from common import GEN, machine, publish  # noqa: E402
from nodes import WORKLOAD_DESK, H, letters  # noqa: E402

# the baseline: aiosmtpd writing each mail to a file of its own and fsyncing it before 250
BARE = """import itertools, os, signal, sys
from aiosmtpd.controller import Controller
folder, count = sys.argv[2], itertools.count()
class Handler:
    async def handle_DATA(self, server, session, envelope):
        fd = os.open(os.path.join(folder, str(next(count))),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, envelope.original_content)
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 2.0.0 Ok"
c = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
"""


def _latencies(sent: list[Any]) -> tuple[int, float, float, float]:
    """(accepted, seconds from the first send to the last 250, p50 ms, p99 ms)."""
    done = [s for s in sent if s.accepted]
    lat = sorted(s.latency for s in done if s.latency is not None)
    span = max(s.at for s in done) - min(s.at - (s.latency or 0) for s in done) if done else 0
    return (len(done), span, 1000 * statistics.median(lat) if lat else 0.0,
            1000 * (H.p99(lat) or 0.0))


def bare(root: Path, mails: list[Any], clients: int) -> dict[str, Any]:
    folder = root / "bare"
    folder.mkdir(parents=True)
    port = H.free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(folder)],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        start = time.monotonic()
        sent = H.send_all([SimpleNamespace(port=port, name="bare")], mails, clients=clients)
        took = time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    n, span, p50, p99 = _latencies(sent)
    return {"accepted": n, "msgs_s": n / span if span else 0.0, "p50_ms": p50, "p99_ms": p99,
            "wall_s": took}


def _children_rss(pid: int) -> int:
    """The peak RSS (VmHWM, KiB) of a process's children: the daemon's listener process."""
    total = 0
    for kids in Path(f"/proc/{pid}/task").glob("*/children"):
        for kid in kids.read_text().split():
            status = Path(f"/proc/{kid}/status").read_text()
            total += int(status.split("VmHWM:")[1].split()[0])
    return total


def _to_ticket(db: Path) -> tuple[float, float]:
    """p50 and p99, in ms, of the time from a mail's commit (its 250) to its settling."""
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT received_at, processed_at FROM inbound "
                         "WHERE processed_at IS NOT NULL").fetchall()
    took = sorted((datetime.fromisoformat(done) - datetime.fromisoformat(came)).total_seconds()
                  for came, done in rows)
    return 1000 * statistics.median(took), 1000 * (H.p99(took) or 0.0)


def maildesk(root: Path, tree: Path, mails: list[Any], clients: int,
             rate: float | None = None) -> dict[str, Any]:
    node = H.Node(root, 0, f"sqlite:///{root / 'node0' / 'data' / 'maildesk.db'}",
                  {"storage": {"backend": "filesystem"},
                   "desk": {"addresses": [WORKLOAD_DESK, H.DESK]}})
    with node.log.open("ab") as out:
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "maildesk", "--config", str(node.config), "serve"],
            stdout=out, stderr=out, cwd=node.dir,
            env={**os.environ, "PYTHONPATH": str(tree)})
    try:
        H.wait_for(node.listening, 60, "maildesk to listen", every=0.05)
        start = time.monotonic()
        sent = H.send_all([node], mails, clients=clients, rate=rate)
        db = node.data_dir / "maildesk.db"

        def queued() -> int:
            with sqlite3.connect(db, timeout=30) as c:
                return int(c.execute("SELECT count(*) FROM inbound WHERE state IN "
                                     "('queued', 'released')").fetchone()[0])
        while queued():
            time.sleep(0.05)
        drained = time.monotonic() - start
        rss = (node.peak_rss() or 0) + _children_rss(node.pid)
        with sqlite3.connect(db) as c:
            tickets = int(c.execute("SELECT count(*) FROM tickets").fetchone()[0])
        ticket_p50, ticket_p99 = _to_ticket(db)
    finally:
        node.stop()
    n, span, p50, p99 = _latencies(sent)
    return {"accepted": n, "msgs_s": n / span if span else 0.0, "p50_ms": p50, "p99_ms": p99,
            "e2e_msgs_s": n / drained if drained else 0.0, "rss_mib": rss / 1024,
            "tickets": tickets, "ticket_p50_ms": ticket_p50, "ticket_p99_ms": ticket_p99}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--base", help="also run this commit's maildesk, in the same rounds")
    ap.add_argument("--rate", type=float, help="mails a second in all, steadily")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-smtp-"))
    work = tmp / "workload"
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(work),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    mails = letters(work)
    trees = {"maildesk": ROOT}
    if args.base:
        base = tmp / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
        trees[f"maildesk at {args.base}"] = base
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for r in range(args.runs):
            got = {} if args.rate else {
                "bare aiosmtpd + fsync": bare(tmp / f"r{r}", mails, args.clients)}
            for name, tree in trees.items():
                got[name] = maildesk(tmp / f"r{r}-{name.split()[-1]}", tree, mails,
                                     args.clients, args.rate)
            rounds.append(got)
            print(f"round {r + 1}: " + "; ".join(
                f"{k} {v['msgs_s']:.0f} msgs/s p99 {v['p99_ms']:.0f} ms"
                for k, v in got.items()), flush=True)
    finally:
        if args.base:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tmp / "base")], check=False, capture_output=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    def ratio(name: str) -> float:
        return statistics.median(r[name]["msgs_s"] / r["bare aiosmtpd + fsync"]["msgs_s"]
                                 for r in rounds)
    machine_words = (f"Machine: {machine()}. The shared workload over persistent SMTP "
                     f"connections ({args.clients} client threads); each round runs every side "
                     f"one after the other on the same mails; medians of {args.runs} rounds, "
                     "ratios taken within a round. ")
    if args.rate:
        rows = [f"| {name} | {med(name, 'msgs_s'):.0f} | {med(name, 'p50_ms'):.1f} | "
                f"{med(name, 'p99_ms'):.1f} | {med(name, 'ticket_p50_ms'):.0f} | "
                f"{med(name, 'ticket_p99_ms'):.0f} | {med(name, 'rss_mib'):.0f} MiB | "
                f"{rounds[0][name]['tickets']:,} |" for name in rounds[0]]
        heading = f"## SMTP at a steady {args.rate:g} msgs/s:"
        section = (
            f"{heading} {args.n:,} mails (`python3 bench/smtp.py --rate {args.rate:g}`)\n\n"
            + machine_words + "Latency from the end of DATA to the 250; to ticket: from the "
            "mail's commit (its 250) to its inbound row's settling (ticket made, or kept "
            "without one); peak RSS: the daemon's and its listener's processes.\n\n"
            "| side | accepted msgs/s | 250 p50 ms | 250 p99 ms | to ticket p50 ms | "
            "to ticket p99 ms | peak RSS | tickets |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
            + "\n".join(rows) + "\n")
        publish(args.out, heading, section, tmp)
        return 0
    lines = []
    for name in rounds[0]:
        side = rounds[0][name]
        lines.append(
            f"| {name} | {med(name, 'msgs_s'):.0f} | {ratio(name):.2f}x | "
            f"{med(name, 'p50_ms'):.1f} | {med(name, 'p99_ms'):.1f} | "
            + (f"{med(name, 'e2e_msgs_s'):.0f} | {med(name, 'ticket_p99_ms') / 1000:.1f} s | "
               f"{med(name, 'rss_mib'):.0f} MiB | {side['tickets']:,} |"
               if "tickets" in side else "- | - | - | - |"))
    section = (
        f"## SMTP: {args.n:,} mails from {args.clients} clients (`python3 bench/smtp.py`)\n\n"
        + machine_words + "Accepted msgs/s: 250s over the time from the first send to the "
        "last 250; latency from the end of DATA to the 250; end to end: until no mail is "
        "queued; to ticket: from a mail's 250 to its ticket, which under this burst is the "
        "backlog's wait; peak RSS: the daemon's and its listener's processes.\n\n"
        "| side | accepted msgs/s | vs bare | p50 ms | p99 ms | end-to-end msgs/s | "
        "to ticket p99 | peak RSS | tickets |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(lines) + "\n")
    publish(args.out, "## SMTP:", section, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
