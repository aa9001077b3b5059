"""A ticket's SLA clocks as plain values for `maildesk sla show`, and the filters of
`tickets list --sla`: what is breached, and what is at risk (warned, not yet breached)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from ..store.lean import TICKETS
from ..store.models import SlaClock, Ticket
from ..store.rows import RUNNING, STOPPED, ClockRow
from .clocks import time_used
from .policy import Slas


def sla_filter(which: str, now: datetime) -> ColumnElement[bool]:
    """A condition on a row of the listing's tickets (store/lean.py): it has a live clock
    that is breached, or at risk."""
    live = and_(SlaClock.ticket_id == TICKETS.c.id, SlaClock.state != STOPPED)
    cond: ColumnElement[bool]
    if which == "breached":
        cond = SlaClock.breached_at.is_not(None)
    else:
        cond = and_(SlaClock.breached_at.is_(None), SlaClock.state == RUNNING,
                    or_(SlaClock.warned_at.is_not(None), SlaClock.warn_at <= now))
    return exists(select(SlaClock.id).where(live, cond))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def clocks_of(session: Session, slas: Slas, ref: str, now: datetime
              ) -> list[dict[str, Any]] | None:
    ticket = session.scalar(select(Ticket).where(Ticket.ref == ref.upper()))
    if ticket is None:
        return None
    out = []
    for row in session.scalars(select(SlaClock).where(SlaClock.ticket_id == ticket.id)
                               .order_by(SlaClock.id)):
        clock = ClockRow(**{k: getattr(row, k) for k in ClockRow.__dataclass_fields__})
        policy = slas.named(clock.policy)
        used = time_used(clock, policy, now) if policy else clock.elapsed
        out.append({
            "clock": clock.kind, "policy": clock.policy,
            "calendar": policy.calendar.name if policy else None, "state": clock.state,
            "target_hours": round(clock.target / 3600, 2),
            "used_hours": round(used / 3600, 2),
            "left_hours": round((clock.target - used) / 3600, 2),
            "started_at": _iso(clock.started_at), "due_at": _iso(clock.due_at),
            "warned_at": _iso(clock.warned_at), "breached_at": _iso(clock.breached_at),
            "escalation_level": clock.level, "stopped_at": _iso(clock.stopped_at),
            "met": None if clock.state != STOPPED else clock.breached_at is None,
            "paused": [{"from": p[0], "to": p[1]} for p in clock.pauses],
        })
    return out


def answer_due(slas: Slas, clocks: list[ClockRow]) -> dict[str, str]:
    """What a customer may be promised: when the running first-response clock is due, in
    its calendar's zone, and its target in words ({} with no such clock). The
    acknowledgement says it, as a service desk's receipt does."""
    for c in clocks:
        policy = slas.named(c.policy)
        if c.kind == "first_response" and c.state == RUNNING and c.due_at and policy:
            cal = policy.calendar
            due = c.due_at.astimezone(cal.zone)
            working = "" if cal.always else "working "
            return {"respond_by": f"{due:%A %d %B, %H:%M} ({cal.zone.key})",
                    "respond_within": _duration(c.target, working, cal.day_length)}
    return {}


def _duration(seconds: float, working: str, day: float) -> str:
    if working and day and seconds >= day and seconds % day == 0:
        n, unit = seconds / day, "day"
    elif seconds >= 3600 and seconds % 3600 == 0:
        n, unit = seconds / 3600, "hour"
    else:
        n, unit = max(1.0, round(seconds / 60)), "minute"
    return f"{n:.0f} {working}{unit}{'s' if n != 1 else ''}"
