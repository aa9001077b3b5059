"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL so that a COMMIT is on disk
before we answer 250, and every transaction starts with BEGIN IMMEDIATE: the
SMTP thread and the ingest worker both write, and a deferred transaction that
reads first and writes later fails at once with SQLITE_BUSY instead of
waiting for the lock.
"""
from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import URL, Connection, Engine, Table, create_engine, event, make_url

from ..errors import error_line
from .turns import Turns

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert
    from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 30_000
CONFLICT_ATTEMPTS = 8
T = TypeVar("T")
log = logging.getLogger("maildesk.store")


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database, or one in memory."""
    u = make_url(url)
    path = u.database
    if u.get_backend_name() != "sqlite" or not path or path == ":memory:" \
            or path.startswith("file:"):
        return None
    return Path(path)


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 before SQLite does: SQLite gives its -wal and -shm
    files the database's mode whatever the umask, so this one choice keeps all three from
    other local users. A file already there is kept as it is (the data directory, 0700,
    guards it), and one that cannot be made here is left to SQLite to report."""
    path = sqlite_file(url)
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass


def shown_url(url: str | URL) -> str:
    """A database URL for a log line or a terminal: its password hidden, in the user part
    and in the query (libpq takes ?password= too)."""
    u = make_url(url)
    query = {k: "***" if k.lower() in ("password", "sslpassword") else v
             for k, v in u.query.items()}
    return u.set(query=query).render_as_string(hide_password=True)


class _Taking(sqlite3.Connection):
    """A SQLite connection that waits for its turn before each transaction (turns.py) and
    gives it back when the transaction has ended: after the COMMIT, its fsync included,
    or the ROLLBACK, so that the next in turn finds SQLite's lock free."""

    db: Path
    urgent: bool
    turns: Turns | None = None

    def begin(self) -> None:
        if self.turns is None:
            self.turns = Turns(self.db, self.urgent, BUSY_TIMEOUT_MS / 1000)
        self.turns.take()
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.turns.give()
            raise

    def commit(self) -> None:
        self._then(super().commit, Turns.give)

    def rollback(self) -> None:
        self._then(super().rollback, Turns.give)

    def close(self) -> None:
        self._then(super().close, Turns.close)

    def _then(self, end: Callable[[], None], after: Callable[[Turns], None]) -> None:
        """End the transaction (or the connection), then give the turn back (or close the
        turns' files)."""
        try:
            end()
        finally:
            if self.turns is not None:
                after(self.turns)


def make_engine(url: str, urgent: bool = False, **kwargs: Any) -> Engine:
    """urgent (SQLite): the SMTP listener's engine, on whose commits a sender waits for
    its 250: its transactions go before any other waiting one (turns.py), and its commits
    never copy the WAL back into the database file (wal_autocheckpoint=0), which takes a
    commit from milliseconds to most of a second: the worker's commits, on the App's
    engine, checkpoint as usual."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        connect_args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_MS / 1000,
                                        "check_same_thread": False}
        path = sqlite_file(url)
        if path is not None:
            connect_args["factory"] = type("Taking", (_Taking,), {"db": path, "urgent": urgent})
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if urgent:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            dbapi = conn.connection.dbapi_connection
            if isinstance(dbapi, _Taking):
                dbapi.begin()
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The ORM's sessions on engine, the ORM imported here: a process that only stores
    mail (`ingest --queue`) or reads through Core (`tickets list`) never loads it."""
    from sqlalchemy.orm import sessionmaker
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def upsert(conn: Connection, table: Table) -> Insert:
    """INSERT for conn's dialect, which has ON CONFLICT: two nodes inserting the same key (a
    first counter, a mailbox's state, a blob) both succeed. Only that dialect is imported
    (the other costs a pipe delivery 40 ms); both build the same statement, so it is typed
    as PostgreSQL's."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(table)


# SQLSTATEs of a transaction that lost to a concurrent one, on PostgreSQL: a serialization
# failure, a deadlock, a lock not available, or a unique key another transaction committed
# first (two nodes storing the same mail). Running the work again resolves each: the
# other side has committed, and the retry sees what it wrote.
CONFLICTS = frozenset({"40001", "40P01", "55P03", "23505"})


def is_conflict(e: BaseException) -> bool:
    """Whether a database error is a lost race with another transaction (another node),
    which a retry resolves, rather than a fault of the work or of the database."""
    orig = getattr(e, "orig", None)
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in CONFLICTS


def retried(work: Callable[[], T], what: str, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """work() (one transaction), run again after a short random wait while it loses a race
    with another node (is_conflict): the whole transaction rolled back, so running it
    again is safe, and it then sees what the winner committed (a mail stored by the other
    node is a duplicate, a ticket it changed is read as changed). Any other error, or the
    last conflict, is raised as it was."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception as e:
            if attempt == attempts or not is_conflict(e):
                raise
            log.info("%s lost a race with another transaction (%s); retrying, attempt %d of "
                     "%d", what, error_line(e, 200), attempt + 1,
                     attempts)
            time.sleep(random.uniform(0.02, 0.2) * attempt)
    raise AssertionError("unreachable")
