"""The SLA scan: clocks whose warning, breach or next escalation level has come.

It reads the `next_check_at` index only, so its cost follows the clocks that
are due, not the tickets there are. Each step is claimed with an update that
names the `next_check_at` it read: of two scanners (two daemons, or one
catching up after a restart) exactly one wins, and `sla.warning`,
`sla.breached` and each escalation level happen once per clock. The events
are fired (core/fire.py): they run the admins' rules (`on: sla.breached`:
reassign, raise the priority, notify), the clocks follow a rule's change, and
each escalation level of the policy mails the people responsible for the
ticket, the group lead or a manager.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..app import App
from ..core.context import Context
from ..core.fire import fire
from ..sla.clocks import next_check
from ..sla.policy import SlaPolicy, Slas
from ..store.rows import RUNNING, ClockRow
from ..store.tables import T_CLOCKS
from ..tickets.audience import recipients

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
                _one(ctx, app.slas, ClockRow(**dict(row)), row["next_check_at"], total)
            ctx.write()


def _one(ctx: Context, slas: Slas, clock: ClockRow, seen: datetime, total: ScanResult
         ) -> None:
    policy = slas.named(clock.policy)
    fired = steps(clock, policy, ctx.now) if policy is not None else []
    if policy is None:          # its policy left the configuration: nothing more to watch
        clock.next_check_at = None
    if not ctx.ledger.claim_clock(clock, seen) or policy is None or not fired:
        return
    ticket = ctx.ledger.by_id(clock.ticket_id) if clock.ticket_id is not None else None
    if ticket is None:      # a clock's ticket is never deleted; nothing to fire on without
        return
    for kind, level in fired:
        data: dict[str, Any] = {"clock": clock.kind, "policy": clock.policy,
                                "due_at": clock.due_at.isoformat() if clock.due_at else None}
        if kind != "sla.escalated":
            total.warnings += kind == "sla.warning"
            total.breaches += kind == "sla.breached"
            fire(ctx, ticket, "sla.warning" if kind == "sla.warning" else "sla.breached",
                 actor="sla", **data)
            continue
        total.escalations += 1
        step = policy.levels[level - 1]
        to = recipients(ctx.settings.desk, ticket, [step.notify], level)
        fire(ctx, ticket, "sla.escalated", actor="sla", level=level, notify=step.notify,
             template=step.template, to=[a for _n, a in to], **data,
             context={"clock": {"name": NAMES[clock.kind], "policy": clock.policy,
                                "due": _when(clock.due_at)}})


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "-"
