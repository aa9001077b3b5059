"""`maildesk blobs`: the stored raw mail and attachments, checked against their names."""
from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..store.verify import Bad, Verified, total_bytes, verify
from .context import Obj
from .output import EX_FAIL, EX_TEMPFAIL, EX_USAGE, FORMAT, emit_json, emit_table, fail

REPAIR_HINT = ("take the mail again from where it first came (the same mbox or files) with "
               "`maildesk ingest --repair SOURCE` to store its bytes again")


@click.group()
def blobs() -> None:
    """Raw mail and attachments as stored (named by their sha256)."""


PROGRESS = click.option("--progress/--no-progress", default=None,
                        help="Progress bar; default: when standard error is a terminal.")


def _bar(doing: str, progress: bool | None) -> tuple[Progress, bool]:
    """A progress bar in bytes on standard error, and whether it shows."""
    show = sys.stderr.isatty() if progress is None else progress
    return Progress(TextColumn(doing), BarColumn(), DownloadColumn(binary_units=True),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                    console=Console(stderr=True), disable=not show), show


@blobs.command("verify")
@FORMAT
@PROGRESS
@click.pass_obj
def blobs_verify(obj: Obj, fmt: str, progress: bool | None) -> None:
    """Read every blob (database rows, loose files and packs: what this node serves from)
    and check its sha256; list what refers to the bad ones, by ticket. Exit 0 when all that
    is used is intact, 1 when any is damaged or missing (a bad blob that nothing uses is
    listed, and harmless)."""
    app = obj.app(existing=True)
    bar, show = _bar("verifying", progress)
    try:
        with app.engine.connect() as conn, bar:
            task = bar.add_task("verify", total=total_bytes(app.blobs, conn) if show else None)
            result = verify(app.blobs, conn, lambda n: bar.advance(task, n))
    finally:
        app.close()
    if fmt == "json":
        emit_json(result.as_dict())
    else:
        _print(result)
    if result.used:
        sys.exit(EX_FAIL)


def _bad_table(bad: list[Bad]) -> None:
    """Bad blobs, a line per use, by ticket."""
    rows: list[dict[str, Any]] = []
    for b in bad:
        uses: list[dict[str, Any]] = [dict(u) for u in b.uses] \
            or [{"kind": "unreferenced", "id": None, "ticket": None}]
        for u in uses:
            rows.append(u | {"digest": b.digest[:16], "problem": b.problem, "where": b.where})
    rows.sort(key=lambda x: (x["ticket"] is None, len(x["ticket"] or ""), x["ticket"] or "",
                             x["kind"], x["id"] or 0))
    if rows:
        emit_table(rows, ["ticket", "kind", "id", "digest", "problem", "where"])


def _print(r: Verified) -> None:
    _bad_table(r.bad)
    mib = r.bytes / 1024**2
    rows = f"{r.database:,} in the database, " if r.database else ""
    said = (f"verified {r.database + r.loose + r.packed:,} blobs ({rows}{r.loose:,} loose, "
            f"{r.packed:,} packed, {mib:,.1f} MiB) in {r.seconds:.1f} s: ")
    unused = len(r.bad) - len(r.used)
    if unused:
        click.echo(f"{unused:,} bad blob{'s' if unused != 1 else ''} that nothing uses: "
                   "harmless; a new copy of the same bytes replaces one", err=True)
    if not r.used:
        click.echo(said + ("all that is used is intact" if r.bad else "all intact"), err=True)
        return
    tickets = len(r.tickets)
    click.echo(said + f"{r.count('damaged'):,} damaged, {r.count('missing'):,} missing, "
                      f"on {tickets:,} ticket{'s' if tickets != 1 else ''}; {REPAIR_HINT}",
               err=True)
    if any(u["kind"] == "outbox" for b in r.used for u in b.uses):
        click.echo("outgoing mail (kind outbox) is ours: no source holds it; it is never "
                   "sent damaged, and the ticket's text of it is intact", err=True)


@blobs.command("copy-to-database")
@FORMAT
@PROGRESS
@click.pass_obj
def blobs_copy_to_database(obj: Obj, fmt: str, progress: bool | None) -> None:
    """Copy this node's blobs (loose files and packs in <data_dir>/blobs) into the database,
    each checked first, so that every node of the desk reads them (storage.backend:
    database). Safe to run again: what is there already is left. The files stay. Exit 0
    when every blob in use was copied, 1 when a damaged one was not (listed, by ticket)."""
    from ..store.blob_copy import Copied, copy_to_database, to_copy
    from ..store.blobs import FileBlobs
    app = obj.app(existing=True)
    bar, show = _bar("copying", progress)
    result = Copied()
    try:
        if app.settings.blob_dir.is_dir():
            files = FileBlobs(app.settings.blob_dir, app.engine)
            with bar:
                task = bar.add_task("copy", total=to_copy(files, app.engine) if show else None)
                result = copy_to_database(files, app.engine, lambda n: bar.advance(task, n))
    finally:
        app.close()
    if fmt == "json":
        emit_json(result.as_dict())
    else:
        _bad_table(result.bad)
        click.echo(f"copied {result.copied:,} blobs ({result.bytes / 1024**2:,.1f} MiB read) "
                   f"in {result.seconds:.1f} s; {result.present:,} were there already"
                   + (f"; {len(result.bad):,} damaged, not copied" if result.bad else ""),
                   err=True)
        if app.settings.storage.backend == "filesystem" and not result.used:
            click.echo("every node of the desk may now use `storage: {backend: database}`",
                       err=True)
    if result.used:
        click.echo(f"{REPAIR_HINT}, then copy again", err=True)
        sys.exit(EX_FAIL)


@blobs.command("gc")
@click.option("--dry-run", is_flag=True, help="Say what would be freed; change nothing.")
@click.option("--min-age", default="1h", show_default=True, metavar="DURATION",
              help="Spare loose files and packs younger than this (30m, 1h, 2d): a blob is "
                   "stored before the row that names it commits.")
@click.option("--all", "every", is_flag=True,
              help="Compact every pack with garbage in it, not only those less than half "
                   "live.")
@FORMAT
@PROGRESS
@click.pass_obj
def blobs_gc(obj: Obj, dry_run: bool, min_age: str, every: bool, fmt: str,
             progress: bool | None) -> None:
    """Free the blobs nothing refers to any more (loose files, index and database rows) and
    compact packs, while daemons run: a pack a process still appends to is skipped (it
    holds a lock on it), and loose files and packs younger than --min-age are spared. Exit
    0; 75 when another gc is at work on the same files."""
    from ..config.durations import parse_duration
    from ..store.gc import GcBusy, collect, to_scan
    try:
        seconds = parse_duration(min_age)
    except ValueError as e:
        fail(f"--min-age: {e}", EX_USAGE)
    app = obj.app(existing=True)
    bar, show = _bar("collecting", progress)
    try:
        with bar:
            task = bar.add_task("gc", total=to_scan(app.blobs) if show else None)
            result = collect(app.blobs, app.engine, seconds, dry_run, every,
                             lambda n: bar.advance(task, n))
    except GcBusy as e:
        fail(str(e), EX_TEMPFAIL)
    finally:
        app.close()
    if fmt == "json":
        emit_json(result.as_dict())
        return
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {result.loose + result.rows:,} blobs nothing refers to "
               f"({result.loose:,} loose files, {result.rows:,} rows) and "
               f"{result.bytes / 1024**2:,.1f} MiB; "
               f"{result.packs_compacted:,} packs compacted, {result.packs_removed:,} removed "
               f"in {result.seconds:.1f} s", err=True)
    spared = [f"{n:,} {what}" for n, what in (
        (result.live, "packs in use by a running process"),
        (result.young, f"loose files and packs younger than {min_age}")) if n]
    if spared:
        click.echo("left alone: " + ", ".join(spared), err=True)
    if result.damaged:
        click.echo(f"{len(result.damaged):,} packs hold a damaged blob and were not "
                   "compacted: see `maildesk blobs verify`", err=True)


COMMANDS = [blobs]
