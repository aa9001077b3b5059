"""Plain values of what the tables hold: a ticket, a pending row, an SLA clock, a sent mail.

A leaf: it imports nothing of maildesk, so every layer may pass these values
without importing the layer that reads or writes them. Which columns a table
has is the table's business (store/tables.py derives its lists from it).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

RUNNING, PAUSED, STOPPED = "running", "paused", "stopped"
# a ticket's statuses, in the order of its life; and the SLA states `tickets list --sla`
# filters by (sla/views.py). Here, with no import behind them, for the CLI's options.
STATUSES = ("new", "open", "pending", "resolved", "closed")
SLA_FILTERS = ("breached", "at-risk")


@dataclass
class TicketRow:
    """A ticket as plain values; `id` is None until the ledger writes it."""

    number: int
    ref: str
    subject: str
    requester: str
    requester_name: str | None
    cc: list[str]
    status: str
    type: str
    priority: str
    impact: str
    urgency: str
    tags: list[str]
    problem: str | None
    category: str | None
    queue: str
    assignee: str | None
    linked_to: int | None
    created_at: datetime
    updated_at: datetime
    id: int | None = None
    reminded_at: datetime | None = None    # pending: when its requester was last reminded
    root_cause: str | None = None          # a problem's: what causes its incidents
    workaround: str | None = None          # a problem's: how its incidents get by meanwhile
    known_error: bool = False              # a problem's: its workaround is known to work
    resolved_by: str | None = None         # an incident's: the problem that resolved it
    linked_ticket: TicketRow | None = field(default=None, repr=False)


@dataclass
class Pending:
    """A row to insert, with the ticket (or message) whose id it needs once those are written."""

    values: dict[str, Any]
    ticket: TicketRow | None = None
    message: Pending | None = None
    id: int | None = None


@dataclass(frozen=True)
class SentMail:
    """An outbox mail a bounce answers."""

    id: int
    ticket_id: int
    message_id: str
    to: tuple[str, ...]


@dataclass
class ClockRow:
    """An SLA clock (sla/clocks.py says how it runs)."""

    kind: str
    policy: str
    target: float
    started_at: datetime
    state: str = RUNNING
    elapsed: float = 0.0
    running_since: datetime | None = None
    due_at: datetime | None = None
    warn_at: datetime | None = None
    stopped_at: datetime | None = None
    warned_at: datetime | None = None
    breached_at: datetime | None = None
    level: int = 0
    next_check_at: datetime | None = None
    pauses: list[list[str | None]] = field(default_factory=list)
    id: int | None = None
    ticket_id: int | None = None

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "id"}

    @property
    def breached(self) -> bool:
        return self.breached_at is not None
