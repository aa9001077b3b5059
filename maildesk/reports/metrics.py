"""The numbers a service-desk manager runs the desk by, as SQL aggregations.

Every figure is a GROUP BY (or, for medians and the 90th percentile, a
window function that ranks rows within each group and keeps the rank that
is the percentile), so a report over a million tickets moves counts, not
tickets, into Python. The definitions are the SLA clocks' own (README):

- created: tickets opened in the period; resolved: resolution clocks stopped
  in it; reopened: `ticket.reopened` events in it;
- backlog: tickets opened before the period's end and not resolved by then;
- first response and resolution times: of the clocks stopped in the period,
  in business hours (the clock's count, pauses left out) and wall hours
  (from start to stop, pauses included);
- SLA compliance: of those clocks, the share stopped without a breach;
- CSAT: of surveys answered in the period, the share satisfied, the mean
  score, and answers per survey sent in the period;
- first-contact resolution: resolved tickets with no next-response clock
  (the customer never had to write again) and no reopening;
- backlog: the tickets whose resolution clock had not stopped by the period's
  end, and those without such a clock whose status is still open; its median
  age as of the period's end, or of now for a period that has not ended (the
  default one ends tonight: ages counted to midnight were hours too old);
- knowledge base: tickets whose acknowledgement was searched for articles in
  the period, those offered at least one, suggestions per searched ticket,
  those their requester resolved with an article ("this solved it") in the
  period, and deflection: of those, the ones no agent had answered before, per
  ticket created in the period.

Reading a year of a million tickets must not read a million rows a dozen
times: a clock's `stopped_at` is set exactly while it is stopped (sla/clocks.py),
so "stopped in the period" is a range of the (kind, stopped_at) index alone;
and the stopped clocks' times are read once per kind, with the columns each
grouping needs, and their percentiles taken in numpy, where the database would
sort the rows once per figure and grouping.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy import Integer as SqlInteger

from ..rules.actions import STATUSES
from ..store.models import Event, KbSuggestion, SlaClock, Survey, Ticket

DIMENSIONS = ("queue", "category", "agent", "type", "priority", "week")
ALL = "all"
T, C, E, S = Ticket.__table__, SlaClock.__table__, Event.__table__, Survey.__table__
K = KbSuggestion.__table__
REWRITE_AFTER = 3       # suggested this often and never said to solve: worth rewriting
Dim = Callable[[Any], ColumnElement[Any]]     # the time column a figure is about -> group
OPEN = tuple(x for x in STATUSES if x not in ("resolved", "closed"))
CHUNK = 50_000          # rows read at a time: numpy keeps them, not Python objects
CLOCK_FIGURES = (("first_response", "frt"), ("resolution", "mttr"))
MONDAY = datetime(1970, 1, 5, tzinfo=timezone.utc)     # weeks are counted from it


@dataclass
class Report:
    start: datetime
    end: datetime
    by: str | None
    groups: dict[str, dict[str, Any]]                 # group -> figures; "all" is the total
    breaches: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    top_categories: list[dict[str, Any]] = field(default_factory=list)
    top_requesters: list[dict[str, Any]] = field(default_factory=list)
    kb_articles: list[dict[str, Any]] = field(default_factory=list)   # most solved first
    kb_rewrite: list[dict[str, Any]] = field(default_factory=list)    # offered, never solved
    kb_gaps: list[dict[str, Any]] = field(default_factory=list)       # subjects none answered
    series: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def _week(conn: Connection) -> Callable[[Any], ColumnElement[Any]]:
    """The Monday of a timestamp's week, as text, on either engine."""
    if conn.dialect.name == "postgresql":
        return lambda col: func.to_char(func.date_trunc(literal_column("'week'"), col),
                                        literal_column("'YYYY-MM-DD'"))
    return lambda col: func.date(col, "weekday 0", "-6 days")


def _day(conn: Connection) -> Callable[[Any], ColumnElement[Any]]:
    if conn.dialect.name == "postgresql":
        return lambda col: func.to_char(col, literal_column("'YYYY-MM-DD'"))
    return lambda col: func.date(col)


def _seconds(conn: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def dimension(by: str | None, conn: Connection) -> Dim:
    if by is None:
        # a cast, not a bare constant: PostgreSQL refuses GROUP BY 'all'
        return lambda _col: cast(literal_column(f"'{ALL}'"), String)
    if by == "week":
        return _week(conn)
    column = {"queue": T.c.queue, "category": T.c.category, "agent": T.c.assignee,
              "type": T.c.type, "priority": T.c.priority}[by]
    fallback: ColumnElement[str] = literal_column("'(unassigned)'" if by == "agent" else "'(none)'")
    return lambda _col: func.coalesce(column, fallback)


class Labels:
    """A column of group names read in chunks, kept as small integer codes."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.chunks: list[np.ndarray] = []

    def add(self, values: tuple[Any, ...]) -> None:
        found, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
        known = np.array([self.names.setdefault(n, len(self.names)) for n in found.tolist()],
                         dtype=np.int32)
        self.chunks.append(known[codes.reshape(-1)])

    def groups(self) -> dict[str, np.ndarray]:
        """Group name -> the positions of its rows."""
        codes = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int32)
        names = {i: n for n, i in self.names.items()}
        return {names[int(codes[at[0]])]: at for at in _positions(codes)}


def _positions(codes: np.ndarray) -> list[np.ndarray]:
    """The positions of each code's rows, a code at a time."""
    order = np.argsort(codes, kind="stable")
    return [at for at in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1) if len(at)]


def _read(conn: Connection, query: Any, labels: int, values: int
          ) -> tuple[list[Labels], list[np.ndarray]]:
    """The rows of a (label..., value...) query as Labels and float arrays. The rows come
    straight from the driver's cursor (server-side on PostgreSQL) in chunks: a year of
    clocks never lives as Python objects, nor as SQLAlchemy rows, which would take as long
    again as the query. The query holds only values maildesk chose (period bounds, kinds),
    rendered as literals."""
    sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
    names = [Labels() for _ in range(labels)]
    parts: list[list[np.ndarray]] = [[] for _ in range(values)]
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = (driver.cursor(name="maildesk_report") if conn.dialect.name == "postgresql"
              else driver.cursor())
    try:
        cursor.execute(sql)
        while chunk := cursor.fetchmany(CHUNK):
            columns = list(zip(*chunk)) if labels else np.array(chunk, dtype=float).T
            for i, labelled in enumerate(names):
                labelled.add(columns[i])
            for i, part in enumerate(parts):
                part.append(np.asarray(columns[labels + i], dtype=float))
    finally:
        cursor.close()
    return names, [np.concatenate(p) if p else np.zeros(0) for p in parts]


def _nearest(values: np.ndarray, p: float) -> float:
    """The nearest-rank percentile of values: the ceil(n * p)-th smallest."""
    k = math.ceil(len(values) * p) - 1
    return float(np.partition(values, k)[k])


def _counts(conn: Connection, query: Any) -> dict[str, int]:
    return {str(g): int(n) for g, n in conn.execute(query)}


def build(conn: Connection, start: datetime, end: datetime, by: str | None,
          now: datetime | None = None) -> Report:
    """The report for [start, end), by one dimension (None: totals only); now: the time
    the backlog is taken at when the period has not ended yet."""
    report = Report(start, end, by, {})
    as_of = min(end, now or datetime.now(timezone.utc))
    for dim_by in ([None] if by is None else [None, by]):
        dim = dimension(dim_by, conn)
        by_ticket = dim_by not in (None, "week")    # the group is a ticket's field
        for g, figures in _figures(conn, start, end, as_of, dim, by_ticket).items():
            report.groups.setdefault(g, {}).update(figures)
    _clock_figures(conn, report, start, end)
    _lists(conn, report, start, end)
    _kb_lists(conn, report, start, end)
    _series(conn, report, start, end)
    return report


def _figures(conn: Connection, start: datetime, end: datetime, as_of: datetime,
             dim: Dim, by_ticket: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, values: dict[str, Any]) -> None:
        for g, v in values.items():
            out.setdefault(g, {})[name] = v

    in_period = lambda col: and_(col >= start, col < end)  # noqa: E731
    g = dim(T.c.created_at)
    put("created", _counts(conn, select(g, func.count()).where(in_period(T.c.created_at))
                           .group_by(g)))
    res = C.join(T, T.c.id == C.c.ticket_id) if by_ticket else C
    resolved = and_(C.c.kind == "resolution", in_period(C.c.stopped_at))
    g = dim(C.c.stopped_at)
    # resolved, and of those the first-contact ones: the customer never wrote again (no
    # next-response clock) and the ticket was not reopened
    # (each a set the database makes once, not a lookup per resolved ticket: a third of
    # the time over a year)
    other = C.alias("other")        # the ticket's other clocks, not the one being counted
    again = C.c.ticket_id.in_(select(other.c.ticket_id).where(
        other.c.kind == "next_response")) | C.c.ticket_id.in_(
        select(E.c.ticket_id).where(E.c.kind == "ticket.reopened"))
    first: dict[str, int] = {}
    for k, n, firsts in conn.execute(select(g, func.count(), func.sum(case((again, 0),
                                                                           else_=1)))
                                     .select_from(res).where(resolved).group_by(g)):
        out.setdefault(str(k), {})["resolved"] = int(n)
        first[str(k)] = int(firsts or 0)
    g = dim(E.c.at)
    put("reopened", _counts(conn, select(g, func.count()).select_from(
        E.join(T, T.c.id == E.c.ticket_id) if by_ticket else E)
        .where(E.c.kind == "ticket.reopened", in_period(E.c.at)).group_by(g)))
    for k, (n, age) in _backlog(conn, as_of, dim, by_ticket).items():
        put("backlog", {k: n})
        put("backlog_age_median_h", {k: round(age / 3600, 1)})

    g = dim(S.c.answered_at)
    answered = and_(S.c.answered_at.is_not(None), in_period(S.c.answered_at))
    surveys = S.join(T, T.c.id == S.c.ticket_id) if by_ticket else S
    rows = conn.execute(select(g, func.count(), func.avg(S.c.score),
                               func.sum(case((S.c.satisfied.is_(True), 1), else_=0)))
                        .select_from(surveys).where(answered).group_by(g))
    for key, n, mean, happy in rows:
        out.setdefault(str(key), {}).update({
            "csat_responses": int(n), "csat_mean": round(float(mean or 0), 2),
            "csat_pct": round(100.0 * int(happy or 0) / int(n), 1)})
    g = dim(S.c.sent_at)
    sent = _counts(conn, select(g, func.count()).select_from(surveys)
                   .where(in_period(S.c.sent_at)).group_by(g))
    back = _counts(conn, select(g, func.count()).select_from(surveys).where(
        in_period(S.c.sent_at), S.c.answered_at.is_not(None)).group_by(g))
    put("survey_response_rate_pct", {k: round(100.0 * back.get(k, 0) / n, 1)
                                     for k, n in sent.items() if n})

    _kb_figures(conn, dim, by_ticket, in_period, put)
    for k, figures in out.items():
        if figures.get("kb_deflected") and figures.get("created"):
            figures["kb_deflection_pct"] = round(100.0 * figures["kb_deflected"]
                                                 / figures["created"], 1)
        n = figures.get("resolved", 0)
        if n:
            figures["fcr_pct"] = round(100.0 * first.get(k, 0) / n, 1)
            figures["reopen_rate_pct"] = round(100.0 * figures.get("reopened", 0) / n, 1)
    return out


def _backlog(conn: Connection, end: datetime, dim: Dim, by_ticket: bool
             ) -> dict[str, tuple[int, float]]:
    """Group -> (tickets in the backlog at the end, the median's age in seconds): opened
    before the end and not resolved before it, by their resolution clock, or by their
    status if they have none. Each part is a range of an index: "not stopped by the end"
    as one condition (stopped_at IS NULL OR stopped_at >= end) read every resolution clock
    ever stopped. A desk keeps every ticket it never resolved (200,000 in the benchmark's),
    so their opening times come as one text per group, sorted in Python: a row each took
    as long again as the query, and the database's sort longer still."""
    g = dim(literal(end))
    group = [g.label("g")] if by_ticket else []     # else the group is the end's: one value
    r = C.alias("r")

    def clocked(not_by_end: ColumnElement[bool]) -> Any:
        return (select(T.c.created_at, *group).select_from(r.join(T, T.c.id == r.c.ticket_id))
                .where(r.c.kind == "resolution", not_by_end, T.c.created_at < end))

    unclocked = select(T.c.created_at, *group).where(
        T.c.status.in_(OPEN), T.c.created_at < end,
        ~exists(select(r.c.id).where(r.c.ticket_id == T.c.id, r.c.kind == "resolution")))
    rows = union_all(clocked(r.c.stopped_at.is_(None)), clocked(r.c.stopped_at >= end),
                     unclocked).subquery()
    joined = _joined(conn, rows.c.created_at)
    found = conn.execute(select(rows.c.g, joined).group_by(rows.c.g) if by_ticket else
                         select(literal(ALL), joined))
    out = {}
    for k, text in found:
        if text is None:        # no backlog: the total's one row, of nothing
            continue
        opened = sorted(text.split(","))
        # the nearest rank: the ceil(n / 2)-th youngest, its age as the database counts it
        youngest = datetime.fromisoformat(opened[len(opened) - (len(opened) + 1) // 2])
        age = conn.scalar(select(_seconds(conn, literal(end),
                                          literal(youngest.replace(tzinfo=timezone.utc)))))
        out[str(k)] = (len(opened), float(age or 0))
    if not by_ticket and out:
        out = {str(conn.scalar(select(g))): out[ALL]}
    return out


def _joined(conn: Connection, col: Any) -> ColumnElement[str]:
    """A group's timestamps as one text, comma-separated, each in a fixed form that sorts
    as the times do (SQLite stores them so)."""
    if conn.dialect.name == "postgresql":
        return func.string_agg(func.to_char(func.timezone("UTC", col),
                                            literal_column("'YYYY-MM-DD HH24:MI:SS.US'")),
                               literal_column("','"))
    return func.group_concat(col, literal_column("','"))


def _week_number(conn: Connection, col: Any) -> ColumnElement[Any]:
    """Whole weeks from Monday 1970-01-05 to col, rounded down: the week of col as a number
    (its Monday is MONDAY + 7 * it), cheaper to read than the Monday's text."""
    if conn.dialect.name == "postgresql":
        return func.floor(func.extract("epoch", col - literal(MONDAY)) / (7 * 86400))
    # SQLite has no floor() everywhere: CAST truncates, so shift by 100,000 weeks (back to
    # the year 53) to round down what comes before 1970 too
    days = func.julianday(col) - func.julianday(literal(MONDAY.strftime("%Y-%m-%d")))
    return cast(days / 7 + 100_000, SqlInteger) - 100_000


def _clock_figures(conn: Connection, report: Report, start: datetime, end: datetime) -> None:
    """First response and resolution: medians, 90th percentiles and SLA compliance of the
    clocks stopped in the period, in total, by the report's dimension and, for the
    charts, by week, from one read of each kind's clocks."""
    by_ticket = report.by not in (None, "week")
    rows = C.join(T, T.c.id == C.c.ticket_id) if by_ticket else C
    group = [dimension(report.by, conn)(C.c.stopped_at)] if by_ticket else []
    weekly: Counter[str] = Counter()
    weekly_met: Counter[str] = Counter()
    for kind, label in CLOCK_FIGURES:
        labels, (weeks, business, wall, met) = _read(conn, select(
            *group, _week_number(conn, C.c.stopped_at), C.c.elapsed,
            cast(_seconds(conn, C.c.stopped_at, C.c.started_at), Float),
            case((C.c.breached_at.is_(None), 1), else_=0)).select_from(rows)
            .where(C.c.kind == kind, C.c.stopped_at >= start, C.c.stopped_at < end),
            len(group), 4)
        by_week = _weeks(weeks)
        split = {ALL: np.arange(len(business))} if len(business) else {}
        if by_ticket:
            split |= labels[0].groups()
        elif report.by == "week":
            split |= by_week
        for g, at in split.items():
            figures = report.groups.setdefault(g, {})
            for name, seconds in (("business", business[at]), ("wall", wall[at])):
                figures[f"{label}_{name}_median_h"] = round(_nearest(seconds, 0.5) / 3600, 2)
                figures[f"{label}_{name}_p90_h"] = round(_nearest(seconds, 0.9) / 3600, 2)
            figures[f"sla_{kind}_pct"] = round(100.0 * float(met[at].sum()) / len(at), 1)
        report.series[f"{label}_median_h"] = sorted(
            (w, round(_nearest(business[at], 0.5) / 3600, 2)) for w, at in by_week.items())
        for w, at in by_week.items():
            weekly[w] += len(at)
            weekly_met[w] += int(met[at].sum())
    report.series["sla_met_pct"] = sorted((w, round(100.0 * weekly_met[w] / n, 1))
                                          for w, n in weekly.items())


def _weeks(numbers: np.ndarray) -> dict[str, np.ndarray]:
    """Week numbers (_week_number) -> {their Monday, as the report names a week: rows}."""
    return {(MONDAY + timedelta(weeks=int(numbers[at[0]]))).date().isoformat(): at
            for at in _positions(numbers)}


def _kb_figures(conn: Connection, dim: Dim, by_ticket: bool,
               in_period: Callable[[Any], ColumnElement[bool]],
               put: Callable[[str, dict[str, Any]], None]) -> None:
    """Searched, offered, suggestions per searched ticket, and solved by an article."""
    rows = K.join(T, T.c.id == K.c.ticket_id) if by_ticket else K
    g = dim(K.c.suggested_at)
    searched: dict[str, int] = {}
    for k, n, offered, shown in conn.execute(
            select(g, func.count(func.distinct(K.c.ticket_id)),
                   func.count(func.distinct(case((K.c.slug.is_not(None), K.c.ticket_id)))),
                   func.count(K.c.slug)).select_from(rows)
            .where(in_period(K.c.suggested_at)).group_by(g)):
        searched[str(k)] = int(n)
        put("kb_searched", {str(k): int(n)})
        put("kb_suggested", {str(k): int(offered)})
        put("kb_suggestions_per_ticket", {str(k): round(int(shown) / int(n), 2)})
    g = dim(K.c.solved_at)
    answered = exists(select(E.c.id).where(E.c.ticket_id == K.c.ticket_id,
                                           E.c.kind == "agent.replied", E.c.at < K.c.solved_at))
    for k, solved, alone in conn.execute(
            select(g, func.count(func.distinct(K.c.ticket_id)),
                   func.count(func.distinct(case((~answered, K.c.ticket_id)))))
            .select_from(rows).where(in_period(K.c.solved_at)).group_by(g)):
        put("kb_solved", {str(k): int(solved)})
        put("kb_deflected", {str(k): int(alone)})


def _kb_lists(conn: Connection, report: Report, start: datetime, end: datetime) -> None:
    """The articles by what they solved, those offered often and never solving, and the
    subjects of tickets for which no article was good enough (write one)."""
    offered = and_(K.c.suggested_at >= start, K.c.suggested_at < end, K.c.slug.is_not(None))
    solved = func.count(K.c.solved_at)
    rows = conn.execute(select(K.c.slug, func.count().label("n"), solved.label("s"))
                        .where(offered).group_by(K.c.slug)
                        .order_by(solved.desc(), func.count().desc(), K.c.slug)).all()
    report.kb_articles = [{"slug": r.slug, "suggested": int(r.n), "solved": int(r.s),
                           "solved_pct": round(100.0 * int(r.s) / int(r.n), 1)}
                          for r in rows[:20]]
    report.kb_rewrite = [{"slug": r.slug, "suggested": int(r.n)}
                         for r in sorted(rows, key=lambda r: (-int(r.n), r.slug))
                         if int(r.s) == 0 and int(r.n) >= REWRITE_AFTER][:20]
    subject = func.lower(T.c.subject)
    gaps = conn.execute(select(subject, func.count().label("n"), func.max(T.c.ref))
                        .select_from(K.join(T, T.c.id == K.c.ticket_id))
                        .where(K.c.slug.is_(None), K.c.suggested_at >= start,
                               K.c.suggested_at < end)
                        .group_by(subject).order_by(func.count().desc(), subject).limit(10))
    report.kb_gaps = [{"subject": str(s), "tickets": int(n), "latest": ref}
                      for s, n, ref in gaps]


def _lists(conn: Connection, report: Report, start: datetime, end: datetime) -> None:
    breached = conn.execute(
        select(T.c.ref, T.c.subject, T.c.queue, T.c.priority, C.c.kind, C.c.policy,
               C.c.breached_at).select_from(C.join(T, T.c.id == C.c.ticket_id))
        .where(C.c.breached_at >= start, C.c.breached_at < end)
        .order_by(C.c.breached_at).limit(50))
    report.breaches = [{"ref": r.ref, "subject": r.subject, "queue": r.queue,
                        "priority": r.priority, "clock": r.kind, "policy": r.policy,
                        "breached_at": r.breached_at.isoformat()} for r in breached]
    comments = conn.execute(
        select(T.c.ref, S.c.score, S.c.comment, S.c.answered_at)
        .select_from(S.join(T, T.c.id == S.c.ticket_id))
        .where(S.c.answered_at >= start, S.c.answered_at < end, S.c.comment.is_not(None),
               S.c.comment != "").order_by(S.c.answered_at.desc()).limit(20))
    report.comments = [{"ref": r.ref, "score": r.score, "comment": r.comment,
                        "answered_at": r.answered_at.isoformat()} for r in comments]
    created = and_(T.c.created_at >= start, T.c.created_at < end)
    for attr, column in (("top_categories", func.coalesce(T.c.category,
                                                            literal_column("'(none)'"))),
                         ("top_requesters", T.c.requester)):
        rows = conn.execute(select(column, func.count().label("n")).where(created)
                            .group_by(column).order_by(func.count().desc(), column).limit(10))
        setattr(report, attr, [{"name": str(k), "tickets": int(n)} for k, n in rows])


def _series(conn: Connection, report: Report, start: datetime, end: datetime) -> None:
    """For the charts: backlog by day, volume by category, weekly medians and compliance."""
    day = _day(conn)
    opened_before = _opened_before(conn, start)
    closed_before = int(conn.scalar(select(func.count()).select_from(C).where(
        C.c.kind == "resolution", C.c.stopped_at < start)) or 0)
    opened = _counts(conn, select(day(T.c.created_at), func.count()).where(
        T.c.created_at >= start, T.c.created_at < end).group_by(day(T.c.created_at)))
    closed = _counts(conn, select(day(C.c.stopped_at), func.count()).where(
        C.c.kind == "resolution", C.c.stopped_at >= start, C.c.stopped_at < end)
        .group_by(day(C.c.stopped_at)))
    backlog, level, d = [], opened_before - closed_before, start.date()
    while d < end.date() or (d == end.date() and end.time() != datetime.min.time()):
        key = d.isoformat()
        level += opened.get(key, 0) - closed.get(key, 0)
        backlog.append((key, float(level)))
        d += timedelta(days=1)
    report.series["backlog"] = backlog
    report.series["volume_by_category"] = [(c["name"], float(c["tickets"]))
                                           for c in report.top_categories]


def _opened_before(conn: Connection, start: datetime) -> int:
    """Tickets opened before start, counting the smaller side of it: a count steps through
    each entry of its range, but a whole table's is a walk of its pages, so when start is
    late in the desk's life (a month's report) all the tickets less those since start
    (every ticket has its created_at) read a month's entries instead of years'."""
    first, last = conn.execute(select(func.min(T.c.created_at), func.max(T.c.created_at))).one()
    if first is None:
        return 0
    if start - first < last - start:
        return int(conn.scalar(select(func.count()).where(T.c.created_at < start)) or 0)
    return int(conn.scalar(select(func.count()).select_from(T)) or 0) - int(
        conn.scalar(select(func.count()).where(T.c.created_at >= start)) or 0)


def period(start: date | None, end: date | None, today: date) -> tuple[datetime, datetime]:
    """[from, to] as whole UTC days; by default the 30 days up to and including today."""
    last = end or today
    first = start or last - timedelta(days=29)
    return (datetime.combine(first, datetime.min.time(), timezone.utc),
            datetime.combine(last + timedelta(days=1), datetime.min.time(), timezone.utc))
