"""The tables that storing a mail touches, as Core tables: inbound, blob_index, blob_data
and nodes, with the desk's MetaData and its UTC type.

`ingest --queue` (intake/queued.py) stores a mail and exits; the ORM and the declarative
classes of all the desk's tables are a fifth of what it would import, and it uses none of
them. So these four are declared here, without the ORM, and models.py maps its classes
onto them (`__table__`); tables.py hands them out with the rest. Every schema change here
needs a migration in migrations/versions, as in models.py.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from .types import UTC

METADATA = MetaData()       # every table of the desk's (models.Base's too)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# One accepted delivery: what we said 250 (or exit 0) to. Never deleted.
T_INBOUND = Table(
    "inbound", METADATA,
    Column("id", Integer, primary_key=True),
    Column("received_at", UTC, nullable=False, default=utcnow),
    Column("source", String(20), nullable=False),             # smtp | pipe | imap
    Column("origin", Text),                                    # file path, peer, mailbox
    Column("mail_from", Text),
    Column("rcpt_to", JSON, nullable=False, default=list),
    Column("digest", String(64), nullable=False, index=True),
    Column("size", Integer, nullable=False),
    # queued -> ticketed | duplicate | refused | quarantined
    Column("state", String(20), nullable=False, default="queued"),
    Column("reason", Text),
    Column("traceback", Text),                                 # a crash on this mail: where
    Column("attempts", Integer, nullable=False, default=0),
    Column("processed_at", UTC),
    Column("message_pk", Integer, ForeignKey("messages.id")),
    Column("queue", String(64)),                    # the intake's queue, if it names one
    Index("ix_inbound_state_id", "state", "id"),
)

# Where a packed blob lives (loose blobs need no row: their path is their name).
T_INDEX = Table(
    "blob_index", METADATA,
    Column("digest", String(64), primary_key=True),
    Column("pack", String(100), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
)

# A blob kept in the database (storage.backend: database), where several nodes without a
# shared disk all read it.
T_BLOB_DATA = Table(
    "blob_data", METADATA,
    Column("digest", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# A daemon (`maildesk serve`) on this desk: its heartbeat, and the mailboxes it leads.
T_NODES = Table(
    "nodes", METADATA,
    Column("name", String(100), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("data_dir", Text, nullable=False),
    Column("storage", String(20), nullable=False),            # storage.backend
    Column("started_at", UTC, nullable=False),
    Column("heartbeat_at", UTC, nullable=False),
    Column("stopped_at", UTC),
    Column("leads", JSON, nullable=False, default=list),
)
