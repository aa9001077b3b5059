"""Tickets by what their requester wrote first: the opening mail's subject and own words,
what the grouping of recurring incidents and the search for similar tickets compare.

Read in one query, the first inbound message of each ticket joined to it; the text cut
to TEXT_CHARS, since what a mail is about is said at its beginning.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, func, not_, select

from ..store.tables import T_MESSAGES, T_TICKETS
from .commands import split_commands

TEXT_CHARS = 4000


@dataclass(frozen=True)
class Opening:
    id: int
    ref: str
    queue: str
    subject: str
    status: str
    created_at: datetime
    text: str             # the requester's own words in the mail that opened the ticket


def not_merged() -> ColumnElement[bool]:
    """Tickets not merged into another (a merge closes a ticket and links it onward)."""
    t = T_TICKETS.c
    return not_(and_(t.status == "closed", t.linked_to.is_not(None)))


def openings(conn: Connection, *where: ColumnElement[bool], newest: int | None = None
             ) -> list[Opening]:
    """The tickets that match where, oldest first; newest: only the last so many changed."""
    first = (select(T_MESSAGES.c.ticket_id, func.min(T_MESSAGES.c.id).label("mid"))
             .where(T_MESSAGES.c.direction == "in").group_by(T_MESSAGES.c.ticket_id)
             .subquery())
    t = T_TICKETS.c
    q = (select(t.id, t.ref, t.queue, t.subject, t.status, t.created_at,
                func.substr(T_MESSAGES.c.text, 1, TEXT_CHARS))
         .join(first, first.c.ticket_id == t.id)
         .join(T_MESSAGES, T_MESSAGES.c.id == first.c.mid).where(*where))
    if newest is not None:
        q = q.order_by(t.updated_at.desc(), t.id.desc()).limit(newest)
    rows = [Opening(*row) for row in conn.execute(q)]
    return sorted(rows, key=lambda o: (o.created_at, o.id))


def answers(conn: Connection, ticket_ids: Iterable[int], agents: Iterable[str],
            lines: int = 3) -> dict[int, str]:
    """The first lines of the last answer an agent wrote on each ticket (not a note; its
    command lines left out): how it was resolved, as far as mail says."""
    ids, people = list(ticket_ids), list(agents)
    if not ids or not people:
        return {}
    m = T_MESSAGES.c
    out: dict[int, str] = {}
    for tid, text in conn.execute(
            select(m.ticket_id, m.text)
            .where(m.ticket_id.in_(ids), m.direction == "in", m.visibility == "public",
                   func.lower(m.from_addr).in_(people))
            .order_by(m.id.desc())):
        if tid not in out:
            words = split_commands(text or "")[1]
            out[tid] = "\n".join([s for s in words.splitlines() if s.strip()][:lines])
    return out
