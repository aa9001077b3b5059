"""Tickets as plain dicts for the CLI's JSON and tables: a stable contract for scripts."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from ..store.blobs import BlobStore
from ..store.models import Message, Ticket
from .listing import iso, summary


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
            "date": iso(m.date),
            "text": m.text, "digest": m.digest, **stored(m.digest), "defects": list(m.defects),
            "attachments": [{"filename": a.filename, "content_type": a.content_type,
                             "size": a.size, "digest": a.digest, **stored(a.digest)}
                            for a in m.attachments],
        } for m in t.messages],
        "events": [{"kind": e.kind, "at": iso(e.at), "actor": e.actor, "data": e.data}
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
