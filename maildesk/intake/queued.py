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
"""
from __future__ import annotations

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
        return accept(store, [(raw, env)])[0]
    finally:
        store.close()
