"""The desk's SLA setup at run time: calendars built once, policies chosen per ticket.

Durations in a policy are business time of its calendar: `30m` and `4h` are
minutes and hours of working time, `2d` is two working days (the calendar's
longest working day, so 16 hours in an 8-hour office and 48 in a 24x7 one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from ..config.schema import CalendarSpec, Escalation, Policy, Settings, WorkingHours
from ..store.rows import TicketRow
from .calendar import DAYS, Calendar, parse_hours, public_holidays

CLOCKS = ("first_response", "next_response", "resolution")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def business_seconds(value: str, calendar: Calendar) -> float:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$", value)
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return n * (calendar.day_length if unit == "d" else _UNIT[unit])


@dataclass(frozen=True)
class Level:
    after: float              # business seconds after the breach
    notify: str               # assignee | group_lead | an address
    template: str


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    calendar: Calendar
    targets: dict[str, float]            # clock kind -> business seconds
    warn_share: float | None             # warn at this share of the target ...
    warn_before: float | None            # ... or this long before it is due
    levels: tuple[Level, ...]
    spec: Policy

    def matches(self, ticket: TicketRow) -> bool:
        w = self.spec.when
        domain = ticket.requester.rpartition("@")[2].lower()
        tests = ((w.queue, [ticket.queue]), (w.type, [ticket.type]),
                 (w.priority, [ticket.priority]), (w.category, [ticket.category]),
                 (w.requester_domain, [domain]), (w.tag, list(ticket.tags)))
        return all(not wanted or {str(v).lower() for v in have if v} & {x.lower() for x in wanted}
                   for wanted, have in tests)

    def warn_after(self, target: float) -> float:
        """Business seconds into the clock when the warning is due."""
        if self.warn_share is not None:
            return target * self.warn_share
        return max(0.0, target - (self.warn_before or 0.0))


def _calendar(spec: CalendarSpec, today: date) -> Calendar:
    if spec.always_open:
        return Calendar(spec.name, ZoneInfo(spec.timezone), always=True)
    hours: dict[str, list[str]] = {str(d): h for d, h in spec.hours.items()}
    week = tuple(tuple(sorted(parse_hours(h.replace(" ", "")) for h in hours.get(d, [])))
                 for d in DAYS)
    days = set(spec.extra_holidays)
    if spec.holidays is not None:
        days |= public_holidays(spec.holidays.country.upper(), spec.holidays.subdivision,
                                today.year - 2, today.year + 3)
    return Calendar(spec.name, ZoneInfo(spec.timezone), week, frozenset(days))


def _business(hours: WorkingHours) -> CalendarSpec:
    return CalendarSpec(name="business", timezone=hours.timezone,
                        hours={d: [f"{hours.start}-{hours.end}"] for d in hours.days})


class Slas:
    """Calendars by name, and the policy for a ticket."""

    def __init__(self, settings: Settings, today: date | None = None) -> None:
        today = today or datetime.now().date()
        specs = {c.name: c for c in settings.sla.calendars}
        specs.setdefault("business", _business(settings.desk.hours))
        specs.setdefault("24x7", CalendarSpec(name="24x7", always_open=True))
        self.enabled = settings.sla.enabled
        self.calendars = {name: _calendar(spec, today) for name, spec in specs.items()}
        self.policies = [self._policy(p, settings.sla.escalation) for p in settings.sla.policies]

    def _policy(self, p: Policy, default_levels: list[Escalation]) -> SlaPolicy:
        cal = self.calendars[p.calendar]
        targets = {k: business_seconds(getattr(p, k), cal) for k in CLOCKS
                   if getattr(p, k) is not None}
        share = float(p.warning.strip().rstrip("%")) / 100 if p.warning.strip().endswith("%") \
            else None
        before = None if share is not None else business_seconds(p.warning, cal)
        levels = tuple(Level(business_seconds(e.after, cal), e.notify, e.template)
                       for e in (p.escalation if p.escalation is not None else default_levels))
        return SlaPolicy(p.name, cal, targets, share, before, levels, p)

    def policy_for(self, ticket: TicketRow) -> SlaPolicy | None:
        if not self.enabled:
            return None
        return next((p for p in self.policies if p.matches(ticket)), None)

    def named(self, name: str) -> SlaPolicy | None:
        return next((p for p in self.policies if p.name == name), None)
