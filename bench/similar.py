#!/usr/bin/env python3
"""Similar tickets: how often the resolved tickets a notification names are about the
same thing, by `similar.similarity`; and what building and asking cost.

    python3 bench/similar.py [--runs 5]

The resolved tickets are 5,000 of the knowledge base's evaluation mails (bench/kb_eval.py,
some 60 topics; a third of them "none", everyday mail of no topic); the new tickets are
400 others. The resolved tickets that say the new one's first sentence word for word are
left out of its search (the mails are made of three or four phrasings per topic, so each
would have a twin): what is measured is finding the same topic in other words. A named
ticket is right when it has the new ticket's topic. For each threshold: of the new
tickets with a topic, the share given at least one and the share of named ones right; of
the new tickets of no topic ("none": a parking permit, a broken chair), which nothing
resolved answers once their twins are left out, the share given something anyway.
Times: building the vectors of 5,000 (what a node does once per ten minutes) and one
new ticket's search (median of 400, --runs times).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, update  # noqa: E402
from kb_eval import Mail, mails  # noqa: E402
from problems_eval import first_sentence  # noqa: E402

from maildesk.ml import embeddings  # noqa: E402
from maildesk.ml.similar import Nearest  # noqa: E402
from maildesk.ml.words import ticket_terms  # noqa: E402

SHOW = 3


def twins(pool: list[Mail]) -> dict[str, frozenset[int]]:
    """The resolved tickets by their first sentence."""
    out: dict[str, set[int]] = {}
    for k, m in enumerate(pool):
        out.setdefault(first_sentence(m.text), set()).add(k)
    return {s: frozenset(ks) for s, ks in out.items()}


def score(pool: list[Mail], new: list[Mail], same: dict[str, frozenset[int]], label: str,
          search: Callable[[Mail], list[tuple[int, float]]]) -> str:
    """A row of the table: of the new tickets with a topic, the share given one or more
    and the share of named ones right; of those with none, the share given one."""
    given = right = named = topics = nones = none_given = 0
    for m in new:
        hits = search(m)
        if m.label == "none":
            nones += 1
            none_given += bool(hits)
            continue
        topics += 1
        given += bool(hits)
        named += len(hits)
        right += sum(1 for k, _c in hits if pool[k].label == m.label)
    return (f"| {label} | {given / topics:.0%} | {right / named if named else 0:.0%} | "
            f"{none_given / nones:.0%} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    pool = [m for seed in range(40, 47) for m in mails(seed=seed)][:5000]
    new = mails(seed=60)[:400]
    builds, asks = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        index = Nearest(list(range(len(pool))), [ticket_terms(m.query) for m in pool])
        builds.append(time.perf_counter() - t0)
        for m in new:
            t1 = time.perf_counter()
            index.nearest(ticket_terms(m.query), SHOW, 0.0)
            asks.append(time.perf_counter() - t1)
    same = twins(pool)
    rows = [score(pool, new, same, f"words, {t}",
                  lambda m, t=t: index.nearest(ticket_terms(m.query), SHOW, t,
                                               same.get(first_sentence(m.text), frozenset())))
            for t in (0.2, 0.3, 0.4, 0.5, 0.6)]
    note = "Meaning (`similar.embeddings`): not measured, the extra maildesk[ml] is not installed."
    if not embeddings.missing():
        import tempfile

        import numpy as np
        embedder = embeddings.Embedder(Path(tempfile.mkdtemp(prefix="md-models-")))
        embedder.load()
        t0 = time.perf_counter()
        pool_rows = embedder.encode([m.query for m in pool])
        per = (time.perf_counter() - t0) / len(pool)
        new_rows = embedder.encode([m.query for m in new])
        by_new = {id(m): r for m, r in zip(new, new_rows)}

        def meaning(m: Mail, t: float) -> list[tuple[int, float]]:
            cos = pool_rows @ by_new[id(m)]
            skip = same.get(first_sentence(m.text), frozenset())
            return [(int(k), float(cos[k])) for k in np.argsort(-cos)[:SHOW + len(skip)]
                    if cos[k] >= t and int(k) not in skip][:SHOW]
        rows += [score(pool, new, same, f"meaning, {t}", lambda m, t=t: meaning(m, t))
                 for t in (0.4, 0.5, 0.6, 0.7)]
        note = (f"Meaning: all-MiniLM-L6-v2 embeddings of the same mails, {per * 1000:.0f} ms "
                "per mail to embed on this CPU (once per resolved ticket, and once per new "
                "one).")
    section = f"""## Similar tickets

`python3 bench/similar.py` on {machine()}.

5,000 resolved tickets and 400 new ones from the knowledge base's evaluation mails (some
60 topics, and a third of everyday mail of none); a resolved ticket that says the new
one's first sentence word for word is left out of its search, so what is measured is
finding the same topic in other words. Up to {SHOW} named per new ticket.

| compared by, similarity | topic: given one or more | topic: named right | none: given one |
|---|---:|---:|---:|
{chr(10).join(rows)}

{note}

Building the vectors of 5,000 resolved tickets: {statistics.median(builds):.2f} s (median
of {args.runs}; a node does it once per ten minutes, on its first new ticket after). One
new ticket's search: {statistics.median(asks) * 1000:.2f} ms median, p99
{sorted(asks)[int(len(asks) * 0.99)] * 1000:.2f} ms.

By words, the default 0.4 is the middle: most tickets with a topic are given something,
three in four of the named are on their topic, and half of the mail that nothing
answers still gets a loosely alike ticket (an agent reads past it: the names are for
agents, never for the customer). Everyday mail shares its everyday words ("urgent",
"since this morning"), which is what those are matched on. By meaning
(`similar.embeddings`, default `embedding_similarity` 0.7) as many tickets are given
one, nearly all of them right, and fewer everyday mails get a loosely alike one; at
the cost of embedding each ticket once.
"""
    update(args.out, "## Similar tickets", section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
