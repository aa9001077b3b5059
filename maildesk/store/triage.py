"""The triage models a desk keeps (triage_models, the newest in use on every node), and the
tickets they learn from: what the desk settled on each ticket's fields.

A ticket's label for a field is, when an agent corrected that field (a `ticket.updated`
event by `agent:NAME`: `#category`, `#queue`, `#type`, or the same from the command
line), the newest correction; else, when the ticket is resolved or closed, the field as
the desk left it. An open ticket nobody corrected teaches nothing: its fields are still
the desk's first guess. Problem tickets are left out: they are no customer's mail. The
text is the ticket's first inbound message, what a new ticket's mail gives a model too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from .tables import T_EVENTS, T_MESSAGES, T_TICKETS, T_TRIAGE

SETTLED = ("resolved", "closed")
KEEP = 3            # models kept: the one in use and two before it, to compare
WINDOW = 2_000      # tickets read per query, newest first


@dataclass(frozen=True)
class Labelled:
    ticket_id: int
    subject: str
    text: str
    labels: dict[str, str]      # field: label, for the fields this ticket teaches


@dataclass(frozen=True)
class Stored:
    id: int
    trained_at: datetime
    tickets: int
    summary: dict[str, Any]
    data: bytes


def corrections(conn: Connection, fields: Sequence[str]) -> dict[tuple[int, str], str]:
    """(ticket id, field): the value an agent last set it to."""
    field = T_EVENTS.c.data["field"].as_string()
    rows = conn.execute(select(T_EVENTS.c.ticket_id, T_EVENTS.c.data).where(
        T_EVENTS.c.kind == "ticket.updated", T_EVENTS.c.actor.like("agent:%"),
        field.in_(fields)).order_by(T_EVENTS.c.id))
    return {(r.ticket_id, r.data["field"]): r.data["new"] for r in rows
            if isinstance(r.data.get("new"), str) and r.data["new"]}


def labelled(conn: Connection, fields: Sequence[str], most: int) -> list[Labelled]:
    """The newest `most` tickets with a label for any of fields, oldest first."""
    corrected = corrections(conn, fields)
    touched = {i for i, _f in corrected}
    out: list[Labelled] = []
    before: int | None = None
    while len(out) < most:
        q = select(T_TICKETS.c.id, T_TICKETS.c.status, *(T_TICKETS.c[f] for f in fields)) \
            .where(T_TICKETS.c.type != "problem")
        if before is not None:
            q = q.where(T_TICKETS.c.id < before)
        rows = conn.execute(q.order_by(T_TICKETS.c.id.desc()).limit(WINDOW)).all()
        if not rows:
            break
        before = rows[-1].id
        labels = {r.id: found for r in rows if (r.status in SETTLED or r.id in touched)
                  and (found := _labels(r._mapping, fields, corrected))}
        texts = _first_messages(conn, list(labels))
        out.extend(Labelled(i, *texts[i], labels[i]) for i in sorted(texts, reverse=True))
    return out[:most][::-1]


def _labels(row: Any, fields: Sequence[str], corrected: dict[tuple[int, str], str]
            ) -> dict[str, str]:
    settled = row["status"] in SETTLED
    out = {}
    for f in fields:
        value = corrected.get((row["id"], f)) or (row[f] if settled else None)
        if value:
            out[f] = value
    return out


def _first_messages(conn: Connection, ids: list[int]) -> dict[int, tuple[str, str]]:
    """ticket id: (subject, text) of its first inbound message, for those that have one."""
    if not ids:
        return {}
    first = select(func.min(T_MESSAGES.c.id)).where(
        T_MESSAGES.c.ticket_id.in_(ids), T_MESSAGES.c.direction == "in") \
        .group_by(T_MESSAGES.c.ticket_id).scalar_subquery()
    rows = conn.execute(select(T_MESSAGES.c.ticket_id, T_MESSAGES.c.subject, T_MESSAGES.c.text)
                        .where(T_MESSAGES.c.id.in_(first)))
    return {r.ticket_id: (r.subject or "", r.text or "") for r in rows}


def save(conn: Connection, at: datetime, tickets: int, summary: dict[str, Any],
         data: bytes) -> int:
    """Store a model as the newest, and forget all but the KEEP newest; its id."""
    new = conn.execute(insert(T_TRIAGE).values(trained_at=at, tickets=tickets,
                                               summary=summary, data=data)
                       .returning(T_TRIAGE.c.id)).scalar_one()
    kept = select(T_TRIAGE.c.id).order_by(T_TRIAGE.c.id.desc()).limit(KEEP).subquery()
    conn.execute(delete(T_TRIAGE).where(T_TRIAGE.c.id.not_in(select(kept.c.id))))
    return int(new)


def newest_id(conn: Connection) -> int | None:
    """The id of the model in use: one indexed look, cheap enough for every batch."""
    return conn.scalar(select(func.max(T_TRIAGE.c.id)))


def stored(conn: Connection, model: int | None = None) -> Stored | None:
    """A model as stored (the newest when model is None)."""
    model = newest_id(conn) if model is None else model
    row = conn.execute(select(T_TRIAGE).where(T_TRIAGE.c.id == model)).first() \
        if model is not None else None
    return None if row is None else Stored(row.id, row.trained_at, row.tickets, row.summary,
                                           row.data)


def history(conn: Connection) -> list[Stored]:
    """The models kept, newest first, without their data."""
    rows = conn.execute(select(T_TRIAGE.c.id, T_TRIAGE.c.trained_at, T_TRIAGE.c.tickets,
                               T_TRIAGE.c.summary).order_by(T_TRIAGE.c.id.desc()))
    return [Stored(r.id, r.trained_at, r.tickets, r.summary, b"") for r in rows]
