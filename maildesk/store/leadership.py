"""Which node drains a mailbox: a lock per name that dies with the process holding it.

Several daemons may share one database (issue 18). Each IMAP mailbox must be
drained by one of them at a time, and another must take over within seconds
when that one dies, kill -9 included. So the lock is one the operating
system or the database server frees when its holder goes, never a row with
a timeout:

- PostgreSQL: a session advisory lock, pg_try_advisory_lock(key), all of a
  process's on one dedicated connection (key: a hash of the schema and the
  name). The server frees them when that connection closes, which a killed
  process's does at once. A connection that broke has lost its locks:
  holds() asks it (SELECT 1) and, if it is gone, reports every lock lost;
  the next take() connects again.
- SQLite (every node on one host, since they share one file): flock() on a
  file per name, in a `locks` directory beside the database file, so that
  every process using that database finds the same files. The kernel frees
  a flock when its holder dies.

Thread-safe: each IMAP poller is a thread and they share one Leadership.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .db import sqlite_file

PREFIX = "maildesk:mailbox:"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def advisory_key(name: str, schema: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock: the same on every node and every
    version of Python (hash() is salted per process). Advisory locks are per database, so
    the desk's schema is part of it: two desks in one database are two desks."""
    digest = hashlib.sha256(f"{PREFIX}{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_file_name(name: str) -> str:
    """A file name for a mailbox's lock. The name comes from the configuration: only its
    plain characters are kept (readable in `ls`), and a hash of the whole name keeps two
    names that differ only in the rest apart."""
    readable = _UNSAFE.sub("_", name)[:40]
    return f"mailbox-{readable}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"


class Leadership:
    """This process's leaderships: take(name) without waiting, holds(name), release(name)."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        db_file = sqlite_file(engine.url.render_as_string(hide_password=False))
        # beside the database file: nodes with data_dirs of their own still meet there
        self.lock_dir = (db_file.parent if db_file is not None else data_dir) / "locks"
        self._lock = threading.Lock()
        self._conn: Connection | None = None     # PostgreSQL: the one that holds the locks
        self._held: dict[str, int] = {}          # name -> advisory key, or flock'ed fd

    def take(self, name: str) -> bool:
        """True if this process now leads `name` (or already did); False if another does.
        Raises SQLAlchemyError when the database cannot be asked (everything held on the
        old connection is then lost)."""
        with self._lock:
            if name in self._held:
                return True
            if self.postgres:
                key = advisory_key(name, str(self._ask("SELECT current_schema()")))
                got = bool(self._ask("SELECT pg_try_advisory_lock(:k)", k=key))
                if got:
                    self._held[name] = key
                return got
            return self._flock(name)

    def holds(self, name: str) -> bool:
        """Still the leader of `name`: on PostgreSQL, only if the lock's connection still
        answers; a broken one has lost its locks on the server."""
        with self._lock:
            if name not in self._held:
                return False
            if self.postgres:
                try:
                    self._ask("SELECT 1")
                except SQLAlchemyError:
                    return False
                return True
            return self._file_still_ours(name)

    def release(self, name: str) -> None:
        with self._lock:
            held = self._held.pop(name, None)
            if held is None:
                return
            if not self.postgres:
                os.close(held)     # closing the only descriptor drops the flock
                return
            try:
                self._ask("SELECT pg_advisory_unlock(:k)", k=held)
            except SQLAlchemyError:
                pass               # the connection is gone, and its locks with it

    def held(self) -> list[str]:
        """The names this process leads, as far as it knows (`maildesk nodes status`)."""
        with self._lock:
            return sorted(self._held)

    def close(self) -> None:
        """Give up everything. On PostgreSQL the locks are unlocked first: the server ends
        a closed connection's session (and frees its locks) a moment after the client has
        gone, so another node asking at once would still find them held. The connection
        is then closed, not returned to the pool: a pooled one would keep its session."""
        with self._lock:
            if not self.postgres:
                for fd in self._held.values():
                    os.close(fd)
            elif self._held and self._conn is not None:
                try:
                    self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
                except SQLAlchemyError:
                    pass       # the connection is gone, and its locks with it
            self._held.clear()
            self._drop()

    # -- PostgreSQL --------------------------------------------------------------------

    def _ask(self, sql: str, **params: int) -> object:
        """One statement on the lock connection, connecting first if there is none. If it
        fails, the connection (and every lock on it) is given up, and the error raised."""
        try:
            if self._conn is None:
                self._conn = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT")
            return self._conn.execute(text(sql), params).scalar()
        except SQLAlchemyError:
            self._held.clear()
            self._drop()
            raise

    def _drop(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.invalidate()   # really closed: the server frees the session's locks
            self._conn.close()
        except SQLAlchemyError:
            pass
        self._conn = None

    # -- SQLite: flock -----------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.lock_dir / lock_file_name(name)

    def _flock(self, name: str) -> bool:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._held[name] = fd
        return True

    def _file_still_ours(self, name: str) -> bool:
        """The locked file is still the one at its path: if it was removed (someone cleaned
        the directory), another process would lock a new file there and lead as well."""
        try:
            here = os.stat(self._path(name))
        except FileNotFoundError:
            return False
        mine = os.fstat(self._held[name])
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
