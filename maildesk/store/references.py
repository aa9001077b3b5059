"""What refers to a blob: the rows whose `digest` names it, and the tickets they belong to.

A blob is only worth anything through what refers to it, so a damaged or missing one is
reported by its users: inbound mail (the original as it arrived), messages, attachments
and outgoing mail, each with its ticket where it has one.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypedDict

from sqlalchemy import Connection, Select, select

from .models import Attachment, Inbound, Message, OutboxMail, Ticket

CHUNK = 2000


class Use(TypedDict):
    kind: str            # inbound | message | attachment | outbox
    id: int
    ticket: str | None   # its ticket's ref; None for mail that made no ticket


def _queries() -> dict[str, Select[Any]]:
    """kind -> SELECT digest, id, ticket ref (outer-joined: held mail has no ticket)."""
    i, m, a, o, t = (Inbound.__table__, Message.__table__, Attachment.__table__,
                     OutboxMail.__table__, Ticket.__table__)
    im = m.alias("im")
    return {
        # a deleted inbound row is the record of a mail whose bytes were removed on purpose
        "inbound": select(i.c.digest, i.c.id, t.c.ref).select_from(
            i.outerjoin(im, im.c.id == i.c.message_pk).outerjoin(t, t.c.id == im.c.ticket_id))
        .where(i.c.state != "deleted"),
        "message": select(m.c.digest, m.c.id, t.c.ref)
        .select_from(m.join(t, t.c.id == m.c.ticket_id)),
        "attachment": select(a.c.digest, a.c.id, t.c.ref).select_from(
            a.join(m, m.c.id == a.c.message_pk).join(t, t.c.id == m.c.ticket_id)),
        "outbox": select(o.c.digest, o.c.id, t.c.ref)
        .select_from(o.outerjoin(t, t.c.id == o.c.ticket_id)),
    }


def digest_columns() -> dict[str, Any]:
    """kind -> its table's digest column."""
    return {"inbound": Inbound.__table__.c.digest, "message": Message.__table__.c.digest,
            "attachment": Attachment.__table__.c.digest, "outbox": OutboxMail.__table__.c.digest}


def chunks(items: list[str], size: int = CHUNK) -> Iterator[list[str]]:
    """items, size at a time: a statement's IN list stays within what a database takes."""
    for k in range(0, len(items), size):
        yield items[k:k + size]


def referrers(conn: Connection, digests: Iterable[str]) -> dict[str, list[Use]]:
    """digest -> every row that refers to it, by kind and id, with its ticket."""
    wanted = sorted(set(digests))
    found: dict[str, list[Use]] = {}
    columns = digest_columns()
    for kind, query in _queries().items():
        for chunk in chunks(wanted):
            for digest, id_, ref in conn.execute(query.where(columns[kind].in_(chunk))):
                found.setdefault(digest, []).append({"kind": kind, "id": id_, "ticket": ref})
    return found


def referenced(conn: Connection, digests: Iterable[str]) -> set[str]:
    """Those of digests that some row refers to (what gc must keep); lighter than
    referrers(): no tickets, one query per kind and chunk."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for kind, column in digest_columns().items():
        query = select(column).distinct()
        if kind == "inbound":
            query = query.where(Inbound.__table__.c.state != "deleted")
        for chunk in chunks(wanted):
            found.update(conn.execute(query.where(column.in_(chunk))).scalars())
    return found


def describe(uses: list[Use], most: int = 6) -> str:
    """'MD-12 message 5, MD-12 inbound 9, inbound 14 (no ticket)', for one-line reports."""
    said = [f"{u['ticket']} {u['kind']} {u['id']}" if u["ticket"]
            else f"{u['kind']} {u['id']} (no ticket)" for u in uses[:most]]
    more = len(uses) - most
    return ", ".join(said) + (f" and {more} more" if more > 0 else "")
