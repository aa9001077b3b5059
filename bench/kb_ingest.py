#!/usr/bin/env python3
"""Ingest with suggestions on against off: the shared workload through `maildesk ingest`,
the same rounds, alternating which goes first, with the evaluation set's articles.

    python3 bench/kb_ingest.py [--n 3000] [--runs 5] [--kb DIR] [--rerank]

"on" searches every new ticket's text and writes its suggestions into the
acknowledgement; "off" is the same desk with `kb.suggest: 0`. --rerank: "on"
re-ranks by meaning too (kb.rerank; needs the extra maildesk[ml]). The cost of
suggestions is the median of the per-round ratios, so a slower or busier
minute cancels out. Writes its section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, machine, prepare, publish, run_child

ARTICLES = ROOT / "bench" / "kb" / "articles"


def ingest(tmp: Path, work: Path, kb: Path, suggest: int, rerank: bool = False
           ) -> tuple[float, int, int]:
    """Seconds, peak RSS and the suggestions made, for one ingest into a fresh desk."""
    cfg = tmp / "maildesk.yaml"
    queues = sorted({q.strip() for path in kb.rglob("*.md")
                     for m in re.finditer(r"^queues: \[(.*)\]$", path.read_text(), re.M)
                     for q in m.group(1).split(",")} | {"general"})
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n  queues:\n"
                   + "".join(f"    - name: {q}\n" for q in queues)
                   + f"kb:\n  folder: {kb}\n  suggest: {suggest}\n"
                   + f"  rerank: {'true' if rerank and suggest else 'false'}\n")
    data = tmp / "data"      # a fresh desk; the model, once extracted, stays (as on a desk)
    for old in data.iterdir() if data.exists() else ():
        if old.name != "models":
            subprocess.run(["rm", "-rf", str(old)], check=True)
    t, rss, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config", str(cfg),
                                        "ingest", "--no-progress", "--format", "json",
                                        str(work / "mbox")], tmp, {**os.environ})
    if code != 0:
        raise SystemExit(err.decode())
    json.loads(out)
    import sqlalchemy as sa
    eng = sa.create_engine(f"sqlite:///{tmp / 'data' / 'maildesk.db'}")
    with eng.connect() as c:
        made = int(c.scalar(sa.text("SELECT count(*) FROM kb_suggestions WHERE slug IS NOT NULL"))
                   or 0)
    eng.dispose()
    return t, rss, made


def main() -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--kb", type=Path, default=ARTICLES)
    ap.add_argument("--rerank", action="store_true")
    known, rest = ap.parse_known_args()
    sys.argv[1:] = rest
    args, tmp, work, counts = prepare(__doc__ or "", 3000, "maildesk-bench-kb-")
    on: list[float] = []
    off: list[float] = []
    rss: list[int] = []
    made = 0
    for i in range(args.runs):
        order = (3, 0) if i % 2 else (0, 3)
        for suggest in order:
            t, r, n = ingest(tmp, work, known.kb.resolve(), suggest, known.rerank)
            (on if suggest else off).append(t)
            if suggest:
                rss.append(r)
                made = n
        print(f"run {i + 1}: on {args.n / on[-1]:.0f} msgs/s, off {args.n / off[-1]:.0f} msgs/s")
    ratio = statistics.median([a / b for a, b in zip(on, off)])
    articles = len(list(known.kb.rglob("*.md")))
    how = " --rerank" if known.rerank else ""
    section = (
        f"## Knowledge base: ingest with suggestions{' re-ranked' if known.rerank else ''} "
        f"on against off (`python3 bench/kb_ingest.py --n {args.n}{how}`)\n\n"
        f"Machine: {machine()}. {args.n} mixed messages of the shared workload "
        f"({counts['new_requests']} new tickets) as one mbox, a fresh SQLite desk each run, "
        f"{articles} articles; {args.runs} paired rounds, alternating which goes first.\n\n"
        f"| | msgs/s (median) | seconds | peak RSS |\n|---|---:|---:|---:|\n"
        f"| suggestions on (kb.suggest 3{', kb.rerank' if known.rerank else ''}) | "
        f"{args.n / statistics.median(on):.0f} | "
        f"{statistics.median(on):.2f} | {statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| suggestions off (kb.suggest 0) | {args.n / statistics.median(off):.0f} | "
        f"{statistics.median(off):.2f} | - |\n\n"
        f"Suggestions cost {100 * (ratio - 1):.1f}% of ingest time (median of the per-round "
        f"ratios on/off: {ratio:.3f}); {made} suggestions made per run.\n")
    publish(args.out, "## Knowledge base: ingest with suggestions"
            + (" re-ranked" if known.rerank else " on"), section, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
