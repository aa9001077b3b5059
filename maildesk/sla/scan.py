"""The SLA scan: clocks whose warning, breach or next escalation level has come.

It reads the `next_check_at` index only, so its cost follows the clocks that
are due, not the tickets there are. Each step is claimed with an update that
names the `next_check_at` it read: of two scanners (two daemons, or one
catching up after a restart) exactly one wins, and `sla.warning`,
`sla.breached` and each escalation level happen once per clock. The events
then run the admins' rules (`on: sla.breached`: reassign, raise the priority,
notify) and the policy's escalation levels mail the assignee, the group lead
or a manager.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from ..app import App
from ..notify.outbox import queue_mail
from ..pipeline.work import Context
from ..rules.effects import LedgerEffects, apply_decision
from ..rules.vocabulary import facts_for
from ..tickets.ledger import T_CLOCKS, TicketRow
from .clocks import RUNNING, ClockRow, next_check
from .policy import Level, SlaPolicy
from .track import follow

NAMES = {"first_response": "first response", "next_response": "next response",
         "resolution": "resolution"}


@dataclass
class ScanResult:
    warnings: int = 0
    breaches: int = 0
    escalations: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"warnings": self.warnings, "breaches": self.breaches,
                "escalations": self.escalations}


def steps(clock: ClockRow, policy: SlaPolicy, now: datetime) -> list[tuple[str, int]]:
    """What has come for this clock by now (in place); the events to fire, in order."""
    fired: list[tuple[str, int]] = []
    if clock.state == RUNNING and clock.breached_at is None:
        if clock.warned_at is None and clock.warn_at is not None and clock.warn_at <= now:
            clock.warned_at = now
            fired.append(("sla.warning", 0))
        if clock.due_at is not None and clock.due_at <= now:
            clock.breached_at = clock.due_at
            fired.append(("sla.breached", 0))
    if clock.state == RUNNING and clock.breached_at is not None:
        cal = policy.calendar
        while clock.level < len(policy.levels) and \
                cal.add(clock.breached_at, policy.levels[clock.level].after) <= now:
            clock.level += 1
            fired.append(("sla.escalated", clock.level))
    clock.next_check_at = next_check(clock, policy)
    return fired


def scan(app: App, now: datetime, batch: int = 500) -> ScanResult:
    """Fire what is due by `now`, in batches, one transaction each."""
    total = ScanResult()
    seen: set[int] = set()      # a clock is stepped once per scan, whatever its next check says
    while True:
        with app.engine.begin() as conn:
            query = select(T_CLOCKS).where(T_CLOCKS.c.next_check_at <= now) \
                .order_by(T_CLOCKS.c.next_check_at).limit(batch)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [r for r in conn.execute(query).mappings().all() if r["id"] not in seen]
            if not rows:
                return total
            seen.update(r["id"] for r in rows)
            ctx = app.context(conn, now)
            for row in rows:
                _one(ctx, ClockRow(**dict(row)), row["next_check_at"], total)
            ctx.write()


def _one(ctx: Context, clock: ClockRow, seen: datetime, total: ScanResult) -> None:
    assert ctx.slas is not None
    policy = ctx.slas.named(clock.policy)
    fired = steps(clock, policy, ctx.now) if policy is not None else []
    if policy is None:          # its policy left the configuration: nothing more to watch
        clock.next_check_at = None
    claimed = ctx.ledger.conn.execute(
        update(T_CLOCKS).where(T_CLOCKS.c.id == clock.id, T_CLOCKS.c.next_check_at == seen)
        .values(warned_at=clock.warned_at, breached_at=clock.breached_at, level=clock.level,
                next_check_at=clock.next_check_at)).rowcount
    if claimed != 1 or policy is None or not fired:
        return
    assert clock.ticket_id is not None
    ticket = ctx.ledger.by_id(clock.ticket_id)
    assert ticket is not None
    priority = ticket.priority
    for kind, level in fired:
        data: dict[str, Any] = {"clock": clock.kind, "policy": clock.policy,
                                "due_at": clock.due_at.isoformat() if clock.due_at else None}
        if kind == "sla.escalated":
            total.escalations += 1
            _escalate(ctx, ticket, clock, policy.levels[level - 1], level, data)
            continue
        total.warnings += kind == "sla.warning"
        total.breaches += kind == "sla.breached"
        ctx.ledger.add_event(ticket, kind, ctx.now, actor="sla", **data)
        decision = ctx.rules.evaluate(kind, facts_for(ctx.settings.desk, ticket, None, ctx.now))
        if decision.actions:
            apply_decision(decision, LedgerEffects(ctx, ticket), ctx.settings.desk)
    if ticket.priority != priority:     # a rule raised it: the clocks follow the new policy
        for new in follow(ctx.slas, ticket, ctx.ledger.clocks_of(ticket), ctx.now):
            ctx.ledger.add_clock(ticket, new)


def _escalate(ctx: Context, ticket: TicketRow, clock: ClockRow, level: Level, n: int,
              data: dict[str, Any]) -> None:
    desk = ctx.settings.desk
    people: list[tuple[str, str]] = []
    if level.notify == "assignee":
        agent = desk.agent_named(ticket.assignee)
        group = desk.queue(ticket.queue).group
        people = [(agent.name, agent.address)] if agent else [
            (a.name, a.address) for a in desk.agents if group and group in a.groups]
    elif level.notify == "group_lead":
        group = next((g for g in desk.groups if g.name == desk.queue(ticket.queue).group), None)
        lead = desk.agent_named(group.lead) if group else None
        people = [(lead.name, lead.address)] if lead else []
    else:
        people = [("", level.notify)]
    ctx.ledger.add_event(ticket, "sla.escalated", ctx.now, actor="sla", level=n,
                         notify=level.notify, to=[a for _n, a in people], **data)
    if people:
        queue_mail(ctx, ticket, level.template, people, answering=None,
                   auto_submitted="auto-generated", extra={
                       "level": n, "clock": {"name": NAMES[clock.kind], "policy": clock.policy,
                                             "due": _when(clock.due_at)}})


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "-"
