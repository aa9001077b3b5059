"""Carrying out a Decision: on paper (Preview), or on a real ticket (core/fire.py's
LedgerEffects, which shares BaseEffects).

Both share apply_decision(), so `maildesk rules test` shows exactly what the
pipeline would do. Every change on a real ticket is an event whose actor is
`rule:<name>`: `tickets show` explains why a ticket is where it is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.schema import Desk
from ..store.rows import TicketRow
from ..tickets.audience import recipients
from .actions import Effects
from .engine import Decision


def apply_decision(decision: Decision, fx: Effects) -> None:
    for rule, action in decision.actions:
        action.run(rule.name, fx)


class BaseEffects:
    """Priority follows impact x urgency (the desk's matrix) unless a rule set it."""

    desk: Desk
    ticket: TicketRow
    priority_set = False

    def change(self, rule: str, **values: Any) -> None:
        if "priority" in values:
            self.priority_set = True
        self._set(rule, values)
        if {"impact", "urgency"} & set(values) and not self.priority_set:
            self._set(rule, {"priority": self.desk.priority(self.ticket.impact,
                                                            self.ticket.urgency)})

    def _set(self, rule: str, values: dict[str, Any]) -> None:
        raise NotImplementedError

    def tags(self, rule: str, add: list[str], remove: list[str]) -> None:
        tags = [t for t in self.ticket.tags if t not in remove]
        self.change(rule, tags=tags + [t for t in add if t not in tags])

    def escalate(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        if queue is not None:
            self.change(rule, queue=queue)
        self._escalated(rule, level, queue, group)
        if group is not None:
            self.notify(rule, "escalation", [group], level)

    def _escalated(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        raise NotImplementedError

    def link_problem(self, rule: str, ref: str) -> None:
        """Set the ticket's problem (the pipeline's LedgerEffects checks first that ref is
        a problem ticket: the dry run cannot)."""
        self.change(rule, problem=ref)

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        raise NotImplementedError


@dataclass
class Preview(BaseEffects):
    """What the actions would do, for a dry run; touches nothing."""

    desk: Desk
    ticket: TicketRow
    changes: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    acknowledgement: str | None | bool = True       # True: the default acknowledgement
    suggested: int | None = None                    # None: as the queue or kb.suggest say
    dropped: str | None = None
    # what a change fires, as in the pipeline (ticket.updated, ticket.resolved): the dry run
    # runs the rules on it too, with the actor and the change
    chain: Callable[[Preview, str, dict[str, Any]], None] | None = None

    def _set(self, rule: str, values: dict[str, Any]) -> None:
        for name, new in values.items():
            old = getattr(self.ticket, name)
            if old != new:
                setattr(self.ticket, name, new)
                self.changes.append({"rule": rule, "field": name, "old": old, "new": new})
                if self.chain is not None:
                    self.chain(self, f"rule:{rule}", {"field": name, "old": old, "new": new})

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        self.notifications.append({"rule": rule, "template": template, "to": [
            a for _n, a in recipients(self.desk, self.ticket, to, level)]})

    def acknowledge(self, rule: str, template: str | None) -> None:
        self.acknowledgement = template

    def suggest(self, rule: str, articles: int) -> None:
        self.suggested = articles

    def _escalated(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        self.escalations.append({"rule": rule, "level": level, "queue": queue, "group": group})

    def drop(self, rule: str, reason: str) -> None:
        self.dropped = f"rule {rule!r}: {reason}"
