"""What customers get from the desk: a receipt for every new ticket (with a limit per
sender that says so once), what they wrote and when to expect an answer, threaded
surveys and a thank-you for a rating, agents' replies with the desk's footer; and who
becomes a CC participant of a new ticket."""
from __future__ import annotations

import base64
import email
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from conftest import mail
from sqlalchemy import select
from test_surveys import MON, click, links, resolved_ticket, survey_mail

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Event, Message, OutboxMail, Ticket
from maildesk.surveys.send import send_surveys
from maildesk.tickets.refs import token_address

PIPE = Envelope("pipe", None)
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)    # a Monday, in working hours
AGENTS = {"agents": [{"name": "bob", "address": "bob@desk.test"}]}


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk={"ack_window": 3600, "ack_limit": 3, **AGENTS})


def sent(app: App, template: str | None = None) -> list[EmailMessage]:
    with app.sessions() as s:
        q = select(OutboxMail.digest).order_by(OutboxMail.id)
        if template:
            q = q.where(OutboxMail.template == template)
        digests = s.scalars(q).all()
    return [email.message_from_bytes(app.blobs.get(d), policy=policy.default)  # type: ignore[misc]
            for d in digests]


def text_of(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    assert body is not None
    return body.get_content()  # type: ignore[no-any-return]


def templates(app: App) -> list[str]:
    with app.sessions() as s:
        return list(s.scalars(select(OutboxMail.template).order_by(OutboxMail.id)))


def test_every_new_ticket_is_acknowledged_up_to_the_limit_then_told_once(app: App) -> None:
    """Two tickets in a minute both get a receipt (a one-per-day window sent one); past
    desk.ack_limit in ack_window, one notice says so and then the desk is quiet."""
    for i in range(6):
        ingest(app, [(mail(subject=f"problem {i}", message_id=f"<p{i}@customer.test>"),
                      PIPE)], now=NOW + timedelta(seconds=10 * i))
    assert templates(app) == ["acknowledgement"] * 3 + ["acknowledgement_limit"]
    limit = sent(app, "acknowledgement_limit")[0]
    assert "[MD-4]" in limit["Subject"] and "more tickets in a short time" in text_of(limit)
    with app.sessions() as s:
        reasons = s.scalars(select(Event.data).where(
            Event.kind == "acknowledgement.suppressed")).all()
    assert len(reasons) == 2 and all("past desk.ack_limit (3)" in r["reason"] for r in reasons)
    # an hour later the sender is acknowledged again
    ingest(app, [(dated(mail(subject="later", message_id="<late@customer.test>"),
                        NOW + timedelta(hours=1, minutes=5)), PIPE)],
           now=NOW + timedelta(hours=1, minutes=5))
    assert templates(app)[-1] == "acknowledgement"


def dated(raw: bytes, when: datetime) -> bytes:
    return raw.replace(b"Date: Mon, 02 Nov 2026 09:30:00 +0000",
                       f"Date: {format_datetime(when)}".encode())


def test_the_limit_counts_by_the_desks_clock_whatever_the_mails_say(app: App) -> None:
    """Dates are the sender's to write: mails dated backwards, or spread over years, are
    still the sender's mails of this hour (else a forged From is mailed without end)."""
    for i in range(6):
        when = NOW - timedelta(days=400 * (i % 2), seconds=60 * i)
        ingest(app, [(dated(mail(subject=f"case {i}", message_id=f"<w{i}@customer.test>"),
                            when), PIPE)], now=NOW + timedelta(seconds=i))
    assert templates(app) == ["acknowledgement"] * 3 + ["acknowledgement_limit"]


def test_the_acknowledgement_quotes_the_mail_and_says_when_to_expect_an_answer(
        app: App) -> None:
    body = "The printer on floor 2 blinks red.\n\nIt says E-04.\n"
    ingest(app, [(mail(subject="A printer on floor 2 that keeps jamming every morning",
                       body=body, sender="ana@customer.test"), PIPE)], now=NOW)
    ack = sent(app, "acknowledgement")[0]
    text = text_of(ack)
    assert text.startswith("Hello,\n"), "no 'Hello there': a name, or none"
    assert "    MD-1: A printer" in text, "the reference on a line of its own, never split"
    assert "> The printer on floor 2 blinks red.\n> \n> It says E-04." in text
    # the default SLA policy (4 working hours for P3, business calendar, UTC)
    assert "We aim to answer within 4 working hours, by Monday 02 November, 13:30 (UTC)." \
        in text
    assert text.rstrip().endswith("-- \nService Desk"), "signed with the desk's name"
    assert ack["From"].addresses[0].display_name == "Service Desk"
    html = ack.get_body(("html",))
    assert html is not None
    page = html.get_content()
    assert '<meta name="viewport"' in page
    assert '<strong style="white-space: nowrap">MD-1</strong>' in page


def test_a_name_is_greeted_and_no_sla_means_no_promise(make_app: Callable[..., App]) -> None:
    app = make_app(sla={"policies": []})
    ingest(app, [(mail(), PIPE)], now=NOW)
    text = text_of(sent(app, "acknowledgement")[0])
    assert text.startswith("Hello Ana Lima,\n")
    assert "We aim" not in text and "A member of our team will get back to you." in text


def test_surveys_are_threaded_and_a_rating_by_mail_is_thanked(
        make_app: Callable[..., App]) -> None:
    app = make_app(desk=AGENTS)
    ref = resolved_ticket(app)
    assert send_surveys(app, MON + timedelta(hours=3)) == "1 sent"
    survey = survey_mail(app, ref)
    earlier = [m["Message-ID"] for m in sent(app)[:-1]
               if m["To"].addresses[0].addr_spec == "ana@customer.test"]
    assert earlier and survey["In-Reply-To"] == earlier[-1], \
        "the survey answers the last mail the customer had of the ticket"
    assert click(app, links(survey)["Satisfied"], body="quick and kind").startswith("rating")
    thanks = sent(app, "survey_thanks")
    assert len(thanks) == 1 and thanks[0]["To"].addresses[0].addr_spec == "ana@customer.test"
    assert "Thank you for rating" in text_of(thanks[0])
    assert thanks[0]["Auto-Submitted"] == "auto-replied"


def test_a_relayed_reply_carries_the_desks_footer_and_none_of_the_agents_ids(
        make_app: Callable[..., App]) -> None:
    app = make_app(desk=AGENTS)
    ingest(app, [(mail(message_id="<first@customer.test>"), PIPE)], now=NOW)
    to = token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test")
    raw = (f"From: Bob <bob@desk.test>\nTo: {to}\nSubject: Re: [MD-1] printer\n"
           "Message-ID: <AM0PR01MB1234.eurprd01.internal.example@desk.test>\n"
           "In-Reply-To: <notice@desk.test>\n\nPlease switch it off and on.\n").encode()
    ingest(app, [(raw, PIPE)], now=NOW + timedelta(minutes=5))
    reply = sent(app, "agent.reply")[0]
    text = text_of(reply)
    assert text.rstrip() == ("Please switch it off and on.\n\n-- \nService Desk | MD-1\n"
                             "Reply to this mail to add to your request.")
    ack = sent(app, "acknowledgement")[0]
    assert reply["In-Reply-To"] == ack["Message-ID"], "the last mail the customer had"
    assert reply["References"].split() == ["<first@customer.test>", ack["Message-ID"]]


@pytest.mark.parametrize("to, cc, envelope, expected", [
    ("support@localhost, carla@customer.test", "", (), ["carla@customer.test"]),
    # the desk was Bcc'd: the people in To/Cc were written to, not the desk
    ("carla@customer.test", "dan@customer.test", ("support@localhost",), []),
    # an address the desk does not list (a forgotten alias), the envelope names it
    ("support@example.com, carla@customer.test", "", ("support@example.com",),
     ["carla@customer.test"]),
    # an import of old mail with no envelope and an unknown desk address
    ("support@example.com", "", (), []),
], ids=["to-desk", "bcc", "envelope-alias", "unknown-address"])
def test_who_becomes_a_cc_participant_of_a_new_ticket(
        make_app: Callable[..., App], to: str, cc: str, envelope: tuple[str, ...],
        expected: list[str]) -> None:
    app = make_app()
    headers = {"Cc": cc} if cc else {}
    ingest(app, [(mail(to=to, **headers), Envelope("pipe", "ana@customer.test", envelope))],
           now=NOW)
    with app.sessions() as s:
        cc_of = s.scalars(select(Ticket.cc)).one()
    assert list(cc_of) == expected
    assert not any(re.search(r"support@", a) for a in cc_of)


def test_agents_get_the_customers_attachments_up_to_the_limit(
        make_app: Callable[..., App]) -> None:
    app = make_app(desk={"agents": [{"name": "bob", "address": "bob@desk.test",
                                     "queues": ["general"]}], "agent_attachments": "1k"})
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "ana@customer.test", "support@localhost", "screens"
    m["Message-ID"] = "<att@customer.test>"
    m.set_content("See the screenshots.\n")
    m.add_attachment(b"\x89PNG small", maintype="image", subtype="png", filename="small.png")
    m.add_attachment(b"x" * 5000, maintype="application", subtype="pdf", filename="big.pdf")
    ingest(app, [(m.as_bytes(), PIPE)], now=NOW)
    notice = sent(app, "agent_notification")[0]
    assert [(p.get_filename(), p.get_content()) for p in notice.iter_attachments()] == \
        [("small.png", b"\x89PNG small")]
    text = text_of(notice)
    assert "Requester: ana@customer.test\n" in text, "no display name: the address alone"
    assert "small.png (10 bytes)\n" in text
    assert "big.pdf (4.9 KiB): left out, over the desk's" in text
    ack = sent(app, "acknowledgement")[0]
    assert list(ack.iter_attachments()) == [], "customers get their files back from nobody"


def test_an_agent_asks_for_the_whole_thread_by_mail(make_app: Callable[..., App]) -> None:
    app = make_app(desk=AGENTS)
    ingest(app, [(mail(body="The printer blinks red.\n"), PIPE)], now=NOW)
    bob = token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test")
    note = token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test", "note")

    def agent(to: str, body: str, n: int, minutes: int) -> None:
        raw = (f"From: bob@desk.test\nTo: {to}\nSubject: Re: [MD-1] printer\n"
               f"Message-ID: <b{n}@desk.test>\n\n{body}").encode()
        ingest(app, [(raw, PIPE)], now=NOW + timedelta(minutes=minutes))

    agent(bob, "Please switch it off and on.\n", 1, 5)
    agent(note, "Toner supplier is slow this week.\n", 2, 6)
    before = templates(app)
    agent(bob, "#history\n", 3, 7)
    assert templates(app)[len(before):] == ["ticket_history"], "to the agent, nothing else"
    history = sent(app, "ticket_history")[0]
    assert history["To"].addresses[0].addr_spec == "bob@desk.test"
    assert history["Reply-To"].addresses[0].addr_spec.startswith("support+md-1-")
    text = text_of(history)
    assert "Requester: Ana Lima <ana@customer.test>\n" in text
    order = [text.index(s) for s in ("The printer blinks red.", "Thank you for writing.",
                                     "Please switch it off and on.",
                                     "Toner supplier is slow this week.")]
    assert order == sorted(order), "oldest first, the customer's receipt included"
    assert text.count("[INTERNAL: never sent to the customer]") == 1
    assert "New ticket MD-1" not in text, "the notices to agents are not the conversation"
    with app.sessions() as s:
        kinds = s.scalars(select(Event.kind).order_by(Event.id)).all()
    assert kinds[-2:] == ["history.requested", "notification.queued"]
    assert kinds.count("agent.replied") == 1, "asking is no answer: the SLA clock runs on"


def test_an_agent_asks_the_desk_what_waits_for_them(make_app: Callable[..., App],
                                                    dkim_key: tuple[bytes, bytes]) -> None:
    """`#mine`, `#unassigned QUEUE` and `#queue NAME` in a mail to the desk itself, whose
    sender DKIM proves: one answer, no ticket. Unproven, the same mail is a customer's."""
    from conftest import dns_stub, signed
    from test_agents import agent_mail
    private, record = dkim_key
    app = make_app(desk=AGENTS)
    app.dns = dns_stub(record)
    for i in range(3):
        ingest(app, [(mail(subject=f"case {i}", message_id=f"<c{i}@customer.test>"), PIPE)],
               now=NOW + timedelta(minutes=i))
    bob = token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test")
    ingest(app, [(agent_mail("bob", bob, "#assign me\n#priority P2\n"), PIPE)],
           now=NOW + timedelta(minutes=5))
    ask = "#mine\n#unassigned general\n#queue nope\n"
    ingest(app, [(signed(agent_mail("bob", "support@localhost", ask, subject="todo"), private),
                  PIPE)], now=NOW + timedelta(hours=3))
    view = sent(app, "agent_view")
    assert len(view) == 1 and view[0]["To"].addresses[0].addr_spec == "bob@desk.test"
    assert view[0]["Subject"] == "Assigned to you: 1; Unassigned in general: 2; Queue nope: 0"
    text = text_of(view[0])
    mine, unassigned = text.split("Unassigned in general (2)")
    assert "MD-1  P2  new        2h  case 0" in mine and "MD-2" not in mine
    assert unassigned.index("MD-3") < unassigned.index("MD-2"), "newest first within P3"
    assert "Queue nope: no queue 'nope' (queues: general)" in text
    assert re.search(r"reply: support\+md-2-\w+@localhost", text)
    with app.sessions() as s:
        assert s.scalars(select(Ticket.ref).order_by(Ticket.id)).all() == ["MD-1", "MD-2",
                                                                          "MD-3"]
    ingest(app, [(agent_mail("bob", "support@localhost", ask, subject="unsigned"), PIPE)],
           now=NOW + timedelta(hours=4))
    assert len(sent(app, "agent_view")) == 1, "a From alone proves nothing"
    # on a ticket's reply address too, beside commands for that ticket
    ingest(app, [(agent_mail("bob", bob, "#unassigned\n"), PIPE)], now=NOW + timedelta(hours=5))
    again = sent(app, "agent_view")
    assert len(again) == 2 and again[1]["Subject"] == "Unassigned: 3", "MD-2, 3 and 4 (unsigned)"


def test_an_agent_who_asked_gets_a_daily_digest_and_none_when_nothing_waits(
        make_app: Callable[..., App]) -> None:
    from maildesk.scheduler.jobs import jobs_for, run_job
    app = make_app(desk={"agents": [
        {"name": "bob", "address": "bob@desk.test", "queues": ["general"], "digest": True},
        {"name": "eve", "address": "eve@desk.test"}]})
    job = next(j for j in jobs_for(app) if j.name == "agent_digests")
    assert run_job(app, job, NOW) == "0 sent", "an empty desk: no mail"
    ingest(app, [(mail(), PIPE)], now=NOW)
    assert run_job(app, job, NOW + timedelta(hours=1)) is None, "once a day"
    assert run_job(app, job, NOW + timedelta(days=1)) == "1 sent"
    digest = sent(app, "agent_view")
    assert [m["To"].addresses[0].addr_spec for m in digest] == ["bob@desk.test"]
    assert digest[0]["Subject"] == "Assigned to you: 0; Unassigned: 1"
    assert digest[0]["In-Reply-To"] is None


def test_a_pipe_that_adds_an_mbox_from_line_is_read(make_app: Callable[..., App]) -> None:
    """Postfix's pipe with flags=F, procmail and single-message mbox files start with a
    `From sender date` line: no header, and no reason to quarantine the mail."""
    app = make_app()
    raw = b"From ana@customer.test Thu Nov 26 10:00:00 2026\n" + mail()
    s = ingest(app, [(raw, Envelope("pipe", "ana@customer.test", ("support@localhost",)))],
               now=NOW)
    assert s.new_tickets == 1, s.as_dict()


def test_an_agent_who_is_the_requester_gets_the_surveys_rate_address(
        make_app: Callable[..., App]) -> None:
    """Else their answer to the survey, as it asks, went to their agent's reply address and
    was relayed to themselves as a reply."""
    app = make_app(desk=AGENTS)
    ref = resolved_ticket(app, sender="bob@desk.test")
    assert send_surveys(app, MON + timedelta(hours=3)) == "1 sent"
    survey = survey_mail(app, ref)
    assert survey["Reply-To"].addresses[0].addr_spec.startswith("support+rate-md-1-")


def test_no_control_character_of_a_mail_reaches_what_we_store_or_send(app: App) -> None:
    """A C1 CSI (U+009B, a terminal's ESC [ in one character) in an encoded subject and a
    name, ESC sequences and form feeds in the body: the stored ticket and the
    acknowledgement that quotes the mail hold none of them (a trial found U+009B in the
    Subject we sent, and ESC in the quote)."""
    raw = ("From: =?utf-8?b?" + base64.b64encode("Ana\u009b2J Lima".encode()).decode()
           + "?= <ana@customer.test>\nTo: support@localhost\nSubject: =?utf-8?b?"
           + base64.b64encode("printer \u009b31mred\x1b[0m\u0085jammed".encode()).decode()
           + "?=\nMessage-ID: <c1@customer.test>\nMIME-Version: 1.0\n"
           "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
           "it says \x1b]0;owned\x07 \x1b[31mred\u009b2J\x0c and\tthen\r\nstops\n").encode()
    ingest(app, [(raw, PIPE)], now=NOW)
    controls = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    with app.sessions() as s:
        ticket = s.scalars(select(Ticket)).one()
        message = s.scalars(select(Message).where(Message.direction == "in")).one()
    assert ticket.subject == message.subject == "printer 31mred [0m jammed"
    assert message.from_name == "Ana 2J Lima"
    assert message.text == "it says ]0;owned [31mred2J and\tthen\nstops"
    ack = sent(app, "acknowledgement")[0]
    assert not controls.search(str(ack["Subject"])) and "printer 31mred" in ack["Subject"]
    assert not controls.search(text_of(ack).replace("\t", " "))
    assert "> it says ]0;owned [31mred2J and" in text_of(ack)
