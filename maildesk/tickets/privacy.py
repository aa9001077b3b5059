"""A requester's personal data: who they are to the desk, the tickets that concern them,
and the audit of what was done with it (`maildesk requester`, issue 21).

The tickets that concern a person are those they requested, those they take part in
(CC participants) and those with a mail from them or to them (To, Cc): an export
gives them all, an erasure reaches them all (export.py, erase.py).

An erased person is named by a pseudonym, `erased-<16 hex>@invalid`: an HMAC of the
address under the desk's reply-token key, so the same person's tickets share one (the
reports' counts per requester still add up) and nobody can go back from it to the
address without the key. The audit (privacy_audit) names the person by it too.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, Text, cast, func, insert, or_, select

from ..store.tables import T_AUDIT, T_MESSAGES, T_TICKETS

ERASED = "[erased]"          # what replaces a person's words and name
DOMAIN = "invalid"           # RFC 2606: no mail to a pseudonym can ever leave


def pseudonym(secret: bytes, address: str) -> str:
    """The stable stand-in for an address (see the module's docstring)."""
    mac = hmac.new(secret, address.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"erased-{mac[:16]}@{DOMAIN}"


def is_pseudonym(address: str) -> bool:
    return re.fullmatch(rf"erased-[0-9a-f]{{16}}@{DOMAIN}", address) is not None


def actor() -> str:
    """Who runs the command: the OS user (the one behind sudo, when there is one)."""
    try:
        me = getpass.getuser()
    except (KeyError, OSError):
        me = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {me})" if sudo and sudo != me else me


@dataclass(frozen=True)
class Person:
    address: str                  # lower case, as the desk stores senders
    names: tuple[str, ...]        # the display names the address came with
    token: str                    # the pseudonym

    @property
    def local(self) -> str:
        return self.address.partition("@")[0]

    def needles(self) -> list[str]:
        """What identifies them in text, longest first (a name inside another is found
        by the longer one first)."""
        return sorted({self.address, *self.names}, key=len, reverse=True)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def contains(column: Any, needle: str) -> ColumnElement[bool]:
    """column (text, or JSON as its text) holds needle, in any case; a JSON column is also
    matched with needle as JSON escapes it (non-ASCII letters as \\u00fc)."""
    text = func.lower(cast(column, Text) if not isinstance(column.type, String) else column)
    forms = {needle.lower(), json.dumps(needle.lower())[1:-1]}
    return or_(*(text.like(_like(f), escape="\\") for f in forms))


def identify(conn: Connection, address: str, secret: bytes) -> Person:
    """The person behind address: the names their tickets and mail gave them. A name
    shorter than 3 letters would match too much of others' text to be scrubbed."""
    a = address.strip().lower()
    t, m = T_TICKETS.c, T_MESSAGES.c
    names = set(conn.execute(select(t.requester_name).where(
        func.lower(t.requester) == a)).scalars())
    names |= set(conn.execute(select(m.from_name).where(
        func.lower(m.from_addr) == a)).scalars())
    kept = tuple(sorted(n.strip() for n in names
                        if n and len(n.strip()) >= 3 and n.strip().lower() != a))
    return Person(a, kept, pseudonym(secret, a))


@dataclass
class Concerned:
    requested: list[int]         # ticket ids, oldest first
    participated: list[int]      # CC participant, or in a mail's From/To/Cc; not requester

    @property
    def all(self) -> list[int]:
        return sorted({*self.requested, *self.participated})


def concerned(conn: Connection, person: Person) -> Concerned:
    """The tickets that concern person (the module's docstring)."""
    t, m = T_TICKETS.c, T_MESSAGES.c
    a = person.address
    requested = list(conn.execute(select(t.id).where(func.lower(t.requester) == a)
                                  .order_by(t.id)).scalars())
    others = set(conn.execute(select(t.id).where(contains(t.cc, f'"{a}"'))).scalars())
    others |= set(conn.execute(select(m.ticket_id).where(or_(
        func.lower(m.from_addr) == a, contains(m.to, f'"{a}"'),
        contains(m.cc, f'"{a}"')))).scalars())
    return Concerned(requested, sorted(others - set(requested)))


def record(conn: Connection, now: datetime, action: str, subject: str | None,
           counts: dict[str, Any], detail: str | None = None) -> None:
    """A line of the privacy audit, in the transaction of what it records."""
    conn.execute(insert(T_AUDIT).values(at=now, actor=actor(), action=action,
                                        subject=subject, counts=counts, detail=detail))


def audit_rows(conn: Connection, subjects: Iterable[str] | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """The audit, newest first; subjects: only the lines naming one of them."""
    a = T_AUDIT.c
    q = select(T_AUDIT).order_by(a.id.desc())
    if subjects is not None:
        q = q.where(a.subject.in_(list(subjects)))
    if limit:
        q = q.limit(limit)
    return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action,
             "subject": r.subject, "counts": r.counts, "detail": r.detail}
            for r in conn.execute(q)]
