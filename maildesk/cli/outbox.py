"""`maildesk outbox`: the mail we send, seen, sent and retried from the command line.

`outbox send` delivers through the daemon's own path (notify/delivery.py): it
claims each mail in the database as the daemon does, so a cron job and a
running daemon, or two cron jobs, never send one mail twice. Exit codes:
0 when every due mail went or was deferred (a transient failure: it is
retried later), 69 (EX_UNAVAILABLE) when any failed for good, 75 when the
database cannot be reached.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from ..errors import error_line
from ..notify.delivery import STATUSES, count_due, deliver_due, make_transport
from ..store.blobs import REMOVED_BY, BlobError, BlobRemoved
from ..store.models import DeliveryAttempt, OutboxMail, Ticket
from .context import Obj
from .lists import header_lines
from .output import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    FORMAT,
    ROW_ID,
    TEXT_FORMAT,
    emit_json,
    emit_table,
    fail,
    safe,
    stdout_console,
    write_raw,
)

# due mail from which `outbox send` shows a progress bar on a terminal
MANY = 20


@click.group()
def outbox() -> None:
    """Mail we send: queued (deferred when a try failed and it waits for the next),
    sending, sent, failed."""


def _row(m: OutboxMail, ref: str | None) -> dict[str, Any]:
    return {"id": m.id, "ticket": ref, "template": m.template, "to": list(m.to),
            "subject": m.subject, "status": m.status,
            "deferred": m.status == "queued" and m.last_error is not None,
            "attempts": m.attempts, "message_id": m.message_id, "last_error": m.last_error,
            "envelope_from": m.envelope_from,
            "next_attempt_at": m.next_attempt_at.isoformat()
            if m.status in ("queued", "sending") else None,
            "created_at": m.created_at.isoformat(),
            "sent_at": m.sent_at.isoformat() if m.sent_at else None}


def _with_ref() -> Any:
    return select(OutboxMail, Ticket.ref).outerjoin(Ticket, Ticket.id == OutboxMail.ticket_id)


@outbox.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@FORMAT
@click.pass_obj
def outbox_list(obj: Obj, status: str | None, fmt: str) -> None:
    """Outgoing mail, newest last."""
    app = obj.app(existing=True)
    with app.sessions() as session:
        q = _with_ref().order_by(OutboxMail.id)
        if status:
            q = q.where(OutboxMail.status == status)
        rows = [_row(m, ref) for m, ref in session.execute(q)]
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["id", "ticket", "template", "to", "status", "attempts", "subject"],
                   empty=f"no {status} mail in the outbox" if status else "the outbox is empty")


@outbox.command("show")
@click.argument("id_", metavar="ID", type=ROW_ID)
@click.option("--raw", is_flag=True, help="Write the mail's bytes, as they are sent, to stdout.")
@TEXT_FORMAT
@click.pass_obj
def outbox_show(obj: Obj, id_: int, raw: bool, fmt: str) -> None:
    """One outgoing mail: recipients, status, attempts, last error, next attempt, its
    headers and each delivery attempt (or --raw bytes)."""
    app = obj.app(existing=True)
    with app.sessions() as session:
        found = session.execute(_with_ref().where(OutboxMail.id == id_)).first()
        if found is None:
            fail(f"no outbox mail with id {id_} (see `maildesk outbox list`)", EX_NOINPUT)
        m, ref = found
        info = _row(m, ref)
        info["raw"] = app.blobs.locate(m.digest, session.connection())
        info["delivery_attempts"] = [
            {"at": a.at.isoformat(), "result": a.result, "detail": a.detail}
            for a in session.scalars(select(DeliveryAttempt).where(
                DeliveryAttempt.outbox_id == id_).order_by(DeliveryAttempt.id))]
        try:
            data: bytes | None = app.blobs.get(m.digest, session.connection())
        except BlobRemoved as e:
            if raw:
                fail(f"outbox mail {id_}: {e}; its row is all there is", EX_NOINPUT)
            data = None
        except BlobError as e:
            if raw:
                fail(str(e), EX_DATAERR)
            data, info["raw"] = None, f"unreadable: {e}"
    if raw:
        assert data is not None
        write_raw(data)
        return
    info["headers"] = header_lines(data) if data is not None else []
    if fmt == "json":
        emit_json(info)
        return
    _print(info)


def _print(info: dict[str, Any]) -> None:
    console = stdout_console(soft_wrap=True, highlight=False)
    status = info["status"] + (" (deferred)" if info["deferred"] else "")
    for k, v in (("id", info["id"]), ("ticket", info["ticket"]),
                 ("template", info["template"]), ("status", status),
                 ("to", ", ".join(info["to"])), ("envelope from", info["envelope_from"]),
                 ("subject", info["subject"]), ("message id", info["message_id"]),
                 ("attempts", info["attempts"]), ("last error", info["last_error"]),
                 ("next attempt", info["next_attempt_at"]), ("created at", info["created_at"]),
                 ("sent at", info["sent_at"]), ("raw", info["raw"])):
        console.print(Text(f"{k}: ", style="bold") + safe("-" if v is None else str(v)))
    if info["raw"] == "removed":
        console.print(f"[original removed: {REMOVED_BY}]", markup=False, style="dim")
    console.print()
    for k, v in info["headers"]:
        console.print(safe(f"{k}: {v}"), markup=False)
    if info["delivery_attempts"]:
        console.print()
        emit_table(info["delivery_attempts"], ["at", "result", "detail"])


@outbox.command("send")
@click.option("--progress/--no-progress", default=None,
              help=f"Progress bar on standard error; default: when it is a terminal and "
                   f"{MANY} or more mails are due.")
@FORMAT
@click.pass_obj
def outbox_send(obj: Obj, progress: bool | None, fmt: str) -> None:
    """Deliver the mail that is due now, without the daemon (from cron, or after fixing
    the relay). Exit 0 when all went or were deferred (retried later), 69 when any
    failed for good, 75 when the database cannot be reached."""
    app = obj.app(existing=True)
    try:
        due = count_due(app, datetime.now(timezone.utc))
        show = (sys.stderr.isatty() and due >= MANY) if progress is None else progress
        bar = Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=True, console=Console(stderr=True),
                       disable=not show)
        with bar:
            task = bar.add_task("send", total=due)
            result = deliver_due(app, make_transport(app), progress=lambda: bar.advance(task))
    except SQLAlchemyError as e:
        fail(f"the database cannot be reached, try again later: {error_line(e)}",
             EX_TEMPFAIL)
    if fmt == "json":
        emit_json(result.as_dict())
    else:
        click.echo(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result.as_dict().items()
                             if v or k != "lost_claim"))
    if result.failed:
        fail(f"{result.failed} mail(s) could not be delivered, for good: see `maildesk "
             f"outbox list --status failed`, then `maildesk outbox retry ID...`",
             EX_UNAVAILABLE)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@click.pass_obj
def outbox_retry(obj: Obj, ids: tuple[int, ...]) -> None:
    """Make failed or deferred mail due now (after fixing the relay, a full disk, an
    address): the daemon, `outbox send` or `jobs run` delivers it. A failed mail gets
    all its attempts again. Mail sent, or being sent, is left alone."""
    app = obj.app(existing=True)
    now = datetime.now(timezone.utc)
    with app.engine.begin() as conn:
        t = OutboxMail.__table__
        deferred = conn.execute(update(t).where(t.c.id.in_(ids), t.c.status == "queued")
                                .values(next_attempt_at=now)).rowcount
        failed = conn.execute(update(t).where(t.c.id.in_(ids), t.c.status == "failed")
                              .values(status="queued", attempts=0, next_attempt_at=now)).rowcount
    done, asked = failed + deferred, len(set(ids))
    click.echo(f"due now: {done} of {asked}")
    if done != asked:
        fail(f"{asked - done} of the ids are not failed or queued outbox mail (sent, being "
             f"sent, or no such id; see `maildesk outbox list`)", EX_NOINPUT)


COMMANDS = [outbox]
