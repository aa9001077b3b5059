"""The root of maildesk's own exceptions.

Every error maildesk raises on purpose derives from MaildeskError, so a
caller (the CLI, the daemon) can tell "maildesk said no, with a reason a
person can act on" from a bug; each keeps its own class for its own handler.
"""
from __future__ import annotations


class MaildeskError(Exception):
    """Something maildesk refuses or cannot do, said in one line."""


def error_line(e: BaseException, limit: int = 300) -> str:
    """An exception in one line for a log or a reason: its class, the first line of what
    it says and the database's error code (SQLSTATE, or SQLite's name for it) when it has
    one. SQLAlchemy's message goes on with the statement, its parameters (which may hold a
    customer's mail) and a link to its docs: eight lines a log reader has no use for."""
    orig = getattr(e, "orig", None)           # the driver's exception inside SQLAlchemy's
    said = str(orig if orig is not None else e).strip()
    first = said.splitlines()[0] if said else ""
    code = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    head = f"{type(e).__name__}: {first}"[:limit] if first else type(e).__name__
    return f"{head} [{code}]" if code else head


def expected(e: BaseException) -> bool:
    """An error of the world (the database, the disk, the network, maildesk refusing) that
    one line says enough about; anything else is a bug, worth its traceback."""
    from sqlalchemy.exc import SQLAlchemyError
    return isinstance(e, (SQLAlchemyError, OSError, MaildeskError))
