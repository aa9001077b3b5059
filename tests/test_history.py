"""`maildesk ingest --history`: old mail happens at its own dates and sends nothing (issue 17).

A small conversation from March 2024 goes in as one mbox, out of order: a customer opens,
an agent answers, the customer answers, the agent resolves; another customer writes and
nobody answers. The desk works Monday to Friday, 09:00-17:00 UTC; a new ticket is P3
(4h first response, 3 working days to resolve).
"""
from __future__ import annotations

import json
import mailbox
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from sqlalchemy import func, select
from test_real_mail import CORPUS, accounted_for, corpus_files, corpus_mails, inbound_rows

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.mail.parse import parse, written_at
from maildesk.pipeline.run import ingest
from maildesk.scheduler.jobs import finish_history
from maildesk.store.models import Event, Message, OutboxMail, SlaClock, Ticket
from maildesk.surveys.send import send_surveys
from maildesk.tickets.views import show_ticket

UTC = timezone.utc
DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk", "lead": "bob"}],
        "trusted_authserv_ids": ["mx.desk.test"], "verify_dkim": False}
OPENED = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)              # a Monday
ANSWERED = datetime(2024, 3, 4, 11, 30, tzinfo=UTC)
THANKED = datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
RESOLVED = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
UNANSWERED = datetime(2024, 3, 6, 14, 0, tzinfo=UTC)          # a Wednesday


def old(sender: str, to: str, subject: str, body: str, at: datetime, mid: str,
        answers: str | None = None, cc: str | None = None) -> bytes:
    """A mail as our MX kept it: its sender's domain proven by our Authentication-Results."""
    domain = sender.rpartition("@")[2].rstrip(">")
    head = [f"Authentication-Results: mx.desk.test; dkim=pass header.d={domain}",
            f"Received: from mx.desk.test; {format_datetime(at + timedelta(seconds=5))}",
            f"From: {sender}", f"To: {to}", f"Subject: {subject}",
            f"Date: {format_datetime(at)}", f"Message-ID: {mid}"]
    if cc:
        head.append(f"Cc: {cc}")
    if answers:
        head += [f"In-Reply-To: {answers}", f"References: {answers}"]
    return ("\n".join(head) + f"\n\n{body}\n").encode()


CONVERSATION = {
    "opened": old("Ana Lima <ana@customer.test>", "support@localhost", "Printer jammed",
                  "The printer on floor 2 blinks red.", OPENED, "<c1@customer.test>"),
    "answered": old("Bob <bob@desk.test>", "ana@customer.test", "Re: Printer jammed",
                    "Please switch it off and on again.", ANSWERED, "<b1@desk.test>",
                    "<c1@customer.test>", cc="support@localhost"),
    "thanked": old("Ana Lima <ana@customer.test>", "support@localhost", "Re: Printer jammed",
                   "It works now, thanks.", THANKED, "<c2@customer.test>", "<b1@desk.test>"),
    "resolved": old("Bob <bob@desk.test>", "ana@customer.test", "Re: Printer jammed",
                    "#status resolved\nGlad to hear it.", RESOLVED, "<b2@desk.test>",
                    "<c2@customer.test>", cc="support@localhost"),
    "unanswered": old("Carl <carl@customer.test>", "support@localhost", "VPN down",
                      "The VPN drops every hour.", UNANSWERED, "<c3@customer.test>"),
}


def mbox_of(path: Path, mails: list[bytes]) -> Path:
    box = mailbox.mbox(str(path))
    for raw in mails:
        box.add(raw)
    box.close()
    return path


@pytest.fixture
def imported(tmp_path: Path, db_url: str, desk_config: Callable[..., Path],
             make_app: Callable[..., App]) -> tuple[Path, App, dict[str, Any]]:
    """The mbox imported with --history, written out of order (the batch is sorted)."""
    cfg = desk_config(db_url, desk=DESK)
    c = CONVERSATION
    box = mbox_of(tmp_path / "2024.mbox", [c["unanswered"], c["answered"], c["opened"],
                                           c["resolved"], c["thanked"]])
    r = run_cli("ingest", "--history", "--format", "json", str(box), config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    return cfg, make_app(db_url, desk=DESK), json.loads(r.stdout)


def count(app: App, query: Any) -> int:
    with app.sessions() as s:
        return int(s.scalar(query) or 0)


def clocks(app: App, ref: str) -> dict[str, SlaClock]:
    with app.sessions() as s:
        rows = s.scalars(select(SlaClock).join(Ticket, Ticket.id == SlaClock.ticket_id)
                         .where(Ticket.ref == ref)).all()
        s.expunge_all()
    return {r.kind: r for r in rows}


def ticket(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def test_old_mail_keeps_its_dates_and_sends_nothing(
        imported: tuple[Path, App, dict[str, Any]]) -> None:
    _cfg, app, said = imported
    assert (said["new_tickets"], said["follow_ups"], said["quarantined"]) == (2, 3, 0)
    assert said["sla_breached"] == 2            # Carl's first response and resolution
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0
    assert count(app, select(func.count()).select_from(Message)
                 .where(Message.direction == "out")) == 0
    ana, carl = ticket(app, "MD-1"), ticket(app, "MD-2")
    assert (ana["requester"], carl["requester"]) == ("ana@customer.test", "carl@customer.test")
    assert datetime.fromisoformat(ana["created_at"]) == OPENED
    assert datetime.fromisoformat(carl["created_at"]) == UNANSWERED
    assert [m["from"] for m in ana["messages"]] == [
        "ana@customer.test", "bob@desk.test", "ana@customer.test", "bob@desk.test"]
    # resolved, then closed a week later as the job would have: at that date, quietly
    assert ana["status"] == "closed"
    assert datetime.fromisoformat(ana["updated_at"]) == RESOLVED + timedelta(days=7)
    kinds = [e["kind"] for e in ana["events"]]
    assert "notification.queued" not in kinds and "ticket.resolved" in kinds
    with app.sessions() as s:
        events = s.execute(select(Event.kind, Event.at, Event.data)).all()
    assert events and all(at < datetime(2025, 1, 1, tzinfo=UTC) for _k, at, _d in events)
    assert all(data.get("history") is True for _kind, _at, data in events), events


def test_clocks_run_on_the_mails_dates(imported: tuple[Path, App, dict[str, Any]]) -> None:
    _cfg, app, _said = imported
    ana = clocks(app, "MD-1")
    first = ana["first_response"]
    assert (first.state, first.started_at, first.stopped_at, first.breached_at) == \
        ("stopped", OPENED, ANSWERED, None)
    assert first.elapsed == pytest.approx(1.5 * 3600)
    assert (ana["resolution"].stopped_at, ana["resolution"].breached_at) == (RESOLVED, None)
    carl = clocks(app, "MD-2")
    due = datetime(2024, 3, 7, 10, 0, tzinfo=UTC)     # 4 working hours after Wed 14:00
    assert (carl["first_response"].due_at, carl["first_response"].breached_at) == (due, due)
    assert all(c.next_check_at is None for c in carl.values())
    breaches = [e for e in ticket(app, "MD-2")["events"] if e["kind"] == "sla.breached"]
    assert [datetime.fromisoformat(e["at"]) for e in breaches][:1] == [due]


def test_no_escalation_later_and_the_report_reads_the_old_dates(
        imported: tuple[Path, App, dict[str, Any]]) -> None:
    cfg, app, _said = imported
    r = run_cli("jobs", "run", "--force", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    ran = {row["job"]: row["result"] for row in json.loads(r.stdout)}
    assert ran["sla_scan"] == "nothing due"
    assert ran["auto_close"] == "0 closed" and ran["surveys"] == "0 sent"
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0
    assert count(app, select(func.count()).select_from(Event)
                 .where(Event.kind.in_(("sla.escalated", "sla.warning")))) == 0
    r = run_cli("report", "--from", "2024-03-01", "--to", "2024-03-31", "--format", "json",
                config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads(r.stdout)
    total = next(row for row in report["rows"] if row["group"] == "all")
    assert (total["created"], total["resolved"], total["backlog"]) == (2, 1, 1)
    assert total["frt_business_median_h"] == 1.5
    assert total["mttr_wall_median_h"] == 24.0
    assert total["sla_first_response_pct"] == 100.0
    assert {(b["ref"], b["clock"]) for b in report["breaches"]} == {
        ("MD-2", "first_response"), ("MD-2", "resolution")}
    r = run_cli("report", "--format", "json", config=cfg)      # the last 30 days: none of it
    assert all(not row.get("created") for row in json.loads(r.stdout)["rows"])


def test_importing_the_same_history_again_changes_nothing(
        tmp_path: Path, imported: tuple[Path, App, dict[str, Any]]) -> None:
    cfg, app, _said = imported
    box = mbox_of(tmp_path / "again.mbox", list(CONVERSATION.values()))
    r = run_cli("ingest", "--history", "--format", "json", str(box), config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    said = json.loads(r.stdout)
    assert (said["duplicates"], said["sla_breached"]) == (5, 0)
    assert count(app, select(func.count()).select_from(Event)
                 .where(Event.kind == "sla.breached")) == 2


def test_live_mail_after_an_import_is_answered(
        imported: tuple[Path, App, dict[str, Any]]) -> None:
    """The import's quiet is its own: the next mail, live, is acknowledged."""
    _cfg, app, _said = imported
    ingest(app, [(old("Dana <dana@customer.test>", "support@localhost", "Screen", "Black.",
                      datetime.now(UTC), "<d1@customer.test>"), Envelope("pipe", None))])
    with app.sessions() as s:
        sent = set(s.scalars(select(OutboxMail.template)))
    assert sent == {"acknowledgement", "agent_notification"}


def test_a_recent_unanswered_ticket_is_watched_not_breached(
        make_app: Callable[..., App], db_url: str) -> None:
    """A deadline still ahead at the import's end: the scan watches it from then on."""
    app = make_app(db_url, desk=DESK)
    now = datetime(2026, 11, 16, 10, 0, tzinfo=UTC)            # a Monday
    ingest(app, [(old("Eve <eve@customer.test>", "support@localhost", "Mouse", "Dead.",
                      now - timedelta(hours=1), "<e1@customer.test>"),
                  Envelope("pipe", None))], now=now, history=True)
    assert finish_history(app, now) == 0
    first = clocks(app, "MD-1")["first_response"]
    assert first.started_at == now - timedelta(hours=1)
    assert first.breached_at is None and first.next_check_at is not None
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0


def test_history_resolved_last_week_gets_no_survey(make_app: Callable[..., App],
                                                    db_url: str) -> None:
    """Surveys go to tickets resolved in the last 14 days: not to those old mail resolved."""
    app = make_app(db_url, desk=DESK)
    now = datetime.now(UTC).replace(microsecond=0)
    opened, resolved = now - timedelta(days=3), now - timedelta(days=2)
    ingest(app, [(old("Fay <fay@customer.test>", "support@localhost", "Toner", "Empty.",
                      opened, "<f1@customer.test>"), Envelope("pipe", None)),
                 (old("Bob <bob@desk.test>", "fay@customer.test", "Re: Toner",
                      "#status resolved\nNew toner is in.", resolved, "<f2@desk.test>",
                      "<f1@customer.test>"), Envelope("pipe", None))], history=True)
    finish_history(app, now)
    assert ticket(app, "MD-1")["status"] == "resolved"
    assert send_surveys(app, now) == "0 sent"
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0


@pytest.mark.parametrize("date, received, expected", [
    ("Mon, 04 Mar 2024 10:00:00 +0000", None, OPENED),
    ("Tue, 04 Mar 2031 10:00:00 +0000", "Mon, 04 Mar 2024 10:00:05 +0000",   # the future
     OPENED + timedelta(seconds=5)),
    ("Thu, 01 Jan 1970 00:00:00 +0000", None, None),                          # absurd
    (None, "Mon, 04 Mar 2024 10:00:05 +0000", OPENED + timedelta(seconds=5)),
    ("not a date", "garbage", datetime(2024, 3, 3, 8, 0, tzinfo=UTC)),   # the one readable
    ("Fri, 31 Dec 9999 23:59:59 -0100", None, None),                  # past year 9999 in UTC
])
def test_the_date_a_mail_was_written(date: str | None, received: str | None,
                                     expected: datetime | None) -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    head = "From: a@b.test\nSubject: x\n"
    head += f"Date: {date}\n" if date else ""
    head += (f"Received: from relay.test; Sun, 03 Mar 2024 08:00:00 +0000\n"
             f"Received: from mx.desk.test; {received}\n") if received else ""
    mail = parse(f"{head}\nbody\n".encode(), "0" * 64, None)
    assert written_at(mail, now) == (expected or now)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} not found")
@pytest.mark.timeout(600)
def test_the_whole_corpus_as_history(desk_config: Callable[..., Path],
                                     make_app: Callable[..., App]) -> None:
    """The world's mail, as an old archive: every mail accounted for, none sent, no trace."""
    cfg = desk_config()
    r = run_cli("ingest", "--history", "--format", "json", *map(str, corpus_files()),
                config=cfg, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert b"Traceback" not in r.stderr
    accounted_for(inbound_rows(cfg), len(corpus_mails()))
    assert json.loads(r.stdout)["new_tickets"] > 500
    app = make_app()
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0
    r = run_cli("jobs", "run", "--force", config=cfg)
    assert r.returncode == 0 and b"Traceback" not in r.stderr
    assert count(app, select(func.count()).select_from(OutboxMail)) == 0
