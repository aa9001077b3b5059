"""Rows removed for good: the one place that deletes a ticket and what hangs off it, and
outgoing mail with its delivery attempts (retention's purge and a requester's erasure).

Every function works in the caller's transaction and returns the digests of the blobs
its rows named; which of them may go is for unused() to say, and store/shred.py drops
them. An inbound row is never deleted: it is the record that a mail was accepted; its
ticket's message gone, it names no message.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, select, text, update

from ..config.schema import Settings
from ..store.references import referrers
from ..store.search import unindex_messages
from ..store.tables import (
    T_ATTACH,
    T_ATTEMPTS,
    T_CLOCKS,
    T_EVENTS,
    T_INBOUND,
    T_KB,
    T_MESSAGES,
    T_OUTBOX,
    T_PROPOSALS,
    T_REFS,
    T_SURVEYS,
    T_TICKETS,
)

# what the daemon writes tickets through: held still while rows are removed
LOCKED = ("inbound", "tickets", "messages", "outbox")


def lock(conn: Connection) -> None:
    """Hold off the daemon's writers until the transaction ends (PostgreSQL: readers go
    on; SQLite's BEGIN IMMEDIATE is lock enough): a batch of mail being ticketed is then
    wholly before the removal or wholly after it. SQLite zeroes what it deletes."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"LOCK TABLE {', '.join(LOCKED)} IN EXCLUSIVE MODE"))
    else:
        conn.execute(text("PRAGMA secure_delete = ON"))


def delete_outbox(conn: Connection, ids: list[int]) -> set[str]:
    """Outgoing mail and its delivery attempts; their digests."""
    o = T_OUTBOX.c
    digests = set(conn.execute(select(o.digest).where(o.id.in_(ids))).scalars())
    conn.execute(delete(T_ATTEMPTS).where(T_ATTEMPTS.c.outbox_id.in_(ids)))
    conn.execute(delete(T_OUTBOX).where(o.id.in_(ids)))
    return digests


def delete_tickets(conn: Connection, ids: list[int]) -> set[str]:
    """Tickets with their messages (and search rows), attachments, events, thread
    references, SLA clocks, survey, article suggestions and outgoing mail; what links to
    them (another ticket, an incident's problem, a proposal) no longer does. Their
    digests."""
    t, m = T_TICKETS.c, T_MESSAGES.c
    refs = list(conn.execute(select(t.ref).where(t.id.in_(ids))).scalars())
    messages = list(conn.execute(select(m.id).where(m.ticket_id.in_(ids))).scalars())
    digests = set(conn.execute(select(m.digest).where(m.id.in_(messages))).scalars())
    a = T_ATTACH.c
    digests |= set(conn.execute(select(a.digest).where(a.message_pk.in_(messages))).scalars())
    conn.execute(delete(T_ATTACH).where(a.message_pk.in_(messages)))
    unindex_messages(conn, messages)
    conn.execute(update(T_INBOUND).where(T_INBOUND.c.message_pk.in_(messages))
                 .values(message_pk=None))
    digests |= delete_outbox(conn, list(conn.execute(select(T_OUTBOX.c.id).where(
        T_OUTBOX.c.ticket_id.in_(ids))).scalars()))
    for table in (T_EVENTS, T_REFS, T_CLOCKS, T_SURVEYS, T_KB):
        conn.execute(delete(table).where(table.c.ticket_id.in_(ids)))
    conn.execute(update(T_TICKETS).where(t.linked_to.in_(ids)).values(linked_to=None))
    conn.execute(update(T_TICKETS).where(t.problem.in_(refs)).values(problem=None))
    conn.execute(update(T_TICKETS).where(t.resolved_by.in_(refs)).values(resolved_by=None))
    gone = set(ids)
    p = T_PROPOSALS.c
    for pid, tickets in conn.execute(select(p.id, p.tickets)).all():
        kept = [i for i in tickets if i not in gone]
        if kept != tickets:
            conn.execute(update(T_PROPOSALS).where(p.id == pid).values(tickets=kept))
    conn.execute(delete(T_MESSAGES).where(m.id.in_(messages)))
    conn.execute(delete(T_TICKETS).where(t.id.in_(ids)))
    return digests


def unused(conn: Connection, digests: Iterable[str], going: set[str]) -> set[str]:
    """Those of digests that nothing keeps: every row naming them is an inbound row (a
    record only) or on a ticket of `going` (refs). A blob another ticket uses stays."""
    uses = referrers(conn, digests)
    return {d for d in digests
            if all(u["kind"] == "inbound" or u["ticket"] in going for u in uses.get(d, []))}


def forget_files(settings: Settings, outbox: list[int]) -> None:
    """After the commit: the similar tickets' cached vectors (they name subjects and words;
    made again on use), and with `outbox.transport: maildir` the copies of the mail the
    desk wrote there for the outbox rows removed or whose mail was (a requester's erasure,
    retention). (Mail handed to a relay has left the desk.)"""
    (settings.data_dir / "similar.npz").unlink(missing_ok=True)
    if settings.outbox.transport != "maildir":
        return
    for sub in ("new", "cur", "tmp"):
        for i in outbox:
            for path in (settings.outbox_maildir / sub).glob(f"outbox{i}_*"):
                path.unlink(missing_ok=True)
