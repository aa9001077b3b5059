"""`maildesk ingest --queue`: a pipe delivery left to the daemon's ingest worker.

The MTA starts a process for each mail, and most of a full ingest's time goes into
imports: the App, the pipeline, the rules, the parser. Where a daemon of this desk is
alive, its ingest worker drains the inbound queue anyway (pipeline/run.py drain()), so
this stores the mail as the SMTP listener does, with accept(): the raw bytes and an
inbound row in state "queued", one commit, and imports only what that needs (the
settings, the engine, the tables, the blobs). Where no daemon is alive, or the schema is
not this maildesk's (the full ingest upgrades it or says why not), it stores nothing and
says so: the caller ingests the mail itself, so that mail never waits for a daemon that
is not there.

Once the mail is committed, a datagram to the daemon's wake address (a Linux abstract
socket named by the data directory) starts its worker at once, as the SMTP listener
does in process: without it the worker finds the mail when it next looks (every 5 s).
"""
from __future__ import annotations

import hashlib
import socket
from datetime import datetime, timezone

from ..config.schema import Settings
from ..store import migrate, nodes
from ..store.db import sqlite_file
from ..store.handle import BareStore
from .inbound import Envelope, accept


def queue(settings: Settings, raw: bytes, env: Envelope) -> int | None:
    """The mail's inbound id, committed, for a live daemon to make its ticket; None when
    no daemon of this desk is alive, or the schema is not current: nothing was stored.
    Raises what the database or the disk raise (the MTA's 75)."""
    db_file = sqlite_file(settings.database_url)
    if db_file is not None and not db_file.exists():
        return None         # no desk yet: connecting would make an empty database file
    store = BareStore.open(settings)
    try:
        with store.engine.connect() as conn:
            if migrate.revision(conn) != migrate.HEAD or \
                    not nodes.draining(conn, datetime.now(timezone.utc)):
                return None
        inbound = accept(store, [(raw, env)])[0]
    finally:
        store.close()
    _wake(settings)
    return inbound


def wake_address(settings: Settings) -> bytes:
    """The abstract Unix socket a daemon of this data directory listens on, for the word
    that mail is queued. Abstract: no file to leave behind or to fit in a socket path's
    108 bytes. Anyone on the host may send to it; all a datagram does is start a look
    at the queue. One daemon of a data directory has it (the others' bind fails), and
    any one draining is enough."""
    where = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:32]
    return f"\0maildesk-queued-{where}".encode()


def _wake(settings: Settings) -> None:
    """Tell this host's daemon that mail is queued; nobody listening (a daemon on another
    host, its own network namespace) is no error: its worker finds it within 5 s."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            s.sendto(b"queued", wake_address(settings))
        except OSError:
            pass
