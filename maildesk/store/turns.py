"""Whose turn it is to write to a SQLite file: the SMTP listener's first.

SQLite has one writer at a time, and every transaction here takes the write
lock at once (BEGIN IMMEDIATE, store/db.py). A connection that finds the lock
taken polls it, sleeping longer each time, up to 100 ms between looks, and
whoever looks at the right moment wins. Under load the SMTP listener's commit
lost again and again to the ingest and outbox workers', which start their next
transaction the moment they end one, and a sender waited more than a second
for its 250 (issue 22).

So the connections of a desk's processes take turns on two lock files beside
the database, before SQLite's lock: `<db>-turn`, held for a transaction, and
`<db>-urgent`, held (shared) by an urgent connection while it waits for the
turn. Others look for their turn only at moments when no urgent one waits: the
listener writes next, after the one transaction under way. flock() locks belong
to an open file, not to a process, so this orders threads and processes alike.
Where the files cannot be opened (a database in a folder this user cannot
write), nothing waits here and SQLite's lock decides, as before.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

# between looks at a lock that is taken: short, since a turn is a transaction's length
FIRST_LOOK, LONGEST_LOOK = 0.0002, 0.002


class Turns:
    """One connection's way to its turns at one database file."""

    # per database file, the thread of this process that holds a turn: a second
    # connection of that thread must not wait for the first (it never gives it back)
    _held: dict[Path, int] = {}
    _held_lock = threading.Lock()

    def __init__(self, db: Path, urgent: bool, patience: float) -> None:
        """patience: seconds to wait for a turn before leaving it to SQLite's lock (and its
        own busy timeout), rather than wait for ever on a holder that is stuck."""
        self.db, self.urgent, self.patience = db.resolve(), urgent, patience
        self._fds: tuple[int, int] | None = None
        self._holding = False

    def _open(self) -> tuple[int, int] | None:
        if self._fds is None:
            try:
                turn = os.open(f"{self.db}-turn", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                return None
            try:
                urgent = os.open(f"{self.db}-urgent", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                 0o600)
            except OSError:
                os.close(turn)
                return None
            self._fds = (turn, urgent)
        return self._fds

    def take(self) -> None:
        """Wait for this connection's turn (see the module's docstring)."""
        me = threading.get_ident()
        with self._held_lock:
            if self._held.get(self.db) == me:
                return
        fds = self._open()
        if fds is None:
            return
        turn, urgent = fds
        deadline = time.monotonic() + self.patience
        if self.urgent:
            fcntl.flock(urgent, fcntl.LOCK_SH)      # others hold it only for a look
            try:
                got = _lock(turn, deadline)
            finally:
                fcntl.flock(urgent, fcntl.LOCK_UN)
        else:       # the turn, each time looked at only while no urgent one waits
            got = _lock(turn, deadline, unless=urgent)
        if got:
            self._holding = True
            with self._held_lock:
                self._held[self.db] = me

    def give(self) -> None:
        """The transaction ended (committed, rolled back, or its connection closed)."""
        if not self._holding:
            return
        self._holding = False
        with self._held_lock:
            self._held.pop(self.db, None)
        assert self._fds is not None
        fcntl.flock(self._fds[0], fcntl.LOCK_UN)

    def close(self) -> None:
        self.give()
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None


def _lock(fd: int, deadline: float, unless: int | None = None) -> bool:
    """An exclusive flock on fd, looked at ever less often until the deadline; with
    unless, only at moments when nobody holds a lock on that file."""
    pause = FIRST_LOOK
    while True:
        if unless is None or _free(unless):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_LOOK)


def _free(fd: int) -> bool:
    """Whether nobody holds a lock on fd's file (an urgent connection waiting)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True
