"""Schema migrations with alembic, run from code (`maildesk db upgrade`, or at start).

Importing alembic costs more than the rest of a pipe delivery's start-up, so
the common case (schema already current) is one query against HEAD, and
alembic is loaded only when there is something to do.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:   # only for the annotations: alembic is imported when it is needed
    from alembic.config import Config

SCRIPTS = Path(__file__).parent / "migrations"
HEAD = "0012"  # the newest revision in migrations/versions; a test checks they agree


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
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None  # no alembic_version table yet: an empty database


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the schema to HEAD; returns (before, after)."""
    before = current(engine)
    if before != HEAD:
        from alembic import command
        with engine.begin() as conn:
            command.upgrade(_config(conn), "head")
    return before, HEAD
