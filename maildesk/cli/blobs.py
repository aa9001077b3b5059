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

from ..store.verify import Verified, total_bytes, verify
from .context import Obj
from .output import EX_FAIL, FORMAT, emit_json, emit_table

REPAIR_HINT = ("take the mail again from where it first came (the same mbox or files) with "
               "`maildesk ingest --repair SOURCE` to store its bytes again")


@click.group()
def blobs() -> None:
    """Raw mail and attachments as stored (named by their sha256)."""


@blobs.command("verify")
@FORMAT
@click.option("--progress/--no-progress", default=None,
              help="Progress bar; default: when standard error is a terminal.")
@click.pass_obj
def blobs_verify(obj: Obj, fmt: str, progress: bool | None) -> None:
    """Read every blob, loose and packed, and check its sha256; list what refers to the bad
    ones, by ticket. Exit 0 when all that is used is intact, 1 when any is damaged or
    missing (a bad blob that nothing uses is listed, and harmless)."""
    app = obj.app(existing=True)
    show = sys.stderr.isatty() if progress is None else progress
    bar = Progress(TextColumn("verifying"), BarColumn(), DownloadColumn(binary_units=True),
                   TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                   console=Console(stderr=True),
                   disable=not show)
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


def _print(r: Verified) -> None:
    rows: list[dict[str, Any]] = []
    for b in r.bad:
        uses: list[dict[str, Any]] = [dict(u) for u in b.uses] \
            or [{"kind": "unreferenced", "id": None, "ticket": None}]
        for u in uses:
            rows.append(u | {"digest": b.digest[:16], "problem": b.problem, "where": b.where})
    rows.sort(key=lambda x: (x["ticket"] is None, len(x["ticket"] or ""), x["ticket"] or "",
                             x["kind"], x["id"] or 0))
    if rows:
        emit_table(rows, ["ticket", "kind", "id", "digest", "problem", "where"])
    mib = r.bytes / 1024**2
    said = (f"verified {r.loose + r.packed:,} blobs ({r.loose:,} loose, {r.packed:,} packed, "
            f"{mib:,.1f} MiB) in {r.seconds:.1f} s: ")
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


COMMANDS = [blobs]
