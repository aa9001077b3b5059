#!/usr/bin/env python3
"""Rules benchmark: evaluation time per mail at 10, 100, 1,000 and 10,000 rules.

    python3 bench/rules.py [--n 3000] [--runs 3]

The rules are generated like a large desk's: 70 % route by sender domain
(customer contracts), 20 % by sender address (VIPs), 10 % by a word in the
subject, which no index can narrow. Each is checked against every mail of
the shared mixed workload (parsed once, beforehand), as a ticket.created
event; the figure is the median over runs of the mean time per mail.
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, prepare, update  # noqa: E402

from maildesk.config.schema import Desk  # noqa: E402
from maildesk.intake.sources import read  # noqa: E402
from maildesk.mail.parse import parse  # noqa: E402
from maildesk.rules.load import load  # noqa: E402
from maildesk.rules.vocabulary import facts_for  # noqa: E402
from maildesk.store.blobs import digest_of  # noqa: E402
from maildesk.store.rows import TicketRow  # noqa: E402

WORDS = ["vpn", "printer", "invoice", "password", "laptop", "outlook", "refund", "licence",
         "wi-fi", "monitor", "calendar", "export", "portal", "backup", "phone", "order"]
DESK = Desk.model_validate({"queues": [{"name": "general"}, {"name": "it"}, {"name": "sales"}]})


def rules_file(n: int, domains: list[str], senders: list[str], folder: Path) -> Path:
    rng = random.Random(n)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.7:
            cond = f"{{sender_domain: [{rng.choice(domains)}, x{i}.example]}}"
        elif r < 0.9:
            cond = f"{{from: {rng.choice(senders)}}}"
        else:
            cond = f"{{subject: {{contains: {rng.choice(WORDS)}{i % 7 or ''}}}}}"
        action = rng.choice(["{set: {queue: it}}", f"{{tags: {{add: [t{i}]}}}}",
                             f"{{set: {{category: c{i}}}}}", "{set: {urgency: high}}"])
        out.append(f"- {{name: r{i}, on: ticket.created, if: {cond}, then: [{action}]}}\n")
    path = folder / f"rules-{n}.yaml"
    path.write_text("".join(out))
    return path


def main() -> int:
    args, tmp, work, counts = prepare(__doc__ or "", 3000, "maildesk-rulesbench-")
    mails = [parse(raw, digest_of(raw)) for _o, raw in read(work / "mbox")]
    domains = sorted({m.from_addr.rpartition("@")[2] for m in mails}) + \
        [f"d{i}.example" for i in range(500)]
    senders = sorted({m.from_addr for m in mails})
    now = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    ticket = TicketRow(number=1, ref="MD-1", subject="", requester="", requester_name=None,
                       cc=[], status="new", type="incident", priority="P3", impact="medium",
                       urgency="medium", tags=[], problem=None, category=None, queue="general",
                       assignee=None, linked_to=None, created_at=now, updated_at=now)
    folder = Path(tempfile.mkdtemp())
    rows = []
    for n in (10, 100, 1000, 10000):
        t0 = time.perf_counter()
        rs = load([rules_file(n, domains, senders, folder)], DESK, {"ticket_notice"})
        load_s = time.perf_counter() - t0
        per_mail, matched = [], 0
        for _ in range(args.runs):
            start = time.perf_counter()
            hits = 0
            for m in mails:
                facts = facts_for(DESK, ticket, m, now, recipients=m.to)
                hits += len(rs.evaluate("ticket.created", facts).actions)
            per_mail.append((time.perf_counter() - start) / len(mails))
            matched = hits
        us = statistics.median(per_mail) * 1e6
        rows.append((n, us, load_s, matched / len(mails)))
        print(f"{n:>6} rules: {us:8.1f} µs per mail, load {load_s:.2f} s, "
              f"{matched / len(mails):.1f} actions per mail")
    table = "\n".join(f"| {n:,} | {us:.0f} µs | {load_s:.2f} s | {hits:.1f} |"
                      for n, us, load_s, hits in rows)
    growth = rows[-1][1] / rows[0][1]
    section = (
        f"## Rules: evaluation time per mail (`python3 bench/rules.py`)\n\n"
        f"Machine: {machine()}. {len(mails)} mails of the shared workload, parsed "
        f"beforehand; generated rules (70 % by sender domain, 20 % by sender address, "
        f"10 % by a word in the subject, which no index narrows); median of {args.runs} "
        f"runs of the mean time per mail for a ticket.created event (evaluation only: "
        f"conditions and the actions' list, not their effects).\n\n"
        f"| rules | per mail | load and compile | actions per mail |\n"
        f"|---:|---:|---:|---:|\n{table}\n\n"
        f"From 10 to 10,000 rules (1,000 times as many) the time per mail grows "
        f"{growth:.0f} times: the indexed rules cost nothing until their key matches; "
        f"what grows is the 10 % of subject-word rules, each a substring test.\n")
    print(section)
    update(args.out, "## Rules: evaluation", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
