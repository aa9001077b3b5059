#!/usr/bin/env python3
"""Several nodes benchmark (issue 18): the same mail over SMTP into 1, 2 and 3 `maildesk
serve` processes with separate data directories on one PostgreSQL database.

    python3 bench/nodes.py [--n 3000] [--runs 3] [--nodes 1,2,3] [--clients 12]

The shared mixed workload (`../shared/bench/gen_workload.py`, tags `[MD-n]`) is sent by
12 client threads round-robin over the nodes (a client that meets a 4xx or a broken
connection tries the next node, as an MTA would; tests/nodes.py). Each run starts from a
fresh database and fresh data directories (`storage: {backend: database}`). Per node
count, the median of the runs:

- msgs/s end to end: mails that got 250, from the first send until no inbound mail is
  queued (every mail ticketed or otherwise settled);
- p99 SMTP accept latency: from the end of DATA to the 250;
- conflicts and retries: lines of the nodes' logs with the words in
  tests/nodes.py CONFLICT_WORDS and RETRY_WORDS (adjust there, or with --conflict-words
  and --retry-words, to what the nodes write), per 1,000 mails;
- peak RSS of each node (VmHWM of /proc/PID/status just before it is stopped).

Quarantined mail and tickets made are reported beside them: a fast run that loses mail
is not fast.
"""
from __future__ import annotations

import argparse
import email
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from email import policy
from email.utils import getaddresses
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))          # this checkout's maildesk, whatever is installed
from common import GEN, machine, update  # noqa: E402


def _harness() -> ModuleType:
    """tests/nodes.py (this file has its name, so it is loaded by path)."""
    path = ROOT / "tests" / "nodes.py"
    spec = importlib.util.spec_from_file_location("maildesk_test_nodes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


H = _harness()
CONFLICT_WORDS, RETRY_WORDS, DESK, PG_URL = H.CONFLICT_WORDS, H.RETRY_WORDS, H.DESK, H.PG_URL
Cluster, Letter, p99, pg_available, send_all = (H.Cluster, H.Letter, H.p99, H.pg_available,
                                                H.send_all)
WORKLOAD_DESK = "support@example.com"    # gen_workload.py's support address


def letters(work: Path) -> list[Letter]:
    out = []
    for path in sorted((work / "eml").iterdir()):
        raw = path.read_bytes()
        head = email.message_from_bytes(raw, policy=policy.compat32)
        sender = (getaddresses([head.get("From", "")]) or [("", "")])[0][1] or "x@example.org"
        out.append(Letter(message_id=str(head.get("Message-ID", "")), sender=sender,
                          rcpt=WORKLOAD_DESK, raw=raw, kind="workload"))
    return out


def one_run(root: Path, nodes: int, mails: list[Letter], clients: int,
            conflict_words: list[str], retry_words: list[str]) -> dict[str, Any]:
    overrides = {"desk": {"addresses": [WORKLOAD_DESK, DESK]}}
    with Cluster(root, nodes, **overrides) as c:
        c.start()
        start = time.monotonic()
        sent = send_all(c.nodes, mails, clients=clients)
        sent_at = time.monotonic()
        error = None
        try:
            c.wait_drained(600)
        except AssertionError as e:
            error = str(e)
        drained = time.monotonic()
        c.wait_outbox(120)
        outbox = time.monotonic()
        rss = [n.peak_rss() for n in c.nodes]
        accepted = sum(1 for s in sent if s.accepted)
        conflicts = sum(c.log_counts(conflict_words).values())
        retries = sum(c.log_counts(retry_words).values())
        states = dict(c.rows("SELECT state, count(*) FROM inbound GROUP BY state"))
        why = c.rows("SELECT left(reason, 40), count(*) FROM inbound WHERE state = "
                     "'quarantined' GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
        tickets = int(c.scalar("SELECT count(*) FROM tickets"))
        for n in c.nodes:
            n.stop()
    return {"nodes": nodes, "accepted": accepted, "send_s": sent_at - start,
            "drain_s": drained - start, "outbox_s": outbox - start,
            "msgs_s": accepted / (drained - start) if drained > start else 0.0,
            "p99_ms": 1000 * (p99([s.latency for s in sent if s.latency]) or 0.0),
            "tries": sum(1 for s in sent if s.tries), "conflicts": conflicts,
            "retries": retries, "rss_kib": rss, "states": states, "tickets": tickets,
            "quarantine_reason": why[0][0] if why else None, "error": error}


def pg_version(url: str) -> str:
    import sqlalchemy as sa
    eng = sa.create_engine(url)
    try:
        with eng.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar()).split()[0]
    finally:
        eng.dispose()


def section(args: argparse.Namespace, results: dict[int, list[dict[str, Any]]], pg: str,
            commit: str) -> str:
    lines = [f"## Several nodes: {args.n} mails over SMTP into 1, 2 and 3 nodes "
             f"(`python3 bench/nodes.py --n {args.n}`)", "",
             f"Machine: {machine()}, PostgreSQL {pg} on the same host; the nodes, PostgreSQL "
             f"and the {args.clients} SMTP client threads share its cores. Commit {commit}. "
             f"Median of {args.runs} runs per node count; each run a fresh database and "
             "fresh data directories (`storage: {backend: database}`), the shared mixed "
             "workload sent round-robin over the nodes. msgs/s: mails that got 250 divided "
             "by the time from the first send until no inbound mail is queued. Races retried "
             f"and errors: log lines with {', '.join(args.conflict_words)} (a batch that lost "
             "a race with another node, rolled back and run again) / "
             f"{', '.join(w.strip() for w in args.retry_words)} (what a retry did not "
             "resolve), per 1,000 mails.", "",
             "| nodes | msgs/s | s to drained | s to outbox empty | p99 250 latency | "
             "races retried /1k | errors /1k | peak RSS per node | quarantined | tickets |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for nodes, runs in sorted(results.items()):
        ok = [r for r in runs if r.get("msgs_s") is not None]
        if not ok:
            lines.append(f"| {nodes} | failed: {runs[0].get('error', '?')[:80]} |"
                         + " |" * 8)
            continue

        def med(key: str, rows: list[dict[str, Any]] = ok) -> float:
            return statistics.median(r[key] for r in rows)
        per_k = 1000 / max(1, args.n)
        rss = [max((r["rss_kib"][i] or 0) for r in ok) for i in range(nodes)]
        quarantined = statistics.median(r["states"].get("quarantined", 0) for r in ok)
        lines.append(
            f"| {nodes} | {med('msgs_s'):.0f} | {med('drain_s'):.1f} | {med('outbox_s'):.1f}"
            f" | {med('p99_ms'):.0f} ms | {med('conflicts') * per_k:.1f} | "
            f"{med('retries') * per_k:.1f} | "
            f"{', '.join(f'{k // 1024} MiB' for k in rss)} | {quarantined:.0f} | "
            f"{med('tickets'):.0f} |")
    lines += ["", "Runs (msgs/s): " + "; ".join(
        f"{n} node{'s' if n > 1 else ''}: " + ", ".join(f"{r['msgs_s']:.0f}" for r in runs
                                                       if r.get("msgs_s") is not None)
        for n, runs in sorted(results.items())) + "."]
    lost = [(n, r) for n, runs in sorted(results.items()) for r in runs
            if r.get("states", {}).get("quarantined")]
    if lost:
        n, r = lost[0]
        lines.append(
            f"Not a measure of the desk yet: {len(lost)} of the runs quarantined mail (e.g. "
            f"{r['states']['quarantined']} of {r['accepted']} with {n} nodes: "
            f"\"{r.get('quarantine_reason') or '?'}...\"); quarantined mail costs little, so "
            "those runs' msgs/s count mail that never became a ticket.")
    errors = [f"{n} nodes: {r['error']}" for n, runs in results.items() for r in runs
              if r.get("error")]
    if errors:
        lines.append("Errors: " + "; ".join(errors[:3]) + ".")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--conflict-words", default=",".join(CONFLICT_WORDS))
    ap.add_argument("--retry-words", default=",".join(RETRY_WORDS))
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--from-json", type=Path, help="no runs: write the section again from "
                                                   "the figures --json wrote")
    args = ap.parse_args()
    args.conflict_words = [w for w in args.conflict_words.split(",") if w]
    args.retry_words = [w for w in args.retry_words.split(",") if w]
    if not pg_available():
        print("PostgreSQL is not reachable (MAILDESK_TEST_PG)", file=sys.stderr)
        return 69
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        results = {int(n): runs for n, runs in saved["results"].items()}
        text = section(args, results, saved["pg"], saved["commit"])
        update(args.out, "## Several nodes", text)
        print(text)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-nodesbench-"))
    work = tmp / "workload"
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(work),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    mails = letters(work)
    counts = [int(x) for x in args.nodes.split(",")]
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for run in range(args.runs):
        for n in counts:     # alternating, so a slow minute of the machine hits every count
            try:
                r = one_run(tmp / f"run{run}-{n}", n, mails, args.clients,
                            args.conflict_words, args.retry_words)
            except Exception as e:  # noqa: BLE001 - a broken run is a figure too
                r = {"nodes": n, "msgs_s": None, "error": f"{type(e).__name__}: {e}"[:300]}
            results[n].append(r)
            print(json.dumps(r), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    pg = pg_version(PG_URL)
    text = section(args, results, pg, commit)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "pg": pg, "commit": commit},
                                        indent=1))
    update(args.out, "## Several nodes", text)
    print(text)
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
