"""The SLA scan: clocks whose warning, breach or next escalation level has come.

It reads the `next_check_at` index only, so its cost follows the clocks that
are due, not the tickets there are. Each step is claimed with an update that
names the `next_check_at` it read: of two scanners (two daemons, or one
catching up after a restart) exactly one wins, and `sla.warning`,
`sla.breached` and each escalation level happen once per clock. The events
are fired (core/fire.py): they run the admins' rules (`on: sla.breached`:
reassign, raise the priority, notify), the clocks follow a rule's change, and
each escalation level of the policy mails the people responsible for the
ticket, the group lead or a manager. An import of old mail leaves its clocks
to settle_history(), which breaches the past ones quietly, at their deadlines.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..app import App
from ..core.context import Context
from ..core.fire import fire
from ..sla.clocks import next_check
from ..sla.policy import SlaPolicy, Slas
from ..store.rows import RUNNING, ClockRow, TicketRow
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


def settle_history(app: App, now: datetime, batch: int = 200) -> int:
    """The clocks an import of old mail left unwatched (core/fire.py), settled once the
    import is done, by its real time `now`; returns how many were breached.

    A clock whose deadline passed before `now` was breached at its deadline: `sla.breached`
    is fired at that date, as history (its rules run, nothing is sent), and no escalation
    level ever comes of it. A clock still within its target is watched by the scan from
    here on, as any other. (A clock that old mail met in time was stopped by that mail, at
    its date; one met late was breached at its deadline: sla/clocks.py stop().)"""
    unwatched = (T_CLOCKS.c.state == RUNNING, T_CLOCKS.c.next_check_at.is_(None),
                 T_CLOCKS.c.breached_at.is_(None))
    breached, after = 0, 0
    while True:
        with app.engine.begin() as conn:
            ids = conn.execute(select(T_CLOCKS.c.ticket_id).where(
                *unwatched, T_CLOCKS.c.ticket_id > after).group_by(T_CLOCKS.c.ticket_id)
                .order_by(T_CLOCKS.c.ticket_id).limit(batch)).scalars().all()
            if not ids:
                return breached
            after = ids[-1]
            ctx = app.context(conn, now, history=True)
            for i in ids:
                ticket = ctx.ledger.by_id(i)
                if ticket is not None:      # a clock's ticket is never deleted
                    breached += _settle(ctx, app.slas, ticket)
            ctx.write()


def _settle(ctx: Context, slas: Slas, ticket: TicketRow) -> int:
    """One ticket's unwatched clocks (settle_history); how many were breached."""
    clocks = ctx.ledger.clocks_of(ticket)
    past = sorted((c for c in clocks if c.state == RUNNING and c.next_check_at is None
                   and c.breached_at is None and c.due_at is not None and c.due_at <= ctx.now
                   and slas.named(c.policy) is not None), key=lambda c: c.due_at or ctx.now)
    for clock in past:
        policy = slas.named(clock.policy)
        assert policy is not None and clock.due_at is not None     # as just chosen
        clock.breached_at, clock.level = clock.due_at, len(policy.levels)
        fire(replace(ctx, now=clock.due_at), ticket, "sla.breached", actor="sla",
             clock=clock.kind, policy=clock.policy, due_at=clock.due_at.isoformat())
    for clock in clocks:        # fire() left them unwatched: history's clocks are
        policy = slas.named(clock.policy)
        if policy is not None:
            clock.next_check_at = next_check(clock, policy)
    return len(past)
