#!/usr/bin/env python3
"""Ingest benchmark: the shared mixed workload as one mbox, through `maildesk ingest`.

    python3 bench/ingest.py [--n 3000] [--runs 3] [--baseline DIR] [--pg [ADMIN_URL]]

Each run starts from a fresh data directory and times the whole process
(start-up, schema creation, parse, threading, acknowledgements, fsync and
commit). In the same rounds it times a bare mail-parser parse of the same
mbox, so the ratio shows what the rest of the pipeline costs. It checks that
every reply landed on the ticket the workload's manifest expects, and writes
the medians to BENCHMARKS.md.

--baseline DIR: a checkout of another commit (`git worktree add DIR COMMIT`),
timed in the same rounds, in alternating order, on the same workload: a
change's cost measured paired, not against figures of another day.

--pg: in the same rounds, in alternating order with the SQLite run, the same
ingest into a fresh PostgreSQL database (created through ADMIN_URL, default
the local server's `test` database, before the clock starts; dropped after
the run), for the ratio issue 22 asks of PostgreSQL against SQLite. With --baseline too,
the baseline is timed on PostgreSQL as well: a change to PostgreSQL's cost measured paired
on a machine whose load moves the SQLite/PostgreSQL ratio from round to round.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import commit_of, machine, prepare, publish, run_child

BARE = """
import mailbox, sys, mailparser
box = mailbox.mbox(sys.argv[1])
for key in box.iterkeys():
    mailparser.parse_from_bytes(box.get_bytes(key))
"""
PG_ADMIN = "postgresql://root@127.0.0.1:5432/test"
# What the PostgreSQL row's extra time went to: a profile by hand, not measured by this
# script (the same words are in BENCHMARKS.md).
PG_NOTE = (
    "Where PostgreSQL's extra time goes (profiled by hand, 2026-11-27: ingests of 300 mails "
    "of this workload, each statement timed between SQLAlchemy's before/after_cursor_execute "
    "events). The questions each mail asked the server, each a round trip, are asked once a "
    "batch now (tickets/ledger.py expect(), BlobBatch.expect()): statements a mail, schema "
    "creation left out, went from 5.5 to 0.36. Before, 5.2 point SELECTs a mail (1.8 "
    "blob_index lookups FOR SHARE for each raw mail, attachment and acknowledgement, 1 dedupe "
    "key, 1 count of the sender's recent mails for the loop guard, and for each new ticket 1 "
    "References lookup and 1 count of the requester's new tickets) took 0.8-1.4 s for 300 "
    "mails; now one SELECT of each kind a batch (IN (...), GROUP BY, a UNION ALL of the loop "
    "guard's windows) takes about 0.1 s, and an acknowledgement's blob (a new Message-ID) is "
    "not looked up at all. What is left: SQLAlchemy's multi-row INSERTs (24 statements for "
    "300 mails), 0.4-0.6 s on the server against 0.06-0.09 s on SQLite (index upkeep, and "
    "to_tsvector into message_search's GIN index, 0.2-0.3 s of it); schema creation, 77 DDL "
    "statements, 0.2-0.4 s against 0.01 s, once a run; and each follow-up's ticket and SLA "
    "clocks read FOR UPDATE (0.13 statements a mail), which hold them against other nodes.")


@contextmanager
def pg_database(admin: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one run, as maildesk's URL names it; dropped
    afterwards, so that no run meets the rows, the table bloat or the statistics of
    another."""
    import psycopg
    name = f"maildesk_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.replace("postgresql://", "postgresql+psycopg://", 1).rsplit("/", 1)[0] \
            + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def pg_server(admin: str) -> str:
    """The server's version and the settings that decide a commit's cost."""
    import psycopg
    with psycopg.connect(admin) as c:
        got = [str(c.execute(f"SHOW {k}").fetchone()[0])       # type: ignore[index]
               for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")]
    return (f"PostgreSQL {got[0].split()[0]} (fsync {got[1]}, synchronous_commit {got[2]}, "
            f"shared_buffers {got[3]})")


def check_threading(work: Path, url: str) -> str:
    """Every reply on the ticket the manifest expects (ticket k = k-th new request), in
    the database at url (SQLAlchemy's URL, as the desk's config names it)."""
    import sqlalchemy as sa
    eng = sa.create_engine(url)
    with eng.connect() as c:
        where: dict[str, int] = dict(c.execute(sa.text(
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


def ingest(tmp: Path, work: Path, counts: dict[str, int], tree: Path | None,
           url: str | None = None) -> tuple[float, int, str]:
    """One `maildesk ingest` of the workload into a fresh data directory: seconds, peak
    RSS, threading check. tree: run that checkout's maildesk instead of this one; url: the
    desk's database (an empty one), else SQLite in the data directory."""
    data = tmp / "data"
    cfg = tmp / "maildesk.yaml"
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n"
                   + (f"database:\n  url: {url}\n" if url else ""))
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
    return t, r, check_threading(work, url or f"sqlite:///{data / 'maildesk.db'}")


def one_round(i: int, tmp: Path, work: Path, counts: dict[str, int], baseline: Path | None,
              pg: str | None) -> dict[str, tuple[float, int, str]]:
    """SQLite, and the baseline and PostgreSQL if asked, each once: (seconds, peak RSS,
    threading check) by name. Every other round runs them in the reverse order, so that
    neither side always meets the caches, or the other workers' load, the other left."""
    jobs = ["sqlite"] + (["baseline"] if baseline else []) + (["pg"] if pg else []) \
        + (["baseline-pg"] if pg and baseline else [])
    got: dict[str, tuple[float, int, str]] = {}
    for job in jobs if i % 2 == 0 else jobs[::-1]:
        if job in ("pg", "baseline-pg"):
            with pg_database(pg) as url:                     # type: ignore[arg-type]
                got[job] = ingest(tmp, work, counts, baseline if job == "baseline-pg" else None,
                                  url)
        else:
            got[job] = ingest(tmp, work, counts, baseline if job == "baseline" else None)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--pg", nargs="?", const=PG_ADMIN)
    known, rest = ap.parse_known_args()
    sys.argv[1:] = rest
    args, tmp, work, counts = prepare(__doc__ or "", 3000, "maildesk-bench-")
    mbox = work / "mbox"
    rounds, bare = [], []
    for i in range(args.runs):
        got = one_round(i, tmp, work, counts, known.baseline, known.pg)
        rounds.append(got)
        tb, _rb, _o, _e, _c = run_child([sys.executable, "-c", BARE, str(mbox)], tmp)
        bare.append(tb)
        print(f"run {i + 1}: " + ", ".join(
            f"{job} {args.n / t:.0f} msgs/s ({t:.2f} s, {r / 1024:.0f} MiB; {check})"
            for job, (t, r, check) in got.items())
            + f", bare mail-parser {args.n / tb:.0f} msgs/s", flush=True)

    def med(job: str, rss: bool = False) -> float:
        """The median of job's seconds (or peak RSS, KiB) over the rounds."""
        return statistics.median(r[job][1] if rss else r[job][0] for r in rounds)

    def paired(num: str, den: str) -> float:
        """Median over the rounds of num's time over den's."""
        return statistics.median(r[num][0] / r[den][0] for r in rounds)

    t, tb = med("sqlite"), statistics.median(bare)
    ours = [r["sqlite"][0] for r in rounds]
    theirs = [r["pg"][0] for r in rounds] if known.pg else []

    def checks(job: str) -> str:
        """The threading check's outcomes over all rounds (one, when every round agrees)."""
        return "; ".join(sorted({r[job][2] for r in rounds}))

    pg = ""
    if known.pg:
        tp = med("pg")
        pg = (f"| `maildesk ingest` on PostgreSQL, same rounds | {args.n / tp:.0f} | {tp:.2f} | "
              f"{med('pg', rss=True) / 1024:.0f} MiB |\n")
    result = (
        f"## Ingest: {args.n} mixed messages as one mbox "
        f"(`python3 bench/ingest.py --n {args.n}"
        + (" --pg" if known.pg else "") + "`)\n\n"
        f"Machine: {machine()}"
        + (f"; {pg_server(known.pg)}, on the same host: the server runs on the same 2 cores, "
           "its CPU competes with maildesk's" if known.pg else "")
        + f". Median of {args.runs} runs, whole process, start-up, schema "
        f"creation and fsync included; fresh SQLite data directory each run"
        + ("; on PostgreSQL a fresh database each run (created before the clock starts, "
           "dropped after), peak RSS maildesk's own, the server's not counted" if known.pg
           else "")
        + f"; load average {os.getloadavg()[0]:.1f} at the end.\n\n"
        f"| | msgs/s | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk ingest` (SQLite) | {args.n / t:.0f} | {t:.2f} | "
        f"{med('sqlite', rss=True) / 1024:.0f} MiB |\n"
        + pg
        + (f"| the baseline, {commit_of(known.baseline)}, same rounds | "
           f"{args.n / med('baseline'):.0f} | {med('baseline'):.2f} | - |\n"
           if known.baseline else "")
        + (f"| the baseline on PostgreSQL, same rounds | {args.n / med('baseline-pg'):.0f} | "
           f"{med('baseline-pg'):.2f} | - |\n" if known.baseline and known.pg else "")
        + f"| bare mail-parser parse, no storage | {args.n / tb:.0f} | {tb:.2f} | - |\n\n"
        + (f"PostgreSQL/SQLite, paired: {paired('sqlite', 'pg'):.2f}x SQLite's speed (median "
           "of the per-round ratios of SQLite's time to PostgreSQL's; issue 22's goal: >= 0.8x).\n"
           if known.pg else "")
        + (f"Paired with the baseline: {paired('baseline', 'sqlite'):.2f}x its time per run"
           " (median of the per-round ratios; above 1: faster now).\n"
           if known.baseline else "")
        + (f"On PostgreSQL, paired with the baseline there: {paired('baseline-pg', 'pg'):.2f}x "
           "its time per run; the baseline's PostgreSQL/SQLite ratio in the same rounds: "
           f"{paired('baseline', 'baseline-pg'):.2f}x.\n" if known.baseline and known.pg else "")
        + f"Pipeline cost over a bare parse: {t / tb:.1f}x. Threading: {checks('sqlite')} "
        + (f"(PostgreSQL: {checks('pg')}) " if known.pg else "")
        + f"({counts['new_requests']} tickets, {counts['replies']} follow-ups, "
        f"as the manifest says).\n"
        f"Runs (msgs/s): {', '.join(f'{args.n / x:.0f}' for x in ours)}"
        + (f"; PostgreSQL: {', '.join(f'{args.n / x:.0f}' for x in theirs)}"
           if known.pg else "")
        + ".\n"
        + (f"\n{PG_NOTE}\n" if known.pg else ""))
    publish(args.out, f"## Ingest: {args.n} mixed", result, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
