"""Business time: working hours per weekday in a time zone, minus public holidays.

An instant is working time when its wall-clock time in the calendar's zone
falls in that weekday's hours and its local date is no holiday. Each local
day becomes a few UTC intervals; across a daylight-saving change the day is
cut where the UTC offset changes, so a day of 23 or 25 hours, or working
hours that cross the change, count exactly what the wall clock shows. A 24x7
calendar is plain elapsed time.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ..errors import MaildeskError

if TYPE_CHECKING:   # only for the annotation: the calendar needs no pydantic at run time
    from ..config.schema import Day

UTC = timezone.utc
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Hours = tuple[tuple[int, int], ...]          # (start, end) in minutes of the local day
MAX_DAYS = 3 * 366          # no working time in three years: the calendar is wrong


class NoWorkingTime(ValueError, MaildeskError):
    pass


@dataclass(frozen=True)
class Calendar:
    name: str
    zone: ZoneInfo = ZoneInfo("UTC")
    week: tuple[Hours, ...] = ((),) * 7      # Monday first
    holidays: frozenset[date] = frozenset()
    always: bool = False                     # 24x7: business time is elapsed time
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def day_length(self) -> float:
        """Seconds in a working day (the longest of the week): what `1d` means here."""
        if self.always:
            return 86400.0
        return max((sum(e - s for s, e in hours) * 60.0 for hours in self.week), default=0.0)

    def intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The working time of one local date, as UTC intervals in order."""
        found = self._days.get(day)
        if found is None:
            found = self._days[day] = self._compute(day)
            if len(self._days) > 20_000:
                self._days.clear()
        return found

    def _compute(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        hours = self.week[day.weekday()]
        if not hours or day in self.holidays:
            return ()
        u0 = datetime.combine(day, time(), self.zone).astimezone(UTC)
        u1 = datetime.combine(day + timedelta(days=1), time(), self.zone).astimezone(UTC)
        base = datetime.combine(day, time(), UTC)   # the wall clock's midnight, read as UTC
        out = []
        for p0, p1 in _pieces(self.zone, u0, u1):
            offset = p0.astimezone(self.zone).utcoffset() or timedelta()
            for s, e in hours:
                a = max(p0, base + timedelta(minutes=s) - offset)
                b = min(p1, base + timedelta(minutes=e) - offset)
                if a < b:
                    out.append((a, b))
        return tuple(sorted(out))

    def _days_from(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        day = start.astimezone(self.zone).date()
        for n in range(MAX_DAYS):
            yield from self.intervals(day + timedelta(days=n))
        raise NoWorkingTime(f"calendar {self.name}: no working time in {MAX_DAYS} days "
                            f"after {start:%Y-%m-%d}")

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant when `seconds` of business time have passed since start."""
        if self.always:
            return start + timedelta(seconds=seconds)
        left = timedelta(seconds=seconds)
        for a, b in self._days_from(start):
            if b <= start:
                continue
            a = max(a, start)
            if left <= b - a:
                return a + left
            left -= b - a
        raise AssertionError("unreachable")  # pragma: no cover - _days_from raises

    def between(self, start: datetime, end: datetime) -> float:
        """Seconds of business time from start to end (0 if end is not later)."""
        if end <= start:
            return 0.0
        if self.always:
            return (end - start).total_seconds()
        total = 0.0
        day = start.astimezone(self.zone).date()
        last = end.astimezone(self.zone).date()
        while day <= last:
            for a, b in self.intervals(day):
                lo, hi = max(a, start), min(b, end)
                if lo < hi:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total

    def is_open(self, at: datetime) -> bool:
        return self.always or any(a <= at < b for a, b in
                                  self.intervals(at.astimezone(self.zone).date()))


def _pieces(zone: ZoneInfo, u0: datetime, u1: datetime) -> list[tuple[datetime, datetime]]:
    """[u0, u1) cut where the zone's UTC offset changes (at most once or twice a day)."""
    out, start = [], u0
    while start < u1:
        off = start.astimezone(zone).utcoffset()
        if (u1 - timedelta(seconds=1)).astimezone(zone).utcoffset() == off:
            out.append((start, u1))
            break
        lo, hi = start, u1          # the first instant with another offset, to the second
        while (hi - lo) > timedelta(seconds=1):
            mid = lo + (hi - lo) / 2
            mid = mid.replace(microsecond=0)
            if mid.astimezone(zone).utcoffset() == off:
                lo = mid
            else:
                hi = mid
        out.append((start, hi))
        start = hi
    return out


def parse_hours(spec: str) -> tuple[int, int]:
    """`08:00-17:30` -> minutes (480, 1050); `24:00` may end a day."""
    try:
        a, b = (x.strip() for x in spec.split("-"))
        s, e = _minute(a), _minute(b)
    except ValueError:
        raise ValueError(f"not working hours: {spec!r} (expected e.g. 08:00-17:00)") from None
    if not s < e:
        raise ValueError(f"working hours {spec!r} end before they start")
    return s, e


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    value = int(h) * 60 + int(m)
    if not (0 <= int(m) < 60 and 0 <= value <= 1440):
        raise ValueError(hhmm)
    return value


@lru_cache(maxsize=64)
def public_holidays(country: str, subdivision: str | None, first: int, last: int
                    ) -> frozenset[date]:
    import holidays
    return frozenset(holidays.country_holidays(country, subdiv=subdivision,
                                               years=range(first, last + 1)))
