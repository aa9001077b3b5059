"""What rules can talk about: the fields of a mail and a ticket, and durations.

A rule's conditions are checked against Facts: the mail that caused the
event (if any), the ticket as it is now, and the clock. Every field has a
kind, which decides the operators it takes; the loader rejects a condition
whose operator does not fit its field, with the line and column.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..config.schema import Desk, WorkingHours
from ..mail.parse import ParsedMail
from ..store.rows import TicketRow

# kind -> operators it takes
OPERATORS: dict[str, tuple[str, ...]] = {
    "text": ("is", "in", "contains", "matches"),
    "texts": ("is", "in", "contains", "matches"),      # contains: one of them is this
    "headers": ("is", "in", "contains", "matches"),    # contains: one of them holds this
    "address": ("is", "in", "contains", "matches", "domain"),
    "addresses": ("is", "in", "contains", "matches", "domain"),
    "bool": ("is",),
    "number": ("is", "gt", "lt"),
    "duration": ("gt", "lt"),
}
ALL_OPERATORS = ("is", "in", "contains", "matches", "domain", "gt", "lt")

FIELDS: dict[str, str] = {
    # the mail
    "from": "address", "to": "addresses", "cc": "addresses", "sender_domain": "text",
    "subject": "text", "body": "text", "has_attachment": "bool", "attachment_type": "texts",
    "language": "text", "mailbox": "text", "address": "addresses",
    "sender_verified": "bool",      # a live reply address, DKIM or trusted A-R proves From
    # the ticket
    "queue": "text", "status": "text", "type": "text", "category": "text",
    "priority": "text", "impact": "text", "urgency": "text", "tags": "texts",
    "assignee": "text", "requester": "address", "age": "duration",
    "business_hours": "bool", "replies": "number",
    # the event: who acted (`rule:NAME`, `agent:NAME`, `sla`, `job:NAME`, or a sender's
    # address), and on ticket.updated the field that changed: a rule can leave out the
    # changes it made itself
    "actor": "text", "changed": "text",
    # a survey's answer (survey.answered)
    "rating": "number", "satisfied": "bool",
    # what the triage model predicted for a new ticket's mail (ticket.created; README:
    # "Triage on arrival"); confidence is the category's. No model, or no word it knows:
    # no value, and no condition on them holds
    "predicted.category": "text", "predicted.confidence": "number",
    "predicted.queue": "text", "predicted.queue_confidence": "number",
    "predicted.type": "text", "predicted.type_confidence": "number",
}
HEADER_PREFIX = "header."   # header.x-priority, header.list-id: every value of that header
PREDICTED = tuple(name for name in FIELDS if name.startswith("predicted."))
# facts of one event alone: on any other they have no value, so a condition on them is a
# mistake (it never holds, or under `not` always)
ONLY_ON: dict[str, str] = {name: "ticket.created" for name in PREDICTED}
# numbers with bounds, and why: a comparison outside them never holds, or always
BOUNDS: dict[str, tuple[float, float, str]] = {
    name: (0.0, 1.0, "confidences are 0 to 1 (80 % is 0.8)") for name in PREDICTED
    if FIELDS[name] == "number"}



def field_kind(name: str) -> str | None:
    if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX):
        return "headers"
    return FIELDS.get(name)


@dataclass(frozen=True)
class BusinessHours:
    """A plain working week for `business_hours`, until calendars arrive with SLAs."""

    days: frozenset[int] = frozenset(range(5))       # Monday = 0
    start: int = 9 * 60
    end: int = 17 * 60

    def open_at(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start <= minute < self.end


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def business_hours(hours: WorkingHours) -> tuple[BusinessHours, ZoneInfo]:
    def minutes(hhmm: str) -> int:
        h, m = hhmm.split(":")
        return int(h) * 60 + int(m)
    return (BusinessHours(frozenset(_DAYS.index(d) for d in hours.days), minutes(hours.start),
                          minutes(hours.end)), ZoneInfo(hours.timezone))


def facts_for(desk: Desk, ticket: TicketRow | None, mail: ParsedMail | None, now: datetime,
              replies: Callable[[], int] = lambda: 0, recipients: tuple[str, ...] = (),
              mailbox: str | None = None, verified: Callable[[], bool] = lambda: False,
              event: dict[str, Any] | None = None, actor: str | None = None) -> Facts:
    """verified: whether the mail's sender is proven, asked only by a rule that wants to
    know (it may cost a DNS query); event: what the event recorded (a survey's rating,
    the field a change changed)."""
    hours, zone = business_hours(desk.hours)
    facts = Facts(ticket, mail, now, now.astimezone(zone), hours, replies, recipients, mailbox,
                  verified)
    facts.event, facts.actor = event or {}, actor or ""
    return facts


class Facts:
    """The values conditions look at, computed on first use and then kept."""

    def __init__(self, ticket: TicketRow | None, mail: ParsedMail | None, now: datetime,
                 local_now: datetime, hours: BusinessHours,
                 replies: Callable[[], int] = lambda: 0,
                 recipients: tuple[str, ...] = (), mailbox: str | None = None,
                 verified: Callable[[], bool] = lambda: False) -> None:
        self.ticket, self.mail, self.now = ticket, mail, now
        self._local_now, self._hours = local_now, hours
        self._replies, self._recipients, self._mailbox = replies, recipients, mailbox
        self._verified = verified
        self._cache: dict[str, Any] = {}
        self.event: dict[str, Any] = {}       # what the event recorded
        self.actor = ""

    def get(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    def _compute(self, name: str) -> Any:
        if name.startswith(HEADER_PREFIX):
            wanted = name[len(HEADER_PREFIX):].lower()
            return [v for k, v in self.mail.headers if k == wanted] if self.mail else []
        getter = _GETTERS[name]
        return getter(self)


def _m(fn: Callable[[ParsedMail], Any], empty: Any) -> Callable[[Facts], Any]:
    return lambda f: fn(f.mail) if f.mail is not None else empty


def _t(attr: str, empty: Any = None) -> Callable[[Facts], Any]:
    return lambda f: getattr(f.ticket, attr) if f.ticket is not None else empty


def _predicted(key: str) -> Callable[[Facts], Any]:
    return lambda f: (f.event.get("predicted") or {}).get(key)


_GETTERS: dict[str, Callable[[Facts], Any]] = {
    "from": _m(lambda m: m.from_addr, ""),
    "to": _m(lambda m: list(m.to), []),
    "cc": _m(lambda m: list(m.cc), []),
    "sender_domain": _m(lambda m: m.from_addr.rpartition("@")[2], ""),
    "subject": _m(lambda m: m.subject, ""),
    "body": _m(lambda m: m.text, ""),
    "has_attachment": _m(lambda m: bool(m.attachments), False),
    "attachment_type": _m(lambda m: [a.content_type for a in m.attachments], []),
    "language": lambda f: None,          # no language detection yet: never matches
    "mailbox": lambda f: f._mailbox or "",
    "sender_verified": lambda f: f._verified(),
    "address": lambda f: list(f._recipients),
    "queue": _t("queue"), "status": _t("status"), "type": _t("type"),
    "category": _t("category"), "priority": _t("priority"), "impact": _t("impact"),
    "urgency": _t("urgency"), "tags": _t("tags", []), "assignee": _t("assignee"),
    "requester": _t("requester"),
    "age": lambda f: (f.now - f.ticket.created_at).total_seconds() if f.ticket else 0.0,
    "business_hours": lambda f: f._hours.open_at(f._local_now),
    "replies": lambda f: f._replies(),
    "actor": lambda f: f.actor,
    "changed": lambda f: f.event.get("field") or "",
    "rating": lambda f: f.event.get("rating"),
    "satisfied": lambda f: f.event.get("satisfied"),
    **{name: _predicted(name.partition(".")[2]) for name in PREDICTED},
}
assert set(_GETTERS) == set(FIELDS)
