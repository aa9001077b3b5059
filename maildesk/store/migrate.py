"""Schema migrations with alembic, run from code (`maildesk db upgrade`, or at start).

Importing alembic costs more than the rest of a pipe delivery's start-up, so
the common case (schema already current) is one query against HEAD, and
alembic is loaded only when there is something to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:   # only for the annotations: alembic is imported when it is needed
    from alembic.config import Config

SCRIPTS = Path(__file__).parent / "migrations"
HEAD = "0018"  # the newest revision in migrations/versions; a test checks they agree
MIGRATING = 0x6D64_6D69_6772  # the advisory lock one migrating node holds ("mdmigr")


def _config(connection: object | None = None) -> Config:
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["connection"] = connection
    return cfg


def script_head() -> str | None:
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The schema's revision; None for a database without one (empty). A database that
    cannot be reached raises, rather than passing for an empty one."""
    with engine.connect() as conn:
        return revision(conn)


def revision(conn: Connection) -> str | None:
    """The schema's revision as conn sees it (a backup's snapshot, too); None when empty."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def mismatch(at: str | None) -> str | None:
    """What is wrong with a schema at revision `at` for this maildesk, in words that say
    what to do; None when it is current."""
    if at == HEAD:
        return None
    if at is None:
        return f"no maildesk schema (this maildesk needs {HEAD}); run `maildesk db upgrade`"
    if at > HEAD:       # revisions are numbered 0001, 0002, ...
        return (f"schema is at {at}, newer than this maildesk ({HEAD}); run the maildesk "
                "that made it")
    return f"schema is at {at}, older than this maildesk ({HEAD}); run `maildesk db upgrade`"


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to HEAD; returns (before, after)."""
    before = current(engine)
    if before != HEAD:
        from alembic import command
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # several nodes started at once (after an upgrade, or on a new desk) would
                # each create the tables: one migrates, the others wait, then find it done
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATING})
                before = revision(conn)
            if before != HEAD:
                command.upgrade(_config(conn), "head")
    return before, HEAD
