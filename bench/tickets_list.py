#!/usr/bin/env python3
"""`maildesk tickets list` on a desk of 100,000 tickets, with and without filters.

    python3 bench/tickets_list.py [--tickets 100000] [--runs 5]

Tickets, two messages each (the customer's mail and our acknowledgement) and the
full-text index of the customer's mail are generated straight into a fresh SQLite
database (SQLAlchemy core, bulk inserts; the index through store/search.py as the
ledger writes it). Each listing is timed as an operator runs it: `maildesk tickets
list ...` in a fresh process (start-up included), median of --runs runs, with the
process's peak RSS; and the two queries alone, in this process.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, publish, run_child, ticket_row  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from maildesk.app import App  # noqa: E402
from maildesk.config.schema import Settings  # noqa: E402
from maildesk.store.search import index_messages  # noqa: E402
from maildesk.store.tables import T_MESSAGES, T_TICKETS  # noqa: E402
from maildesk.tickets.views import Filters, count_tickets, list_tickets  # noqa: E402

CHUNK = 20_000
QUEUES = ("general", "network", "hardware")
AGENTS = ("bob", "lea", "kim", None)
STATUSES = ("new", "open", "pending", "resolved", "closed", "closed", "closed")
DESK = {"addresses": ["support@localhost"],
        "queues": [{"name": q} for q in QUEUES],
        "agents": [{"name": a, "address": f"{a}@desk.test"} for a in AGENTS if a]}
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
# (label, arguments): the listings an operator runs most
CASES = [
    ("no filter", []),
    ("--status open", ["--status", "open"]),
    ("--queue network --unassigned", ["--queue", "network", "--unassigned"]),
    ("--assignee bob --status open,pending", ["--assignee", "bob", "--status", "open,pending"]),
    ("--requester user42@customer42.test", ["--requester", "user42@customer42.test"]),
    ("--search \"toner cartridge\"", ["--search", "toner cartridge"]),
    ("--search toner --status open", ["--search", "toner", "--status", "open"]),
    ("--since 2025-06-01 --until 2025-06-07", ["--since", "2025-06-01", "--until", "2025-06-07"]),
    ("--limit 0 --assignee kim --queue hardware --status pending",
     ["--limit", "0", "--assignee", "kim", "--queue", "hardware", "--status", "pending"]),
]


def _words(rng: random.Random) -> list[str]:
    common = ["printer", "vpn", "password", "laptop", "mail", "screen", "access", "login",
              "network", "slow", "broken", "error", "please", "help", "today", "office"]
    rare = [f"w{n}" for n in range(3000)] + ["toner", "cartridge"]
    return common * 40 + rare


def generate(app: App, n: int) -> float:
    rng = random.Random(17)
    vocab = _words(rng)
    t0 = time.perf_counter()
    with app.engine.begin() as conn:
        for lo in range(1, n + 1, CHUNK):
            ids = range(lo, min(n, lo + CHUNK - 1) + 1)
            tickets, messages = [], []
            for i in ids:
                created = START + timedelta(minutes=7 * i)
                subject = " ".join(rng.choices(vocab, k=5))
                tickets.append(ticket_row(i, created, status=STATUSES[i % len(STATUSES)],
                                          queue=QUEUES[i % 3], assignee=AGENTS[i % 4],
                                          subject=subject))
                body = " ".join(rng.choices(vocab, k=60))
                for direction, text in (("in", body), ("out", "Thank you, we have it.")):
                    mid = f"<{direction}{i}@bench.test>"
                    messages.append({
                        "ticket_id": i, "message_id": mid, "direction": direction,
                        "dedupe_key": hashlib.sha256(mid.encode()).hexdigest(),
                        "visibility": "public", "from_addr": f"user{i % 5000}@customer.test",
                        "from_name": None, "to": ["support@localhost"], "cc": [],
                        "subject": subject, "date": created, "text": text, "quoted": "",
                        "verdict": "person", "digest": "0" * 64, "defects": [],
                        "proof": "", "created_at": created})
            conn.execute(insert(T_TICKETS), tickets)
            got = conn.execute(insert(T_MESSAGES).returning(T_MESSAGES.c.id,
                                                            sort_by_parameter_order=True),
                               messages).scalars().all()
            index_messages(conn, [(mid, m["subject"], m["text"])
                                  for mid, m in zip(got, messages) if m["direction"] == "in"])
    return time.perf_counter() - t0


def queries(app: App, filters: Filters) -> float:
    """The page and the count of what matched, in this process."""
    t0 = time.perf_counter()
    with app.sessions() as s:
        list_tickets(s, filters, 50)
        count_tickets(s, filters)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tickets", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-list-"))
    settings = {"data_dir": str(tmp / "data"), "desk": DESK}
    cfg = tmp / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    app = App.open(Settings.model_validate(settings))
    gen = generate(app, args.tickets)
    size = (tmp / "data" / "maildesk.db").stat().st_size
    print(f"generated {args.tickets} tickets, {2 * args.tickets} messages in {gen:.0f} s "
          f"({size / 1024**2:.0f} MiB)", flush=True)
    base = [sys.executable, "-m", "maildesk", "--config", str(cfg), "tickets", "list",
            "--format", "json"]
    rows = []
    for label, extra in CASES:
        times, peaks, shown = [], [], 0
        for _ in range(args.runs):
            elapsed, rss, out, err, code = run_child([*base, *extra], ROOT)
            if code != 0:
                raise SystemExit(f"{label}: exit {code}: {err.decode()}")
            times.append(elapsed)
            peaks.append(rss)
            shown = len(json.loads(out))
        rows.append((label, shown, statistics.median(times), max(peaks) / 1024))
        print(f"{label}: {shown} shown, {rows[-1][2]:.3f} s, {rows[-1][3]:.0f} MiB", flush=True)
    bare = statistics.median(queries(app, Filters()) for _ in range(args.runs))
    search = statistics.median(queries(app, Filters(search="toner cartridge"))
                               for _ in range(args.runs))
    section = (
        f"## Tickets list: {args.tickets:,} tickets (`python3 bench/tickets_list.py`)\n\n"
        f"Machine: {machine()}. {args.tickets:,} tickets, {2 * args.tickets:,} messages and "
        f"the full-text index of the customers' mail generated straight into SQLite "
        f"({size / 1024**2:.0f} MiB, {gen:.0f} s). Each listing is `maildesk tickets list "
        f"--format json ...` in a fresh process, start-up included (default --limit 50); "
        f"median of {args.runs} runs, peak RSS of the process.\n\n"
        f"| listing | shown | time | peak RSS |\n|---|---:|---:|---:|\n"
        + "".join(f"| `{label}` | {shown:,} | {secs:.3f} s | {rss:.0f} MiB |\n"
                  for label, shown, secs, rss in rows)
        + f"\nThe two queries alone (the page of 50, then the count of all that matched): "
          f"{bare * 1000:.0f} ms without a filter, {search * 1000:.0f} ms for a two-word "
          f"search. The page is read newest first through `ix_tickets_created_id` (or the "
          f"filter's index), and only its tickets' messages are counted.\n")
    publish(args.out, "## Tickets list", section, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
