"""Carrying out a Decision: on a real ticket (LedgerEffects) or on paper (Preview).

Both share apply_decision(), so `maildesk rules test` shows exactly what the
pipeline would do. Every change on a real ticket is an event whose actor is
`rule:<name>`: `tickets show` explains why a ticket is where it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config.schema import Desk
from ..pipeline.work import Context, Dropped, Work
from ..tickets.ledger import TicketRow
from .engine import Decision


def recipients(desk: Desk, ticket: TicketRow, to: list[str], level: int = 1
               ) -> list[tuple[str, str]]:
    """(name, address) for requester, assignee, agents, a group, or an address."""
    out: list[tuple[str, str]] = []
    agents = {a.name: a for a in desk.agents}
    for t in to:
        if t == "requester":
            out.append((ticket.requester_name or "", ticket.requester))
        elif t == "assignee":
            a = desk.agent_named(ticket.assignee)
            if a is not None:
                out.append((a.name, a.address))
        elif t == "agents":
            out.extend((a.name, a.address) for a in desk.agents)
        elif "@" in t:
            out.append(("", t))
        else:   # a group: its members, and from level 2 on its lead
            group = next(g for g in desk.groups if g.name == t)
            members = [a for a in desk.agents if t in a.groups]
            if level >= 2 and group.lead in agents:
                members.append(agents[group.lead])
            out.extend((a.name, a.address) for a in members)
    return list(dict.fromkeys(out))


def apply_decision(decision: Decision, fx: Any, desk: Desk) -> None:
    for rule, action in decision.actions:
        action.run(rule.name, fx, desk)


class _Common:
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

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        raise NotImplementedError


class LedgerEffects(_Common):
    def __init__(self, ctx: Context, ticket: TicketRow | None, w: Work | None = None,
                 kind: str = "rule") -> None:
        """w: the mail being handled, if any (the SLA scan acts without one);
        kind: who acts, for the events: a rule, or an agent by mail command."""
        assert ticket is not None
        self.ctx, self.w, self.ticket, self.desk = ctx, w, ticket, ctx.settings.desk
        self.kind = kind
        self.answering = w.message if w is not None else None

    def _set(self, rule: str, values: dict[str, Any]) -> None:
        for name, new in values.items():
            old = getattr(self.ticket, name)
            if old == new:
                continue
            self.ctx.ledger.change(self.ticket, **{name: new})
            self.ctx.ledger.add_event(self.ticket, "ticket.updated", self.ctx.now,
                                      actor=f"{self.kind}:{rule}", field=name, old=old,
                                      new=new, **{self.kind: rule})
            if name == "assignee" and new and not (self.kind == "agent" and new == rule):
                self._tell_assignee(str(new))

    def _tell_assignee(self, who: str) -> None:
        """A new assignee hears of the ticket (not when agents take it themselves)."""
        from ..notify.outbox import queue_mail, reply_token
        agent = self.desk.agent_named(who)
        if agent is not None:
            queue_mail(self.ctx, self.ticket, "agent_notification",
                       [(agent.name, agent.address)], answering=self.answering,
                       auto_submitted="auto-generated", reply_to=agent.address,
                       extra={"note_address": reply_token(self.ctx, self.ticket, agent.address,
                                                          "note"),
                              "new_ticket": False, "assigned": True})

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        from ..notify.outbox import queue_mail
        people = [r for r in recipients(self.ctx.settings.desk, self.ticket, to, level)
                  if r[1] != self.ticket.requester or "requester" in to]
        if people:
            queue_mail(self.ctx, self.ticket, template, people, answering=self.answering,
                       auto_submitted="auto-generated", rule=rule,
                       reply_to=self.ticket.requester if to == ["requester"] else None)

    def acknowledge(self, rule: str, template: str | None) -> None:
        if self.w is not None:      # only a mail is acknowledged
            self.w.acknowledgement = template
            self.w.acknowledgement_rule = rule

    def _escalated(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        self.ctx.ledger.add_event(self.ticket, "ticket.escalated", self.ctx.now,
                                  actor=f"rule:{rule}", level=level, queue=queue, group=group,
                                  rule=rule)

    def drop(self, rule: str, reason: str) -> None:
        raise Dropped(f"rule {rule!r} dropped it as {reason}")


@dataclass
class Preview(_Common):
    """What the actions would do, for a dry run; touches nothing."""

    desk: Desk
    ticket: TicketRow
    changes: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    acknowledgement: str | None | bool = True       # True: the default acknowledgement
    dropped: str | None = None

    def _set(self, rule: str, values: dict[str, Any]) -> None:
        for name, new in values.items():
            old = getattr(self.ticket, name)
            if old != new:
                setattr(self.ticket, name, new)
                self.changes.append({"rule": rule, "field": name, "old": old, "new": new})

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        self.notifications.append({"rule": rule, "template": template, "to": [
            a for _n, a in recipients(self.desk, self.ticket, to, level)]})

    def acknowledge(self, rule: str, template: str | None) -> None:
        self.acknowledgement = template

    def _escalated(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        self.escalations.append({"rule": rule, "level": level, "queue": queue, "group": group})

    def drop(self, rule: str, reason: str) -> None:
        self.dropped = f"rule {rule!r}: {reason}"
