"""Turns at SQLite's write lock (maildesk/store/turns.py): the SMTP listener's
transactions go before any other that waits, in this process or another."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from maildesk.store import db
from maildesk.store.db import make_engine

HOLDER = """import sys
from sqlalchemy import text
from maildesk.store.db import make_engine
engine = make_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("INSERT INTO t VALUES ('holder')"))
    print("holding", flush=True)
    sys.stdin.readline()
engine.dispose()
"""


def _write(engine: Engine, who: str, order: list[str], started: threading.Event) -> None:
    started.set()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:who)"), {"who": who})
        order.append(who)


def test_the_urgent_connection_writes_before_those_that_waited_longer(tmp_path: Path) -> None:
    """Another process holds the lock; a worker's transaction waits, then the listener's:
    when the lock is free, the listener's goes first, every time. Without turns, SQLite's
    polling lets whichever looks first win, and the worker's, looking more often having
    waited less long, often does."""
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    worker, listener = make_engine(url), make_engine(url, urgent=True)
    with worker.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    for _ in range(5):
        with subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as holder:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "holding"
            order = _behind(holder, worker, listener)
        assert order == ["listener", "worker"]
    worker.dispose()
    listener.dispose()


def _behind(holder: subprocess.Popen[str], worker: Engine, listener: Engine) -> list[str]:
    """The order in which the worker's and the listener's transactions, begun in that
    order while the holder holds the lock, write once it lets go."""
    assert holder.stdin is not None
    order: list[str] = []
    threads = []
    for who, engine in (("worker", worker), ("listener", listener)):
        started = threading.Event()
        threads.append(threading.Thread(target=_write, args=(engine, who, order, started)))
        threads[-1].start()
        started.wait()
        time.sleep(0.3)         # each is waiting now, the worker since longer
    holder.stdin.write("done\n")
    holder.stdin.flush()
    assert holder.wait(10) == 0
    for t in threads:
        t.join(10)
    return order


def test_a_second_connection_of_the_thread_holding_the_turn_does_not_wait_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread that opens a second transaction while its first is open meets SQLite's
    lock, as it would without turns: an error after the busy timeout, not a hang."""
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    began = time.monotonic()
    with engine.begin() as first:
        first.execute(text("INSERT INTO t VALUES ('first')"))
        with pytest.raises(Exception, match="database is locked"), engine.begin() as second:
            second.execute(text("INSERT INTO t VALUES ('second')"))
    assert time.monotonic() - began < 5
    with engine.connect() as conn:
        assert conn.execute(text("SELECT who FROM t")).scalars().all() == ["first"]
    engine.dispose()


def test_without_a_writable_folder_for_the_turns_sqlite_decides(tmp_path: Path) -> None:
    """Turns need files beside the database; where they cannot be made, transactions
    run as before, on SQLite's lock alone."""
    url = f"sqlite:///{tmp_path / 'desk.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    for name in ("desk.db-turn", "desk.db-urgent"):     # not files: cannot be opened
        (tmp_path / name).unlink()
        (tmp_path / name).mkdir()
    fresh = make_engine(url)
    with fresh.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES ('x')"))
    with fresh.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    fresh.dispose()
    engine.dispose()
