"""Looking at the desk: tickets, the outbox, the quarantine."""
from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from sqlalchemy import select

from ..store.models import Inbound, OutboxMail, Ticket
from ..tickets.views import STATUSES, list_tickets, show_ticket
from .context import Obj
from .output import EX_FAIL, FORMAT, emit_json, emit_table, fail


@click.group()
def tickets() -> None:
    """List and show tickets."""


@tickets.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only tickets in this status.")
@click.option("--limit", type=int, help="At most this many.")
@FORMAT
@click.pass_obj
def tickets_list(obj: Obj, status: str | None, limit: int | None, fmt: str) -> None:
    """Tickets, oldest first."""
    app = obj.app()
    with app.sessions() as session:
        rows = list_tickets(session, status, limit)
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["ref", "status", "priority", "queue", "requester", "subject",
                          "message_count", "updated_at"], empty="no tickets")


@tickets.command("show")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json for scripts.")
@click.pass_obj
def tickets_show(obj: Obj, ref: str, fmt: str) -> None:
    """One ticket with its messages and events."""
    app = obj.app()
    with app.sessions() as session:
        data = show_ticket(session, ref)
    if data is None:
        fail(f"no ticket {ref}", EX_FAIL)
    assert data is not None
    if fmt == "json":
        emit_json(data)
    else:
        _print_ticket(data)


def _print_ticket(t: dict[str, Any]) -> None:
    console = Console(highlight=False)
    console.print(f"[bold]{t['ref']}[/bold]  {t['subject']}", markup=True)
    for k in ("status", "type", "priority", "category", "queue", "assignee", "requester",
              "cc", "linked_to", "created_at", "updated_at"):
        v = t[k]
        console.print(f"  {k + ':':<12}{', '.join(v) if isinstance(v, list) else v or '-'}",
                      markup=False)
    for m in t["messages"]:
        console.rule(f"{m['direction']} {m['date']} {m['from']}", align="left")
        console.print(m["text"].rstrip(), markup=False)
        for a in m["attachments"]:
            console.print(f"  [attachment] {a['filename']} "
                          f"({a['content_type']}, {a['size']} bytes)",
                          markup=False)
    console.rule("events", align="left")
    for e in t["events"]:
        console.print(f"  {e['at']}  {e['kind']:<26} {e['actor'] or ''}", markup=False)


@click.group()
def outbox() -> None:
    """Mail we send: queued, sent, failed."""


@outbox.command("list")
@click.option("--status", type=click.Choice(["queued", "sent", "failed"]))
@FORMAT
@click.pass_obj
def outbox_list(obj: Obj, status: str | None, fmt: str) -> None:
    """Outgoing mail, newest last."""
    app = obj.app()
    with app.sessions() as session:
        q = select(OutboxMail, Ticket.ref).outerjoin(Ticket, Ticket.id == OutboxMail.ticket_id) \
            .order_by(OutboxMail.id)
        if status:
            q = q.where(OutboxMail.status == status)
        rows = [{"id": m.id, "ticket": ref, "template": m.template, "to": list(m.to),
                 "subject": m.subject, "status": m.status, "attempts": m.attempts,
                 "message_id": m.message_id, "last_error": m.last_error,
                 "created_at": m.created_at.isoformat(),
                 "sent_at": m.sent_at.isoformat() if m.sent_at else None}
                for m, ref in session.execute(q)]
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["id", "ticket", "template", "to", "status", "attempts", "subject"],
                   empty="the outbox is empty")


@click.group()
def quarantine() -> None:
    """Mail kept aside because it could not be processed."""


@quarantine.command("list")
@FORMAT
@click.pass_obj
def quarantine_list(obj: Obj, fmt: str) -> None:
    """Quarantined mail with the reason and where its raw bytes are."""
    app = obj.app()
    with app.sessions() as session:
        rows = [{"id": r.id, "received_at": r.received_at.isoformat(), "source": r.source,
                 "origin": r.origin, "size": r.size, "reason": r.reason,
                 "raw": app.blobs.locate(r.digest, session.connection())}
                for r in session.scalars(select(Inbound).where(Inbound.state == "quarantined")
                                         .order_by(Inbound.id))]
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["id", "received_at", "source", "origin", "reason"],
                   empty="the quarantine is empty")


@quarantine.command("retry")
@click.argument("ids", nargs=-1, type=int, required=True)
@click.pass_obj
def quarantine_retry(obj: Obj, ids: tuple[int, ...]) -> None:
    """Put quarantined mail back in the queue (after a fix); the daemon takes it."""
    app = obj.app()
    with app.sessions.begin() as session:
        rows = list(session.scalars(select(Inbound).where(Inbound.id.in_(ids),
                                                          Inbound.state == "quarantined")))
        for r in rows:
            r.state, r.reason = "queued", None
    click.echo(f"re-queued {len(rows)} of {len(ids)}")
    if len(rows) != len(ids):
        raise SystemExit(EX_FAIL)


COMMANDS = [tickets, outbox, quarantine]
