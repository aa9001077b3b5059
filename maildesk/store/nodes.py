"""The desk's nodes: each `maildesk serve` on the database, its heartbeat, what it leads.

A node writes its row when it starts and a heartbeat every few seconds; one whose
heartbeat is older than ALIVE is gone (killed, or its host down). `maildesk nodes
status` reads the rows. The rows also let a node refuse to start where running would
lose mail: beside a live node that keeps mail on its own disk, each would accept mail
the other cannot read (issue 18: 182 of 470 mails quarantined as "raw message
unreadable"). Nodes that share one data folder (several daemons on one host) share
its blobs, and may.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from ..config.schema import Settings
from .db import upsert
from .intake_tables import T_NODES

HEARTBEAT = 5.0                     # seconds between heartbeats
ALIVE = timedelta(seconds=30)       # a node silent for longer is gone


@dataclass(frozen=True)
class Node:
    """This process, as the nodes table knows it."""

    name: str
    data_dir: str
    storage: str                    # storage.backend
    host: str
    pid: int

    @classmethod
    def of(cls, settings: Settings) -> Node:
        """This process, under the settings it runs with."""
        return cls(name=settings.node.name, data_dir=str(settings.data_dir.resolve()),
                   storage=settings.storage.backend, host=socket.gethostname(),
                   pid=os.getpid())


class NodeRefused(Exception):
    """Starting this node would lose or misplace mail, or take another's name; the message
    says why and what to do (a setting to change: `serve` exits 78)."""


def _alive(row: Any, now: datetime) -> bool:
    return row["stopped_at"] is None and now - row["heartbeat_at"] < ALIVE


def _pid_running(pid: int) -> bool:
    """Whether a process of this host runs under pid: a zombie (killed, not yet reaped by
    whoever started it) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def refusal(conn: Connection, me: Node, now: datetime, checking: bool = False
            ) -> NodeRefused | None:
    """Why this node must not start beside the live ones, or None. checking: `config
    check`, which the running daemon of the same configuration (name, host, data_dir)
    does not keep from checking before a reload."""
    for row in conn.execute(select(T_NODES)).mappings():
        if not _alive(row, now):
            continue
        if row["name"] == me.name:
            if row["host"] == me.host and (row["pid"] == me.pid or not _pid_running(row["pid"])
                                           or (checking and row["data_dir"] == me.data_dir)):
                continue                # our own earlier run, killed (it is us now), or the
                                        # daemon whose configuration is being checked
            return NodeRefused(
                f"node name {me.name!r} is in use by a running node on {row['host']} (pid "
                f"{row['pid']}, last heartbeat {_ago(row, now)}); give each node its own "
                "node.name (if that node is gone, its name is free once its heartbeat is "
                f"{ALIVE.seconds} s old)")
        shared = (row["host"], row["data_dir"]) == (me.host, me.data_dir)
        if not shared and "filesystem" in (row["storage"], me.storage):
            local = row["name"] if row["storage"] == "filesystem" else me.name
            return NodeRefused(
                f"node {row['name']} on {row['host']} is running, and node {local} keeps "
                "raw mail on its own disk (storage.backend: filesystem): each node would "
                "accept mail the other cannot read; set storage.backend: database on every "
                "node (README: Several nodes), or run this node with that one's data_dir")
    return None


def draining(conn: Connection, now: datetime) -> bool:
    """Whether a daemon of this desk is alive, whose ingest worker drains the inbound
    queue (`ingest --queue` leaves its mail to it): a heartbeat younger than ALIVE, and on
    this host a process still running under its pid (one killed is gone at once)."""
    host = socket.gethostname()
    return any(_alive(row, now) and (row["host"] != host or _pid_running(row["pid"]))
               for row in conn.execute(select(T_NODES)).mappings())


def _ago(row: Any, now: datetime) -> str:
    return f"{(now - row['heartbeat_at']).total_seconds():.0f} s ago"


def register(conn: Connection, me: Node, now: datetime) -> None:
    """This node is starting: its row, fresh; NodeRefused if it must not."""
    problem = refusal(conn, me, now)
    if problem is not None:
        raise problem
    values = {"host": me.host, "pid": me.pid, "data_dir": me.data_dir, "storage": me.storage,
              "started_at": now, "heartbeat_at": now, "stopped_at": None, "leads": []}
    stmt = upsert(conn, T_NODES).values(name=me.name, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))


def beat(conn: Connection, me: Node, leads: list[str], now: datetime) -> None:
    """Still here, leading these mailboxes."""
    conn.execute(update(T_NODES).where(T_NODES.c.name == me.name, T_NODES.c.pid == me.pid)
                 .values(heartbeat_at=now, leads=sorted(leads)))


def stopped(conn: Connection, me: Node, now: datetime) -> None:
    conn.execute(update(T_NODES).where(T_NODES.c.name == me.name, T_NODES.c.pid == me.pid)
                 .values(heartbeat_at=now, stopped_at=now, leads=[]))


def status(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    """Every node this desk has known, running ones first: its state (running, stopped,
    gone: silent past ALIVE without saying it stopped), heartbeat age and what it leads."""
    out = []
    for r in conn.execute(select(T_NODES).order_by(T_NODES.c.name)).mappings():
        state = "running" if _alive(r, now) else "stopped" if r["stopped_at"] else "gone"
        out.append({"name": r["name"], "state": state, "host": r["host"], "pid": r["pid"],
                    "heartbeat_s": round((now - r["heartbeat_at"]).total_seconds(), 1),
                    "leads": list(r["leads"] or []) if state == "running" else [],
                    "storage": r["storage"], "data_dir": r["data_dir"],
                    "started_at": r["started_at"], "stopped_at": r["stopped_at"]})
    return sorted(out, key=lambda n: (n["state"] != "running", n["name"]))


def forget(conn: Connection, name: str, now: datetime) -> str | None:
    """Remove a node that is not running (a host taken out of the desk); why not, or None."""
    row = conn.execute(select(T_NODES).where(T_NODES.c.name == name)).mappings().first()
    if row is None:
        return f"no node {name!r}"
    if _alive(row, now):
        return (f"node {name} is running (heartbeat {_ago(row, now)}); stop it first "
                "(systemctl stop maildesk on its host)")
    conn.execute(T_NODES.delete().where(T_NODES.c.name == name))
    return None
