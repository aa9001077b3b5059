"""`maildesk backup` and `maildesk restore` (the work is store/backup.py)."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import error_line
from ..store import migrate
from ..store.backup import BackupError, Result
from ..store.db import make_engine, shown_url, sqlite_file
from .blobs import PROGRESS, REPAIR_HINT, _bad_table, _bar
from .context import Obj
from .output import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_DATAERR,
    EX_FAIL,
    EX_NOINPUT,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    FORMAT,
    emit_json,
    emit_table,
    fail,
)

# BackupError.kind -> the exit code
CODES = {"exists": EX_CANTCREAT, "missing": EX_NOINPUT, "incomplete": EX_DATAERR,
         "damaged": EX_DATAERR, "tool": EX_UNAVAILABLE, "config": EX_CONFIG,
         "failed": EX_TEMPFAIL}


def _named(ctx: click.Context, param: click.Parameter, dest: str) -> Path:
    """DEST as a Path; "" names no folder (as a Path it would be the current one)."""
    if not dest:
        raise click.BadParameter("'' names no folder: name a new one for the backup")
    return Path(dest)


@click.command("backup")
@click.argument("dest", type=click.Path(), callback=_named)
@FORMAT
@PROGRESS
@click.pass_obj
def backup(obj: Obj, dest: Path, fmt: str, progress: bool | None) -> None:
    """Copy the desk into DEST, a new (or empty) folder, while it runs: the database as one
    snapshot (SQLite's backup API; pg_dump on PostgreSQL), then the blobs that snapshot
    refers to, each checked against its sha256 in the copy, then MANIFEST.json (a folder
    without it is an incomplete backup). The schema is copied as it is, old or new. Exit
    0 when every blob in use was copied intact, 1 when not (listed, by ticket)."""
    from ..store.backup import backup as run
    settings = obj.settings
    db = sqlite_file(settings.database_url)
    if db is not None and not db.exists():
        fail(f"no desk at {db.parent} ({db.name} missing): nothing to back up; pass --config",
             EX_NOINPUT)
    engine = make_engine(settings.database_url)

    def work(started: Callable[[int], None], advanced: Callable[[int], None]) -> Result:
        if migrate.current(engine) is None:
            fail(f"no desk in database {shown_url(engine.url)} (no maildesk schema): nothing "
                 "to back up; pass --config", EX_NOINPUT)
        return run(settings, engine, dest, started, advanced)
    try:
        result = _run("backing up", progress, work, dest,
                      f"no backup made ({dest} has no manifest)", shown_url(engine.url))
    finally:
        engine.dispose()
    _report(result, fmt, f"backed up into {dest}")


@click.command("restore")
@click.argument("src", type=click.Path(path_type=Path))
@FORMAT
@PROGRESS
@click.pass_obj
def restore(obj: Obj, src: Path, fmt: str, progress: bool | None) -> None:
    """Make the desk the configuration names (data_dir, database.url) from the backup in
    SRC: only where no desk is yet (no database file or maildesk tables, no blobs; move
    one aside first). Checks the manifest and the backup's database against it (65 when
    damaged or another), copies the blobs and the database (pg_restore on PostgreSQL),
    reads every blob back, and brings an older schema to this maildesk's (unless
    database.auto_upgrade is false: then `maildesk db upgrade`). A restore that fails
    leaves nothing behind. Exit 0 when every blob in use is intact, 1 when not (listed,
    by ticket)."""
    from ..store.backup import restore as run
    settings = obj.settings
    result = _run("restoring", progress, lambda started, advanced: run(
        settings, src, started, advanced), settings.data_dir, "the restore did not finish",
        shown_url(settings.database_url))
    said = f"restored {src} into {settings.data_dir}"
    if result.upgraded:
        said += f"; schema upgraded from {result.upgraded} to {migrate.HEAD}"
    elif result.manifest.get("schema") != migrate.HEAD:
        said += f"; schema at {result.manifest.get('schema')}: run `maildesk db upgrade`"
    _report(result, fmt, said)


def _run(label: str, progress: bool | None,
         work: Callable[[Callable[[int], None], Callable[[int], None]], Result],
         where: Path, unfinished: str, url: str) -> Result:
    """WORK under a progress bar (told the total, then advanced); its failures as one line
    and the exit code of their kind (an OSError without a file names WHERE). A driver error
    means the database is down or refused us; anything else is a bug, left to exit 70."""
    from sqlalchemy.exc import DBAPIError
    bar, _ = _bar(label, progress)
    try:
        with bar:
            task = bar.add_task(label, total=None)
            return work(lambda n: bar.update(task, total=n), lambda n: bar.advance(task, n))
    except BackupError as e:
        fail(str(e), CODES[e.kind])
    except OSError as e:
        fail(f"{e.filename or where}: {e.strerror or e}; {unfinished}", EX_CANTCREAT)
    except DBAPIError as e:
        fail(f"database {url}: {error_line(e)}", EX_TEMPFAIL)


def _report(result: Result, fmt: str, said: str) -> None:
    """The manifest (json) or a table of its counts, the blobs found bad, one line; exit 1
    when a blob in use is damaged or missing."""
    m = result.manifest
    if fmt == "json":
        emit_json(result.as_dict())
    else:
        _bad_table(result.checked.bad)
        counts: dict[str, Any] = m["counts"]
        emit_table([{"item": k, "value": f"{v:,}"} for k, v in counts.items()]
                   + [{"item": k, "value": m[k]} for k in ("schema", "backend", "storage",
                                                            "created_at", "maildesk")],
                   ["item", "value"])
        click.echo(f"{said}: {counts['tickets']:,} tickets, {counts['blobs']:,} blobs "
                   f"({counts['bytes'] / 1024**2:,.1f} MiB), every one read back"
                   + ("" if not result.checked.used else
                      f"; {len(result.checked.used):,} damaged or missing"), err=True)
    if result.checked.used:
        click.echo("blobs in use are damaged or missing in this copy: run `maildesk blobs "
                   "verify` on the desk it was made from; intact there, copy it again; "
                   f"damaged there too, {REPAIR_HINT}", err=True)
        sys.exit(EX_FAIL)


COMMANDS = [backup, restore]
