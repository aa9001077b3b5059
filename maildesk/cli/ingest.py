"""`maildesk ingest`: mail from files or a pipe, for imports and MTA delivery.

An MTA pipes one message per run: exit 0 means committed, 75 means "try
again later" (the database or disk is unavailable), so the MTA keeps the
mail. A bad message is not an error: it is kept in the quarantine.

The MTA starts a process per mail, so this module imports what the pipe needs when it
runs (and `ingest --help` none of it), and nothing else: the progress bar (rich) only on
a terminal, the repair and the end of a history import only when asked for. With
--queue, where a daemon of the desk is alive, only what storing a mail needs
(intake/queued.py): the daemon's ingest worker makes the ticket.
"""
from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from ..errors import error_line
from .context import Obj
from .output import EX_FAIL, EX_NOINPUT, EX_TEMPFAIL, EX_USAGE, emit_json, fail

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..app import App
    from ..intake.ahead import Parsed
    from ..intake.inbound import Envelope
    from ..intake.repair import Mended
    from ..pipeline.driver import Summary


def _batches(paths: list[Path], sender: str | None, recipients: tuple[str, ...],
             batch: int, stdin: BinaryIO | None) -> Iterator[list[tuple[bytes, Envelope]]]:
    from ..intake import sources
    from ..intake.inbound import Envelope

    def items() -> Iterator[tuple[bytes, Envelope]]:
        for path in paths:
            for origin, raw in sources.read(path, stdin):
                yield raw, Envelope(source="pipe", mail_from=sender, rcpt_to=recipients,
                                    origin=origin)
    it = items()
    while taken := list(itertools.islice(it, batch)):
        yield taken


def _progress(show: bool) -> Progress | None:
    """The progress bar on standard error; None where it would not show."""
    if not show:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    return Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True, console=Console(stderr=True))


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sender", "-f", metavar="ADDR",
              help="Envelope sender, as the MTA knows it (Postfix: ${sender}).")
@click.option("--recipient", "-r", "recipients", multiple=True, metavar="ADDR",
              help="Envelope recipient (Postfix: ${original_recipient}); repeatable.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Summary for people or for scripts.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar; default: when standard error is a terminal.")
@click.option("--repair", is_flag=True,
              help="For mail the desk already has: check its stored copy (and its "
                   "attachments') and store it again where damaged or missing; other mail "
                   "is ingested as usual. The source must hold the same bytes (the same "
                   "mbox or files the mail first came from).")
@click.option("--history", is_flag=True,
              help="Old mail (an archive, a mailbox moved from another desk): each mail "
                   "happens at its own date, nothing is sent to anyone, and SLA deadlines "
                   "that have passed count as breached then, without escalation.")
@click.option("--queue", is_flag=True,
              help="For an MTA's pipe: where a daemon (`maildesk serve`) of this desk is "
                   "running, store the mail on stdin in the inbound queue and exit once it "
                   "is committed; the daemon's ingest worker makes the ticket. Where none "
                   "is running, the mail is ingested at once, as without --queue.")
@click.pass_obj
def ingest(obj: Obj, paths: tuple[Path, ...], sender: str | None,
           recipients: tuple[str, ...], fmt: str, progress: bool | None, repair: bool,
           history: bool, queue: bool) -> None:
    """Take mail from .eml files, mbox files, maildir folders, or stdin (- or no PATH)."""
    from ..intake.inbound import CONTROL
    for flag, addr in [("--sender", sender or ""), *(("--recipient", r) for r in recipients)]:
        if CONTROL.search(addr):     # as the SMTP listener's 501: never stored, never shown
            fail(f"{flag} {addr.encode('unicode_escape').decode()[:100]}: a control "
                 "character in an envelope address; give the address as the MTA has it",
                 EX_USAGE)
    mail_from = sender.lower() if sender is not None else None
    rcpt_to = tuple(r.lower() for r in recipients)
    stdin = None
    if queue:
        if any(str(p) != "-" for p in paths) or repair or history:
            fail("--queue takes one mail on standard input, without --repair or --history",
                 EX_USAGE)
        raw = sys.stdin.buffer.read()
        if _queued(obj, raw, mail_from, rcpt_to, fmt):
            return
        stdin = io.BytesIO(raw)          # no daemon to leave it to: ingested here
    from sqlalchemy.exc import SQLAlchemyError

    from ..intake import ahead, sources
    from ..intake.repair import Mended
    from ..pipeline.driver import Summary
    from ..pipeline.run import BATCH
    from ..pipeline.run import ingest as ingest_batch
    todo = list(paths) or [Path("-")]
    try:
        for path in todo:
            sources.check(path)
    except sources.SourceError as e:
        fail(f"{e}; nothing was ingested", EX_NOINPUT)
    app = obj.app(unwritable=EX_TEMPFAIL)
    log_format = app.settings.log.format
    total, mended, breached = Summary(), Mended(), None
    mails = sum(sources.count(p) for p in todo)
    bar = _progress(sys.stderr.isatty() if progress is None else progress)
    try:
        with bar if bar is not None else nullcontext():
            task = bar.add_task("ingest", total=mails) if bar is not None else None
            batches = _batches(todo, mail_from, rcpt_to, BATCH, stdin)
            for batch, parsed in ahead.parse_ahead(
                    batches, lambda b: [(r, e.mail_from) for r, e in b],
                    ahead.worthwhile(mails, BATCH), app.settings.limits):
                if repair:
                    done, batch, parsed = _mend(app, batch, parsed)
                    mended.add(done)
                total.add(ingest_batch(app, batch, parsed, history=history))
                if bar is not None and task is not None:
                    bar.advance(task, len(batch))
        if history:     # all of it is in: only now is a deadline known to be missed
            from ..scheduler.jobs import finish_history
            breached = finish_history(app, datetime.now(timezone.utc))
    except sources.SourceError as e:
        _report(total, fmt, log_format, mended if repair else None)
        fail(str(e), EX_NOINPUT)
    except (SQLAlchemyError, OSError) as e:
        _report(total, fmt, log_format, mended if repair else None)
        fail(f"temporary failure, nothing of the current batch was kept; retry later: "
             f"{error_line(e)}", EX_TEMPFAIL)
    finally:
        app.close()
    _report(total, fmt, log_format, mended if repair else None, breached)
    if repair and mended.unmended:
        sys.exit(EX_FAIL)


def _queued(obj: Obj, raw: bytes, mail_from: str | None, rcpt_to: tuple[str, ...],
            fmt: str) -> bool:
    """Whether the mail is stored (committed) for the live daemon's ingest worker, and
    said; False, nothing stored, where no daemon is alive or the schema is not current.
    Exit 75 when the database or the disk fails: nothing was committed, and the MTA keeps
    the mail."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..intake.inbound import Envelope
    from ..intake.queued import queue
    if not raw.strip():
        fail("no message on standard input", EX_NOINPUT)
    settings = obj.settings
    try:
        inbound = queue(settings, raw, Envelope(source="pipe", mail_from=mail_from,
                                                rcpt_to=rcpt_to, origin="stdin"))
    except (SQLAlchemyError, OSError) as e:
        fail(f"temporary failure, the mail was not kept; retry later: {error_line(e)}",
             EX_TEMPFAIL)
    if inbound is None:
        return False
    if fmt == "json":       # as the summary of an import: JSON on stdout, and no more
        emit_json({"queued": 1, "inbound_id": inbound})
        return True
    said = f"queued inbound {inbound} for the daemon's ingest worker"
    if settings.log.format == "json":
        from ..logs import json_line
        click.echo(json_line("maildesk.ingest", said, {"queued": 1, "inbound_id": inbound}),
                   err=True)
    else:
        click.echo(said, err=True)
    return True


def _mend(app: App, batch: list[tuple[bytes, Envelope]], parsed: Parsed | None
          ) -> tuple[Mended, list[tuple[bytes, Envelope]], Parsed | None]:
    """Mail the desk has is mended, not ingested again; the rest goes on, with its parse."""
    from ..intake.repair import mend
    done, new = mend(app, batch)
    keep = {id(item) for item in new}
    if parsed is not None:
        parsed = [p for item, p in zip(batch, parsed) if id(item) in keep]
    return done, new, parsed


def _report(total: Summary, fmt: str, log_format: str, mended: Mended | None = None,
            breached: int | None = None) -> None:
    """breached: SLA clocks of an import of old mail whose deadline had passed (None: no
    such import, or it did not finish). The summary for people is a line of the JSON log
    where the log is JSON: stderr then holds JSON objects only."""
    if fmt == "json":
        emit_json(total.as_dict() | {"tickets": total.refs}
                  | ({"repaired": mended.repaired, "already_stored": mended.known,
                      "not_mended": mended.unmended} if mended else {})
                  | ({"sla_breached": breached} if breached is not None else {}))
        return
    d = total.as_dict()
    n = sum(d.values())
    if mended is not None:
        click.echo(f"repaired {mended.repaired} stored cop{'y' if mended.repaired == 1 else 'ies'}"
                   f" of {mended.known} mail{'s' if mended.known != 1 else ''} the desk has",
                   err=True)
        for line in mended.unmended:
            click.echo(f"maildesk: not mended: {line}", err=True)
    new = d["new_tickets"]
    said = (f"ingested {n} message{'s' if n != 1 else ''}: {new} new ticket"
            f"{'s' if new != 1 else ''}, "
            f"{d['follow_ups']} follow-ups, {d['duplicates']} duplicates skipped, "
            f"{d['refused']} refused, {d['dropped']} dropped as spam, "
            f"{d['classified']} automatic (no ticket), "
            f"{d['quarantined']} quarantined")
    if log_format == "json":
        from ..logs import json_line
        click.echo(json_line("maildesk.ingest", said, {**d, "tickets": total.refs}), err=True)
    else:
        click.echo(said, err=True)
    if breached is not None:
        click.echo(f"old mail, nothing sent; {breached} SLA clock"
                   f"{'s' if breached != 1 else ''} past {'their' if breached != 1 else 'its'}"
                   f" deadline, breached then without escalation", err=True)


COMMANDS = [ingest]
