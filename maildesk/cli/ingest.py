"""`maildesk ingest`: mail from files or a pipe, for imports and MTA delivery.

An MTA pipes one message per run: exit 0 means committed, 75 means "try
again later" (the database or disk is unavailable), so the MTA keeps the
mail. A bad message is not an error: it is kept in the quarantine.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from ..intake import sources
from ..intake.inbound import BATCH, Envelope, ingest as ingest_batch
from ..mail.parse import ParsedMail, parse_batch
from ..pipeline.driver import Summary
from .context import Obj
from .output import EX_NOINPUT, EX_TEMPFAIL, emit_json, fail


def _batches(paths: list[Path], sender: str | None, recipients: tuple[str, ...],
             ) -> Iterator[list[tuple[bytes, Envelope]]]:
    def items() -> Iterator[tuple[bytes, Envelope]]:
        for path in paths:
            for origin, raw in sources.read(path):
                yield raw, Envelope(source="pipe", mail_from=sender, rcpt_to=recipients,
                                    origin=origin)
    it = items()
    while batch := list(itertools.islice(it, BATCH)):
        yield batch


def _parse_ahead(batches: Iterator[list[tuple[bytes, Envelope]]], paths: list[Path]
                 ) -> Iterator[tuple[list[tuple[bytes, Envelope]], list[ParsedMail | str] | None]]:
    """Parse the next batch in a second process while this one stores the current batch.

    Parsing is most of the CPU an import costs, so on two or more cores a
    large import runs nearly twice as fast. A few messages are not worth a
    process: they are parsed inline.
    """
    if (os.cpu_count() or 1) < 2 or sum(sources.count(p) for p in paths if p.exists()) <= BATCH:
        for batch in batches:
            yield batch, None
        return
    # spawn, not fork: a forked child would share the parent's database handles
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead: deque[tuple[list[tuple[bytes, Envelope]], Future[list[ParsedMail | str]]]] = deque()
        for batch in batches:
            ahead.append((batch, pool.submit(parse_batch, [(r, e.mail_from) for r, e in batch])))
            if len(ahead) > 1:
                done, future = ahead.popleft()
                yield done, future.result()
        while ahead:
            done, future = ahead.popleft()
            yield done, future.result()


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
@click.pass_obj
def ingest(obj: Obj, paths: tuple[Path, ...], sender: str | None,
           recipients: tuple[str, ...], fmt: str, progress: bool | None) -> None:
    """Take mail from .eml files, mbox files, maildir folders, or stdin (- or no PATH)."""
    todo = list(paths) or [Path("-")]
    app = obj.app()
    show = sys.stderr.isatty() if progress is None else progress
    total = Summary()
    bar = Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=True, disable=not show)
    try:
        with bar:
            task = bar.add_task("ingest", total=sum(sources.count(p) for p in todo
                                                     if p.exists()) if show else None)
            batches = _batches(todo, sender.lower() if sender is not None else None,
                               tuple(r.lower() for r in recipients))
            for batch, parsed in _parse_ahead(batches, todo):
                total.add(ingest_batch(app, batch, parsed))
                bar.advance(task, len(batch))
    except sources.SourceError as e:
        _report(total, fmt)
        fail(str(e), EX_NOINPUT)
    except (SQLAlchemyError, OSError) as e:
        _report(total, fmt)
        fail(f"temporary failure, nothing of the current batch was kept; retry later: "
             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", EX_TEMPFAIL)
    finally:
        app.close()
    _report(total, fmt)


def _report(total: Summary, fmt: str) -> None:
    if fmt == "json":
        emit_json(total.as_dict() | {"tickets": total.refs})
        return
    d = total.as_dict()
    n = sum(d.values())
    click.echo(f"ingested {n} message{'s' if n != 1 else ''}: {d['new_tickets']} new tickets, "
               f"{d['follow_ups']} follow-ups, {d['duplicates']} duplicates skipped, "
               f"{d['refused']} refused, {d['quarantined']} quarantined", err=True)


COMMANDS = [ingest]
