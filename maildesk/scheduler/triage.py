"""Training the triage model on the desk's own tickets: the job triage_retrain and
`maildesk triage train` do the same.

What the desk settled is read in one transaction (store/triage.py), the model trained
outside any (minutes for 100,000 tickets: no transaction stays open that long), and
stored as the newest in a short one; the next batch of every node uses it (App.triage).
The text is the customer's own words, as a new ticket's prediction reads them
(core/triage.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..app import App
from ..kb.search import customer_words
from ..store import triage as stored


@dataclass(frozen=True)
class Trained:
    model: int | None           # the stored model's id; None: nothing worth storing
    tickets: int                # labelled tickets read
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    why: str | None = None      # why no model was stored

    def said(self) -> str:
        """One line: what the job did (quiet, for the scheduler's log, when it did nothing)."""
        if self.model is None:
            return f"nothing to learn from: {self.why}"
        parts = []
        for target, m in self.summary["targets"].items():
            if not m["trained"]:
                parts.append(f"{target} not learnt ({m['why']})")
            elif m.get("tested"):
                parts.append(f"{target} {100 * m['accuracy']:.0f}% (commonest "
                             f"{100 * m['baseline']:.0f}%)")
            else:
                parts.append(f"{target} learnt, not measured")
        return (f"model {self.model} trained on {self.tickets} tickets in {self.seconds:.1f} s; "
                f"held-back accuracy: {', '.join(parts)}")


def retrain(app: App, now: datetime) -> Trained:
    """A new model of the newest triage.max_tickets labelled tickets, stored unless no field
    could be learnt."""
    from ..ml.triage import TARGETS, train  # numpy and scipy: ~0.5 s, when it runs
    settings = app.settings.triage
    start = time.perf_counter()
    with app.engine.connect() as conn:
        found = stored.labelled(conn, TARGETS, settings.max_tickets)
    if len(found) < settings.min_tickets:
        return Trained(None, len(found), time.perf_counter() - start,
                       why=f"{len(found)} labelled tickets (resolved, closed or corrected by "
                           f"an agent), fewer than triage.min_tickets ({settings.min_tickets})")
    model = train([customer_words(t.subject, t.text) for t in found],
                  {f: [t.labels.get(f) for t in found] for f in TARGETS}, settings.min_tickets)
    took = time.perf_counter() - start
    if not model.heads:
        why = "; ".join(f"{t}: {m['why']}" for t, m in model.summary["targets"].items())
        return Trained(None, len(found), took, model.summary, why)
    model.summary["seconds"] = round(took, 1)
    with app.engine.begin() as conn:
        made = stored.save(conn, now, len(found), model.summary, model.to_bytes())
    return Trained(made, len(found), took, model.summary)
