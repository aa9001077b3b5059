#!/usr/bin/env python3
"""Rules benchmark: evaluation time per mail at 1,000 and 10,000 rules, paired with a baseline.

    python3 bench/rules.py [--n 1000] [--runs 3] [--passes 3] [--counts 1000,10000]
                           [--mix desk,routing] [--baseline DIR]

The rules are generated like a large desk's, in two mixes (--mix: one or both, both by
default). desk: 30 % by sender domain, 20 % by a list of senders (addresses, or domains
with their subdomains), 20 % by a word in the subject, 10 % by a regex on the subject or
body (one in eight without a literal word, all on the subject: `\\b[a-z]{2}\\d{5}\\b`),
10 % by a header (a mailing list, a mailer, a relay's address by regex), 10 % by a word
in the body together with a ticket field; a desk with more rules has more customers and
words, not more rules that match a mail. routing: the earlier mix, 70 % by sender
domain, 20 % by sender address, 10 % by a word in the subject, where the rules that
match grow with the rules. Each rule set is checked against every mail of the shared
mixed workload (parsed beforehand) as a ticket.created event.

Each (checkout, mix, rule count) runs in a process of its own, --runs times, in alternating
order with --baseline DIR (a checkout of another commit, `git worktree add DIR main`):
what a change gained, paired, not against figures of another day. A process loads the
rules once and times --passes passes over the mails; the figures are medians over all
passes of the CPU time (user + system) and wall time per mail, and the peak RSS (the
parsed mails included). Both checkouts must decide the same: the rules each mail
matched are compared, and a difference stops the benchmark.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import GEN, commit_of, machine, run_child, update  # noqa: E402

WORDS = ["vpn", "printer", "invoice", "password", "laptop", "outlook", "refund", "licence",
         "wi-fi", "monitor", "calendar", "export", "portal", "backup", "phone", "order"]
BODY_WORDS = ["error", "server", "screenshot", "locked", "urgent", "workaround", "cache",
              "contract", "discount", "approval", "maintenance", "rows", "orange", "dial"]
MAILERS = ["outlook", "thunderbird", "iphone", "mutt", "bench-gen", "evolution"]
REGEXES = [r"\b({w}|{v})\b", r"{w}\s+(is\s+)?(down|broken|not working)",
           r"^(re|fwd?):\s*{w}", r"\b{w}[- ]?#?\d{{4,}}\b", r"{w}.*\b{v}\b",
           r"error (code )?0x{n:08x}", r"\b{w}s?\b", r"\b[a-z]{{2}}\d{{{k}}}\b"]
FAKE = [f"d{i}.example" for i in range(500)]
TICKET = ["queue: general", "priority: P3", "status: new", "type: incident", "queue: it"]


def _desk_rule(i: int, rng: random.Random, domains: list[str], senders: list[str],
               scale: int) -> str:
    """scale: rules / 1,000. A desk with more rules has more customers and more words, not
    more rules per mail: keys the workload holds are as many at 10,000 rules as at 1,000."""
    def word(pool: list[str], every: int) -> str:
        return rng.choice(pool) + ("" if i % (every * scale) == 0 else str(i))
    domain = rng.choice(domains) if rng.random() < 0.05 / scale else f"d{i}.example"
    r = rng.random()
    if r < 0.3:
        return f"{{sender_domain: [{domain}, x{i}.example]}}"
    if r < 0.4:
        people = [rng.choice(senders) if rng.random() < 0.5 / scale else f"u{i}.{k}@{domain}"
                  for k in range(4)]
        return f"{{from: [{', '.join(people)}, vip{i}@x{i}.example]}}"
    if r < 0.5:
        return f"{{from: {{domain: [{domain}, y{i}.example, z{i}.test]}}}}"
    if r < 0.7:
        return f"{{subject: {{contains: {word(WORDS, 7)}}}}}"
    if r < 0.8:
        template = rng.choice(REGEXES)
        regex = template.format(w=word(WORDS, 3), v=word(BODY_WORDS, 3), n=i, k=5 + i % 4)
        fld = "subject" if template == REGEXES[-1] else rng.choice(["subject", "subject", "body"])
        return f"{{{fld}: {{matches: '{regex}'}}}}"
    if r < 0.9:
        return rng.choice([f"{{header.list-id: {{contains: lst{i}.example.org}}}}",
                           f"{{header.x-mailer: {{contains: {word(MAILERS, 5)}}}}}",
                           f"{{header.x-originating-ip: {{matches: '^\\[?10\\.{i % 256}\\.'}}}}"])
    return f"{{body: {{contains: {word(BODY_WORDS, 5)}}}, {rng.choice(TICKET)}}}"


def _routing_rule(i: int, rng: random.Random, domains: list[str], senders: list[str],
                  scale: int) -> str:
    """The earlier mix, as it was: rules that match grow with the rules."""
    r = rng.random()
    if r < 0.7:
        return f"{{sender_domain: [{rng.choice(domains + FAKE)}, x{i}.example]}}"
    if r < 0.9:
        return f"{{from: {rng.choice(senders)}}}"
    return f"{{subject: {{contains: {rng.choice(WORDS)}{i % 7 or ''}}}}}"


MIXES = {"desk": _desk_rule, "routing": _routing_rule}


def rules_file(n: int, mix: str, domains: list[str], senders: list[str], folder: Path) -> Path:
    rng = random.Random(n)
    out = []
    for i in range(n):
        cond = MIXES[mix](i, rng, domains, senders, max(1, n // 1000))
        action = rng.choice(["{set: {queue: it}}", f"{{tags: {{add: [t{i}]}}}}",
                             f"{{set: {{category: c{i}}}}}", "{set: {urgency: high}}"])
        out.append(f"- {{name: r{i}, on: ticket.created, if: {cond}, then: [{action}]}}\n")
    path = folder / f"rules-{mix}-{n}.yaml"
    path.write_text("".join(out))
    return path


def child(rules: Path, mbox: Path, passes: int) -> dict[str, Any]:
    """In a process of its own, with the checkout's maildesk: load, then time the passes."""
    from datetime import datetime, timezone

    import maildesk
    from maildesk.config.schema import Desk
    from maildesk.intake.sources import read
    from maildesk.mail.parse import parse
    from maildesk.rules.load import load
    from maildesk.rules.vocabulary import facts_for
    from maildesk.store.blobs import digest_of
    from maildesk.store.rows import TicketRow

    desk = Desk.model_validate({"queues": [{"name": "general"}, {"name": "it"}]})
    mails = [parse(raw, digest_of(raw)) for _o, raw in read(mbox)]
    now = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    ticket = TicketRow(number=1, ref="MD-1", subject="", requester="", requester_name=None,
                       cc=[], status="new", type="incident", priority="P3", impact="medium",
                       urgency="medium", tags=[], problem=None, category=None, queue="general",
                       assignee=None, linked_to=None, created_at=now, updated_at=now)
    t0 = time.perf_counter()
    rs = load([rules], desk, {"ticket_notice"})
    load_s = time.perf_counter() - t0
    cpu, wall = [], []
    for _ in range(passes):
        decided = hashlib.sha256()
        tested = actions = 0
        c0, w0 = time.process_time(), time.perf_counter()
        for m in mails:
            d = rs.evaluate("ticket.created", facts_for(desk, ticket, m, now, recipients=m.to))
            tested += len(d.hits) + len(d.misses)
            actions += len(d.actions)
            decided.update(" ".join(d.hits).encode() + b"\n")
        cpu.append((time.process_time() - c0) / len(mails))
        wall.append((time.perf_counter() - w0) / len(mails))
    return {"cpu": cpu, "wall": wall, "load_s": load_s, "tested": tested / len(mails),
            "actions": actions / len(mails), "decided": decided.hexdigest(),
            "module": maildesk.__file__}


def run(tree: Path, rules: Path, mbox: Path, passes: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    _wall, rss, out, err, code = run_child(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(rules), str(mbox),
         str(passes)], rules.parent, env)
    if code != 0:
        raise SystemExit(f"{tree}: exit {code}: {err.decode()[-2000:]}")
    got: dict[str, Any] = json.loads(out)
    if not Path(got["module"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imported maildesk from {got['module']}")
    return got | {"rss": rss}


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
        return 0
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="mails in the workload")
    ap.add_argument("--runs", type=int, default=3, help="processes per checkout and count")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per process")
    ap.add_argument("--counts", default="1000,10000")
    ap.add_argument("--mix", default="desk,routing", help="desk, routing, or both")
    ap.add_argument("--baseline", type=Path,
                    help="a checkout of another commit, timed in the same rounds")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    mixes = args.mix.split(",")
    if not set(mixes) <= set(MIXES):
        ap.error(f"--mix: {args.mix!r}: one or more of {', '.join(MIXES)}")
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-rulesbench-"))
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(tmp / "work"),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    mbox = tmp / "work" / "mbox"
    senders = _senders(mbox)
    domains = sorted({s.rpartition("@")[2] for s in senders})
    trees = [ROOT] + ([args.baseline] if args.baseline else [])
    cases = [(mix, n) for mix in mixes for n in counts]
    files = {c: rules_file(c[1], c[0], domains, senders, tmp) for c in cases}
    got: dict[tuple[str, int, Path], list[dict[str, Any]]] = \
        {(*c, t): [] for c in cases for t in trees}
    for i in range(args.runs):
        for c in cases:
            for tree in trees if i % 2 == 0 else trees[::-1]:
                got[(*c, tree)].append(run(tree, files[c], mbox, args.passes))
        print(f"round {i + 1} of {args.runs}", flush=True)
    rows = []
    for mix, n in cases:
        for tree in trees:
            runs = got[mix, n, tree]
            if runs[0]["decided"] != got[mix, n, ROOT][0]["decided"]:
                raise SystemExit(f"{mix}, {n} rules: {tree} decided otherwise than {ROOT}")
            rows.append((mix, n, tree,
                         *(statistics.median(x for r in runs for x in r[k]) * 1e6
                           for k in ("cpu", "wall")),
                         statistics.median(r["load_s"] for r in runs),
                         max(r["rss"] for r in runs) / 1024, runs[0]["tested"],
                         runs[0]["actions"]))
    section = report(args, mixes, counts, trees, rows)
    update(args.out, "## Rules: evaluation", section)
    print(section)
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


def _senders(mbox: Path) -> list[str]:
    """The workload's sender addresses, read from its From lines without parsing."""
    found = set()
    for line in mbox.read_bytes().decode("utf-8", "replace").splitlines():
        if line.lower().startswith("from:") and "@" in line:
            found.add(line.rpartition("<")[2].strip(" >").lower())
    return sorted(found)


MIX_TEXT = {
    "desk": "30 % by sender domain, 20 % by a list of senders (addresses, or domains with "
            "their subdomains), 20 % by a word in the subject, 10 % by a regex on the subject "
            "or body (one in eight without a literal word of three letters, on the subject), "
            "10 % by a header, 10 % by a word in the body with a ticket field; the rules that "
            "can match a mail are as many at 10,000 rules as at 1,000 (more customers and "
            "words, not more rules per mail)",
    "routing": "the earlier mix: 70 % by sender domain, 20 % by sender address, 10 % by a "
               "word in the subject; the rules that match grow with the rules"}


def report(args: argparse.Namespace, mixes: list[str], counts: list[int], trees: list[Path],
           rows: list[tuple[Any, ...]]) -> str:
    name = {ROOT: "this change" if len(trees) > 1 else commit_of(ROOT)}
    if args.baseline:
        name[args.baseline] = f"before ({commit_of(args.baseline)})"
    table = "\n".join(
        f"| {mix} | {n:,} | {name[tree]} | {cpu:.0f} µs | {wall:.0f} µs | {tested:.1f} | "
        f"{load_s:.2f} s | {rss:.0f} MiB | {actions:.2f} |"
        for mix, n, tree, cpu, wall, load_s, rss, tested, actions in rows)
    ours = {(mix, n): cpu for mix, n, tree, cpu, *_rest in rows if tree == ROOT}
    growth = "; ".join(f"{ours[m, counts[-1]] / ours[m, counts[0]]:.1f} times with "
                       f"`--mix {m}`" for m in mixes)
    load = os.getloadavg()
    return (
        f"## Rules: evaluation time per mail (`python3 bench/rules.py`)\n\n"
        f"Machine: {machine()}; load average {load[0]:.1f} at the end. {args.n} mails of "
        f"the shared workload, parsed beforehand, each a ticket.created event (evaluation "
        f"only: conditions and the actions' list, not their effects). Generated rules: "
        + " ".join(f"`--mix {m}`: {MIX_TEXT[m]}." for m in mixes)
        + f" Each checkout, mix and count in a process of its own, {args.runs} processes"
        f"{' in alternating order' if len(trees) > 1 else ''}, {args.passes} passes each: "
        f"medians of the {args.runs * args.passes} passes' time per mail; peak RSS of the "
        f"process (the parsed mails included). \"Tested\": rules whose condition was "
        f"tested, per mail"
        f"{'; both checkouts matched the same rules on every mail' if len(trees) > 1 else ''}"
        f".\n\n"
        f"| mix | rules | checkout | CPU per mail | wall per mail | tested | load and compile "
        f"| peak RSS | actions per mail |\n"
        f"|---|---:|---|---:|---:|---:|---:|---:|---:|\n{table}\n\n"
        f"From {counts[0]:,} to {counts[-1]:,} rules the CPU time per mail grows {growth}"
        f"{' (this change)' if len(trees) > 1 else ''}.\n")


if __name__ == "__main__":
    raise SystemExit(main())
