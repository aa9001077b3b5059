"""Opening a desk's database: the part of App.open a command that only reads needs.

`tickets list` opens the engine and checks the schema here, and nothing else: the App
(app.py) also reads the templates, rules, SLA calendars and knowledge base, and its
imports (the ORM, pydantic's templates, jinja2) cost an operator's listing more than
its queries. The errors are the App's own, so a command says the same line and exits
with the same code either way.
"""
from __future__ import annotations

from sqlalchemy import Engine

from .config.schema import Settings
from .errors import MaildeskError, error_line
from .store import migrate
from .store.db import make_engine, shown_url, sqlite_file


class StartupError(MaildeskError):
    """Something that keeps maildesk from starting; one line.

    temporary: it may go away by itself (a database that is down), so a
    caller like an MTA should try again later rather than give up.
    """

    def __init__(self, message: str, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class DataDirError(StartupError):
    """The data directory cannot be made or written (a read-only /etc under the unit's
    ProtectSystem=strict, another user's directory). Not temporary for the daemon, but
    an MTA must keep the mail it pipes, so `ingest` says 75 and the others 73."""


class NoDesk(StartupError):
    """No desk where the settings point: no database file, or a database without the
    schema. Only a command that reads says so; one that writes makes the desk."""


def open_engine(settings: Settings, upgrading: bool, existing: bool) -> Engine:
    """The engine of the desk's database, its schema checked (and brought to HEAD when
    `upgrading`); existing: only a desk that is there, else NoDesk, making nothing (a
    command that reads, run in the wrong directory, must not leave an empty desk)."""
    db_file = sqlite_file(settings.database_url)
    if existing and db_file is not None and not db_file.exists():
        raise NoDesk(f"no desk at {db_file.parent} ({db_file.name} missing); run "
                     "`maildesk serve` to make one, or pass --config")
    engine = make_engine(settings.database_url)
    try:
        at = read_schema(engine, upgrading and not existing)
        if existing and at is None:
            raise NoDesk(f"no desk in {named(engine)} (no maildesk schema); run "
                         "`maildesk serve` to make one, or pass --config")
        if existing and upgrading and at != migrate.HEAD:
            at = read_schema(engine, True)
        refuse_schema(engine, at)
    except StartupError:
        engine.dispose()
        raise
    return engine


def read_schema(engine: Engine, upgrade: bool) -> str | None:
    """The schema's revision, after bringing it to HEAD if `upgrade`; a temporary
    StartupError when the database cannot be reached or migrated."""
    try:
        return migrate.upgrade(engine)[1] if upgrade else migrate.current(engine)
    except Exception as e:  # a driver error: say which database and why
        raise StartupError(
            f"{named(engine)}: cannot {'apply migrations' if upgrade else 'read the schema'}: "
            f"{error_line(e)}", temporary=True) from e


def refuse_schema(engine: Engine, at: str | None) -> None:
    """StartupError unless the schema is this maildesk's: on any other, every query fails,
    one SQL traceback after another."""
    problem = migrate.mismatch(at)
    if problem:
        raise StartupError(f"{named(engine)}: {problem} (database.auto_upgrade is false)")


def named(engine: Engine) -> str:
    """The database as an error line names it (its password hidden)."""
    return f"database {shown_url(engine.url)}"
