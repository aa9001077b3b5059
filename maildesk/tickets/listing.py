"""`tickets list`: tickets newest first, a page at a time, in SQLAlchemy Core alone.

An operator's listing starts a process for one page: it reads the columns it shows
(store/lean.py) without the ORM, and a page after the first starts where the one
before ended (keyset paging: the position of its last ticket), so the hundredth page
costs what the first does. The order is total, creation time then id (two tickets of
one instant are never skipped or shown twice), and indexes serve it (migration 0012):
ix_tickets_created_id read backwards, on both engines; on SQLite each filter's index
too (its column, created_at, then the rowid every SQLite index ends with), while
PostgreSQL reads a selective filter's index and sorts the few rows it finds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, func, or_, select

from ..store.lean import MESSAGES, TICKETS
from ..store.search import matching_tickets

if TYPE_CHECKING:
    from ..store.models import Ticket

# what a ticket's reference looks like: a prefix (desk.ref_prefix, then or now), its number
REF = re.compile(r"[A-Za-z][A-Za-z0-9]{0,9}-[0-9]{1,18}")


@dataclass(frozen=True)
class Position:
    """Where a ticket stands in the listing's order: the key a page after it starts from."""

    created_at: datetime
    id: int


@dataclass(frozen=True)
class Filters:
    """Which tickets `tickets list` shows; every field narrows, None or empty: any."""

    statuses: tuple[str, ...] = ()
    requester: str | None = None
    queue: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    search: str | None = None            # every word in the subject or text of a message
    since: datetime | None = None        # created at or after
    until: datetime | None = None        # created before
    where: ColumnElement[bool] | None = None     # any other condition on TICKETS (--sla)
    after: Position | None = None        # only those after it in the order (the next page)

    def apply(self, q: Select[Any], dialect: str) -> Select[Any]:
        t = TICKETS.c
        if self.statuses:
            q = q.where(t.status.in_(self.statuses))
        if self.requester:
            q = q.where(t.requester == self.requester.strip().lower())
        if self.queue:
            q = q.where(t.queue == self.queue)
        if self.assignee:
            q = q.where(t.assignee == self.assignee)
        if self.unassigned:
            q = q.where(t.assignee.is_(None))
        if self.search is not None:
            q = q.where(t.id.in_(matching_tickets(dialect, self.search)))
        if self.since is not None:
            q = q.where(t.created_at >= self.since)
        if self.until is not None:
            q = q.where(t.created_at < self.until)
        if self.after is not None:
            # older, or as old with a lower id; the first term alone is a range of every
            # (filter, created_at) index, on both engines: the rest is checked on its rows
            at = self.after.created_at
            q = q.where(t.created_at <= at,
                        or_(t.created_at < at, and_(t.created_at == at, t.id < self.after.id)))
        return q if self.where is None else q.where(self.where)


def iso(value: datetime | None) -> str | None:
    """A time as the JSON gives it: ISO 8601, UTC as Z."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary(t: Ticket | Row[Any], message_count: int, notice_count: int) -> dict[str, Any]:
    """A ticket as `tickets list` and `tickets show` give it, from its ORM object or its
    row of TICKETS. message_count: the mail of the conversation (customers', agents',
    notes); our acknowledgements, relays and notifications are notices, counted apart."""
    return {
        "ref": t.ref, "subject": t.subject, "requester": t.requester,
        "requester_name": t.requester_name, "cc": list(t.cc), "status": t.status,
        "priority": t.priority, "impact": t.impact, "urgency": t.urgency, "tags": list(t.tags),
        "problem": t.problem, "root_cause": t.root_cause, "workaround": t.workaround,
        "known_error": bool(t.known_error), "resolved_by": t.resolved_by,
        "category": t.category, "queue": t.queue, "type": t.type,
        "assignee": t.assignee, "created_at": iso(t.created_at), "updated_at": iso(t.updated_at),
        "message_count": message_count, "notice_count": notice_count,
    }


def position(conn: Connection, ref: str) -> Position | None:
    """Where the ticket ref names stands in the order (any case); None: no such ticket."""
    found = conn.execute(select(TICKETS.c.created_at, TICKETS.c.id)
                         .where(TICKETS.c.ref == ref.upper())).first()
    return None if found is None else Position(found.created_at, found.id)


def list_tickets(conn: Connection, filters: Filters = Filters(), limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """Tickets newest first (by creation, then id), after filters.after if it is set. Two
    queries whatever the number of rows: the page of tickets through the indexes, then
    the counts of the page's messages (not of every message on the desk)."""
    t = TICKETS.c
    q = filters.apply(select(TICKETS), conn.dialect.name).order_by(t.created_at.desc(),
                                                                   t.id.desc())
    page = conn.execute(q.limit(limit) if limit else q).all()
    counts = _counts(conn, [r.id for r in page])
    return [summary(r, *counts.get(r.id, (0, 0))) for r in page]


def count_tickets(conn: Connection, filters: Filters = Filters()) -> int:
    """How many tickets the filters match, on this page and those after it."""
    q = filters.apply(select(func.count(TICKETS.c.id)), conn.dialect.name)
    return int(conn.execute(q).scalar() or 0)


def _counts(conn: Connection, ids: list[int]) -> dict[int, tuple[int, int]]:
    """ticket id -> (messages people wrote, notices we sent) for the tickets asked."""
    if not ids:
        return {}
    m = MESSAGES.c
    q = (select(m.ticket_id, func.count().filter(m.direction == "in"),
                func.count().filter(m.direction == "out"))
         .where(m.ticket_id.in_(ids)).group_by(m.ticket_id))
    return {tid: (int(n_in), int(n_out)) for tid, n_in, n_out in conn.execute(q)}
