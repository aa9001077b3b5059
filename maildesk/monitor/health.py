"""Is the desk well, and its key figures: what GET /healthz, GET /metrics and `maildesk
status` report, read from the database with cheap indexed queries.

A check is a name, whether it passed, and one line saying why. Each runs in a daemon
thread of its own and gets `monitor.timeout` seconds: a database that does not answer
fails its check in time instead of hanging the caller (a monitoring probe waits for
nobody), and the thread left waiting is a daemon's, so it keeps no process from exiting.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, text

from ..config.durations import parse_duration
from ..config.schema import Settings
from ..sla.policy import CLOCKS
from ..store import migrate
from ..store import nodes as desk_nodes
from ..store.models import ImapState
from ..store.tables import T_CLOCKS, T_INBOUND, T_OUTBOX

T = TypeVar("T")
T_IMAP = ImapState.__table__
PENDING = ("queued", "released")     # inbound mail the ingest worker has yet to take


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Failing(Exception):
    """A check that found something wrong; its message says what."""


class _Attempt(threading.Thread):
    """One piece of work in a daemon thread, its result or exception kept."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(name="health-check", daemon=True)
        self.work = work
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.work()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.error = e


def within(seconds: float, work: Mapping[str, Callable[[], T]]
           ) -> dict[str, T | BaseException]:
    """Each work's result, or the exception it raised, or TimeoutError when it has none
    after `seconds` (counted from the start: the works run side by side)."""
    running = {name: _Attempt(w) for name, w in work.items()}
    for attempt in running.values():
        attempt.start()
    deadline = time.monotonic() + seconds
    out: dict[str, T | BaseException] = {}
    for name, attempt in running.items():
        attempt.join(max(0.0, deadline - time.monotonic()))
        out[name] = TimeoutError(f"no answer in {seconds:g} s") if attempt.is_alive() \
            else attempt.error if attempt.error is not None else attempt.value
    return out


def _why(e: BaseException) -> str:
    if isinstance(e, (Failing, TimeoutError)):
        return str(e)
    line = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {line}"[:300]


def figures(conn: Connection, now: datetime) -> dict[str, Any]:
    """The key figures, each from an indexed query (each names the leading columns of an
    index, so a desk with years of sent mail and stopped clocks reads no more for them):
    the inbound queue (its depth and how long its oldest mail has waited), the
    quarantine, the outbox by state, SLA clocks running past their target, and each IMAP
    mailbox's state."""
    pending = T_INBOUND.c.state.in_(PENDING)
    oldest = conn.scalar(select(T_INBOUND.c.received_at).where(pending)
                         .order_by(T_INBOUND.c.id).limit(1))
    outbox = {status: n for status, n in conn.execute(
        select(T_OUTBOX.c.status, func.count())
        .where(T_OUTBOX.c.status.in_(("queued", "sending", "failed")))   # not the sent
        .group_by(T_OUTBOX.c.status))}
    retrying = conn.scalar(select(func.count()).select_from(T_OUTBOX).where(
        T_OUTBOX.c.status == "queued", T_OUTBOX.c.last_error.is_not(None))) or 0
    breached = {kind: n for kind, n in conn.execute(
        select(T_CLOCKS.c.kind, func.count()).where(T_CLOCKS.c.kind.in_(CLOCKS),
                                                    T_CLOCKS.c.stopped_at.is_(None),
                                                    T_CLOCKS.c.breached_at.is_not(None))
        .group_by(T_CLOCKS.c.kind))}
    imap = {r["mailbox"]: {"connected": bool(r["connected"]),
                           "last_success_at": r["last_success_at"]}
            for r in conn.execute(select(T_IMAP.c.mailbox, T_IMAP.c.connected,
                                         T_IMAP.c.last_success_at)).mappings()}
    return {
        "inbound_queued": conn.scalar(select(func.count()).select_from(T_INBOUND)
                                      .where(pending)) or 0,
        "inbound_oldest_s": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
        "quarantined": conn.scalar(select(func.count()).select_from(T_INBOUND)
                                   .where(T_INBOUND.c.state == "quarantined")) or 0,
        "outbox_queued": outbox.get("queued", 0) - retrying,
        "outbox_retrying": retrying,
        "outbox_sending": outbox.get("sending", 0),
        "outbox_failed": outbox.get("failed", 0),
        "sla_breached": breached,
        "imap": imap,
    }


def _database(engine: Engine) -> str:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return "reachable"


def _schema(engine: Engine) -> str:
    problem = migrate.mismatch(migrate.current(engine))
    if problem is not None:
        raise Failing(problem)
    return f"at {migrate.HEAD}"


def _queue(settings: Settings, engine: Engine) -> str:
    limit = parse_duration(settings.monitor.queue_stuck_after)
    with engine.connect() as conn:
        got = figures(conn, datetime.now(timezone.utc))
    waited = got["inbound_oldest_s"]
    if waited > limit:
        raise Failing(f"{got['inbound_queued']} waiting, the oldest for {waited:.0f} s "
                         f"(monitor.queue_stuck_after: {settings.monitor.queue_stuck_after})")
    return f"{got['inbound_queued']} waiting" + (f", the oldest for {waited:.0f} s"
                                                 if got["inbound_queued"] else "")


def _mailbox(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        row = conn.execute(select(T_IMAP).where(T_IMAP.c.mailbox == name)).mappings().first()
    if row is None:
        raise Failing("never connected")
    if not row["connected"]:
        raise Failing(f"not connected: {row['last_error'] or 'no error recorded'}")
    return "connected"


def daemon_workers(engine: Engine) -> str:
    """The workers as a process other than the daemon can know them: a node whose
    heartbeat is fresh runs them (`maildesk nodes status`)."""
    with engine.connect() as conn:
        running = [n for n in desk_nodes.status(conn, datetime.now(timezone.utc))
                   if n["state"] == "running"]
    if not running:
        raise Failing("unknown: no daemon is running on this desk (no node's heartbeat in "
                         f"{desk_nodes.ALIVE.seconds} s; `maildesk nodes status`)")
    return "node " + ", ".join(f"{n['name']} running (heartbeat {n['heartbeat_s']:g} s ago)"
                               for n in running)


def checks(settings: Settings, engine: Engine, workers: Callable[[], str]) -> list[Check]:
    """Every health check, each within monitor.timeout seconds. workers: the worker threads'
    check, as the caller knows them (the daemon its own threads, the CLI the heartbeats);
    it returns a line when all are well, and raises when one is not."""
    todo: dict[str, Callable[[], str]] = {
        "database": lambda: _database(engine),
        "schema": lambda: _schema(engine),
        "workers": workers,
        "inbound_queue": lambda: _queue(settings, engine),
    }
    for box in settings.imap:
        todo[f"imap:{box.name}"] = partial(_mailbox, engine, box.name)
    return [Check(name, not isinstance(got, BaseException),
                  _why(got) if isinstance(got, BaseException) else got)
            for name, got in within(settings.monitor.timeout, todo).items()]


def threads_alive(threads: Mapping[str, bool]) -> str:
    """The workers' check in the daemon: each named thread alive, or which are not."""
    dead = sorted(name for name, alive in threads.items() if not alive)
    if dead:
        raise Failing("not running: " + ", ".join(dead))
    return "running: " + ", ".join(sorted(threads))
