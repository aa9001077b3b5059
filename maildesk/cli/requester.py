"""`maildesk requester`: a person's data, exported or erased, and the audit of both
(README "Retention and privacy")."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .blobs import PROGRESS, _bar
from .context import Obj
from .output import EX_CANTCREAT, EX_USAGE, FORMAT, emit_json, emit_table, fail, refuse_existing

if TYPE_CHECKING:
    from ..app import App


@click.group()
def requester() -> None:
    """A requester's personal data: export it, erase it, and the audit of both."""


def _address(address: str) -> str:
    from ..tickets.privacy import is_pseudonym
    a = address.strip().lower()
    if "@" not in a or any(c.isspace() or c in "<>\"," for c in a):
        fail(f"{address!r} is not a mail address (give it bare: name@example.org)", EX_USAGE)
    if is_pseudonym(a):
        fail(f"{address} is already an erased requester's pseudonym", EX_USAGE)
    return a


def _requester(obj: Obj, address: str) -> tuple[App, str]:
    """The desk, and address as a requester's: never an agent's or the desk's own, also
    with a sub-address (export and erase alike; privacy.not_a_requester())."""
    from ..tickets.privacy import not_a_requester
    a = _address(address)
    app = obj.app(existing=True)
    why = not_a_requester(app.settings, a)
    if why:
        fail(why, EX_USAGE)
    return app, a


@requester.command("export")
@click.argument("address")
@click.option("--out", "out", type=click.Path(path_type=Path),
              help="The zip to write; default: requester-export-<time>.zip here.")
@click.option("--internal", is_flag=True,
              help="Agents' internal notes too (read them first: they may name others).")
@click.option("--force", is_flag=True, help="Replace the --out file if it is there.")
@FORMAT
@click.pass_obj
def requester_export(obj: Obj, address: str, out: Path | None, internal: bool,
                     force: bool, fmt: str) -> None:
    """A zip of what the desk holds about ADDRESS: each ticket they requested or take part
    in, with its fields, events and messages (JSON), the raw mails (.eml) and
    attachments; index.json lists it all. Recorded in the audit."""
    from ..tickets.export import export
    from ..tickets.privacy import identify, record
    app, a = _requester(obj, address)
    now = datetime.now(timezone.utc)
    path = out or Path(f"requester-export-{now:%Y%m%dT%H%M%S}.zip")
    refuse_existing(path, force)
    with app.engine.begin() as conn:
        person = identify(conn, app.settings, a, app.secrets[0])
        try:
            done = export(conn, app.blobs, person, path, now, app.settings.desk.ref_prefix,
                          internal, force)
        except FileExistsError:
            fail(f"{path}: a file appeared there meanwhile; give another --out, or --force "
                 "to replace it", EX_CANTCREAT)
        except OSError as e:
            fail(f"{path}: cannot write the export: {e.strerror or e}", EX_CANTCREAT)
        record(conn, now, "export", person.token, done.counts(), detail=str(path.resolve()))
    said = {"address": a, "zip": str(path), **done.counts(), "left_out": done.unreadable}
    if fmt == "json":
        emit_json(said)
        return
    emit_table([{"what": k, "count": v} for k, v in done.counts().items()], ["what", "count"])
    for line in done.unreadable:
        click.echo(f"left out: {line}", err=True)
    click.echo(f"wrote {path}" + ("" if done.tickets else f": no ticket concerns {a}"),
               err=True)


@requester.command("erase")
@click.argument("address")
@click.option("--yes", is_flag=True, help="Erase; without it, show what would be erased.")
@FORMAT
@PROGRESS
@click.pass_obj
def requester_erase(obj: Obj, address: str, yes: bool, fmt: str,
                    progress: bool | None) -> None:
    """Erase ADDRESS from the desk: their mail's words, names and raw bytes, their address
    everywhere (a pseudonym in its place, so their tickets still count in reports),
    mail owed to them and mail from them still held. Without --yes: what it would do,
    and exit 64. Safe while the daemon runs (one transaction). Recorded in the audit by
    the pseudonym, not the address."""
    from ..store.search import compact
    from ..store.shred import holding
    from ..store.verify import total_bytes
    from ..tickets.erase import erase
    from ..tickets.privacy import identify
    from ..tickets.removal import forget_files
    app, a = _requester(obj, address)
    now = datetime.now(timezone.utc)
    bar, show = _bar("reading every stored mail", progress)
    with app.engine.connect() as conn, bar:
        person = identify(conn, app.settings, a, app.secrets[0])
        task = bar.add_task("scan", total=total_bytes(app.blobs, conn) if show else None)
        found = holding(app.blobs, conn, [person.address], person.own_names(),
                        lambda n: bar.advance(task, n))
    with app.engine.connect() as conn:
        tx = conn.begin()
        try:
            result = erase(conn, app.blobs, person, now, found, dry_run=not yes)
        except BaseException:
            tx.rollback()
            raise
        if yes:
            tx.commit()
        else:
            tx.rollback()
    if yes:
        assert result.dropped is not None
        result.dropped.wipe()
        with app.engine.begin() as conn:
            compact(conn)
        if app.engine.dialect.name == "sqlite":     # the WAL held the erased pages
            raw = app.engine.raw_connection()      # outside a transaction (BEGIN IMMEDIATE)
            try:
                raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
        forget_files(app.settings, result.delivered)
    said = result.as_dict()
    if fmt == "json":
        emit_json({"address": a, "erased": yes, **said})
    else:
        _show(said)
    if not yes:
        click.echo(f"nothing erased: that is what `maildesk requester erase {a} --yes` "
                   "would do", err=True)
        sys.exit(EX_USAGE)
    click.echo(f"erased {a}: now {person.token}", err=True)


def _show(said: dict[str, Any]) -> None:
    rows = [{"what": k, "count": v} for k, v in said.items()
            if k not in ("rows_rewritten", "pseudonym")]
    rows += [{"what": f"rows rewritten: {k}", "count": v}
             for k, v in said["rows_rewritten"].items()]
    emit_table(rows, ["what", "count"])


@requester.command("audit")
@click.option("--address", help="Only the lines about this address (by its pseudonym).")
@click.option("--limit", type=click.IntRange(0), default=50, show_default=True,
              help="The newest N lines (0: all).")
@FORMAT
@click.pass_obj
def requester_audit(obj: Obj, address: str | None, limit: int, fmt: str) -> None:
    """The privacy audit, newest first: each export, erasure and retention run, who ran it
    (the OS user), when, and how much it touched. A person is named by their pseudonym,
    which the reply-token keys the desk holds now make of --address."""
    from ..tickets.privacy import audit_rows, pseudonym
    app = obj.app(existing=True)
    subjects = None if address is None else \
        [pseudonym(k, _address(address)) for k in app.secrets]
    with app.engine.connect() as conn:
        rows = audit_rows(conn, subjects, limit or None)
    if fmt == "json":
        emit_json(rows)
        return
    emit_table([r | {"at": r["at"][:16].replace("T", " "),
                     "counts": ", ".join(f"{k} {v}" for k, v in r["counts"].items()
                                         if isinstance(v, int) and v)}
                for r in rows], ["id", "at", "actor", "action", "subject", "counts", "detail"],
               empty="nothing exported, erased or purged yet")


COMMANDS = [requester]
