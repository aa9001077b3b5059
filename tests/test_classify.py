"""Mail that must not make tickets or replies: auto-replies, lists, loops, spam, bounces, floods."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, free_port, mail, run_cli, wait_for
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Inbound, OutboxMail
from maildesk.tickets.listing import list_tickets
from maildesk.tickets.views import show_ticket

PIPE = Envelope("pipe", None)


def state_of(app: App) -> list[str]:
    with app.sessions() as s:
        return list(s.scalars(select(Inbound.state).order_by(Inbound.id)))


def acks(app: App) -> int:
    with app.sessions() as s:
        return len(s.scalars(select(OutboxMail.id).where(
            OutboxMail.template == "acknowledgement")).all())


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


VACATIONS = [
    ("outlook", {"Subject": "Automatic reply: Printer", "X-Auto-Response-Suppress": "All",
                 "Auto-Submitted": "auto-generated"}),
    ("outlook without auto-submitted", {"Subject": "Automatic reply: Printer",
                                        "X-Auto-Response-Suppress": "All"}),
    ("gmail", {"Subject": "Re: Printer", "Auto-Submitted": "auto-replied"}),
    ("german", {"Subject": "Abwesenheitsnotiz: Drucker"}),
    ("french", {"Subject": "Réponse automatique : Imprimante"}),
    ("x-autoreply", {"Subject": "Re: Printer", "X-Autoreply": "yes"}),
    ("precedence", {"Subject": "Re: Printer", "Precedence": "auto_reply"}),
]


@pytest.mark.parametrize("client, headers", VACATIONS, ids=[c for c, _ in VACATIONS])
def test_vacation_replies_open_no_ticket_and_note_on_their_ticket(
        make_app: Callable[..., App], db_url: str, client: str, headers: dict[str, str]) -> None:
    app = make_app(db_url)
    m = EmailMessage()
    m["From"], m["To"] = "Ana <ana@customer.test>", "support@localhost"
    for k, v in headers.items():
        m[k] = v
    m["Message-ID"] = "<vac@customer.test>"
    m.set_content("I am out of the office until Monday.")
    s = ingest(app, [(m.as_bytes(), PIPE)])
    assert (s.new_tickets, s.classified) == (0, 1) and state_of(app) == ["auto-reply"]
    # the same reply to our acknowledgement lands on the ticket as a note
    ingest(app, [(mail(message_id="<first@customer.test>"), PIPE)])
    ack_id = show(app, "MD-1")["messages"][1]["message_id"]
    del m["Message-ID"]
    m["Message-ID"] = "<vac2@customer.test>"
    m["In-Reply-To"] = ack_id
    s = ingest(app, [(m.as_bytes(), PIPE)])
    t = show(app, "MD-1")
    assert s.follow_ups == 1 and t["messages"][-1]["visibility"] == "internal"
    assert t["messages"][-1]["verdict"] == "auto-reply"
    assert t["status"] == "new" and acks(app) == 1


@pytest.mark.parametrize("policy_, tickets, acked", [("ticket_no_ack", 1, 0), ("ignore", 0, 0),
                                                     ("ticket", 1, 1)])
def test_list_mail_follows_the_bulk_policy(make_app: Callable[..., App], policy_: str,
                                           tickets: int, acked: int) -> None:
    app = make_app(desk={"bulk_mail": policy_})
    ingest(app, [(mail(subject="Weekly newsletter", List_Id="<news.vendor.test>",
                       List_Unsubscribe="<mailto:off@vendor.test>"), PIPE)])
    with app.sessions() as s:
        assert len(list_tickets(s.connection())) == tickets
    assert acks(app) == acked


def test_loops_spam_and_own_mail_make_no_ticket(make_app: Callable[..., App]) -> None:
    app = make_app()
    s = ingest(app, [
        (mail(subject="again", X_Loop="support@localhost"), PIPE),
        (mail(subject="pills", X_Spam_Flag="YES"), PIPE),
        (mail(subject="echo", sender="support+md-1-xyz@localhost"), PIPE),
    ])
    assert (s.new_tickets, s.classified, s.dropped) == (0, 2, 1)
    assert state_of(app) == ["loop", "spam", "loop"]


def series(sender: str, n: int, step: int) -> list[tuple[bytes, Envelope]]:
    """n mails from sender, each dated step seconds after the one before."""
    start = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
    mails = []
    for i in range(n):
        m = EmailMessage()
        m["From"], m["To"] = sender, "support@localhost"
        m["Subject"], m["Message-ID"] = f"case {i}", f"<s{i}.{sender}>"
        m["Date"] = format_datetime(start + timedelta(seconds=step * i))
        m.set_content("disk full")
        mails.append((m.as_bytes(), PIPE))
    return mails


def test_flood_and_acknowledgement_limits(make_app: Callable[..., App]) -> None:
    app = make_app(desk={"ack_window": 3600, "flood_limit": 20, "flood_window": 600})
    s = ingest(app, series("robot@customer.test", 25, 10))
    assert (s.new_tickets, s.classified) == (20, 5), s.as_dict()
    assert acks(app) == 10, "every new ticket, up to desk.ack_limit per ack_window"
    with app.sessions() as s:
        told = s.scalars(select(OutboxMail.id).where(
            OutboxMail.template == "acknowledgement_limit")).all()
    assert len(told) == 1, "past the limit: told once, then quiet"
    assert state_of(app)[-5:] == ["loop"] * 5


def _desk(tmp_path: Path, name: str, port: int, relay: int) -> Path:
    import yaml
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / name), "smtp": {"port": port},
        "desk": {"name": name, "addresses": [f"{name}@localhost"]},
        "outbox": {"transport": "smtp", "retry_base": 1,
                   "relay": {"host": "127.0.0.1", "port": relay, "starttls": False}}}))
    return cfg


def test_two_desks_answering_each_other_stop_at_once(tmp_path: Path) -> None:
    """Desk A's customer is desk B and the other way round; one mail starts it."""
    from test_smtp import send
    pa, pb = free_port(), free_port()
    a = Daemon(_desk(tmp_path, "deska", pa, pb), pa, tmp_path / "a.log").start()
    b = Daemon(_desk(tmp_path, "deskb", pb, pa), pb, tmp_path / "b.log").start()
    try:
        send(pa, mail(sender="deskb@localhost", to="deska@localhost",
                      subject="Hello from desk B"), rcpts=["deska@localhost"],
             sender="deskb@localhost")

        def outboxes() -> list[list[dict[str, Any]]]:
            return [json.loads(run_cli("outbox", "list", "--format", "json",
                                       config=d.config).stdout) for d in (a, b)]
        wait_for(lambda: all(all(o["status"] != "queued" for o in box) for box in outboxes()),
                 60, "both outboxes idle")
        import time
        time.sleep(6)       # a few more rounds of polling: nothing new may appear
        box_a, box_b = outboxes()
        assert len(box_a) + len(box_b) <= 2, (box_a, box_b)
    finally:
        a.stop()
        b.stop()


# --- machines' mail that was once taken for people's (issue 14) -------------------------

def _one(app: App, headers: dict[str, str], body: str = "text\n",
         sender: str = "Ana <ana@customer.test>", ctype: str | None = None) -> str:
    m = EmailMessage()
    m["From"], m["To"] = sender, "support@localhost"
    for k, v in headers.items():
        m[k] = v
    if "Message-ID" not in m:
        m["Message-ID"] = f"<{abs(hash((sender, *headers.items())))}@customer.test>"
    m.set_content(body)
    raw = m.as_bytes()
    if ctype:
        raw = raw.replace(b"Content-Type: text/plain", f"Content-Type: {ctype}".encode(), 1)
    ingest(app, [(raw, PIPE)])
    return state_of(app)[-1]


MORE_VACATIONS = ["Odpowiedź automatyczna: Drukarka", "Automatyczna odpowiedź: Drukarka",
                  "Automatická odpověď: Tiskárna", "Resposta automática: Impressora",
                  "Automatikus válasz: Nyomtató", "Автоматический ответ: Принтер",
                  "自动回复: 打印机", "Fuori ufficio", "Poza biurem do 12.12",
                  "[Ticket #123] AutoReply: Printer", "Re: [Case 77] Automatic reply: x",
                  "AW: Abwesenheitsnotiz: Drucker"]


@pytest.mark.parametrize("subject", MORE_VACATIONS)
def test_vacation_subjects_in_more_languages_and_after_a_tag(
        make_app: Callable[..., App], subject: str) -> None:
    app = make_app()
    assert _one(app, {"Subject": subject}) == "auto-reply"
    assert acks(app) == 0


def test_a_spam_complaint_report_is_neither_a_person_nor_a_bounce(
        make_app: Callable[..., App]) -> None:
    app = make_app()
    state = _one(app, {"Subject": "FW: complaint about message from 192.0.2.1"},
                 ctype='multipart/report; report-type=feedback-report; boundary="x"',
                 sender="abuse@isp.example")
    assert state == "complaint" and acks(app) == 0


def test_arf_from_the_corpus_is_a_complaint(make_app: Callable[..., App]) -> None:
    arf = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "mimekit" \
        / "UnitTests" / "TestData" / "messages" / "feedback-report.txt"
    if not arf.exists():
        pytest.skip("../shared/corpus not found")
    app = make_app()
    ingest(app, [(arf.read_bytes(), PIPE)])
    assert state_of(app) == ["complaint"]


@pytest.mark.parametrize("headers", [
    {"Subject": "Please confirm you are human before your mail is delivered"},
    {"Subject": "Your message requires verification verify#12345"},
    {"Subject": "Re: Printer", "X-Boxtrapper": "yes"},
])
def test_challenge_response_requests_are_not_answered(make_app: Callable[..., App],
                                                     headers: dict[str, str]) -> None:
    app = make_app()
    assert _one(app, headers) == "auto-reply" and acks(app) == 0


def test_a_person_writing_from_postmaster_is_a_person(make_app: Callable[..., App]) -> None:
    app = make_app()
    assert _one(app, {"Subject": "Our mail server is rejecting your invoices"},
                sender="Jo <postmaster@customer.test>") == "ticketed"
    assert acks(app) == 1


@pytest.mark.parametrize("sender", ["gmail-noreply@google.example", "noreply-123@x.example",
                                    "do_not_reply@x.example", "DoNotReply@x.example",
                                    "no.reply@x.example"])
def test_addresses_nobody_reads_get_a_ticket_but_no_acknowledgement(
        make_app: Callable[..., App], sender: str) -> None:
    app = make_app()
    assert _one(app, {"Subject": "Your order"}, sender=sender) == "ticketed"
    assert acks(app) == 0


@pytest.mark.parametrize("headers", [
    {"X-Spam": "Yes"}, {"X-Spam-Status": "Yes, score=12.1 required=5.0"},
    {"X-Spamd-Result": "default: True [16.20 / 15.00]"}, {"X-Spam-Flag": "YES"}])
def test_spam_verdicts_of_rspamd_and_spamassassin(make_app: Callable[..., App],
                                                 headers: dict[str, str]) -> None:
    app = make_app()
    assert _one(app, {"Subject": "cheap", **headers}) == "spam"


def test_only_the_topmost_spam_header_counts_and_headers_can_be_chosen(
        make_app: Callable[..., App]) -> None:
    """Our filter's header is added above the sender's: a sender's own "X-Spam: No" below
    it changes nothing, and a desk that runs no filter trusts none."""
    app = make_app()
    m = mail(subject="hello", message_id="<top@customer.test>")
    ingest(app, [(b"X-Spam: Yes\n" + m.replace(b"Subject:", b"X-Spam: No\nSubject:"), PIPE)])
    assert state_of(app) == ["spam"]
    quiet = make_app(desk={"spam_headers": {}})
    assert _one(quiet, {"Subject": "hi", "X-Spam": "Yes"}) == "ticketed"


def test_monitoring_alerts_open_tickets_and_are_never_acknowledged(
        make_app: Callable[..., App]) -> None:
    app = make_app(desk={"addresses": ["support@localhost", "alerts@localhost"],
                         "alerts": {"senders": ["*@monitor.example"],
                                    "addresses": ["alerts@localhost"]}})
    alert = {"Subject": "PROBLEM: disk full on db1", "Auto-Submitted": "auto-generated",
             "Precedence": "bulk"}
    assert _one(app, alert, sender="nagios@monitor.example") == "ticketed"
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "zabbix@other.example", "alerts@localhost", "CPU high"
    m["Auto-Submitted"] = "auto-generated"
    m.set_content("load 40")
    ingest(app, [(m.as_bytes(), PIPE)])
    assert state_of(app)[-1] == "ticketed"
    assert _one(app, {"Subject": "Out of office", "Auto-Submitted": "auto-replied"},
                sender="someone@else.example") == "auto-reply"
    assert acks(app) == 0
    with app.sessions() as s:
        assert len(list_tickets(s.connection())) == 2


@pytest.mark.parametrize("subject", [
    "Out of office not working", "Automatic reply settings greyed out",
    "Abwesenheitsnotiz einrichten geht nicht", "Auto reply for leaver mailbox",
    "Vacation request for December", "Fwd: Out of Office Re: Printer",
    "My colleague is out of the office, can you reset her password"])
def test_requests_about_vacation_replies_are_peoples_mail(make_app: Callable[..., App],
                                                        subject: str) -> None:
    """An IT desk's everyday tickets: the words alone are no evidence of a machine."""
    app = make_app()
    assert _one(app, {"Subject": subject}) == "ticketed" and acks(app) == 1


def test_a_bounce_from_postmaster_is_a_bounce(make_app: Callable[..., App]) -> None:
    app = make_app()
    assert _one(app, {"Subject": "Mail System Error - Returned Mail"},
                sender="Postmaster <postmaster@isp.example>") == "bounce"
    assert _one(app, {"Subject": "Undeliverable: Printer"},
                sender="postmaster@corp.example") == "bounce"
    assert acks(app) == 0


def test_the_flood_guard_counts_mail_dated_backwards(make_app: Callable[..., App]) -> None:
    """Each mail dated 20 s before the last: a window behind each date alone saw none."""
    app = make_app(desk={"flood_limit": 5, "flood_window": 600})
    s = ingest(app, series("rev@customer.test", 8, -20))
    assert (s.new_tickets, s.classified) == (5, 3), s.as_dict()


def test_an_agent_working_a_queue_is_no_flood_but_a_loop_on_one_ticket_is(
        make_app: Callable[..., App]) -> None:
    """The flood guard silently ignored an agent's verified commands after 20 mails in ten
    minutes. An agent's mail to a ticket's reply address counts only that ticket's: ten
    tickets worked three times each are carried out; a fourth mail on one ticket is a
    loop, kept on it and carried out not."""
    from maildesk.tickets.refs import token_address
    app = make_app(desk={"flood_limit": 3, "flood_window": 600,
                         "agents": [{"name": "bob", "address": "bob@desk.test"}]})
    for i in range(10):
        ingest(app, [(mail(subject=f"t{i}", sender=f"c{i}@customer.test"), PIPE)])
    start = datetime.now(timezone.utc)

    def by_bob(ref: str, n: int) -> None:
        m = EmailMessage()
        m["From"], m["Subject"] = "bob@desk.test", f"Re: [{ref}] x"
        m["To"] = token_address(app.secrets[0], "support@localhost", ref, "bob@desk.test")
        m["Date"] = format_datetime(start + timedelta(seconds=n))
        m["Message-ID"] = f"<bob.{ref}.{n}@desk.test>"
        m.set_content(f"#tag +n{n}\n")
        ingest(app, [(m.as_bytes(), PIPE)])
    for n in range(30):
        by_bob(f"MD-{n % 10 + 1}", n)
    assert [show(app, f"MD-{i}")["tags"] for i in (1, 10)] == [["n0", "n10", "n20"],
                                                               ["n9", "n19", "n29"]]
    by_bob("MD-1", 31)
    assert "n31" not in show(app, "MD-1")["tags"]
    events = show(app, "MD-1")["events"]
    assert [e["data"]["reason"] for e in events if e["kind"] == "loop.received"] == \
        ["more than 3 mails from bob@desk.test on MD-1 in 600 s"]
    assert events[-1]["kind"] == "commands.ignored"
