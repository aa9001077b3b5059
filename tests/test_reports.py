"""Reports against a week worked by hand: four tickets, every figure computed on paper.

The desk works Monday to Friday 09:00-17:00 UTC; every ticket is P3 (first
response 4 business hours, resolution 24). In the week of 16 November 2026:

    MD-1  Mon 10:00 opened; agent replies Mon 11:00 (pending); customer Tue 10:00;
          agent resolves Tue 12:00.   FRT 1 h (wall 1 h); resolution 1+2 = 3 h
          (wall 26 h: the wait counts on the wall); a next-response clock ran.
    MD-2  Mon 16:00 opened; agent resolves Tue 10:00.  FRT 2 h (wall 18 h);
          resolution 2 h (wall 18 h); resolved at first contact.
    MD-3  Wed 09:00 opened, never answered: the backlog, 111 h old at the end;
          first response breached Wed 13:00, resolution Fri 17:00.
    MD-4  Thu 10:00 opened; agent resolves Thu 15:00 (FRT 5 h: breached at
          14:00); customer writes Fri 10:00 (reopened); agent resolves Fri 11:00.
          Resolution 5+1 = 6 h (wall 25 h).
    Surveys: MD-1 5 ("quick fix"), MD-2 2, MD-4 sent, unanswered.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import mail, run_cli
from sqlalchemy import insert, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.reports.metrics import build, period
from maildesk.scheduler.sla_scan import scan
from maildesk.store.models import Survey, Ticket
from maildesk.tickets.refs import token_address

UTC = timezone.utc
MON = datetime(2026, 11, 16, tzinfo=UTC)
DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}]}
PIPE = Envelope("pipe", None)


def at(day: int, hour: int) -> datetime:
    return MON + timedelta(days=day, hours=hour)


def customer(app: App, when: datetime, n: int, ref: str | None = None) -> None:
    """A new request, or (ref) a reply to our mail's reply address, as mail clients do."""
    subject = f"Re: [{ref}] case" if ref else f"case {n}"
    to = token_address(app.secrets[0], "support@localhost", ref, f"user{n}@customer.test",
                       issued=when.date()) if ref else "support@localhost"
    ingest(app, [(mail(subject=subject, message_id=f"<c{n}.{when:%d%H}@customer.test>",
                       sender=f"user{n}@customer.test", to=to), PIPE)], now=when)


def agent(app: App, when: datetime, ref: str, body: str) -> None:
    to = token_address(app.secrets[0], "support@localhost", ref, "bob@desk.test")
    raw = (f"From: Bob <bob@desk.test>\nTo: {to}\nSubject: Re: [{ref}] case\n"
           f"Message-ID: <bob.{ref}.{when:%d%H}@desk.test>\n\n{body}\n").encode()
    ingest(app, [(raw, PIPE)], now=when)


def week_of_work(app: App) -> None:
    customer(app, at(0, 10), 1)
    customer(app, at(0, 16), 2)
    agent(app, at(0, 11), "MD-1", "Please restart the printer.")
    customer(app, at(1, 10), 1, "MD-1")
    agent(app, at(1, 10), "MD-2", "#status resolved\nDone: new toner.")
    agent(app, at(1, 12), "MD-1", "#status resolved\nReplaced the fuser.")
    customer(app, at(2, 9), 3)
    customer(app, at(3, 10), 4)
    agent(app, at(3, 15), "MD-4", "#status resolved\nReset your password.")
    customer(app, at(4, 10), 4, "MD-4")
    agent(app, at(4, 11), "MD-4", "#status resolved\nUnlocked the account too.")
    scan(app, at(6, 12))
    with app.engine.begin() as conn:
        ids = dict(conn.execute(select(Ticket.ref, Ticket.id)).all())
        conn.execute(insert(Survey.__table__), [
            {"ticket_id": ids["MD-1"], "requester": "user1@customer.test", "sent_at": at(2, 9),
             "answered_at": at(2, 10), "score": 5, "satisfied": True, "comment": "quick fix"},
            {"ticket_id": ids["MD-2"], "requester": "user2@customer.test", "sent_at": at(2, 9),
             "answered_at": at(3, 9), "score": 2, "satisfied": False, "comment": ""},
            {"ticket_id": ids["MD-4"], "requester": "user4@customer.test", "sent_at": at(5, 9),
             "answered_at": None, "score": None, "satisfied": None, "comment": None}])


@pytest.fixture
def worked(make_app: Callable[..., App], db_url: str) -> App:
    app = make_app(db_url, desk=DESK)
    week_of_work(app)
    return app


WEEK = period(date(2026, 11, 16), date(2026, 11, 22), date(2026, 11, 23))


def test_every_figure_of_the_week_matches_the_hand_count(worked: App) -> None:
    with worked.engine.connect() as conn:
        report = build(conn, *WEEK, by=None)
    total = report.groups["all"]
    expected = {
        "created": 4, "resolved": 3, "reopened": 1, "backlog": 1, "backlog_age_median_h": 111.0,
        "frt_business_median_h": 2.0, "frt_business_p90_h": 5.0,
        "frt_wall_median_h": 5.0, "frt_wall_p90_h": 18.0,
        "mttr_business_median_h": 3.0, "mttr_business_p90_h": 6.0,
        "mttr_wall_median_h": 25.0, "mttr_wall_p90_h": 26.0,
        "sla_first_response_pct": 66.7, "sla_resolution_pct": 100.0,
        "csat_pct": 50.0, "csat_mean": 3.5, "csat_responses": 2,
        "survey_response_rate_pct": 66.7, "fcr_pct": 33.3, "reopen_rate_pct": 33.3}
    assert {k: total.get(k) for k in expected} == expected
    assert [(b["ref"], b["clock"]) for b in report.breaches] == [
        ("MD-3", "first_response"), ("MD-4", "first_response"), ("MD-3", "resolution")]
    assert report.comments == [{"ref": "MD-1", "score": 5, "comment": "quick fix",
                                "answered_at": at(2, 10).isoformat()}]
    assert report.series["backlog"][:3] == [("2026-11-16", 2.0), ("2026-11-17", 0.0),
                                            ("2026-11-18", 1.0)]
    assert report.series["backlog"][-1] == ("2026-11-22", 1.0)
    assert report.series["sla_met_pct"] == [("2026-11-16", 83.3)], "5 of 6 stopped clocks"


def test_a_period_not_ended_yet_ages_its_backlog_to_now(worked: App) -> None:
    """The default report runs to the end of today: the backlog's age is as of now, not
    of midnight to come (hours too old, up to a day early in the morning); its count is
    the same (nothing opens or closes in the future) and, by week, in the week of now."""
    now = WEEK[1] - timedelta(hours=12)
    with worked.engine.connect() as conn:
        total = build(conn, *WEEK, by=None, now=now).groups["all"]
        weekly = build(conn, *WEEK, by="week", now=now).groups
    assert (total["backlog"], total["backlog_age_median_h"]) == (1, 111.0 - 12)
    assert (weekly["2026-11-16"]["backlog"], weekly["2026-11-16"]["backlog_age_median_h"]) \
        == (1, 111.0 - 12)


def test_by_week_and_by_queue_split_the_same_numbers(worked: App) -> None:
    with worked.engine.connect() as conn:
        weekly = build(conn, *WEEK, by="week")
        queues = build(conn, *WEEK, by="queue")
    assert weekly.groups["2026-11-16"]["created"] == 4
    assert weekly.groups["2026-11-16"]["frt_business_median_h"] == 2.0
    assert queues.groups["general"]["resolved"] == 3 and queues.groups["general"]["backlog"] == 1


def test_csv_json_and_table_through_the_cli(desk_config: Callable[..., Path],
                                            make_app: Callable[..., App]) -> None:
    cfg, app = desk_config(desk=DESK), make_app(desk=DESK)
    week_of_work(app)
    args = ("report", "--from", "2026-11-16", "--to", "2026-11-22")
    r = run_cli(*args, "--by", "queue", "--format", "csv", config=cfg)
    assert r.returncode == 0, r.stderr
    table = list(csv.DictReader(io.StringIO(r.stdout.decode())))
    assert [row["group"] for row in table] == ["general", "all"]
    assert table[-1]["created"] == "4" and table[-1]["csat_pct"] == "50.0"
    data = json.loads(run_cli(*args, "--format", "json", config=cfg).stdout)
    assert (data["from"], data["to"], data["by"]) == ("2026-11-16", "2026-11-22", None)
    assert data["rows"][-1]["mttr_wall_median_h"] == 25.0 and len(data["breaches"]) == 3
    people = run_cli(*args, config=cfg)
    assert people.returncode == 0 and b"created" in people.stdout
    assert b"3 SLA breaches" in people.stderr
    bad = run_cli("report", "--from", "2026-11-22", "--to", "2026-11-01", config=cfg)
    assert bad.returncode == 64 and b"--from is after --to" in bad.stderr


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (Debian package "
                                               "`chromium`; .ci/run installs it)")
def test_the_html_report_renders_its_charts_and_numbers_in_chromium(
        desk_config: Callable[..., Path], make_app: Callable[..., App], tmp_path: Path) -> None:
    cfg, app = desk_config(desk=DESK), make_app(desk=DESK)
    week_of_work(app)
    page = tmp_path / "report.html"
    r = run_cli("report", "--from", "2026-11-16", "--to", "2026-11-22", "--format", "html",
                "--out", str(page), config=cfg)
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace(
        "http://www.w3.org/2000/svg", "")
    browser = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
               "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True,
                         timeout=90).stdout.decode()
    assert dom.count('class="chart"') == 5 and dom.count("<svg") == 5
    assert 'data-kpi="created"><b>4</b>' in dom and 'data-kpi="csat"><b>50.0%</b>' in dom
    assert "MD-3 (P3, general): first response breached" in dom
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report-phone.png"
    subprocess.run([*browser, "--window-size=390,1800", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_the_digest_mails_last_weeks_report(make_app: Callable[..., App]) -> None:
    import email
    from email import policy

    from maildesk.reports.digest import send_digest
    from maildesk.scheduler.jobs import jobs_for
    from maildesk.store.models import OutboxMail
    app = make_app(desk=DESK, digest={"to": ["boss@example.test"], "every": "7d"})
    week_of_work(app)
    assert "digest" in [j.name for j in jobs_for(app)]
    assert send_digest(app, datetime(2026, 11, 23, 7, tzinfo=UTC)) == "sent to 1"
    with app.sessions() as s:
        row = s.scalars(select(OutboxMail).where(OutboxMail.template == "digest")).one()
        assert row.ticket_id is None and row.to == ["boss@example.test"]
        digest = row.digest
    msg = email.message_from_bytes(app.blobs.get(digest), policy=policy.default)
    assert msg["Subject"] == "Service Desk: report 2026-11-16 to 2026-11-22 (4 new, 1 open)"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "created: 4" in msg.get_body(("plain",)).get_content()
    assert msg.get_body(("html",)).get_content().count('class="chart"') == 5


def test_counts_on_a_new_desk_are_zero_and_times_have_no_figure(
        desk_config: Callable[..., Path]) -> None:
    """A script sums counts: 0, not null; a median of nothing is no figure (null)."""
    import json

    from conftest import run_cli
    cfg = desk_config()
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    row = json.loads(run_cli("report", "--format", "json", config=cfg).stdout)["rows"][0]
    assert {k: row[k] for k in ("created", "resolved", "reopened", "backlog",
                                "csat_responses")} == dict.fromkeys(
        ("created", "resolved", "reopened", "backlog", "csat_responses"), 0)
    assert row["frt_business_median_h"] is None and row["csat_pct"] is None


def busy_desk(app: App) -> list[tuple[datetime, str, str, datetime | None, bool]]:
    """300 tickets over 90 days, in every status and queue, a fifth without a resolution
    clock, the others' stopped before, inside, after the periods looked at or never;
    returned as (created, status, queue, resolution stopped, has a resolution clock). The
    seconds end in 7: no age falls on a tenth of an hour and half, where rounding could go
    either way between engines."""
    import random

    from maildesk.rules.actions import STATUSES
    from maildesk.store.models import SlaClock
    rnd, start, made = random.Random(22), datetime(2026, 8, 25, tzinfo=UTC), []
    tickets, clocks = [], []
    for i in range(1, 301):
        created = start + timedelta(minutes=rnd.randrange(90 * 24 * 60), seconds=7)
        status, queue = rnd.choice(STATUSES), rnd.choice(("it", "hr", "general"))
        clocked = rnd.random() < 0.8
        stopped = (created + timedelta(hours=rnd.expovariate(1 / 200))
                   if clocked and rnd.random() < 0.7 else None)
        tickets.append({"id": i, "number": i, "ref": f"MD-{i}", "subject": f"case {i}",
                        "requester": f"u{i % 17}@c.test", "status": status, "queue": queue,
                        "created_at": created, "updated_at": created})
        if clocked:
            clocks.append({"ticket_id": i, "kind": "resolution", "policy": "P3",
                           "target": 86400.0, "elapsed": 60.0,
                           "state": "stopped" if stopped else "running",
                           "started_at": created, "stopped_at": stopped, "pauses": []})
        made.append((created, status, queue, stopped, clocked))
    with app.engine.begin() as conn:
        conn.execute(insert(Ticket.__table__), tickets)
        conn.execute(insert(SlaClock.__table__), clocks)
    return made


def test_the_backlog_and_its_median_age_by_their_definition(
        make_app: Callable[..., App], db_url: str) -> None:
    """The backlog at a period's end, counted ticket by ticket from its definition (opened
    before the end; its resolution clock not stopped by then, or, without one, its status
    open) and its median age the nearest-rank one, whatever way the report computes them:
    in total, by queue and by week, for periods ending in the desk's past and after it,
    and for one not ended yet (taken as of now, a day the busy desk's data has ended by)."""
    import math
    now = datetime(2026, 12, 15, tzinfo=UTC)

    app = make_app(db_url, desk=DESK)
    made = busy_desk(app)
    for first, last in ((date(2026, 9, 1), date(2026, 9, 30)),
                        (date(2026, 10, 5), date(2026, 10, 11)),
                        (date(2026, 11, 1), date(2026, 11, 30)),
                        (date(2027, 1, 1), date(2027, 1, 31)),
                        (date(2026, 12, 1), date(2026, 12, 31)),
                        (date(2026, 1, 1), date(2026, 1, 31))):
        start, end = period(first, last, last)
        as_of = min(end, now)
        ages: dict[str, list[float]] = {}
        for created, status, queue, stopped, clocked in made:
            open_then = (stopped is None or stopped >= as_of) if clocked else \
                status not in ("resolved", "closed")
            if created < as_of and open_then:
                for g in ("all", queue):
                    ages.setdefault(g, []).append((as_of - created).total_seconds())
        week = (as_of - timedelta(days=as_of.weekday())).date().isoformat()
        with app.engine.connect() as conn:
            reports = {by: build(conn, start, end, by, now) for by in (None, "queue", "week")}
        for by, report in reports.items():
            # the groups: the total, each queue, or the end's week (the backlog is the end's)
            names = {"all": "all"} | ({g: g for g in ages if g != "all"} if by == "queue"
                                      else {week: "all"} if by == "week" and ages else {})
            want = {g: (len(ages.get(a, [])), round(sorted(ages[a])[
                        math.ceil(len(ages[a]) / 2) - 1] / 3600, 1) if a in ages else None)
                    for g, a in names.items()}
            got = {g: (report.groups.get(g, {}).get("backlog", 0),
                       report.groups.get(g, {}).get("backlog_age_median_h")) for g in names}
            assert got == want, (first, by)
        # the chart's backlog by day: opened less resolved (by the clock) since the desk began
        level = sum(c < start for c, *_ in made) - sum(s is not None and s < start
                                                       for *_, s, _ in made)
        days = [start + timedelta(days=i) for i in range((end - start).days)]
        want_series = []
        for d in days:
            nxt = d + timedelta(days=1)
            level += sum(d <= c < nxt for c, *_ in made) - sum(
                s is not None and d <= s < nxt for *_, s, _ in made)
            want_series.append((d.date().isoformat(), float(level)))
        assert reports[None].series["backlog"] == want_series, first
