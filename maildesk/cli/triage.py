"""`maildesk triage`: the model that predicts a new ticket's category, queue and type,
trained on this desk's settled tickets, shown with what it was measured to do, and tried
on a mail."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ..store import triage as stored
from .context import Obj
from .output import EX_NOINPUT, TEXT_FORMAT, emit_json, emit_table, fail, minute, read_mail, safe


@click.group()
def triage() -> None:
    """Triage on arrival: a model of this desk's settled tickets predicts a new ticket's
    fields; rules decide whether to apply them (predicted.category, predicted.confidence)."""


@triage.command("train")
@TEXT_FORMAT
@click.pass_obj
def triage_train(obj: Obj, fmt: str) -> None:
    """Train a model now, as the job triage_retrain does, and put it in use (every node's
    next batch). Exit 66 when too few tickets are labelled: resolved, closed, or a field
    an agent corrected (triage.min_tickets)."""
    from ..scheduler.triage import retrain
    app = obj.app(existing=True)
    done = retrain(app, datetime.now(timezone.utc))
    if done.model is None:
        fail(f"no model trained: {done.why}", EX_NOINPUT)
    if fmt == "json":
        emit_json({"model": done.model, "tickets": done.tickets,
                   "seconds": round(done.seconds, 1), **done.summary})
        return
    click.echo(f"model {done.model}: trained on {done.tickets} tickets in "
               f"{done.seconds:.1f} s, now in use")
    _targets(done.summary)


@triage.command("show")
@TEXT_FORMAT
@click.pass_obj
def triage_show(obj: Obj, fmt: str) -> None:
    """The model in use: when it was trained, on how many tickets, and per field how often
    it was right on the newest 20 % of them when trained on the rest, against always
    guessing the commonest label; and above confidence 0.5, 0.8 and 0.9, the share of mail
    and the accuracy there (what a rule's threshold keeps). Then the models kept before it.
    Exit 66 when none was trained yet."""
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        kept = stored.history(conn)
    if not kept:
        fail("no triage model yet: `maildesk triage train` makes one", EX_NOINPUT)
    rows = [{"model": m.id, "trained_at": m.trained_at.isoformat(), "tickets": m.tickets,
             **m.summary} for m in kept]
    if fmt == "json":
        emit_json(rows[0] | {"before": rows[1:]})
        return
    m = kept[0]
    off = "" if app.settings.triage.enabled else " (triage.enabled is false: not used)"
    click.echo(f"model {m.id}{off}: trained {minute(rows[0]['trained_at'])} UTC on {m.tickets} "
               f"tickets, {m.summary.get('terms', 0)} words")
    _targets(m.summary)
    if len(kept) > 1:
        click.echo("\nkept before it:")
        emit_table([{"model": r["model"], "trained": minute(r["trained_at"]),
                     "tickets": r["tickets"], "category": _percent(
                         r.get("targets", {}).get("category", {}).get("accuracy"))}
                    for r in rows[1:]], ["model", "trained", "tickets", "category"])


def _targets(summary: dict[str, Any]) -> None:
    """Per field: what training measured, as a table, what the columns mean, and the labels
    each field learnt."""
    held = summary.get("held_back")
    if held:
        click.echo(f"measured first: trained on the older {summary['tickets'] - held} tickets, "
                   f"tested on the newest {held} (held back); then trained on all")
    rows = []
    for target, m in summary.get("targets", {}).items():
        at = {a["confidence"]: a for a in m.get("at", [])}
        rows.append({"field": target, "labelled": m["labelled"], "labels": m["classes"],
                     "tested": m.get("tested"),
                     "accuracy": _percent(m.get("accuracy")) if m["trained"] else m["why"],
                     "commonest": _percent(m.get("baseline")),
                     **{f"above {c}": f"{_percent(a['share'])} of mail, "
                                      f"{_percent(a['accuracy'])} right" if a["share"]
                        else "no mail" for c, a in at.items()}})
    levels = sorted({k for r in rows for k in r if k.startswith("above ")})
    emit_table(rows, ["field", "labelled", "labels", "tested", "accuracy", "commonest",
                      *levels])
    click.echo("commonest: always guessing the commonest label; above C: the share of mail "
               "with confidence over C, and right how often there")
    for target, m in summary.get("targets", {}).items():
        if m.get("labels"):
            click.echo(f"{target} labels: {safe(', '.join(m['labels']))}")


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{100 * share:.0f}%"


@triage.command("predict")
@click.argument("message", type=click.Path(path_type=Path))
@TEXT_FORMAT
@click.pass_obj
def triage_predict(obj: Obj, message: Path, fmt: str) -> None:
    """What the model in use predicts for MESSAGE (.eml), as the facts a rule on a new
    ticket of it would see (predicted.category, predicted.confidence, predicted.queue,
    ...; JSON: those keys and the model's id, or null). No prediction when the model
    knows no word of it (exit 0). Exit 66 without a model or when the file cannot be
    read, 65 when it is no mail."""
    from ..app import load_triage
    from ..core.triage import as_facts, predicted
    mail = read_mail(message)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        model = load_triage(conn)
    if model is None:
        fail("no triage model to predict with: `maildesk triage train` makes one",
             EX_NOINPUT)
    guess = predicted(model, mail.subject, mail.text)
    facts = as_facts(guess) if guess is not None else None
    if fmt == "json":
        emit_json(facts if facts is None else {"model": model.id, **facts})
        return
    if facts is None:
        click.echo(f"model {model.id} knows no word of this mail: no prediction")
        return
    click.echo(f"model {model.id} predicts for {safe(mail.subject)!r}:")
    for fact, value in facts.items():
        click.echo(f"  {fact + ':':<27} {safe(str(value))}")


COMMANDS = [triage]
