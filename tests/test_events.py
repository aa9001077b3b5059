"""The seam: everything that happens to a ticket is fire()d, and the rules, the SLA clocks
and the notices follow from there, through real mail."""
from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, reply_address
from sqlalchemy import select

from maildesk.app import App
from maildesk.cli.lists import _print_ticket
from maildesk.core.context import Classified
from maildesk.core.fire import KINDS, MAX_DEPTH
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.pipeline.stages import STAGES
from maildesk.pipeline.stages.survey import survey_stage
from maildesk.pipeline.work import Work
from maildesk.rules.engine import EVENTS
from maildesk.scheduler.jobs import auto_close
from maildesk.scheduler.sla_scan import scan
from maildesk.store.models import Event, Inbound, OutboxMail, Survey, Ticket
from maildesk.tickets.refs import rate_address
from maildesk.tickets.views import show_ticket

PIPE = Envelope("pipe", None)
MON = datetime(2026, 11, 16, 10, 0, tzinfo=timezone.utc)     # a Monday, 10:00
DESK = {"queues": [{"name": "general"}, {"name": "it", "group": "it-team"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["it-team"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["it-team"]},
                   {"name": "kim", "address": "kim@desk.test", "queues": ["it"]},
                   {"name": "max", "address": "max@desk.test"}],
        "groups": [{"name": "it-team", "lead": "max"}],
        "ack_window": 0, "flood_limit": 1_000_000}


@pytest.fixture
def desk(make_app: Callable[..., App], tmp_path: Path, db_url: str) -> Callable[..., App]:
    def make(rules: str = "", **settings: Any) -> App:
        paths = []
        if rules:
            path = tmp_path / "rules.yaml"
            path.write_text(textwrap.dedent(rules))
            paths = [str(path)]
        return make_app(db_url, rules=paths, desk=DESK, **settings)
    return make


def show(app: App, ref: str = "MD-1") -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref, app.blobs)
    assert t is not None
    return t


def kinds(app: App, ref: str = "MD-1") -> list[str]:
    return [e["kind"] for e in show(app, ref)["events"]]


def sent(app: App, template: str) -> list[tuple[list[str], Message]]:
    """The outbox's mail of a template, in order: (recipients, the mail as sent)."""
    with app.sessions() as s:
        rows = s.execute(select(OutboxMail.to, OutboxMail.digest)
                         .where(OutboxMail.template == template).order_by(OutboxMail.id)).all()
    return [(list(to), message_from_bytes(app.blobs.get(d))) for to, d in rows]


def agent_answers(app: App, to: str, body: str, n: int, at: datetime | None = None) -> None:
    """Bob answers a mail of the desk's, as his mail client would: to its Reply-To."""
    raw = (f"From: Bob <bob@desk.test>\nTo: {to}\nSubject: Re: [MD-1] Printer jammed\n"
           f"Message-ID: <bob{n}@desk.test>\n\n{body}\n").encode()
    ingest(app, [(raw, PIPE)], now=at)


def _fired() -> set[str]:
    """The event kinds the code fires by name: fire(ctx, ticket, "kind", ...)."""
    found = set()
    for path in (Path(__file__).resolve().parent.parent / "maildesk").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fire" \
                    and len(node.args) > 2 and not isinstance(node.args[2], ast.JoinedStr):
                found.update(c.value for c in ast.walk(node.args[2])   # or `"a" if x else "b"`
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return found


def test_every_rule_event_is_fired_somewhere() -> None:
    """A rule on an event that nothing fires would never run: every kind a rule may name
    is fired by the code, and every kind fired is one fire() knows."""
    fired = _fired()
    assert "ticket.created" in fired and "ticket.resolved" in fired
    assert set(EVENTS) - fired == set(), "rules may name events that nothing fires"
    assert fired - set(KINDS) == set()


def test_rules_on_ticket_updated_and_ticket_resolved_fire(
        desk: Callable[..., App], capsys: pytest.CaptureFixture[str]) -> None:
    app = desk("""\
        - name: route printers
          on: ticket.created
          if: {subject: {contains: printer}}
          then: [{set: {queue: it}}]
        - name: routed
          on: ticket.updated
          if: {changed: queue, queue: it}
          then: [{tags: {add: [routed]}}]
        - name: solved
          on: ticket.resolved
          then:
            - tags: {add: [solved]}
            - notify: {template: ticket_notice, to: max@desk.test}
        """)
    ingest(app, [(mail(), PIPE)])
    t = show(app)
    assert (t["queue"], t["tags"]) == ("it", ["routed"])
    routed = [e for e in t["events"] if e["kind"] == "ticket.updated"
              and e["data"]["field"] == "queue"][0]
    assert routed["actor"] == "rule:route printers"
    assert routed["data"]["rules"] == {"hits": ["routed"], "misses": []}, \
        "the rules that matched an event are kept on it"
    _print_ticket(t)
    shown = capsys.readouterr().out
    assert "queue: general -> it; by rule route printers; rules matched: routed" in shown, shown
    agent_answers(app, reply_address(app, person="bob@desk.test"),
                  "#status resolved\nThe fuser was replaced.", 1)
    t = show(app)
    assert (t["status"], t["tags"]) == ("resolved", ["routed", "solved"])
    resolved = [e for e in t["events"] if e["kind"] == "ticket.resolved"][0]
    assert (resolved["actor"], resolved["data"]["previous"]) == ("agent:bob", "new")
    assert [to for to, _m in sent(app, "ticket_notice")] == [["max@desk.test"]]


def test_rules_that_would_loop_stop_at_the_depth_limit(desk: Callable[..., App],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = desk("""\
        - name: start
          on: ticket.created
          then: [{tags: {add: [ping]}}]
        - name: ping
          on: ticket.updated
          if: {tags: {contains: ping}}
          then: [{tags: {add: [pong], remove: [ping]}}]
        - name: pong
          on: ticket.updated
          if: {tags: {contains: pong}}
          then: [{tags: {add: [ping], remove: [pong]}}]
        """)
    summary = ingest(app, [(mail(), PIPE), (mail(subject="the next mail"), PIPE)])
    assert summary.new_tickets == 2, "the loop costs no mail"
    stopped = [e for e in show(app)["events"] if e["kind"] == "rules.stopped"]
    assert len(stopped) == 1
    assert stopped[0]["data"]["depth"] == MAX_DEPTH and "loop" in stopped[0]["data"]["reason"]
    assert kinds(app).count("ticket.updated") == MAX_DEPTH
    assert [r.getMessage()[:21] for r in caplog.records if r.name == "maildesk.rules"] == \
        ["rules stopped on MD-1", "rules stopped on MD-2"], "the operator hears of it too"


def test_chained_rules_tell_people_once_per_mail(desk: Callable[..., App]) -> None:
    app = desk("""\
        - name: start
          on: ticket.created
          then: [{tags: {add: [ping]}}]
        - name: flip
          on: ticket.updated
          then:
            - tags: {add: [pong]}
            - notify: {template: ticket_notice, to: max@desk.test}
        """)
    ingest(app, [(mail(), PIPE)])
    assert [to for to, _m in sent(app, "ticket_notice")] == [["max@desk.test"]]


def test_a_rule_can_leave_out_its_own_changes(desk: Callable[..., App]) -> None:
    app = desk("""\
        - name: start
          on: ticket.created
          then: [{tags: {add: [ping]}}]
        - name: echo
          on: ticket.updated
          if: {not: {actor: "rule:echo"}}
          then: [{tags: {add: [echo]}}]
        """)
    ingest(app, [(mail(), PIPE)])
    t = show(app)
    assert t["tags"] == ["ping", "echo"]
    assert "rules.stopped" not in kinds(app)


def _recipients(app: App, template: str) -> list[str]:
    return [a for to, _m in sent(app, template) for a in to]


def test_an_unassigned_breach_reaches_whom_its_new_ticket_notice_reached(
        desk: Callable[..., App]) -> None:
    """Assignee, else the queue's group and the agents who list the queue: one answer for
    the new ticket's notice and for the escalation of its breach."""
    app = desk(sla={"enabled": True, "calendars": [{"name": "always", "always_open": True}],
                    "policies": [{"name": "std", "calendar": "always", "first_response": "1h",
                                  "escalation": [{"after": "0m", "notify": "assignee",
                                                  "template": "sla_escalation"}]}]})
    ingest(app, [(mail(to="support@localhost"), Envelope("pipe", None, queue="it"))], now=MON)
    told = _recipients(app, "agent_notification")
    assert sorted(told) == ["bob@desk.test", "kim@desk.test", "lea@desk.test"]
    assert scan(app, MON + timedelta(hours=2)).escalations == 1
    assert sorted(_recipients(app, "sla_escalation")) == sorted(told)


def test_an_agent_answers_an_escalation_and_a_rules_mail_with_commands(
        desk: Callable[..., App]) -> None:
    """Every mail to an agent has their reply address in Reply-To: an answer to it is the
    agent's, with commands, not a stranger's mail."""
    app = desk("""\
        - name: tell bob
          on: ticket.created
          then: [{notify: {template: ticket_notice, to: bob@desk.test}}]
        """, sla={"enabled": True, "calendars": [{"name": "always", "always_open": True}],
                  "policies": [{"name": "std", "calendar": "always", "first_response": "1h",
                                "escalation": [{"after": "0m", "notify": "bob@desk.test",
                                                "template": "sla_escalation"}]}]})
    ingest(app, [(mail(), PIPE)], now=MON)
    [(to, notice)] = sent(app, "ticket_notice")
    assert to == ["bob@desk.test"]
    assert "SENDER NOT VERIFIED" in notice.get_payload(decode=True).decode(), \
        "an agent hears that nothing proves who wrote the mail a rule's notice quotes"
    agent_answers(app, str(notice["Reply-To"]), "#priority P2\n#tag +seen", 1,
                  at=MON + timedelta(minutes=5))
    t = show(app)
    assert (t["priority"], t["tags"]) == ("P2", ["seen"])
    assert "commands.applied" in kinds(app) and "sender.unverified" not in kinds(app)

    scan(app, MON + timedelta(hours=2))
    [(to, escalation)] = sent(app, "sla_escalation")
    assert to == ["bob@desk.test"] and "+md-" in str(escalation["Reply-To"])
    agent_answers(app, str(escalation["Reply-To"]), "#assign me\nOn it, new toner coming.", 2,
                  at=MON + timedelta(hours=2, minutes=5))
    t = show(app)
    assert t["assignee"] == "bob"
    replied = [e for e in t["events"] if e["kind"] == "agent.replied"]
    assert replied and replied[-1]["actor"] == "agent:bob"
    assert [to for to, _m in sent(app, "agent.reply")] == [["ana@customer.test"]]


def test_a_survey_answer_is_undone_when_its_mail_fails_later(
        desk: Callable[..., App]) -> None:
    app = desk(surveys={"enabled": True, "delay": "0m"})
    ingest(app, [(mail(), PIPE)])
    with app.engine.begin() as c:
        tid = c.scalar(select(Ticket.id).where(Ticket.ref == "MD-1"))
        c.execute(Survey.__table__.insert().values(ticket_id=tid, requester="ana@customer.test",
                                                   sent_at=MON))
    rate = rate_address(app.secrets[0], "support@localhost", "MD-1", "ana@customer.test", "5")

    def survey_then_crash(ctx: Any, w: Work) -> None:
        try:
            survey_stage(ctx, w)
        except Classified:
            raise RuntimeError("the disk filled up after the rating was taken") from None
    app.stages = tuple((n, survey_then_crash if n == "survey" else f) for n, f in STAGES)
    assert ingest(app, [(mail(to=rate, message_id="<r1@c.test>"), PIPE)]).quarantined == 1
    with app.sessions() as s:
        assert s.scalar(select(Survey.answered_at)) is None, "the answer went with its mail"
        assert s.scalar(select(Event.id).where(Event.kind == "survey.answered")) is None
        assert s.scalar(select(Inbound.state).order_by(Inbound.id.desc())) == "quarantined"
    app.stages = ()
    assert ingest(app, [(mail(to=rate, message_id="<r2@c.test>"), PIPE)]).classified == 1
    with app.sessions() as s:
        assert s.scalar(select(Survey.score)) == 5
    assert "survey.answered" in kinds(app)


def test_auto_close_fires_through_the_seam(desk: Callable[..., App]) -> None:
    app = desk(sla={"auto_close_after": "7d"})
    ingest(app, [(mail(), PIPE)], now=MON)
    agent_answers(app, reply_address(app, person="bob@desk.test"), "#status resolved", 1,
                  at=MON)
    assert auto_close(app, MON + timedelta(days=8)) == "1 closed"
    t = show(app)
    closed = [e for e in t["events"] if e["kind"] == "ticket.updated"
              and e["data"].get("new") == "closed"][0]
    assert closed["actor"] == "job:auto_close" and "7 days" in closed["data"]["reason"]
    assert [to for to, _m in sent(app, "ticket_closed")] == [["ana@customer.test"]]


def test_a_note_never_reaches_the_customer_through_a_rules_notice(
        desk: Callable[..., App]) -> None:
    """A rule on ticket.updated quotes the mail that caused the change: when that is an
    agent's note, a notice to the requester quotes nothing of it, nor names the agent."""
    app = desk("""\
        - name: tell the customer
          on: ticket.updated
          if: {changed: priority}
          then: [{notify: {template: ticket_notice, to: requester}}]
        """)
    ingest(app, [(mail(), PIPE)])
    agent_answers(app, reply_address(app, person="bob@desk.test", purpose="note"),
                  "#priority P1\nSECRET-NOTE: the admin password is on the laptop.", 1)
    [(to, told)] = sent(app, "ticket_notice")
    assert to == ["ana@customer.test"]
    text = told.as_string()
    assert "SECRET-NOTE" not in text and "bob@desk.test" not in text
    assert "<bob1@desk.test>" not in text, "nor the agent's Message-ID in References"
    assert show(app)["priority"] == "P1"


def test_an_agents_out_of_office_reaches_no_customer(desk: Callable[..., App]) -> None:
    app = desk()
    ingest(app, [(mail(), PIPE)])
    raw = (f"From: Bob <bob@desk.test>\nTo: {reply_address(app, person='bob@desk.test')}\n"
           "Subject: Out of Office: [MD-1] Printer jammed\nAuto-Submitted: auto-replied\n"
           "Message-ID: <ooo@desk.test>\n\n#status resolved\nI am on holiday until Monday.\n"
           ).encode()
    ingest(app, [(raw, PIPE)])
    t = show(app)
    assert t["status"] == "new", "its lines ran no command"
    assert sent(app, "agent.reply") == [], "nothing was relayed"
    assert t["messages"][-1]["visibility"] == "internal"
    assert "auto-reply.received" in kinds(app)


def test_an_escalation_to_a_plain_address_promises_no_reply(desk: Callable[..., App]) -> None:
    """Only agents can answer a ticket by mail: a manager's escalation says nothing of
    replying, and carries no reply address."""
    app = desk(sla={"enabled": True, "calendars": [{"name": "always", "always_open": True}],
                    "policies": [{"name": "std", "calendar": "always", "first_response": "1h",
                                  "escalation": [{"after": "0m", "notify": "boss@corp.test",
                                                  "template": "sla_escalation"}]}]})
    ingest(app, [(mail(), PIPE)], now=MON)
    scan(app, MON + timedelta(hours=2))
    [(to, told)] = sent(app, "sla_escalation")
    assert to == ["boss@corp.test"] and told["Reply-To"] is None
    assert "Reply to this mail" not in told.get_payload(decode=True).decode()
