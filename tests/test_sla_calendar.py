"""Business-time arithmetic against a minute-by-minute count: overnight hours, weekends,
holidays, daylight-saving changes and zones with odd offsets."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.sla.calendar import Calendar, parse_hours

UTC = timezone.utc
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/St_Johns"]
# days around the 2026 changes of the zones above, and ordinary ones
AROUND = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 4, 5), date(2026, 10, 4),
          date(2026, 10, 25), date(2026, 11, 1), date(2026, 6, 15), date(2026, 12, 24)]


def working_minute(cal: Calendar, u: datetime) -> bool:
    local = u.astimezone(cal.zone)
    if local.date() in cal.holidays:
        return False
    m = local.hour * 60 + local.minute
    return any(s <= m < e for s, e in cal.week[local.weekday()])


def brute(cal: Calendar, a: datetime, b: datetime) -> float:
    n, u = 0, a
    while u < b:
        n += working_minute(cal, u)
        u += timedelta(minutes=1)
    return n * 60.0


@st.composite
def calendars(draw: st.DrawFn) -> Calendar:
    week = []
    for _ in range(7):
        cuts = sorted(draw(st.lists(st.integers(0, 48).map(lambda h: h * 30), max_size=4,
                                    unique=True)))
        week.append(tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)
                          if cuts[i] < cuts[i + 1]))
    if not any(week):
        week[0] = ((540, 1020),)
    holidays = frozenset(draw(st.lists(st.sampled_from(AROUND), max_size=3)))
    return Calendar("t", ZoneInfo(draw(st.sampled_from(ZONES))), tuple(week), holidays)


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    day = draw(st.sampled_from(AROUND))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=2)
    return start + timedelta(minutes=draw(st.integers(0, 4 * 1440)))


@settings(max_examples=120, deadline=None)
@given(cal=calendars(), a=instants(), minutes=st.integers(0, 5 * 1440))
def test_between_matches_a_minute_by_minute_count(cal: Calendar, a: datetime,
                                                  minutes: int) -> None:
    b = a + timedelta(minutes=minutes)
    assert cal.between(a, b) == brute(cal, a, b)


@settings(max_examples=120, deadline=None)
@given(cal=calendars(), a=instants(), minutes=st.integers(1, 3 * 600))
def test_add_lands_on_the_first_instant_with_that_much_business_time(
        cal: Calendar, a: datetime, minutes: int) -> None:
    due = cal.add(a, minutes * 60)
    assert cal.between(a, due) == minutes * 60
    assert working_minute(cal, due - timedelta(minutes=1)), "ends inside working time"


def test_the_working_week_of_an_office_in_berlin() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    office = Calendar("office", berlin, (((480, 720), (780, 1020)),) * 5 + ((), ()),
                      frozenset({date(2026, 12, 24)}))
    friday_4pm = datetime(2026, 11, 20, 16, 0, tzinfo=berlin)
    assert office.add(friday_4pm, 2 * 3600) == datetime(2026, 11, 23, 9, 0, tzinfo=berlin)
    assert office.between(datetime(2026, 12, 23, 8, tzinfo=berlin),
                          datetime(2026, 12, 28, 8, tzinfo=berlin)) == 2 * 8 * 3600, \
        "Wednesday and Friday; Thursday is a holiday"
    assert office.day_length == 8 * 3600
    # the night the clocks go back: 25 hours of a 24x7 day in local hours
    night = Calendar("night", berlin, (((0, 1440),),) * 7)
    assert night.between(datetime(2026, 10, 25, 0, tzinfo=berlin),
                         datetime(2026, 10, 26, 0, tzinfo=berlin)) == 25 * 3600
    assert Calendar("24x7", always=True).add(friday_4pm, 3600) == friday_4pm + timedelta(hours=1)
    assert parse_hours("08:00-24:00") == (480, 1440)
