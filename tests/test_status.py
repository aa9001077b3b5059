"""Status by mail (issue 19): a customer's mail to support+status@... or with the subject
"status" gets one mail listing their own tickets, to their From address alone, and opens
no ticket; machines get nothing, and a sender gets status.limit answers per window. Agents'
notifications name the requester's other open tickets."""
from __future__ import annotations

import email
import re
from collections.abc import Callable
from datetime import timedelta
from email import policy

import pytest
from conftest import dns_stub, mail, signed
from sqlalchemy import select
from test_agents import agent_mail
from test_customer_mail import sent, text_of
from test_surveys import MON, resolved_ticket

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Inbound, OutboxMail, Ticket
from maildesk.tickets.refs import token_address

PIPE = Envelope("pipe", None)
ASKED = MON + timedelta(days=1)
DESK = {"agents": [{"name": "bob", "address": "bob@desk.test", "queues": ["general"]}]}


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def ask(app: App, to: str = "support+status@localhost", subject: str = "what is open?",
        sender: str = "Ana Lima <ana@customer.test>", n: int = 0,
        at: timedelta = timedelta(0), **headers: str) -> str:
    """A status request through the pipeline; what became of it (state: reason)."""
    raw = mail(subject=subject, sender=sender, to=to, message_id=f"<ask{n}@customer.test>",
               body="Where are my tickets?\n", **headers)
    ingest(app, [(raw, Envelope("smtp", "ana@customer.test", (to,)))], now=ASKED + at)
    with app.sessions() as s:
        last = s.scalars(select(Inbound).order_by(Inbound.id.desc())).first()
        assert last is not None
        return f"{last.state}: {last.reason}"


def refs(app: App) -> list[str]:
    with app.sessions() as s:
        return list(s.scalars(select(Ticket.ref).order_by(Ticket.id)))


def test_the_status_address_lists_the_senders_tickets_and_nobody_elses(app: App) -> None:
    old = resolved_ticket(app, 1, when=MON - timedelta(days=40))         # MD-1: long ago
    done = resolved_ticket(app, 2)                                       # MD-2: resolved
    ingest(app, [(mail(subject="VPN drops", message_id="<o3@customer.test>"), PIPE)], now=MON)
    ingest(app, [(mail(subject="eve's secret", sender="eve@customer.test",
                       message_id="<e4@customer.test>"), PIPE)], now=MON)
    before = refs(app)
    assert ask(app) == "status: answered ana@customer.test's status request"
    assert refs(app) == before, "a status request opens no ticket"
    [answer] = sent(app, "status")
    assert [a.addr_spec for a in answer["To"].addresses] == ["ana@customer.test"]
    assert answer["From"].addresses[0].addr_spec == "support@localhost"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["In-Reply-To"] == "<ask0@customer.test>" and answer["Reply-To"] is None
    assert answer["Subject"] == "Your requests at Service Desk: 1 open"
    text = text_of(answer)
    opened, recent = text.split("Resolved or closed in the last 30 days (1):")
    assert "MD-3  VPN drops" in opened and "new, last update 2026-11-16 10:00 UTC" in opened
    assert f"{done}  case 2" in recent and "resolved, last update" in recent
    assert old not in text and "eve" not in text and "MD-4" not in text
    for ref in ("MD-2", "MD-3"):        # each with the requester's own reply address
        address = token_address(app.secrets[0], "support@localhost", ref,
                                "ana@customer.test", "reply", ASKED.date())
        assert f"reply: {address}" in text
    # the listed reply address works: the customer's mail lands on the ticket
    reply = token_address(app.secrets[0], "support@localhost", "MD-3", "ana@customer.test",
                          "reply", ASKED.date())
    ingest(app, [(mail(subject="more", to=reply, message_id="<more@customer.test>"), PIPE)],
           now=ASKED + timedelta(minutes=1))
    assert refs(app) == before


def test_the_subject_status_asks_too_and_a_reply_on_a_ticket_does_not(
        app: App, dkim_key: tuple[bytes, bytes]) -> None:
    ingest(app, [(mail(subject="printer", message_id="<p1@customer.test>"), PIPE)], now=MON)
    assert ask(app, to="support@localhost", subject=" Status! ").startswith("status: answered")
    assert len(sent(app, "status")) == 1 and refs(app) == ["MD-1"]
    # "Re: status" with the ticket's tag is a reply on MD-1
    assert ask(app, to="support@localhost", subject="Re: [MD-1] status", n=1) \
        .startswith("ticketed")
    # a bare "status" that answers our acknowledgement is about that ticket
    with app.sessions() as s:
        ack = s.scalars(select(OutboxMail.message_id).where(
            OutboxMail.template == "acknowledgement")).first()
    assert ask(app, to="support@localhost", subject="status", n=2, In_Reply_To=str(ack)) \
        .startswith("ticketed")
    assert refs(app) == ["MD-1"] and len(sent(app, "status")) == 1
    # a proven agent's ticket for a caller may be called "status"
    private, record = dkim_key
    app.dns = dns_stub(record)
    ingest(app, [(signed(agent_mail("bob", "support@localhost",
                                    "#requester caller@customer.test\nWhat is it?\n",
                                    subject="Status"), private), PIPE)], now=ASKED)
    assert refs(app) == ["MD-1", "MD-2"] and len(sent(app, "status")) == 1


def test_the_answer_goes_to_the_from_address_alone(app: App) -> None:
    """Reply-To and Cc are whoever the writer names; the list of Ana's tickets goes to Ana
    however the mail is written, in whatever case."""
    ingest(app, [(mail(subject="printer", message_id="<p1@customer.test>"), PIPE)], now=MON)
    assert ask(app, to="Support+STATUS@LocalHost",
               sender='"URGENT call +1 555 0100 now" <ANA@Customer.Test>',
               Reply_To="mallory@evil.test", Cc="eve@customer.test") \
        .startswith("status: answered")
    [answer] = sent(app, "status")
    assert [a.addr_spec for a in answer["To"].addresses] == ["ana@customer.test"]
    assert "URGENT" not in answer.as_string(), "a forger's name is not the desk's to say"
    assert answer["Cc"] is None and "MD-1  printer" in text_of(answer)
    with app.sessions() as s:
        assert s.scalars(select(OutboxMail.to)).all()[-1] == ["ana@customer.test"]


def test_a_sender_gets_status_limit_answers_per_window_then_silence(app: App) -> None:
    said = [ask(app, n=i, at=timedelta(minutes=i)) for i in range(5)]
    assert [s.split(":")[0] for s in said] == ["status"] * 5
    assert len(sent(app, "status")) == 3
    assert said[3] == ("status: not answered: ana@customer.test had 3 status answers within "
                       "status.window (1h), status.limit is 3")
    assert ask(app, n=9, sender="eve@customer.test").startswith("status: answered"), \
        "the cap is per sender"
    assert ask(app, n=10, at=timedelta(hours=1, minutes=1)).startswith("status: answered")
    assert refs(app) == []


def test_a_machine_gets_no_answer_and_asks_for_no_ticket(app: App) -> None:
    """An auto-reply to our answer (sent to +status, its Reply-To-less From) must not ask
    again: no answer, no ticket, no loop."""
    said = ask(app, subject="Automatic reply: Your requests", Auto_Submitted="auto-replied")
    assert said.startswith("auto-reply:") and "not a status request" in said
    assert ask(app, to="support@localhost", subject="status", n=1,
               Precedence="bulk", List_Id="<news.customer.test>").split(":")[0] != "status"
    assert sent(app, "status") == []


def test_a_requester_with_no_tickets_is_told_so(app: App) -> None:
    ingest(app, [(mail(subject="eve's", sender="eve@customer.test"), PIPE)], now=MON)
    assert ask(app).startswith("status: answered")
    [answer] = sent(app, "status")
    text = text_of(answer)
    assert "you have no tickets with us" in text and "MD-1" not in text
    assert answer["Subject"] == "Your requests at Service Desk: 0 open"


def test_turned_off_the_status_address_is_a_support_address(make_app: Callable[..., App]
                                                            ) -> None:
    app = make_app(desk=DESK, status={"enabled": False})
    assert ask(app).startswith("ticketed") and refs(app) == ["MD-1"]


def test_agents_hear_of_the_requesters_other_open_tickets(app: App) -> None:
    def notified(ref: str) -> str:
        with app.sessions() as s:
            digest = s.scalars(select(OutboxMail.digest).join(Ticket).where(
                Ticket.ref == ref, OutboxMail.template == "agent_notification")).first()
        assert digest is not None
        return text_of(email.message_from_bytes(app.blobs.get(digest),
                                                policy=policy.default))  # type: ignore[arg-type]

    ingest(app, [(mail(subject="eve's", sender="eve@customer.test"), PIPE)], now=MON)
    for i in range(2):
        ingest(app, [(mail(subject=f"case {i}", message_id=f"<c{i}@customer.test>"), PIPE)],
               now=MON + timedelta(minutes=i))
    assert "other open" not in notified("MD-2"), "Ana's first; Eve's ticket is not hers"
    third = notified("MD-3")
    assert "The requester has 1 other open ticket:" in third
    assert re.search(r"MD-2  new +case 0", third) and "MD-1" not in third
    for i in range(2, 8):
        ingest(app, [(mail(subject=f"case {i}", message_id=f"<c{i}@customer.test>"), PIPE)],
               now=MON + timedelta(minutes=i))
    ninth = notified("MD-9")
    assert "The requester has 7 other open tickets:" in ninth and "and 2 more" in ninth
    assert "MD-8" in ninth and "MD-3" not in ninth, "the last changed five"
