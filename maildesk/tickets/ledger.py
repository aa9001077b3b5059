"""What a batch of mail has decided, kept as plain values and written in bulk.

Stages never write to the database one row at a time: they ask the ledger
(which looks at what the batch already decided, then at the database) and
tell it what to add. At the end of the batch the ledger writes every table
with one multi-row statement, which is what makes ingest fast.

Each mail runs inside a draft: if a stage fails, rollback() forgets exactly
what that mail added or changed, and the mails before and after it stand.

Some questions every mail asks (is its dedupe key stored, how much mail came from its
sender lately, did a stored reply answer it, how many tickets did its sender open) are
asked of the whole batch first, one statement each (expect()): on PostgreSQL each
question is a round trip to the server, and a mail asked four or five. A lookup takes
the database's part of its answer from there when it asks exactly what was asked
ahead, else asks itself; the batch's own part (what earlier mails of the batch added)
it counts as before, so a later mail still sees an earlier one. The batch writes none of
those tables before write(), so the answer read ahead is the one the mail would read at
its turn: on SQLite the batch holds the write lock; on PostgreSQL another node may
commit in between, as it may between a mail's lookup and the batch's commit (a dedupe
key stored twice fails the unique index, and the batch is taken again mail by mail).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)

from ..errors import MaildeskError
from ..store.db import upsert
from ..store.rows import ClockRow, Pending, SentMail, TicketRow
from ..store.search import index_messages
from ..store.tables import (
    T_ATTACH,
    T_ATTEMPTS,
    T_CLOCKS,
    T_COUNTERS,
    T_EVENTS,
    T_INBOUND,
    T_KB,
    T_MESSAGES,
    T_OPT_OUTS,
    T_OUTBOX,
    T_REFS,
    T_SURVEYS,
    T_TICKETS,
    TICKET_CHANGES,
    TICKET_COLUMNS,
)
from .refs import format_ref

# Built once: constructing a statement costs more than running it on SQLite.
_STORED_AS = select(T_TICKETS.c.ref).join(T_MESSAGES, T_MESSAGES.c.ticket_id == T_TICKETS.c.id) \
    .where(T_MESSAGES.c.dedupe_key == bindparam("key"))
_TICKET_BY = {col: select(T_TICKETS).where(T_TICKETS.c[col] == bindparam("value"))
              for col in ("id", "number", "ref")}
# On PostgreSQL a ticket read to be changed is locked until the batch commits (FOR NO KEY
# UPDATE: rows that only refer to it, like messages, may still be added). Another node's
# batch that wants it waits, then reads what this one wrote: without the lock, both read
# the same row and the later write undid the earlier one's change (issue 18).
_TICKET_LOCKED = {col: q.with_for_update(key_share=True) for col, q in _TICKET_BY.items()}
_MESSAGE_COUNT = select(func.count()).select_from(T_MESSAGES) \
    .where(T_MESSAGES.c.ticket_id == bindparam("tid"))
_THREAD = select(T_MESSAGES.c.message_id, T_MESSAGES.c.direction, T_MESSAGES.c.from_addr,
                 T_MESSAGES.c.to, T_MESSAGES.c.cc) \
    .where(T_MESSAGES.c.ticket_id == bindparam("tid")) \
    .where(T_MESSAGES.c.visibility == "public").order_by(T_MESSAGES.c.id.desc()).limit(200)
_CONVERSATION = select(T_MESSAGES.c.id, T_MESSAGES.c.direction, T_MESSAGES.c.visibility,
                       T_MESSAGES.c.from_addr, T_MESSAGES.c.from_name, T_MESSAGES.c.to,
                       T_MESSAGES.c.cc, T_MESSAGES.c.date, T_MESSAGES.c.text) \
    .where(T_MESSAGES.c.ticket_id == bindparam("tid")).order_by(T_MESSAGES.c.id)
_ATTACHED = select(T_ATTACH.c.message_pk, T_ATTACH.c.filename, T_ATTACH.c.size) \
    .where(T_ATTACH.c.message_pk.in_(bindparam("ids", expanding=True))) \
    .order_by(T_ATTACH.c.id)
UNRESOLVED = ("new", "open", "pending")
_WAITING = select(T_TICKETS.c.ref, T_TICKETS.c.subject, T_TICKETS.c.status,
                  T_TICKETS.c.priority, T_TICKETS.c.queue, T_TICKETS.c.assignee,
                  T_TICKETS.c.requester, T_TICKETS.c.updated_at) \
    .where(T_TICKETS.c.status.in_(UNRESOLVED)) \
    .order_by(T_TICKETS.c.priority, T_TICKETS.c.updated_at.desc()).limit(100)
# a requester's tickets, the unresolved first, then the last changed, with how many there
# are in all (a count over the rows before the limit: one query for the page and the total)
_LISTED = ("ref", "subject", "status", "queue", "updated_at")
_OF_REQUESTER = select(*(T_TICKETS.c[k] for k in _LISTED), func.count().over().label("total")) \
    .where(T_TICKETS.c.requester == bindparam("r"), T_TICKETS.c.ref != bindparam("besides")) \
    .order_by(case((T_TICKETS.c.status.in_(UNRESOLVED), 0), else_=1),
              T_TICKETS.c.updated_at.desc(), T_TICKETS.c.id.desc()).limit(bindparam("n"))
_UNRESOLVED_OF = _OF_REQUESTER.where(T_TICKETS.c.status.in_(UNRESOLVED))
_RECENT_OF = _OF_REQUESTER.where(or_(
    T_TICKETS.c.status.in_(UNRESOLVED),
    T_TICKETS.c.updated_at >= bindparam("since", type_=T_TICKETS.c.updated_at.type)))
_RECENT_FROM = select(func.count()).select_from(T_MESSAGES).where(
    T_MESSAGES.c.from_addr == bindparam("s"), T_MESSAGES.c.direction == "in",
    T_MESSAGES.c.date.between(bindparam("a", type_=T_MESSAGES.c.date.type),
                              bindparam("b", type_=T_MESSAGES.c.date.type)))
_RECENT_FROM_ON = _RECENT_FROM.where(T_MESSAGES.c.ticket_id == bindparam("t"))
_OPENED_BY = select(func.count()).select_from(T_TICKETS).where(
    T_TICKETS.c.requester == bindparam("r"),
    T_TICKETS.c.created_at >= bindparam("t", type_=T_TICKETS.c.created_at.type))
# the same questions for a whole batch (expect())
_STORED_AS_MANY = select(T_MESSAGES.c.dedupe_key, T_TICKETS.c.ref) \
    .join(T_MESSAGES, T_MESSAGES.c.ticket_id == T_TICKETS.c.id) \
    .where(T_MESSAGES.c.dedupe_key.in_(bindparam("keys", expanding=True)))
_OPENED_BY_MANY = select(T_TICKETS.c.requester, func.count()).where(
    T_TICKETS.c.requester.in_(bindparam("rs", expanding=True)),
    T_TICKETS.c.created_at >= bindparam("t", type_=T_TICKETS.c.created_at.type)) \
    .group_by(T_TICKETS.c.requester)
_FIRST_REFERENCE = select(func.min(T_REFS.c.id)) \
    .where(T_REFS.c.ref.in_(bindparam("mids", expanding=True))).group_by(T_REFS.c.ref)
_REFERENCED_BY_MANY = select(T_REFS.c.ref, T_REFS.c.ticket_id) \
    .where(T_REFS.c.id.in_(_FIRST_REFERENCE.scalar_subquery()))
AHEAD_CHUNK = 500       # keys a statement
_UNASKED = object()     # a question expect() was not asked: the lookup asks it itself
RECENT_CHUNK = 200      # windows a statement: one SELECT each, UNION ALL (SQLite: 500 at most)
_BY_MESSAGE_IDS = select(T_MESSAGES.c.message_id, T_MESSAGES.c.ticket_id) \
    .where(T_MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)))
_INCIDENTS_OF = select(T_TICKETS.c.number).where(T_TICKETS.c.problem == bindparam("ref")) \
    .order_by(T_TICKETS.c.number)
_REFERENCED_BY = select(T_REFS.c.ticket_id).where(T_REFS.c.ref == bindparam("mid")) \
    .order_by(T_REFS.c.id).limit(1)
# where a merged ticket went: its last `ticket.merged` event names the survivor (`into`)
_MERGED_INTO = select(T_EVENTS.c.data).where(T_EVENTS.c.ticket_id == bindparam("tid"),
                                             T_EVENTS.c.kind == "ticket.merged") \
    .order_by(T_EVENTS.c.id.desc())
# a ticket's message by Message-ID, and whether it is the ticket's first (#split)
_MESSAGE_ON = select(T_MESSAGES.c.id, T_MESSAGES.c.message_id, T_MESSAGES.c.direction,
                     T_MESSAGES.c.visibility, T_MESSAGES.c.from_addr, T_MESSAGES.c.from_name,
                     T_MESSAGES.c.subject) \
    .where(T_MESSAGES.c.ticket_id == bindparam("tid"),
           T_MESSAGES.c.message_id.in_(bindparam("ids", expanding=True)))
_OUR_MAIL = select(T_OUTBOX.c.digest).where(
    T_OUTBOX.c.ticket_id == bindparam("tid"),
    T_OUTBOX.c.message_id.in_(bindparam("ids", expanding=True))).order_by(T_OUTBOX.c.id)
_FIRST_MESSAGE = select(func.min(T_MESSAGES.c.id)).where(T_MESSAGES.c.ticket_id == bindparam("tid"))

# inbound mail older than a batch's that another node's batch holds: FOR SHARE waits for
# that batch's commit, after which the rows are settled and no longer match
_OLDER_IN_FLIGHT = select(T_INBOUND.c.id).where(
    T_INBOUND.c.id < bindparam("first"), T_INBOUND.c.state.in_(("queued", "released"))) \
    .with_for_update(read=True)

_SENT = select(T_OUTBOX.c.id, T_OUTBOX.c.ticket_id, T_OUTBOX.c.message_id, T_OUTBOX.c.to)
_SENT_BY_ID = _SENT.where(T_OUTBOX.c.message_id.in_(bindparam("ids", expanding=True))) \
    .order_by(T_OUTBOX.c.id.desc())
_SENT_BY_RETURN_PATH = _SENT.join(T_TICKETS, T_TICKETS.c.id == T_OUTBOX.c.ticket_id).where(
    T_TICKETS.c.ref == bindparam("ref"), T_OUTBOX.c.envelope_from == bindparam("path"))

# no index serves it (template and time): status requests are few, and capped per sender
_SENT_WITH = select(T_OUTBOX.c.to).where(
    T_OUTBOX.c.template == bindparam("template"),
    T_OUTBOX.c.created_at >= bindparam("since", type_=T_OUTBOX.c.created_at.type))

_CLOCKS_OF = select(T_CLOCKS).where(T_CLOCKS.c.ticket_id == bindparam("tid")) \
    .order_by(T_CLOCKS.c.id)

_SETTLED = ("state", "reason", "traceback", "attempts", "processed_at")
_OPEN_SURVEY = select(T_SURVEYS.c.id).where(T_SURVEYS.c.ticket_id == bindparam("tid"),
                                            T_SURVEYS.c.answered_at.is_(None))
_OPTED_OUT = select(T_OPT_OUTS.c.address).where(T_OPT_OUTS.c.address == bindparam("a"))
_LISTS = ("new_tickets", "messages", "attachments", "events", "outbox", "inbound", "bounced",
          "new_clocks", "refs", "answers", "surveys", "opt_outs", "moves", "suggestions",
          "solved", "message_moves")


def _recent_count(i: int, sender: str, start: datetime, end: datetime) -> Select[int, int]:
    """_RECENT_FROM's count as row i of a UNION ALL (its values bound as its own)."""
    m = T_MESSAGES.c
    return select(literal(i).label("i"), func.count()).select_from(T_MESSAGES).where(
        m.from_addr == sender, m.direction == "in", m.date.between(start, end))


def _chunks(keys: Iterable[Any], known: dict[Any, Any], size: int) -> Iterable[list[Any]]:
    """keys not yet in known, once each, size at a time."""
    wanted = [k for k in dict.fromkeys(keys) if k not in known]
    for k in range(0, len(wanted), size):
        yield wanted[k:k + size]


class LostRace(MaildeskError):
    """Another process answered the same survey between our read and our write."""


class Ledger:
    def __init__(self, conn: Connection, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.tickets: dict[int, TicketRow] = {}           # by number
        self.dirty: dict[int, TicketRow] = {}             # existing tickets changed, by number
        self.new_tickets: list[TicketRow] = []
        self.messages: list[Pending] = []
        self.attachments: list[Pending] = []
        self.events: list[Pending] = []
        self.outbox: list[Pending] = []
        self.inbound: list[Pending] = []                  # what became of each mail taken
        self.bounced: list[dict[str, Any]] = []           # outbox mail a bounce failed
        self.clocks: dict[int, list[ClockRow]] = {}       # SLA clocks by ticket number
        self.new_clocks: list[tuple[TicketRow, ClockRow]] = []
        self._clocks_loaded: dict[int, dict[str, Any]] = {}   # clock id -> values as read
        self.message_index: dict[str, TicketRow] = {}     # Message-ID -> ticket, this batch
        self.refs: list[tuple[TicketRow, str]] = []        # (ticket, a Message-ID it answered)
        self.ref_index: dict[str, TicketRow] = {}         # the same, by Message-ID
        self.dedupe_index: dict[str, str] = {}            # dedupe key -> ref, this batch
        self.answers: list[tuple[TicketRow, dict[str, Any]]] = []   # survey answers
        self.surveys: list[dict[str, Any]] = []           # surveys sent
        self.opt_outs: list[dict[str, Any]] = []          # requesters who want no surveys
        self.moves: list[tuple[TicketRow, TicketRow]] = []  # (merged, into): its messages
        self.message_moves: list[tuple[int, TicketRow]] = []  # (message id, into): #split
        self.suggestions: list[Pending] = []               # articles acknowledgements offered
        self.solved: list[tuple[TicketRow, int, datetime]] = []   # (ticket, rank, when)
        self._counter: int | None = None
        self._draft: dict[str, Any] | None = None
        self._as_read: dict[int, dict[str, Any]] = {}     # ticket number -> columns as read
        # PostgreSQL: rows read to be changed are locked, as several nodes may write them
        self._locking = conn.dialect.name == "postgresql"
        self._by = _TICKET_LOCKED if self._locking else _TICKET_BY
        # the first inbound id of a drained batch (pipeline/run.py); None once _caught_up()
        self.older_than: int | None = None
        # the database's answers read ahead for the batch (expect()), by question
        self._ahead: dict[str, dict[Any, Any]] = {
            "stored": {}, "replies": {}, "recent": {}, "opened": {}}

    # -- drafts -----------------------------------------------------------
    def start_mail(self) -> None:
        """What follows is one mail's: undo_mail() forgets all of it, keep_mail() keeps it
        for the batch's write."""
        self._draft = {"lens": {n: len(getattr(self, n)) for n in _LISTS},
                       "counter": self._counter, "saved": {}, "dirty": set(self.dirty),
                       "keys": [], "clocks": {}}

    def keep_mail(self) -> None:
        self._draft = None

    def undo_mail(self) -> None:
        d = self._draft
        assert d is not None
        for name, n in d["lens"].items():
            del getattr(self, name)[n:]
        for number, saved in d["saved"].items():
            if saved is None:
                self.tickets.pop(number, None)
            else:
                for f in fields(TicketRow):
                    setattr(self.tickets[number], f.name, getattr(saved, f.name))
        for number in set(self.dirty) - d["dirty"]:
            del self.dirty[number]
        for index, key in d["keys"]:
            index.pop(key, None)
        for number, (rows, saved) in d["clocks"].items():
            for clock, values in zip(rows, saved):
                for k, v in values.items():
                    setattr(clock, k, v)
            self.clocks[number] = rows
        self._counter = d["counter"]
        self._draft = None

    def change(self, ticket: TicketRow, **values: Any) -> None:
        """Set ticket fields so that a rollback can restore them."""
        if self._draft is not None and ticket.number not in self._draft["saved"]:
            self._draft["saved"][ticket.number] = copy.copy(ticket)
        for k, v in values.items():
            setattr(ticket, k, v)
        if ticket.id is not None:
            self.dirty[ticket.number] = ticket

    def _index(self, index: dict[str, Any], key: str, value: Any) -> None:
        index[key] = value
        if self._draft is not None:
            self._draft["keys"].append((index, key))

    # -- reading ----------------------------------------------------------
    def expect(self, dedupe_keys: Iterable[str] = (), replies_to: Iterable[str] = (),
               recent: Iterable[tuple[str, datetime, datetime]] = (),
               opened: Iterable[tuple[str, datetime]] = ()) -> None:
        """Ask the database once for the batch what its mails will ask one by one (module
        docstring): stored_as(dedupe_keys), referenced_by(replies_to), recent_from(sender,
        start, end) for recent, tickets_opened_by(requester, since) for opened."""
        c, ahead = self.conn, self._ahead
        for chunk in _chunks(dedupe_keys, ahead["stored"], AHEAD_CHUNK):
            found = dict(c.execute(_STORED_AS_MANY, {"keys": chunk}).all())
            ahead["stored"].update((k, found.get(k)) for k in chunk)
        for chunk in _chunks(replies_to, ahead["replies"], AHEAD_CHUNK):
            found = dict(c.execute(_REFERENCED_BY_MANY, {"mids": chunk}).all())
            ahead["replies"].update((m, found.get(m)) for m in chunk)
        for asks in _chunks(recent, ahead["recent"], RECENT_CHUNK):
            counts: dict[int, int] = dict(c.execute(union_all(*(_recent_count(i, *ask)
                                                for i, ask in enumerate(asks)))).all())
            ahead["recent"].update((ask, int(counts.get(i) or 0)) for i, ask in enumerate(asks))
        by_since: dict[datetime, list[str]] = {}
        for requester, since in opened:
            if (requester, since) not in ahead["opened"]:
                by_since.setdefault(since, []).append(requester)
        for since, requesters in by_since.items():
            for chunk in _chunks(requesters, {}, AHEAD_CHUNK):
                found = dict(c.execute(_OPENED_BY_MANY, {"rs": chunk, "t": since}).all())
                ahead["opened"].update(((r, since), int(found.get(r) or 0)) for r in chunk)

    def _ahead_or(self, kind: str, key: Any, query: Any, params: dict[str, Any]) -> Any:
        """What expect() read for this question, else the database's answer now."""
        known = self._ahead[kind].get(key, _UNASKED)
        return self.conn.scalar(query, params) if known is _UNASKED else known

    def _caught_up(self) -> bool:
        """After a lookup found nothing: wait until no older mail is in another node's
        batch still, and say whether the lookup is worth asking again. A reply names the
        mail before it (Message-IDs, a ticket's tag), which another node may be holding
        uncommitted; looked up beside it, the reply would open a second ticket (issue 18:
        2,105 tickets of 2,100 on two nodes). Asked once per batch, and only when a mail's
        tag, token or References found nothing, so batches of new mail still run side by
        side. PostgreSQL only: on SQLite one batch writes at a time anyway."""
        first, self.older_than = self.older_than, None
        if first is None or not self._locking:
            return False
        self.conn.execute(_OLDER_IN_FLIGHT, {"first": first})
        return True

    def _load(self, column: str, value: Any) -> TicketRow | None:
        row = self.conn.execute(self._by[column], {"value": value}).mappings().first()
        if row is None and column != "id" and self._caught_up():
            row = self.conn.execute(self._by[column], {"value": value}).mappings().first()
        if row is None:
            return None
        number = row["number"]
        if number in self.tickets:          # already loaded (and maybe changed) this batch
            return self.tickets[number]
        ticket = TicketRow(**{c: row[c] for c in TICKET_COLUMNS}, id=row["id"])
        self._as_read[number] = {c: row[c] for c in TICKET_CHANGES}
        self.tickets[number] = ticket
        if self._draft is not None:
            self._draft["saved"].setdefault(number, None)
        return ticket

    def by_number(self, number: int) -> TicketRow | None:
        return self.tickets.get(number) or self._load("number", number)

    def by_ref(self, ref: str) -> TicketRow | None:
        prefix, _, n = ref.rpartition("-")
        if prefix.upper() == self.prefix and n.isdigit():
            return self.by_number(int(n))
        return self._load("ref", ref)

    def by_id(self, ticket_id: int) -> TicketRow | None:
        for t in self.tickets.values():
            if t.id == ticket_id:
                return t
        return self._load("id", ticket_id)

    def by_message_ids(self, ids: list[str]) -> TicketRow | None:
        """The ticket holding the first of ids that we know (ids nearest first)."""
        found: dict[str, Any] = {m: self.message_index[m] for m in ids if m in self.message_index}
        missing = [m for m in ids if m not in found]
        if missing:
            rows = self.conn.execute(_BY_MESSAGE_IDS, {"ids": missing}).all()
            if not rows and not found and self._caught_up():
                rows = self.conn.execute(_BY_MESSAGE_IDS, {"ids": missing}).all()
            for mid, tid in rows:
                found.setdefault(mid, tid)
        for m in ids:
            if m in found:
                hit = found[m]
                return hit if isinstance(hit, TicketRow) else self.by_id(hit)
        return None

    def referenced_by(self, message_id: str) -> TicketRow | None:
        """The ticket whose mail answered this Message-ID (its reply came first)."""
        if message_id in self.ref_index:
            return self.ref_index[message_id]
        tid = self._ahead_or("replies", message_id, _REFERENCED_BY, {"mid": message_id})
        return self.by_id(tid) if tid is not None else None

    def merged_into(self, ticket: TicketRow) -> TicketRow | None:
        """The ticket this one was merged into (one step), or None. A merge closes the
        ticket, points its linked_to at the survivor and says so in a `ticket.merged`
        event with `into`; a ticket that follows a closed one (linked_to too) has no such
        event, so both must agree. Looked up only for a closed, linked ticket."""
        for merged, into in reversed(self.moves):       # merged in this batch
            if merged is ticket:
                return into
        if ticket.status != "closed" or ticket.linked_to is None or ticket.id is None:
            return None
        for data in self.conn.scalars(_MERGED_INTO, {"tid": ticket.id}):
            if data and data.get("into"):
                went = self.by_ref(str(data["into"]))
                return went if went is not None and went.id == ticket.linked_to else None
        return None

    def messages_on(self, ticket: TicketRow, message_ids: list[str]) -> list[dict[str, Any]]:
        """The stored messages of ticket among message_ids, in their order, each with
        `first`: whether it is the message that opened the ticket."""
        if ticket.id is None or not message_ids:
            return []
        rows = {r["message_id"]: dict(r) for r in self.conn.execute(
            _MESSAGE_ON, {"tid": ticket.id, "ids": message_ids}).mappings()}
        first = self.conn.scalar(_FIRST_MESSAGE, {"tid": ticket.id}) if rows else None
        return [rows[m] | {"first": rows[m]["id"] == first}
                for m in dict.fromkeys(message_ids) if m in rows]

    def our_mail(self, ticket: TicketRow, message_ids: list[str]) -> list[str]:
        """The digests of the mail we sent on ticket (notifications, replies) among
        message_ids: what their stored bytes answered is in their headers."""
        if ticket.id is None or not message_ids:
            return []
        return list(self.conn.scalars(_OUR_MAIL, {"tid": ticket.id, "ids": message_ids}))

    def message_count(self, ticket: TicketRow) -> int:
        """Messages on a ticket, this batch's included."""
        pending = sum(1 for m in self.messages if m.ticket is ticket)
        if ticket.id is None:
            return pending
        return pending + int(self.conn.scalar(_MESSAGE_COUNT, {"tid": ticket.id}) or 0)

    def thread_of(self, ticket: TicketRow, people: set[str]) -> tuple[str, ...]:
        """Message-IDs for the References of a mail to people, oldest first (at most 20):
        only of mail they sent or were sent. The rest would tell them what they never saw:
        an agent's own Message-ID (and the host it names), a notification to agents, a
        stranger's mail on the ticket."""
        rows: list[tuple[str, str, str, list[str], list[str]]] = []
        if ticket.id is not None:
            rows = [tuple(r) for r in self.conn.execute(_THREAD, {"tid": ticket.id})][::-1]
        rows += [(m.values["message_id"], m.values["direction"], m.values["from_addr"],
                  m.values["to"], m.values["cc"]) for m in self.messages
                 if m.ticket is ticket and m.values["visibility"] == "public"]
        ids = [mid for mid, direction, sender, to, cc in rows
               if (sender in people if direction == "in" else bool(people.intersection(
                   (*(to or ()), *(cc or ())))))]
        return tuple(dict.fromkeys(ids))[-20:]

    def conversation(self, ticket: TicketRow, people: set[str]) -> list[dict[str, Any]]:
        """The ticket's messages as an agent reads its history, oldest first: every mail that
        came in (internal notes and machines' mail marked by visibility), and of ours the
        mail that went to people (the customer, CC participants), not the notices to agents.
        Committed messages only: asked by a mail of its own, after the ones it lists."""
        if ticket.id is None:
            return []
        rows = [dict(r) for r in self.conn.execute(_CONVERSATION, {"tid": ticket.id}).mappings()
                if r["direction"] == "in" or people.intersection((*(r["to"] or ()),
                                                                   *(r["cc"] or ())))]
        files: dict[int, list[dict[str, Any]]] = {}
        if rows:
            for pk, name, size in self.conn.execute(_ATTACHED, {"ids": [r["id"] for r in rows]}):
                files.setdefault(pk, []).append({"name": name, "size": size})
        return [r | {"attachments": files.get(r["id"], [])} for r in rows]

    def incidents_of(self, problem: str) -> list[TicketRow]:
        """The tickets linked to the problem ticket of that ref (their `problem`), this
        batch's too, oldest first; loaded to be changed (a problem resolves them)."""
        numbers = {t.number for t in self.tickets.values() if t.problem == problem}
        numbers |= set(self.conn.scalars(_INCIDENTS_OF, {"ref": problem}))
        found = [self.by_number(n) for n in sorted(numbers)]
        return [t for t in found if t is not None and t.problem == problem]

    def waiting(self, assignee: str | None = None, queues: tuple[str, ...] = (),
                unassigned: bool = False) -> list[dict[str, Any]]:
        """Tickets not yet resolved, most urgent first (at most 100): an agent's, or those
        of some queues, or the unassigned ones; what `#mine` and `#queue` list by mail."""
        q = _WAITING
        if assignee is not None:
            q = q.where(T_TICKETS.c.assignee == assignee)
        if queues:
            q = q.where(T_TICKETS.c.queue.in_(queues))
        if unassigned:
            q = q.where(T_TICKETS.c.assignee.is_(None))
        return [dict(r) for r in self.conn.execute(q).mappings()]

    def recent_from(self, sender: str, start: datetime, end: datetime,
                    on: TicketRow | None = None) -> int:
        """Mail from sender dated between start and end, this batch's included; on that
        ticket only, when given.

        By the mails' own dates, so that importing a year of history is not a flood.
        """
        pending = sum(1 for m in self.messages if m.values["from_addr"] == sender
                      and m.values["direction"] == "in" and start <= m.values["date"] <= end
                      and (on is None or m.ticket is on))
        if on is not None and on.id is None:     # opened in this batch: all it has is here
            return pending
        if on is not None:
            return pending + int(self.conn.scalar(_RECENT_FROM_ON, {
                "s": sender, "a": start, "b": end, "t": on.id}) or 0)
        return pending + int(self._ahead_or("recent", (sender, start, end), _RECENT_FROM,
                                            {"s": sender, "a": start, "b": end}) or 0)

    def tickets_opened_by(self, requester: str, since: datetime) -> int:
        """Tickets a requester opened since then, by the desk's clock, this batch's included:
        what the acknowledgement limit counts. Not by the mails' own dates: a sender who
        writes them (descending, or spread over years) would escape any count by date, and
        have the desk mail a forged From without end."""
        pending = sum(1 for t in self.new_tickets if t.requester == requester
                      and t.created_at >= since)
        return pending + int(self._ahead_or("opened", (requester, since), _OPENED_BY,
                                            {"r": requester, "t": since}) or 0)

    def requester_tickets(self, requester: str, limit: int, since: datetime | None = None,
                          besides: str = "") -> tuple[list[dict[str, Any]], int]:
        """A requester's tickets not yet resolved and, since given, those changed since
        then: at most limit of them (this batch's new ones, then the unresolved, then the
        last changed), and how many there are in all. besides: a ref left out (the ticket
        a notice is about)."""
        new = [{k: getattr(t, k) for k in _LISTED} for t in reversed(self.new_tickets)
               if t.requester == requester and t.ref != besides]
        params = {"r": requester, "besides": besides, "since": since,
                  "n": max(limit - len(new), 1)}    # 1 at least: it carries the total
        stored = self.conn.execute(_UNRESOLVED_OF if since is None else _RECENT_OF,
                                   params).mappings().all()
        rows = new + [{k: r[k] for k in _LISTED} for r in stored]
        return rows[:limit], len(new) + (stored[0]["total"] if stored else 0)

    def sent_to(self, address: str, template: str, since: datetime) -> int:
        """Mails of a template queued for address since then, this batch's included."""
        tos = [p.values["to"] for p in self.outbox if p.values["template"] == template
               and p.values["created_at"] >= since]
        tos += [to for (to,) in self.conn.execute(_SENT_WITH, {"template": template,
                                                               "since": since})]
        return sum(address in (to or ()) for to in tos)

    def sent_mail(self, ref: str | None = None, return_path: str | None = None,
                  message_ids: list[str] = ()) -> SentMail | None:  # type: ignore[assignment]
        """The outbox mail with this return path on ticket ref, or else with one of
        message_ids (mail written in earlier batches: a bounce takes minutes at least)."""
        row = None
        if ref is not None and return_path is not None:
            row = self.conn.execute(_SENT_BY_RETURN_PATH, {"ref": ref, "path": return_path}).first()
        if row is None and message_ids:
            row = self.conn.execute(_SENT_BY_ID, {"ids": list(message_ids)}).first()
        return None if row is None else SentMail(row[0], row[1], row[2], tuple(row[3] or ()))

    def clocks_of(self, ticket: TicketRow) -> list[ClockRow]:
        """The ticket's SLA clocks, to change in place (a rollback restores them)."""
        rows = self.clocks.get(ticket.number)
        if rows is None:
            rows = []
            if ticket.id is not None:
                query = _CLOCKS_OF.with_for_update() if self._locking else _CLOCKS_OF
                for r in self.conn.execute(query, {"tid": ticket.id}).mappings():
                    rows.append(ClockRow(**dict(r)))
                    self._clocks_loaded[r["id"]] = dict(r)
            self.clocks[ticket.number] = rows
        if self._draft is not None and ticket.number not in self._draft["clocks"]:
            self._draft["clocks"][ticket.number] = (list(rows), [c.values() | {"id": c.id}
                                                                 for c in rows])
        return rows

    def add_clock(self, ticket: TicketRow, clock: ClockRow) -> None:
        self.clocks_of(ticket).append(clock)
        self.new_clocks.append((ticket, clock))

    def survey_open(self, ticket: TicketRow) -> bool:
        """Whether the ticket has a survey sent and not yet answered (this batch's answers
        count). On PostgreSQL the survey row stays locked until the batch commits, so two
        daemons cannot both take the answer."""
        if ticket.id is None or any(t is ticket for t, _v in self.answers):
            return False
        query = _OPEN_SURVEY.with_for_update() if self._locking else _OPEN_SURVEY
        return self.conn.execute(query, {"tid": ticket.id}).first() is not None

    def answer_survey(self, ticket: TicketRow, **values: Any) -> None:
        """Record the answer to the ticket's open survey (survey_open said there is one)."""
        self.answers.append((ticket, values))

    def add_survey(self, ticket: TicketRow, at: datetime) -> None:
        self.surveys.append({"ticket": ticket, "requester": ticket.requester, "sent_at": at})

    def opted_out(self, address: str) -> bool:
        return any(o["address"] == address for o in self.opt_outs) or \
            self.conn.execute(_OPTED_OUT, {"a": address}).first() is not None

    def opt_out(self, address: str, at: datetime) -> None:
        if not self.opted_out(address):
            self.opt_outs.append({"address": address, "at": at})

    def suggested(self, ticket: TicketRow) -> dict[int, str]:
        """The articles the ticket's acknowledgement suggested, by rank (this batch's too)."""
        out = {p.values["rank"]: p.values["slug"] for p in self.suggestions
               if p.ticket is ticket and p.values["slug"]}
        if ticket.id is not None:
            out |= dict(self.conn.execute(
                select(T_KB.c.rank, T_KB.c.slug).where(T_KB.c.ticket_id == ticket.id,
                                                       T_KB.c.slug.is_not(None))).all())
        return out

    def add_suggestion(self, ticket: TicketRow, slug: str | None, rank: int,
                       score: float | None, at: datetime) -> None:
        """An article offered to the ticket's requester; slug None: none was good enough."""
        self.suggestions.append(Pending({"slug": slug, "rank": rank, "score": score,
                                         "suggested_at": at}, ticket=ticket))

    def solve(self, ticket: TicketRow, rank: int, at: datetime) -> None:
        """The requester said the article at rank solved it; the first such answer counts."""
        self.solved.append((ticket, rank, at))

    def claim_clock(self, clock: ClockRow, seen: datetime | None) -> bool:
        """Write the scan's step of a clock now, if its next check is still the one the scan
        read: of two scanners exactly one wins (compare and set). Written at once, not at
        the batch's end, because the winner must know it won before it acts."""
        return self.conn.execute(
            update(T_CLOCKS).where(T_CLOCKS.c.id == clock.id, T_CLOCKS.c.next_check_at == seen)
            .values(warned_at=clock.warned_at, breached_at=clock.breached_at,
                    level=clock.level, next_check_at=clock.next_check_at)).rowcount == 1

    def stored_as(self, dedupe_key: str) -> str | None:
        if dedupe_key in self.dedupe_index:
            return self.dedupe_index[dedupe_key]
        return self._ahead_or("stored", dedupe_key, _STORED_AS, {"key": dedupe_key})

    # -- adding -----------------------------------------------------------
    def next_number(self) -> int:
        if self._counter is None:
            name = f"ticket:{self.prefix}"
            q = select(T_COUNTERS.c.value).where(T_COUNTERS.c.name == name)
            if self._locking:
                q = q.with_for_update()
            value = self.conn.scalar(q)
            if value is None:       # the desk's first ticket; another node may race us to it
                self.conn.execute(upsert(self.conn, T_COUNTERS).values(name=name, value=0)
                                  .on_conflict_do_nothing(index_elements=["name"]))
                value = self.conn.scalar(q)
            self._counter = int(value or 0)
        self._counter += 1
        return self._counter

    def open_ticket(self, **values: Any) -> TicketRow:
        number = self.next_number()
        linked: TicketRow | None = values.pop("linked_ticket", None)
        ticket = TicketRow(number=number, ref=format_ref(self.prefix, number),
                           linked_to=None, linked_ticket=linked, **values)
        self.tickets[number] = ticket
        if self._draft is not None:
            self._draft["saved"].setdefault(number, None)
        self.new_tickets.append(ticket)
        return ticket

    def add_message(self, ticket: TicketRow, values: dict[str, Any],
                    attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
                    answers: tuple[str, ...] = ()) -> Pending:
        """answers: the Message-IDs the mail replied to, kept for mail that comes later."""
        msg = Pending(values, ticket=ticket)
        self.messages.append(msg)
        self._index(self.message_index, values["message_id"], ticket)
        self._index(self.dedupe_index, values["dedupe_key"], ticket.ref)
        for ref in answers:
            self.refs.append((ticket, ref))
            self._index(self.ref_index, ref, ticket)
        for a in attachments:
            self.attachments.append(Pending(a, message=msg))
        return msg

    def add_event(self, ticket: TicketRow, kind: str, at: datetime, actor: str | None = None,
                  **data: Any) -> Pending:
        """Record an event (core/fire.py's fire() is how things happen; this only writes)."""
        event = Pending({"kind": kind, "at": at, "actor": actor, "data": data}, ticket=ticket)
        self.events.append(event)
        return event

    def add_outbox(self, ticket: TicketRow | None, values: dict[str, Any]) -> None:
        self.outbox.append(Pending(values, ticket=ticket))

    def move_messages(self, ticket: TicketRow, into: TicketRow) -> None:
        """Every message of ticket, this batch's too, to ticket into (a merge)."""
        self.moves.append((ticket, into))

    def move_message(self, message_id: int, into: TicketRow) -> None:
        """One stored message (its attachments go with it) to ticket into (a split)."""
        self.message_moves.append((message_id, into))

    def bounce(self, sent: SentMail, at: datetime, detail: str) -> None:
        """The mail did not arrive after all: failed, with the bounce's words as the last error."""
        self.bounced.append({"outbox_id": sent.id, "at": at, "result": "bounced",
                             "detail": detail})

    def _write_changes(self) -> None:
        """UPDATE each changed ticket's changed columns only, one statement per set of
        columns: a column this batch did not change is never written back as it was read."""
        by_columns: dict[tuple[str, ...], list[TicketRow]] = {}
        for t in self.dirty.values():
            read = self._as_read.get(t.number)
            if read is None:    # new in this batch, linked to a ticket made after it
                cols: tuple[str, ...] = ("linked_to",)
            else:
                cols = tuple(k for k in TICKET_CHANGES if getattr(t, k) != read[k])
            if cols:
                by_columns.setdefault(cols, []).append(t)
        for cols, tickets in by_columns.items():
            self.conn.execute(update(T_TICKETS).where(T_TICKETS.c.id == bindparam("b_id"))
                              .values({k: bindparam(f"b_{k}") for k in cols}),
                              [{"b_id": t.id, **{f"b_{k}": getattr(t, k) for k in cols}}
                               for t in tickets])

    def _write_clocks(self) -> None:
        if self.new_clocks:
            ids = self.conn.execute(insert(T_CLOCKS).returning(T_CLOCKS.c.id,
                                                               sort_by_parameter_order=True),
                                    [{**clock.values(), "ticket_id": t.id}
                                     for t, clock in self.new_clocks]).scalars().all()
            for (t, clock), i in zip(self.new_clocks, ids):
                clock.id, clock.ticket_id = i, t.id
        changed = [c for rows in self.clocks.values() for c in rows
                   if c.id in self._clocks_loaded and {**c.values(), "id": c.id}
                   != self._clocks_loaded[c.id]]
        if changed:
            cols = [k for k in changed[0].values() if k != "ticket_id"]
            self.conn.execute(update(T_CLOCKS).where(T_CLOCKS.c.id == bindparam("b_id"))
                              .values({k: bindparam(f"b_{k}") for k in cols}),
                              [{"b_id": c.id, **{f"b_{k}": getattr(c, k) for k in cols}}
                               for c in changed])

    def _write_surveys(self) -> None:
        c = self.conn
        if self.surveys:
            c.execute(insert(T_SURVEYS), [{"ticket_id": v["ticket"].id, "requester": v["requester"],
                                           "sent_at": v["sent_at"]} for v in self.surveys])
        if self.opt_outs:
            c.execute(insert(T_OPT_OUTS), self.opt_outs)
        for ticket, values in self.answers:
            done = c.execute(update(T_SURVEYS).where(T_SURVEYS.c.ticket_id == ticket.id,
                                                     T_SURVEYS.c.answered_at.is_(None))
                             .values(**values)).rowcount
            if done != 1:
                raise LostRace(f"the survey of {ticket.ref} was answered meanwhile")

    def settle(self, inbound_id: int | None, message: Pending | None, **values: Any
               ) -> Pending:
        """Record what became of an inbound mail: update its row, or insert it (id None).
        The returned row holds its id once write() inserted it: the logs name it."""
        row = Pending(values, message=message, id=inbound_id)
        self.inbound.append(row)
        return row

    # -- writing ----------------------------------------------------------
    def write(self) -> None:
        c = self.conn
        if self.new_tickets:
            for t in self.new_tickets:
                if t.linked_ticket is not None:
                    t.linked_to = t.linked_ticket.id
            ids = c.execute(insert(T_TICKETS).returning(T_TICKETS.c.id,
                                                        sort_by_parameter_order=True),
                            [{k: getattr(t, k) for k in TICKET_COLUMNS}
                             for t in self.new_tickets]).scalars().all()
            for t, i in zip(self.new_tickets, ids):
                t.id = i
            # a new ticket linked to another new one of this batch
            late = [t for t in self.new_tickets
                    if t.linked_ticket is not None and t.linked_to is None]
            for t in late:
                t.linked_to = t.linked_ticket.id  # type: ignore[union-attr]
                self.dirty[t.number] = t
        self._write_changes()
        if self.messages:
            rows = [{**m.values, "ticket_id": m.ticket.id} for m in self.messages]  # type: ignore[union-attr]
            ids = c.execute(insert(T_MESSAGES).returning(T_MESSAGES.c.id,
                                                         sort_by_parameter_order=True),
                            rows).scalars().all()
            for m, i in zip(self.messages, ids):
                m.id = i
            index_messages(c, [(m.id, m.values["subject"], m.values["text"])
                               for m in self.messages if m.values["direction"] == "in"])
        for merged, into in self.moves:     # and what its mail answered: by_replies()
            for table in (T_MESSAGES, T_REFS):
                c.execute(update(table).where(table.c.ticket_id == merged.id)
                          .values(ticket_id=into.id))
        for message_pk, into in self.message_moves:
            c.execute(update(T_MESSAGES).where(T_MESSAGES.c.id == message_pk)
                      .values(ticket_id=into.id))
        for table, items, key in ((T_ATTACH, self.attachments, "message_pk"),
                                  (T_EVENTS, self.events, "ticket_id"),
                                  (T_OUTBOX, self.outbox, "ticket_id"),
                                  (T_KB, self.suggestions, "ticket_id")):
            if items:
                c.execute(insert(table), [
                    {**p.values, key: (p.message.id if key == "message_pk"  # type: ignore[union-attr]
                                       else p.ticket.id if p.ticket else None)}
                    for p in items])
        self._write_surveys()
        for ticket, rank, at in self.solved:
            c.execute(update(T_KB).where(T_KB.c.ticket_id == ticket.id, T_KB.c.rank == rank,
                                         T_KB.c.solved_at.is_(None)).values(solved_at=at))
        if self.refs:
            c.execute(insert(T_REFS), [{"ticket_id": t.id, "ref": r} for t, r in self.refs])
        self._write_clocks()
        if self.bounced:
            c.execute(insert(T_ATTEMPTS), self.bounced)
            c.execute(update(T_OUTBOX).where(T_OUTBOX.c.id == bindparam("b_id"))
                      .values(status="failed", last_error=bindparam("b_detail")),
                      [{"b_id": b["outbox_id"], "b_detail": b["detail"]} for b in self.bounced])
        old_inbound = [{"b_id": p.id, "b_message_pk": p.message.id if p.message else None,
                        **{f"b_{k}": p.values[k] for k in _SETTLED}}
                       for p in self.inbound if p.id is not None]
        new_inbound = [p for p in self.inbound if p.id is None]
        if new_inbound:
            ids = c.execute(insert(T_INBOUND).returning(T_INBOUND.c.id,
                                                        sort_by_parameter_order=True),
                            [{**p.values, "message_pk": p.message.id if p.message else None}
                             for p in new_inbound]).scalars().all()
            for p, i in zip(new_inbound, ids):
                p.id = i
        if old_inbound:
            c.execute(update(T_INBOUND).where(T_INBOUND.c.id == bindparam("b_id"))
                      .values({k: bindparam(f"b_{k}") for k in (*_SETTLED, "message_pk")}),
                      old_inbound)
        if self._counter is not None:
            c.execute(update(T_COUNTERS).where(T_COUNTERS.c.name == f"ticket:{self.prefix}")
                      .values(value=self._counter))
