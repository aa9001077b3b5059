"""`maildesk rules check` and `maildesk rules test`: rules before they go live."""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ..core.fire import MAX_DEPTH, resolves
from ..errors import error_line
from ..mail.authentication import proof
from ..mail.parse import ParsedMail, Unparseable, parse
from ..notify.templates import Templates
from ..rules import load as rules_load
from ..rules.effects import Preview, apply_decision
from ..rules.engine import EVENTS, RuleSet
from ..rules.vocabulary import facts_for
from ..store.blobs import digest_of
from ..store.rows import TicketRow
from ..tickets.ledger import Ledger
from .context import Obj
from .output import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_USAGE,
    TEXT_FORMAT,
    emit_json,
    fail,
    read_input,
)


def _load(obj: Obj, files: tuple[Path, ...]) -> tuple[RuleSet, list[Path]]:
    settings = obj.settings
    paths = list(files) or settings.rules
    if not paths:
        fail("no rules files: name one, or list them under `rules:` in maildesk.yaml", EX_USAGE)
    try:
        ruleset = rules_load.load(paths, settings.desk, Templates(settings.templates_dir).names())
    except rules_load.RulesError as e:
        for line in e.problems:
            click.echo(line, err=True)
        n = len(e.problems)
        fail(f"{n} problem{'s' if n != 1 else ''}; the rules were not loaded", EX_CONFIG)
    return ruleset, paths


@click.group()
def rules() -> None:
    """Check and try the rules."""


@rules.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.pass_obj
def rules_check(obj: Obj, files: tuple[Path, ...]) -> None:
    """Validate rules files (default: those in maildesk.yaml); exit 0 if good, 78 if not
    (as `config check`).

    Every problem is listed as FILE:LINE:COL: what is wrong (what was expected).
    """
    ruleset, _paths = _load(obj, files)
    click.echo(f"{len(ruleset)} rules in {', '.join(ruleset.sources)}: ok")


def _ticket(obj: Obj, ref: str | None, mail_subject: str, sender: str, name: str,
            now: datetime) -> TicketRow:
    desk = obj.settings.desk
    if ref is None:
        return TicketRow(number=0, ref="(new)", subject=mail_subject, requester=sender,
                         requester_name=name or None, cc=[], status="new", type="incident",
                         priority=desk.priority("medium", "medium"), impact="medium",
                         urgency="medium", tags=[], problem=None, category=None,
                         queue=desk.default_queue, assignee=None, linked_to=None,
                         created_at=now, updated_at=now)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        ticket = Ledger(conn, desk.ref_prefix).by_ref(ref.upper())
    app.close()
    if ticket is None:
        fail(f"no ticket {ref}", EX_NOINPUT)
    assert ticket is not None
    return ticket


def _predicted(obj: Obj, mail: ParsedMail) -> dict[str, Any] | None:
    """What the desk's triage model predicts for a new ticket of mail, as its ticket.created
    event would record it. None, and nothing else touched, without a desk (rules are tried
    before one exists), a model or triage.enabled; a database that cannot be read is said
    on stderr and the rules are tried without a prediction."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..app import load_triage
    from ..core.triage import predicted
    from ..store.db import make_engine, sqlite_file
    settings = obj.settings
    db = sqlite_file(settings.database_url)
    if not settings.triage.enabled or (db is not None and not db.exists()):
        return None
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            model = load_triage(conn)
    except SQLAlchemyError as e:
        click.echo(f"maildesk: no triage prediction: {error_line(e)}", err=True)
        return None
    finally:
        engine.dispose()
    return predicted(model, mail.subject, mail.text) if model is not None else None


@rules.command("test")
@click.argument("message", type=click.Path(path_type=Path))
@click.option("--ticket", "ref", metavar="REF", help="Evaluate against this existing ticket.")
@click.option("--event", type=click.Choice(EVENTS),
              help="Event kind; default ticket.created, or customer.replied with --ticket.")
@click.option("--rules", "files", multiple=True, type=click.Path(path_type=Path),
              help="Rules file(s) to try instead of those in maildesk.yaml.")
@TEXT_FORMAT
@click.pass_obj
def rules_test(obj: Obj, message: Path, ref: str | None, event: str | None,
               files: tuple[Path, ...], fmt: str) -> None:
    """Dry run: which rules match MESSAGE (.eml), why the others do not, and the result.

    Nothing is changed and nothing is sent.
    """
    ruleset, _paths = _load(obj, files)
    raw = read_input(message)
    try:
        mail = parse(raw, digest_of(raw))
    except Unparseable as e:
        fail(f"{message}: {e}", EX_DATAERR)
    now = datetime.now(timezone.utc)
    ticket = _ticket(obj, ref, mail.subject, mail.from_addr, mail.from_name, now)
    before = copy.copy(ticket)
    kind = event or ("customer.replied" if ref else "ticket.created")
    desk = obj.settings.desk
    guess = _predicted(obj, mail) if kind == "ticket.created" and ref is None else None
    facts = facts_for(desk, ticket, mail, now,
                      recipients=tuple(dict.fromkeys((*mail.to, *mail.cc))),
                      verified=lambda: bool(proof(
                          raw, mail.from_addr.rpartition("@")[2],
                          trusted_ids=desk.trusted_authserv_ids, via_mta=True,
                          verify_dkim=desk.verify_dkim)),
                      event={"predicted": guess} if guess else None)
    decision = ruleset.evaluate(kind, facts, explain=True)
    depth, stopped = [0], []

    def chain(p: Preview, actor: str, change: dict[str, Any]) -> None:
        """A change fires ticket.updated (and ticket.resolved) and its rules, as fire()
        does, MAX_DEPTH events deep at most."""
        kinds = ["ticket.updated"]
        if resolves(change["field"], change["new"]):
            kinds.append("ticket.resolved")
        for k in kinds:
            if depth[0] + 1 >= MAX_DEPTH:
                stopped.append(f"{k} after {actor}: {MAX_DEPTH} events deep")
                continue
            depth[0] += 1
            apply_decision(ruleset.evaluate(k, facts_for(
                desk, ticket, mail, now, recipients=facts_recipients, event=change,
                actor=actor)), p)
            depth[0] -= 1
    facts_recipients = tuple(dict.fromkeys((*mail.to, *mail.cc)))
    preview = Preview(obj.settings.desk, ticket, chain=chain)
    apply_decision(decision, preview)
    result: dict[str, Any] = {
        "event": kind, "ticket": ticket.ref, "predicted": guess,
        "rules": [{"name": v.rule.name, "at": v.rule.origin, "matched": v.matched,
                   "why_not": v.why_not,
                   "actions": [str(a) for a in v.rule.actions] if v.matched else []}
                  for v in decision.explained],
        "stopped_by": decision.stopped_by,
        "changes": preview.changes,
        "ticket_after": {k: getattr(ticket, k) for k in (
            "queue", "status", "type", "category", "priority", "impact", "urgency", "tags",
            "assignee", "problem")},
        "notifications": preview.notifications, "escalations": preview.escalations,
        "acknowledgement": ("acknowledgement" if preview.acknowledgement is True
                            else preview.acknowledgement),
        "suggest_articles": preview.suggested,
        "dropped": preview.dropped,
        "rules_stopped": stopped,
    }
    if fmt == "json":
        emit_json(result)
        return
    _print(result, before)


def _print(r: dict[str, Any], before: TicketRow) -> None:
    click.echo(f"event {r['event']} on {r['ticket']}")
    if r["predicted"]:
        click.echo("  triage model {}: {}".format(r["predicted"]["model"], ", ".join(
            f"predicted.{k} {v}" for k, v in r["predicted"].items() if k != "model")))
    for v in r["rules"]:
        if v["matched"]:
            click.echo(f"  match    {v['name']}  ({v['at']})")
            for a in v["actions"]:
                click.echo(f"             {a}")
        else:
            click.echo(f"  no       {v['name']}: {v['why_not']} is false")
    if r["stopped_by"]:
        click.echo(f"  stopped by {r['stopped_by']}")
    if r["dropped"]:
        click.echo(f"result: dropped as spam ({r['dropped']}), no ticket")
        return
    click.echo("result:")
    for k, new in r["ticket_after"].items():
        old = getattr(before, k)
        mark = f"{old!r} -> {new!r}" if old != new else f"{new!r}"
        click.echo(f"  {k + ':':<10} {mark}")
    for n in r["notifications"]:
        click.echo(f"  notify   {n['template']} to {', '.join(n['to']) or '(nobody)'}"
                   f"  [{n['rule']}]")
    ack = r["acknowledgement"]
    click.echo(f"  acknowledgement: {ack if ack else 'none'}")
    if r["suggest_articles"] is not None:
        click.echo(f"  suggest_articles: {r['suggest_articles']}")
    for why in r["rules_stopped"]:
        click.echo(f"  rules stopped (a loop?): {why}")


COMMANDS = [rules]
