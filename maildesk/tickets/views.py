"""Tickets as plain dicts for the CLI's JSON and tables: a stable contract for scripts."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, selectinload

from ..store.blobs import BlobStore
from ..store.models import Message, Ticket

STATUSES = ("new", "open", "pending", "resolved", "closed")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary(t: Ticket, message_count: int) -> dict[str, Any]:
    return {
        "ref": t.ref, "subject": t.subject, "requester": t.requester,
        "requester_name": t.requester_name, "cc": list(t.cc), "status": t.status,
        "priority": t.priority, "impact": t.impact, "urgency": t.urgency, "tags": list(t.tags),
        "problem": t.problem, "category": t.category, "queue": t.queue, "type": t.type,
        "assignee": t.assignee, "created_at": _iso(t.created_at), "updated_at": _iso(t.updated_at),
        "message_count": message_count,
    }


def list_tickets(session: Session, status: str | None = None, limit: int | None = None,
                 where: ColumnElement[bool] | None = None) -> list[dict[str, Any]]:
    counts = (select(Message.ticket_id, func.count().label("n"))
              .group_by(Message.ticket_id).subquery())
    q = (select(Ticket, func.coalesce(counts.c.n, 0))
         .outerjoin(counts, counts.c.ticket_id == Ticket.id).order_by(Ticket.number))
    if status:
        q = q.where(Ticket.status == status)
    if where is not None:
        q = q.where(where)
    if limit:
        q = q.limit(limit)
    return [summary(t, n) for t, n in session.execute(q)]


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
    return summary(t, len(t.messages)) | {
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

