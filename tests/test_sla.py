"""SLA clocks through real mail, the scan that escalates, and the jobs beside it.

Every test sets the clock: mail is ingested `now=` a given moment and the
scan and jobs take `now` too; nothing waits in real time. The desk works
Monday to Friday, 09:00-17:00 UTC; a new ticket is P3 (4h first response,
8h next response, 3 working days to resolve, warned at 75 %).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import mail, reply_address
from sqlalchemy import select, update

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.scheduler.jobs import Job, auto_close, pending_reminders, run_job
from maildesk.scheduler.sla_scan import scan
from maildesk.store.models import JobRun, OutboxMail, SlaClock, Ticket
from maildesk.tickets.refs import token_address
from maildesk.tickets.views import show_ticket

UTC = timezone.utc
MON = datetime(2026, 11, 16, 10, 0, tzinfo=UTC)       # a Monday, 10:00
H = 3600.0
DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk", "lead": "lea"}]}
PIPE = Envelope("pipe", None)


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def clocks(app: App, ref: str = "MD-1") -> dict[str, SlaClock]:
    with app.sessions() as s:
        rows = s.scalars(select(SlaClock).join(Ticket, Ticket.id == SlaClock.ticket_id)
                         .where(Ticket.ref == ref).order_by(SlaClock.id)).all()
        s.expunge_all()
    return {r.kind: r for r in rows}


def events(app: App, ref: str = "MD-1") -> list[dict[str, Any]]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t["events"]  # type: ignore[no-any-return]


def status(app: App, ref: str = "MD-1") -> str:
    with app.sessions() as s:
        return s.scalars(select(Ticket.status).where(Ticket.ref == ref)).one()


def customer(app: App, at: datetime, n: int = 0, subject: str = "Printer jammed") -> None:
    ingest(app, [(mail(subject=subject if n == 0 else f"Re: [MD-1] {subject}",
                       to="support@localhost" if n == 0 else reply_address(app),
                       message_id=f"<c{n}@customer.test>"), PIPE)], now=at)


def agent(app: App, at: datetime, body: str, n: int = 0) -> None:
    to = token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test")
    raw = (f"From: Bob <bob@desk.test>\nTo: {to}\nSubject: Re: [MD-1] Printer jammed\n"
           f"Message-ID: <bob{n}@desk.test>\n\n{body}\n").encode()
    ingest(app, [(raw, PIPE)], now=at)


def test_clocks_start_stop_pause_and_resume_with_the_ticket(app: App) -> None:
    customer(app, MON)
    c = clocks(app)
    assert set(c) == {"first_response", "resolution"}
    assert c["first_response"].due_at == MON.replace(hour=14)
    assert c["resolution"].due_at == MON + timedelta(days=3), "24 business hours: Thu 10:00"

    agent(app, MON + timedelta(hours=1), "Please open tray 2.")     # a public reply
    c = clocks(app)
    assert status(app) == "pending"
    assert (c["first_response"].state, c["first_response"].elapsed) == ("stopped", H)
    assert c["first_response"].breached_at is None
    assert (c["resolution"].state, c["resolution"].elapsed) == ("paused", H)

    tuesday = MON + timedelta(days=1)
    customer(app, tuesday, n=1)                                       # waiting is over
    c = clocks(app)
    assert status(app) == "open" and c["resolution"].state == "running"
    assert c["resolution"].pauses == [[(MON + timedelta(hours=1)).isoformat(),
                                       tuesday.isoformat()]]
    assert c["resolution"].due_at == MON + timedelta(days=3, hours=7), "23 h left from Tue 10:00"
    assert c["next_response"].due_at == tuesday + timedelta(days=1), "8 business hours"

    agent(app, tuesday + timedelta(hours=2), "#status resolved\nFixed: new fuser.", n=1)
    c = clocks(app)
    assert status(app) == "resolved" and {x.state for x in c.values()} == {"stopped"}
    assert c["resolution"].elapsed == 3 * H and c["next_response"].elapsed == 2 * H

    customer(app, tuesday + timedelta(days=1), n=2)                   # it is back: reopened
    c = clocks(app)
    assert status(app) == "open"
    assert (c["resolution"].state, c["resolution"].elapsed) == ("running", 3 * H)


def test_the_scan_warns_breaches_and_escalates_once_each(app: App) -> None:
    customer(app, MON)
    assert scan(app, MON.replace(hour=12, minute=59)).as_dict() == {
        "warnings": 0, "breaches": 0, "escalations": 0}
    assert scan(app, MON.replace(hour=13)).warnings == 1, "75 % of 4 h"
    assert scan(app, MON.replace(hour=13, minute=30)).as_dict()["warnings"] == 0
    r = scan(app, MON.replace(hour=14))
    assert (r.breaches, r.escalations) == (1, 1)
    assert scan(app, MON.replace(hour=14, minute=59)).escalations == 0
    assert scan(app, MON.replace(hour=15)).escalations == 1, "level 2, an hour later"
    assert scan(app, MON + timedelta(days=30)).breaches == 1, "only resolution is left"
    kinds = [(e["kind"], e["data"].get("clock"), e["data"].get("level"))
             for e in events(app) if e["kind"].startswith("sla.")]
    assert kinds == [("sla.warning", "first_response", None),
                     ("sla.breached", "first_response", None),
                     ("sla.escalated", "first_response", 1),
                     ("sla.escalated", "first_response", 2),
                     ("sla.warning", "resolution", None),
                     ("sla.breached", "resolution", None),
                     ("sla.escalated", "resolution", 1),
                     ("sla.escalated", "resolution", 2)]
    with app.sessions() as s:
        mails = s.execute(select(OutboxMail.to, OutboxMail.subject)
                          .where(OutboxMail.template == "sla_escalation")
                          .order_by(OutboxMail.id)).all()
    assert [m.to for m in mails[:3]] == [["bob@desk.test"], ["lea@desk.test"], ["lea@desk.test"]], \
        "level 1: each agent responsible, a mail of their own; level 2: the group lead"
    assert "SLA breached: first response was due 2026-11-16 14:00 UTC" in mails[0].subject


def test_a_clock_paused_before_its_warning_never_warns(app: App) -> None:
    customer(app, MON)
    agent(app, MON + timedelta(minutes=30), "Which printer?")
    assert scan(app, MON + timedelta(days=10)).as_dict() == {
        "warnings": 0, "breaches": 0, "escalations": 0}


def test_two_schedulers_on_one_database_fire_once(make_app: Callable[..., App],
                                                  db_url: str) -> None:
    first, second = make_app(db_url, desk=DESK), make_app(db_url, desk=DESK)
    for n in range(30):
        ingest(first, [(mail(subject=f"case {n}", message_id=f"<m{n}@customer.test>",
                             sender=f"user{n}@customer.test"), PIPE)], now=MON)
    results = []
    at = MON.replace(hour=14)
    threads = [threading.Thread(target=lambda a=a: results.append(scan(a, at, batch=7)))
               for a in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.warnings for r in results) == 30 and sum(r.breaches for r in results) == 30
    with first.sessions() as s:
        n = s.scalars(select(Ticket.id)).all()
    assert len(n) == 30


def test_rules_act_on_a_breach(make_app: Callable[..., App], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump([{
        "name": "breach raises priority", "on": "sla.breached", "if": {"priority": "P3"},
        "then": [{"set": {"priority": "P2", "assignee": "lea"}}]}]))
    app = make_app(desk=DESK, rules=[str(rules)])
    customer(app, MON)
    scan(app, MON.replace(hour=14))
    with app.sessions() as s:
        t = s.scalars(select(Ticket)).one()
        assert (t.priority, t.assignee) == ("P2", "lea")
    c = clocks(app)
    assert c["resolution"].policy == "P2", "the clocks follow the new priority"
    assert c["resolution"].target == 8 * H and c["resolution"].elapsed == 4 * H
    changed = [e for e in events(app) if e["kind"] == "ticket.updated"]
    assert {e["data"]["field"] for e in changed} == {"priority", "assignee"}


def test_a_job_catches_up_once_and_never_runs_twice_at_once(app: App) -> None:
    runs: list[datetime] = []
    job = Job("probe", 3600.0, lambda a, now: runs.append(now) or "ran")
    assert run_job(app, job, MON) == "ran"
    assert run_job(app, job, MON + timedelta(minutes=10)) is None, "not due yet"
    later = MON + timedelta(hours=9)                          # the daemon was down for hours
    assert run_job(app, job, later) == "ran"
    assert run_job(app, job, later + timedelta(seconds=1)) is None, "caught up once"
    assert runs == [MON, later]
    with app.engine.begin() as conn:                           # another daemon holds it
        conn.execute(update(JobRun.__table__).values(
            lease_until=later + timedelta(hours=2), owner="elsewhere:1"))
    assert run_job(app, job, later + timedelta(hours=1, minutes=1)) is None
    assert run_job(app, job, later + timedelta(hours=3)) == "ran", "a dead owner's lease ends"


def test_auto_close_and_pending_reminders(app: App) -> None:
    customer(app, MON)
    agent(app, MON + timedelta(hours=1), "Did the restart help?")      # pending
    assert pending_reminders(app, MON + timedelta(days=2)) == "0 reminded"
    assert pending_reminders(app, MON + timedelta(days=3, hours=2)) == "1 reminded"
    assert pending_reminders(app, MON + timedelta(days=5)) == "0 reminded", "once per wait"
    agent(app, MON + timedelta(days=5), "#status resolved\nClosing this as fixed.", n=1)
    assert auto_close(app, MON + timedelta(days=11)) == "0 closed"
    assert auto_close(app, MON + timedelta(days=12, hours=1)) == "1 closed"
    assert status(app) == "closed"
    with app.sessions() as s:
        templates = s.scalars(select(OutboxMail.template).order_by(OutboxMail.id)).all()
    assert templates.count("pending_reminder") == 1 and templates[-1] == "ticket_closed"


def test_sla_show_and_tickets_list_by_sla(desk_config: Callable[..., Path],
                                          make_app: Callable[..., App]) -> None:
    import json

    from conftest import run_cli
    cfg, app = desk_config(desk=DESK), make_app(desk=DESK)
    for n, at in enumerate((MON, MON, datetime.now(UTC))):
        ingest(app, [(mail(subject=f"case {n}", message_id=f"<l{n}@customer.test>",
                           sender=f"user{n}@customer.test"), PIPE)], now=at)
    scan(app, MON.replace(hour=14, minute=30))      # MD-1 and MD-2 missed their first response
    r = run_cli("tickets", "list", "--sla", "breached", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    assert [t["ref"] for t in json.loads(r.stdout)] == ["MD-2", "MD-1"], "newest first"
    # their resolution clocks are past the warning too; MD-3, opened just now, is not
    r = run_cli("tickets", "list", "--sla", "at-risk", "--format", "json", config=cfg)
    assert [t["ref"] for t in json.loads(r.stdout)] == ["MD-2", "MD-1"], "newest first"
    r = run_cli("sla", "show", "MD-1", "--format", "json", config=cfg)
    rows = {c["clock"]: c for c in json.loads(r.stdout)}
    assert rows["first_response"]["due_at"] == "2026-11-16T14:00:00Z"
    assert rows["first_response"]["breached_at"] == "2026-11-16T14:00:00Z"
    assert rows["first_response"]["escalation_level"] == 1
    assert rows["resolution"]["calendar"] == "business" and rows["resolution"]["target_hours"] == 24
    text = run_cli("sla", "show", "MD-1", config=cfg)
    assert text.returncode == 0 and b"first_response" in text.stdout
    assert run_cli("sla", "show", "MD-99", config=cfg).returncode == 66
    r = run_cli("jobs", "run", "--format", "json", config=cfg)
    assert r.returncode == 0 and {j["job"] for j in json.loads(r.stdout)} == {
        "sla_scan", "auto_close", "pending_reminders", "surveys", "blob_sample",
        "propose_problems", "triage_retrain", "outbox"}


def test_bad_sla_settings_are_named_with_their_place(tmp_path: Path) -> None:
    from conftest import run_cli
    for body, expect in [
        ("sla:\n  policies:\n    - {name: x, calendar: moon, first_response: 1h}\n",
         b"unknown calendar 'moon'"),
        ("sla:\n  calendars:\n    - name: c\n      holidays: {country: XX}\n",
         b"unknown country 'XX'"),
        ("sla:\n  calendars:\n    - name: c\n      hours: {mon: '9-5'}\n",
         b"not working hours: '9-5'"),
        ("sla:\n  policies:\n    - {name: x, first_response: soon}\n",
         b"maildesk.yaml:3:"),
    ]:
        cfg = tmp_path / "maildesk.yaml"
        cfg.write_text(body)
        r = run_cli("config", "check", config=cfg)
        assert r.returncode == 78 and expect in r.stderr, (body, r.stderr)


def test_the_daemon_runs_the_scan_by_itself(daemon: Callable[..., Any]) -> None:
    """A smoke test of the scheduler in `maildesk serve` (a 24x7 policy of two seconds)."""
    import json

    from conftest import run_cli, wait_for
    from test_smtp import send
    d = daemon(sla={"scan_interval": 1, "policies": [
        {"name": "fast", "calendar": "24x7", "first_response": "2s", "resolution": "1h"}]})
    send(d.port, mail())

    def breached() -> bool:
        r = run_cli("sla", "show", "MD-1", "--format", "json", config=d.config)
        return r.returncode == 0 and any(c["breached_at"] for c in json.loads(r.stdout))
    wait_for(breached, 30, "the daemon's scan to see the breach")
