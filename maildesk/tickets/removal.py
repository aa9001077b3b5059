"""Rows removed for good: outgoing mail with its delivery attempts (a requester's
erasure). Every function works in the caller's transaction and returns the digests of
the blobs its rows named, for store/shred.py to drop."""
from __future__ import annotations

from sqlalchemy import Connection, delete, select

from ..store.tables import T_ATTEMPTS, T_OUTBOX


def delete_outbox(conn: Connection, ids: list[int]) -> set[str]:
    """Outgoing mail and its delivery attempts; their digests."""
    o = T_OUTBOX.c
    digests = set(conn.execute(select(o.digest).where(o.id.in_(ids))).scalars())
    conn.execute(delete(T_ATTEMPTS).where(T_ATTEMPTS.c.outbox_id.in_(ids)))
    conn.execute(delete(T_OUTBOX).where(o.id.in_(ids)))
    return digests
