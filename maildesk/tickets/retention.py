"""The retention policy's deleting steps, per queue (`retention:` of desk.queues, README
"Retention and privacy"): the raw mails of tickets closed for `purge_raw_after`, and the
tickets closed for `purge_after` with everything that hangs off them (removal.py).
Closing resolved tickets (`close_after`) is the retention job's (scheduler/jobs.py), as
any closing is.

A ticket's age here is the time since its last change (updated_at) while it is closed:
a reopened ticket is not closed, and a reply to a closed one opens a new ticket or
reopens it (queue on_closed_reply), which changes it. Tickets are taken in batches of
BATCH, each batch one transaction, the blobs wiped after its commit, and the copies of
their outgoing mail in the maildir outbox deleted (removal.forget_files(), as an
erasure does); a dry run makes the same changes and rolls each batch back, so it counts
exactly what a run would do.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, select

from ..config.schema import Settings
from ..store.blobs import NO_BLOB, BlobStore
from ..store.shred import drop
from ..store.tables import T_MESSAGES, T_OUTBOX, T_TICKETS
from .removal import delete_tickets, forget_files, lock, unused

BATCH = 500


@dataclass
class Done:
    blobs: int = 0
    refs: list[str] = field(default_factory=list)   # the tickets, oldest first

    @property
    def tickets(self) -> int:
        return len(self.refs)


def closed_before(queue: str, cutoff: datetime) -> ColumnElement[bool]:
    t = T_TICKETS.c
    return and_(t.queue == queue, t.status == "closed", t.updated_at <= cutoff)


def _batches(engine: Engine, store: BlobStore, settings: Settings,
             where: ColumnElement[bool], dry_run: bool,
             work: Callable[[Connection, list[int], set[str]], set[str]]) -> Done:
    """work(conn, ids, refs) -> digests that may go, on each batch of tickets matching
    where, oldest id first; their blobs dropped, and wiped after the commit with the
    maildir copies of the tickets' outgoing mail."""
    done, after = Done(), 0
    t = T_TICKETS.c
    while True:
        with engine.connect() as conn:
            tx = conn.begin()
            try:
                lock(conn)
                found = conn.execute(select(t.id, t.ref).where(where, t.id > after)
                                     .order_by(t.id).limit(BATCH)).all()
                if not found:
                    return done
                ids, refs = [i for i, _ in found], {r for _, r in found}
                sent = list(conn.execute(select(T_OUTBOX.c.id).where(
                    T_OUTBOX.c.ticket_id.in_(ids))).scalars())
                dropped = drop(store, conn, work(conn, ids, refs))
            except BaseException:
                tx.rollback()
                raise
            if dry_run:
                tx.rollback()
            else:
                tx.commit()
                dropped.wipe()
                forget_files(settings, sent)
        done.refs += [r for _, r in found]
        done.blobs += len(dropped.digests)
        after = ids[-1]


def purge(engine: Engine, store: BlobStore, settings: Settings, queue: str, cutoff: datetime,
          dry_run: bool = False) -> Done:
    """Delete queue's tickets closed since before cutoff, with what hangs off them and the
    blobs no other ticket uses."""
    def work(conn: Connection, ids: list[int], refs: set[str]) -> set[str]:
        return unused(conn, delete_tickets(conn, ids), refs)
    return _batches(engine, store, settings, closed_before(queue, cutoff), dry_run, work)


def purge_raw(engine: Engine, store: BlobStore, settings: Settings, queue: str,
              cutoff: datetime, dry_run: bool = False, purged_at: datetime | None = None
              ) -> Done:
    """Drop the raw mails (received and sent) of queue's tickets closed since before
    cutoff: the messages keep their text, the attachments their bytes, the events stay.
    Counts the tickets that still had raw mail. purged_at: purge()'s cutoff, when it runs
    first: the tickets it deletes are not counted here (a dry run, rolled back, would)."""
    m, o = T_MESSAGES.c, T_OUTBOX.c
    has_raw = exists().where(m.ticket_id == T_TICKETS.c.id, m.digest != NO_BLOB)

    def work(conn: Connection, ids: list[int], refs: set[str]) -> set[str]:
        digests = set(conn.execute(select(m.digest).where(m.ticket_id.in_(ids))).scalars())
        digests |= set(conn.execute(select(o.digest).where(o.ticket_id.in_(ids))).scalars())
        return unused(conn, digests - {NO_BLOB}, refs)
    where = and_(closed_before(queue, cutoff), has_raw)
    if purged_at is not None:
        where = and_(where, T_TICKETS.c.updated_at > purged_at)
    return _batches(engine, store, settings, where, dry_run, work)
