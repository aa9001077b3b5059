"""A requester's personal data: who they are to the desk, the tickets that concern them,
and the audit of what was done with it (`maildesk requester`, issue 21).

The tickets that concern a person are those they requested, those they take part in
(CC participants) and those with a mail from them or to them (To, Cc): an export
gives them all, an erasure reaches them all (export.py, erase.py).

An erased person is named by a pseudonym, `erased-<16 hex>@invalid`: an HMAC of the
address under the desk's reply-token key, so the same person's tickets share one (the
reports' counts per requester still add up) and nobody can go back from it to the
address without the key. The audit (privacy_audit) names the person by it too.

A name is the person's to erase only if nobody else uses it (shared()): an attacker
chooses their display name and local part, and "IT Service Desk", "Support", "the" or
an agent's name erased wherever it stands would wipe the desk's own mail. Of the names
they came with, their words and their local part, those the desk's own names and
addresses, its agents, its templates, another sender, or the desk's and agents' mail on
tickets that do not concern them also use are never erased: the person's own mail on
their own tickets goes whole anyway.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Text,
    cast,
    func,
    insert,
    not_,
    or_,
    select,
)

from ..config.schema import Settings
from ..mail.parse import base_address
from ..notify.templates import builtin_templates_dir
from ..store.tables import T_AUDIT, T_MESSAGES, T_OUTBOX, T_TICKETS

ERASED = "[erased]"          # what replaces a person's words and name
MIN_WORD = 3                 # a shorter name or word would match too much of others' text
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


def own_addresses(settings: Settings) -> set[str]:
    """The desk's own addresses, lower case: where it takes mail in, sends mail from, and
    the mailboxes it drains."""
    return {x.lower() for x in (*settings.desk.addresses, settings.envelope_from,
                                *settings.desk.alerts.addresses,
                                *(x for q in settings.desk.queues for x in q.addresses),
                                *(m.username for m in settings.imap))}


def agent_addresses(settings: Settings) -> set[str]:
    return {x.lower() for ag in settings.desk.agents for x in ag.addresses}


def not_a_requester(settings: Settings, address: str) -> str | None:
    """Why address (lower case) is nobody's to export or erase, or None: an agent's, or
    the desk's own, also with a sub-address (support+md-1-abc@, support+status@): its
    tickets are everyone's."""
    forms = {address, base_address(address)}
    if forms & agent_addresses(settings):
        return f"{address} is an agent of this desk (desk.agents, also:): take them out of " \
               "the configuration first"
    if forms & own_addresses(settings):
        return f"{address} is the desk's own address (desk.addresses, queues, imap, " \
               "outbox): it is no requester's; nothing done"
    return None


def desk_names(settings: Settings) -> list[str]:
    """The names the desk writes as its own: its From name, its queues', groups' and
    agents' names and every address of its own and its agents'."""
    desk = settings.desk
    return [desk.name, *(q.name for q in desk.queues), *(g.name for g in desk.groups),
            *(n for a in desk.agents for n in (a.name, a.display_name) if n),
            *own_addresses(settings), *agent_addresses(settings)]


def whole(text: str) -> str:
    """text as a pattern found only whole: not inside a longer word."""
    return rf"(?<!\w){re.escape(text)}(?!\w)"


def words_of(name: str) -> set[str]:
    """A name's words (lower case) long enough to be worth erasing."""
    return {w.lower() for w in re.findall(r"\w+", name) if len(w) >= MIN_WORD}


@dataclass(frozen=True)
class Person:
    address: str                  # lower case, as the desk stores senders
    names: tuple[str, ...]        # the display names the address came with
    token: str                    # the pseudonym
    shared: frozenset[str] = frozenset()   # names and words others use too (lower case)

    @property
    def local(self) -> str:
        return self.address.partition("@")[0]

    def theirs(self, text: str) -> bool:
        """text (a name, a word) is theirs to erase: long enough, and nobody else's."""
        return len(text) >= MIN_WORD and text.lower() not in self.shared

    def own_names(self) -> list[str]:
        """Their display names that are theirs to erase, longest first (a name inside
        another is found by the longer one first)."""
        return sorted((n for n in self.names if self.theirs(n)), key=len, reverse=True)

    def needles(self) -> list[str]:
        """What identifies them in text: the address, and own_names()."""
        return [self.address, *self.own_names()]

    def words(self) -> set[str]:
        """Their local part and their names' words, lower case, of those theirs."""
        return {w for w in {self.local, *(w for n in self.names for w in words_of(n))}
                if self.theirs(w)}


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def contains(column: Any, needle: str) -> ColumnElement[bool]:
    """column (text, or JSON as its text) holds needle, in any case; a JSON column is also
    matched with needle as JSON escapes it (non-ASCII letters as \\u00fc)."""
    text = func.lower(cast(column, Text) if not isinstance(column.type, String) else column)
    forms = {needle.lower(), json.dumps(needle.lower())[1:-1]}
    return or_(*(text.like(_like(f), escape="\\") for f in forms))


def identify(conn: Connection, settings: Settings, address: str, secret: bytes) -> Person:
    """The person behind address: the names their tickets and mail gave them, and which
    of those, their words and their local part others use too (shared())."""
    a = address.strip().lower()
    t, m = T_TICKETS.c, T_MESSAGES.c
    names = set(conn.execute(select(t.requester_name).where(
        func.lower(t.requester) == a)).scalars())
    names |= set(conn.execute(select(m.from_name).where(
        func.lower(m.from_addr) == a)).scalars())
    kept = tuple(sorted(n.strip() for n in names
                        if n and len(n.strip()) >= MIN_WORD and n.strip().lower() != a))
    person = Person(a, kept, pseudonym(secret, a))
    return replace(person, shared=frozenset(shared(conn, settings, person)))


def _templates_text(settings: Settings) -> str:
    """The desk's templates, built-in and overriding: the words every mail of it has."""
    found = [builtin_templates_dir(), *([settings.templates_dir] if settings.templates_dir
                                        else [])]
    return "\n".join(p.read_text(errors="replace") for d in found if d.is_dir()
                     for p in sorted(d.glob("*.j2")))


def shared(conn: Connection, settings: Settings, person: Person) -> set[str]:
    """Of person's names, their words and their local part (lower case): those found whole
    in the desk's names (desk_names()), its templates, another sender's name or address,
    or the desk's and agents' mail (messages, outgoing mail's subjects) on a ticket that
    does not concern them. Never erased: it is not theirs alone (the module's docstring)."""
    a, t, m, o = person.address, T_TICKETS.c, T_MESSAGES.c, T_OUTBOX.c
    asked = {n.lower() for n in person.names} | {person.local} | \
        {w for n in person.names for w in words_of(n)}
    fixed = "\n".join([*desk_names(settings), _templates_text(settings)])
    theirs = concerned(conn, person).all
    agents = sorted(agent_addresses(settings))
    desks = or_(m.direction == "out", func.lower(m.from_addr).in_(agents))
    out = set()
    for word in asked:
        found = re.compile(whole(word), re.IGNORECASE)
        if found.search(fixed):
            out.add(word)
            continue
        sources = (
            select(m.from_name, m.from_addr).where(func.lower(m.from_addr) != a, or_(
                contains(m.from_name, word), contains(m.from_addr, word))),
            select(t.requester_name, t.requester).where(func.lower(t.requester) != a, or_(
                contains(t.requester_name, word), contains(t.requester, word))),
            select(m.subject, m.text).where(desks, not_(m.ticket_id.in_(theirs)), or_(
                contains(m.subject, word), contains(m.text, word))),
            select(o.subject).where(or_(o.ticket_id.is_(None),
                                        not_(o.ticket_id.in_(theirs))),
                                    contains(o.subject, word)))
        for q in sources:
            with conn.execute(q) as rows:
                if any(found.search(v) for row in rows for v in row if v):
                    out.add(word)
                    break
    return out


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
