"""Tickets as plain dicts for the CLI's JSON and tables: a stable contract for scripts."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, selectinload

from ..store.blobs import BlobStore
from ..store.models import Message, Ticket
from ..store.search import matching_tickets


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary(t: Ticket, message_count: int, notice_count: int) -> dict[str, Any]:
    """message_count: the mail of the conversation (customers', agents', notes); our
    acknowledgements, relays and notifications are notices, counted apart."""
    return {
        "ref": t.ref, "subject": t.subject, "requester": t.requester,
        "requester_name": t.requester_name, "cc": list(t.cc), "status": t.status,
        "priority": t.priority, "impact": t.impact, "urgency": t.urgency, "tags": list(t.tags),
        "problem": t.problem, "root_cause": t.root_cause, "workaround": t.workaround,
        "known_error": bool(t.known_error), "resolved_by": t.resolved_by,
        "category": t.category, "queue": t.queue, "type": t.type,
        "assignee": t.assignee, "created_at": _iso(t.created_at), "updated_at": _iso(t.updated_at),
        "message_count": message_count, "notice_count": notice_count,
    }


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
    where: ColumnElement[bool] | None = None     # any other condition on Ticket (--sla)

    def apply(self, q: Select[Any], dialect: str) -> Select[Any]:
        if self.statuses:
            q = q.where(Ticket.status.in_(self.statuses))
        if self.requester:
            q = q.where(Ticket.requester == self.requester.strip().lower())
        if self.queue:
            q = q.where(Ticket.queue == self.queue)
        if self.assignee:
            q = q.where(Ticket.assignee == self.assignee)
        if self.unassigned:
            q = q.where(Ticket.assignee.is_(None))
        if self.search is not None:
            q = q.where(Ticket.id.in_(matching_tickets(dialect, self.search)))
        if self.since is not None:
            q = q.where(Ticket.created_at >= self.since)
        if self.until is not None:
            q = q.where(Ticket.created_at < self.until)
        return q if self.where is None else q.where(self.where)


def list_tickets(session: Session, filters: Filters = Filters(), limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """Tickets newest first (by creation, then id). Two queries whatever the number of
    rows: the page of tickets through the indexes, then the counts of the page's
    messages (not of every message on the desk)."""
    dialect = session.get_bind().dialect.name
    q = filters.apply(select(Ticket), dialect).order_by(Ticket.created_at.desc(),
                                                         Ticket.id.desc())
    page = list(session.scalars(q.limit(limit) if limit else q))
    counts = _counts(session, [t.id for t in page])
    return [summary(t, *counts.get(t.id, (0, 0))) for t in page]


def count_tickets(session: Session, filters: Filters = Filters()) -> int:
    """How many tickets the filters match, all pages."""
    dialect = session.get_bind().dialect.name
    return int(session.scalar(filters.apply(select(func.count(Ticket.id)), dialect)) or 0)


def _counts(session: Session, ids: list[int]) -> dict[int, tuple[int, int]]:
    """ticket id -> (messages people wrote, notices we sent) for the tickets asked."""
    if not ids:
        return {}
    q = (select(Message.ticket_id, func.count().filter(Message.direction == "in"),
                func.count().filter(Message.direction == "out"))
         .where(Message.ticket_id.in_(ids)).group_by(Message.ticket_id))
    return {tid: (int(n_in), int(n_out)) for tid, n_in, n_out in session.execute(q)}


def show_ticket(session: Session, ref: str, blobs: BlobStore | None = None,
                ) -> dict[str, Any] | None:
    """blobs: check each message's original and each attachment as stored, and say in
    `stored` whether it is intact (a damaged copy is never shown as the mail)."""
    def stored(digest: str) -> dict[str, str]:
        if blobs is None:
            return {}
        return {"stored": blobs.problem(digest, session.connection()) or "intact"}
    t = session.scalar(select(Ticket).where(func.upper(Ticket.ref) == ref.upper())
                       .options(selectinload(Ticket.messages).selectinload(Message.attachments),
                                selectinload(Ticket.events)))
    if t is None:
        return None
    linked = session.scalar(select(Ticket.ref).where(Ticket.id == t.linked_to)) \
        if t.linked_to else None
    inbound = sum(m.direction == "in" for m in t.messages)
    return summary(t, inbound, len(t.messages) - inbound) | {
        "linked_to": linked,
        "messages": [{
            "message_id": m.message_id, "from": m.from_addr, "from_name": m.from_name,
            "to": list(m.to), "cc": list(m.cc), "subject": m.subject,
            "direction": m.direction, "visibility": m.visibility, "verdict": m.verdict,
            "proof": m.proof, "sender_verified": None if m.proof is None else bool(m.proof),
            "date": _iso(m.date),
            "text": m.text, "digest": m.digest, **stored(m.digest), "defects": list(m.defects),
            "attachments": [{"filename": a.filename, "content_type": a.content_type,
                             "size": a.size, "digest": a.digest, **stored(a.digest)}
                            for a in m.attachments],
        } for m in t.messages],
        "events": [{"kind": e.kind, "at": _iso(e.at), "actor": e.actor, "data": e.data}
                   for e in t.events],
    }



def list_problems(session: Session) -> list[dict[str, Any]]:
    """Problem tickets, newest first, each with its record and how many tickets are linked
    to it (incidents) and not yet resolved (open_incidents)."""
    incident = Ticket.__table__.alias("incident")
    q = (select(Ticket, func.count(incident.c.id),
                func.count(incident.c.id).filter(incident.c.status.in_(("new", "open",
                                                                         "pending"))))
         .outerjoin(incident, incident.c.problem == Ticket.ref)
         .where(Ticket.type == "problem").group_by(Ticket.id)
         .order_by(Ticket.created_at.desc(), Ticket.id.desc()))
    return [{"ref": t.ref, "subject": t.subject, "status": t.status, "queue": t.queue,
             "assignee": t.assignee, "known_error": bool(t.known_error),
             "root_cause": t.root_cause, "workaround": t.workaround,
             "incidents": int(n), "open_incidents": int(n_open)}
            for t, n, n_open in session.execute(q)]
