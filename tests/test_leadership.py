"""A mailbox's leadership (store/leadership.py): one holder at a time, and free again
the moment its holder closes it or is killed, on PostgreSQL and on SQLite."""
from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BACKENDS, PG_OK, PG_URL, wait_for
from sqlalchemy import Engine

from maildesk.store.db import make_engine
from maildesk.store.leadership import Leadership, lock_file_name

HOLDER = """\
import sys, time
from pathlib import Path
from maildesk.store.db import make_engine
from maildesk.store.leadership import Leadership
lead = Leadership(make_engine(sys.argv[1]), Path(sys.argv[2]))
assert lead.take(sys.argv[3])
print("taken", flush=True)
time.sleep(600)
"""


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # advisory locks are per database and the key holds the schema: the shared test
    # database's own schema will do, with a mailbox name of each test's own
    return f"sqlite:///{tmp_path / 'desk.db'}" if request.param == "sqlite" else PG_URL


@pytest.fixture
def engines(url: str) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for e in made:
        e.dispose()


def leadership(url: str, engines: list[Engine], data_dir: Path) -> Leadership:
    engines.append(make_engine(url))
    return Leadership(engines[-1], data_dir)


def taken_within(lead: Leadership, name: str, timeout: float) -> float:
    """Seconds until lead took name (it asks every 50 ms)."""
    t0 = time.monotonic()
    wait_for(lambda: lead.take(name), timeout, f"the leadership of {name}")
    return time.monotonic() - t0


def test_one_holder_at_a_time_until_it_closes(url: str, engines: list[Engine],
                                              tmp_path: Path) -> None:
    name = f"support-{secrets.token_hex(4)}"
    a = leadership(url, engines, tmp_path / "a")
    b = leadership(url, engines, tmp_path / "b")
    assert a.take(name) and a.take(name), "taking again what one holds is a no-op"
    assert not b.take(name) and not b.holds(name)
    assert a.holds(name) and a.held() == [name]
    assert b.take(name + "-other"), "another mailbox is another lock"
    a.release(name)
    assert not a.holds(name) and b.take(name) and not a.take(name)
    b.close()
    assert b.held() == [] and a.take(name)
    a.close()


def test_a_closed_holders_locks_are_free_the_moment_close_returns(
        url: str, engines: list[Engine], tmp_path: Path) -> None:
    """A node that stops hands its mailboxes over at once: the server ends a closed
    connection's session a moment after the client has gone, so close() unlocks first
    (a node asking right after close() found the lock still held, now and then)."""
    names = [f"support-{secrets.token_hex(4)}" for _ in range(3)]
    a = leadership(url, engines, tmp_path / "a")
    b = leadership(url, engines, tmp_path / "b")
    assert all(a.take(n) for n in names)
    # the server's view of a closed connection: its session outlives the client a while
    lingering = a._conn
    try:
        a._drop = lambda: setattr(a, "_conn", None)   # type: ignore[method-assign]
        a.close()
        assert all(b.take(n) for n in names), "free once close() returned"
    finally:
        if lingering is not None:
            lingering.invalidate()
    b.close()


def test_a_killed_holder_loses_it_at_once(url: str, engines: list[Engine],
                                          tmp_path: Path) -> None:
    name = f"support-{secrets.token_hex(4)}"
    with subprocess.Popen([sys.executable, "-c", HOLDER, url, str(tmp_path / "a"), name],
                          stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"taken\n"
            other = leadership(url, engines, tmp_path / "b")
            assert not other.take(name)
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            assert taken_within(other, name, 2.0) < 2.0
            other.close()
        finally:
            holder.kill()


@pytest.mark.skipif(not PG_OK, reason=f"PostgreSQL not reachable at {PG_URL}")
def test_a_broken_lock_connection_is_a_lost_leadership(engines: list[Engine],
                                                       tmp_path: Path) -> None:
    """The server ends the session (a restart, a network cut): holds() says so, and the next
    take() connects again."""
    from sqlalchemy import text
    name = f"support-{secrets.token_hex(4)}"
    a = leadership(PG_URL, engines, tmp_path)
    assert a.take(name)
    assert a._conn is not None
    pid = a._conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with engines[0].connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    assert not a.holds(name) and a.held() == []
    assert a.take(name) and a.holds(name)
    a.close()


def test_sqlite_locks_live_beside_the_database_with_safe_names(tmp_path: Path,
                                                                engines: list[Engine]) -> None:
    """Nodes on one SQLite file meet in the same lock directory whatever their data_dir;
    a mailbox name from the configuration never becomes a path of its own."""
    url = f"sqlite:///{tmp_path / 'db' / 'desk.db'}"
    (tmp_path / "db").mkdir()
    a = leadership(url, engines, tmp_path / "node-a")
    b = leadership(url, engines, tmp_path / "node-b")
    name = "../../etc/passwd"
    assert a.take(name) and not b.take(name)
    assert [p.name for p in (tmp_path / "db" / "locks").iterdir()] == [lock_file_name(name)]
    assert "/" not in lock_file_name(name) and lock_file_name("a/b") != lock_file_name("a_b")
    # the lock file removed under it: another process could lock a new one, so it is lost
    (tmp_path / "db" / "locks" / lock_file_name(name)).unlink()
    assert not a.holds(name)
    a.close()
    b.close()
