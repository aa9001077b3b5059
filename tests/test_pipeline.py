"""The ingest pipeline against both databases: tickets, threading, dedupe, quarantine."""
from __future__ import annotations

from collections.abc import Callable
from email import message_from_bytes, policy
from typing import Any

import pytest
from conftest import mail, reply_address
from sqlalchemy import select, update

from maildesk.app import App
from maildesk.intake.inbound import Envelope, accept
from maildesk.pipeline.run import drain, ingest
from maildesk.store.models import Inbound, OutboxMail, Ticket
from maildesk.tickets.listing import list_tickets
from maildesk.tickets.refs import token_address
from maildesk.tickets.views import show_ticket

PIPE = Envelope(source="pipe", mail_from=None)


def one(app: App, raw: bytes, env: Envelope = PIPE) -> dict[str, int]:
    return ingest(app, [(raw, env)]).as_dict()


def ticket(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        data = show_ticket(s, ref)
    assert data is not None, f"no ticket {ref}"
    return data


def tickets(app: App) -> list[dict[str, Any]]:
    """Every ticket, MD-1 first (a listing is newest first; these tests count up)."""
    with app.sessions() as s:
        return list_tickets(s.connection())[::-1]


def outbox_mail(app: App, ref: str) -> list[bytes]:
    with app.sessions() as s:
        rows = s.execute(select(OutboxMail.digest).join(Ticket, Ticket.id == OutboxMail.ticket_id)
                         .where(Ticket.ref == ref).order_by(OutboxMail.id)).scalars().all()
    return [app.blobs.get(d) for d in rows]


def set_status(app: App, ref: str, status: str) -> None:
    with app.sessions.begin() as s:
        s.execute(update(Ticket).where(Ticket.ref == ref).values(status=status))


def test_new_mail_opens_a_ticket_with_an_acknowledgement(make_app: Callable[..., App],
                                                          db_url: str) -> None:
    app = make_app(db_url)
    raw = mail(message_id="<first@customer.test>", Cc="Bo <bo@customer.test>")
    assert one(app, raw)["new_tickets"] == 1
    t = ticket(app, "MD-1")
    assert (t["subject"], t["requester"], t["status"], t["queue"]) == \
        ("Printer on floor 2 is jammed", "ana@customer.test", "new", "general")
    assert t["cc"] == ["bo@customer.test"]
    assert [m["direction"] for m in t["messages"]] == ["in", "out"]
    assert t["messages"][0]["text"].strip() == "It blinks red."
    assert [e["kind"] for e in t["events"]] == ["ticket.created", "notification.queued"]
    ack = message_from_bytes(outbox_mail(app, "MD-1")[0], policy=policy.default)
    assert ack["Subject"] == "[MD-1] Printer on floor 2 is jammed"
    assert ack["In-Reply-To"] == "<first@customer.test>"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["To"].addresses[0].addr_spec == "ana@customer.test"
    assert ack["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-1", "ana@customer.test")
    assert ack["Message-ID"].endswith("@localhost>")
    assert ack.get_content_type() == "multipart/alternative"
    text = ack.get_body(("plain",)).get_content()
    assert "MD-1" in text and "Ana Lima" in text


def test_ticket_numbers_are_sequential_and_prefix_is_configurable(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk={"ref_prefix": "it"})
    s = ingest(app, [(mail(subject=f"Problem {i}"), PIPE) for i in range(5)])
    assert s.refs == ["IT-1", "IT-2", "IT-3", "IT-4", "IT-5"]
    s = ingest(app, [(mail(subject="One more"), PIPE)])
    assert s.refs == ["IT-6"]


def test_reply_threads_by_subject_tag_from_a_participant(make_app: Callable[..., App],
                                                          db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    r = one(app, mail(subject="Re: [MD-1] Printer on floor 2 is jammed", body="Still red.\n"))
    assert r["follow_ups"] == 1
    t = ticket(app, "MD-1")
    assert [m["direction"] for m in t["messages"]] == ["in", "out", "in"]
    assert t["events"][-1]["kind"] == "customer.replied"
    assert t["events"][-1]["data"]["thread_by"] == "tag"
    assert len(outbox_mail(app, "MD-1")) == 1, "follow-ups are not acknowledged again"


def test_stranger_with_a_tag_does_not_join_the_ticket(make_app: Callable[..., App],
                                                       db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    r = one(app, mail(subject="Re: [MD-1] let me in", sender="eve@attacker.test"))
    assert r["new_tickets"] == 1
    assert ticket(app, "MD-1")["message_count"] == 1
    assert ticket(app, "MD-2")["requester"] == "eve@attacker.test"


def test_reply_threads_by_references_to_our_acknowledgement(make_app: Callable[..., App],
                                                             db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    ack_id = message_from_bytes(outbox_mail(app, "MD-1")[0])["Message-ID"]
    r = one(app, mail(subject="Re: your ticket", sender="Bo <bo@customer.test>",
                      In_Reply_To=ack_id, References=f"<first@x> {ack_id}"))
    assert r["follow_ups"] == 1
    t = ticket(app, "MD-1")
    assert t["events"][-1]["data"]["thread_by"] == "references"


def test_reply_threads_by_in_reply_to_the_customers_own_mail(make_app: Callable[..., App],
                                                              db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail(message_id="<orig@customer.test>"))
    r = one(app, mail(subject="more info", In_Reply_To="<orig@customer.test>"))
    assert r["follow_ups"] == 1


def test_reply_threads_by_reply_address_token(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    addr = token_address(app.secrets[0], "support@localhost", "MD-1", "ana@customer.test")
    r = one(app, mail(subject="no tag here", to=addr), Envelope("smtp", "ana@customer.test",
                                                                (addr,)))
    assert r["follow_ups"] == 1
    assert ticket(app, "MD-1")["events"][-1]["data"]["thread_by"] == "reply-address"
    # the same token in someone else's hands grants nothing: a new ticket
    r = one(app, mail(subject="still no tag", to=addr, sender="eve@attacker.test"))
    assert r["new_tickets"] == 1


def test_forged_reply_address_token_opens_a_new_ticket(make_app: Callable[..., App],
                                                        db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    forged = "support+md-1-aaaaaaaaaaaaaaaaaaaa@localhost"
    r = one(app, mail(subject="hi", to=forged, sender="eve@attacker.test"))
    assert r["new_tickets"] == 1


def test_same_message_twice_is_stored_once_across_routes(make_app: Callable[..., App],
                                                          db_url: str) -> None:
    app = make_app(db_url)
    raw = mail(message_id="<dup@customer.test>")
    accept(app, [(b"Received: from mx.test by desk; Mon, 2 Nov 2026 09:30:00 +0000\n" + raw,
                  Envelope("smtp", "ana@customer.test", ("support@localhost",)))])
    assert drain(app).new_tickets == 1
    assert one(app, raw)["duplicates"] == 1
    s = ingest(app, [(raw, PIPE), (raw, PIPE)])
    assert s.duplicates == 2
    assert len(tickets(app)) == 1 and tickets(app)[0]["message_count"] == 1 \
        and tickets(app)[0]["notice_count"] == 1  # theirs; our ack


def test_mail_without_message_id_is_deduplicated_by_content(make_app: Callable[..., App],
                                                             db_url: str) -> None:
    app = make_app(db_url)
    raw = b"From: a@customer.test\nTo: support@localhost\nSubject: no id\n\nbody\n"
    assert one(app, raw)["new_tickets"] == 1
    assert one(app, raw)["duplicates"] == 1
    assert one(app, raw.replace(b"body", b"other body"))["new_tickets"] == 1
    mid = ticket(app, "MD-1")["messages"][0]["message_id"]
    assert mid.startswith("<generated.") and mid.endswith("@maildesk.invalid>")


@pytest.mark.parametrize("policy_, expect", [
    ("new", {"new_tickets": 1}), ("reopen", {"follow_ups": 1}), ("refuse", {"refused": 1})])
def test_reply_to_a_closed_ticket_follows_the_queue_policy(
        make_app: Callable[..., App], db_url: str, policy_: str, expect: dict[str, int]) -> None:
    app = make_app(db_url, desk={"queues": [{"name": "general", "on_closed_reply": policy_}]})
    one(app, mail())
    set_status(app, "MD-1", "closed")
    r = one(app, mail(subject="Re: [MD-1] again", body="It is back.\n",
                      to=reply_address(app)))
    assert {k: v for k, v in r.items() if v} == expect
    t1 = ticket(app, "MD-1")
    if policy_ == "new":
        assert ticket(app, "MD-2")["linked_to"] == "MD-1"
        assert t1["events"][-1]["kind"] == "ticket.linked"
        assert t1["status"] == "closed"
    elif policy_ == "reopen":
        assert t1["status"] == "open"
        assert "ticket.reopened" in [e["kind"] for e in t1["events"]]
    else:
        assert t1["status"] == "closed" and t1["message_count"] == 1 \
            and t1["notice_count"] == 2  # in; ack, refusal
        notice = message_from_bytes(outbox_mail(app, "MD-1")[-1], policy=policy.default)
        assert "closed" in notice["Subject"]
        assert notice["To"].addresses[0].addr_spec == "ana@customer.test"


def test_customer_reply_reopens_a_pending_ticket(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    one(app, mail())
    set_status(app, "MD-1", "pending")
    one(app, mail(subject="Re: [MD-1] x", body="Here is the info.\n", to=reply_address(app)))
    assert ticket(app, "MD-1")["status"] == "open"


@pytest.mark.parametrize("status_", ["pending", "resolved", "closed"])
def test_a_plain_from_is_kept_and_heard_but_changes_nothing(
        make_app: Callable[..., App], db_url: str, status_: str) -> None:
    """Issue 15 finding 6: anyone can write the requester's address in From. Without a
    live reply address, DKIM or trusted Authentication-Results, the mail reaches the
    ticket and its agents, and cannot move the status, reopen, close or add a CC spy."""
    app = make_app(db_url, desk={"queues": [{"name": "general", "on_closed_reply": "reopen"}]})
    one(app, mail())
    set_status(app, "MD-1", status_)
    one(app, mail(subject="Re: [MD-1] x", body="#close\nthanks\n", Cc="spy@evil.test"))
    t = ticket(app, "MD-1")
    assert t["status"] == status_ and t["cc"] == []
    if status_ == "closed":     # a reply that may not reopen opens a ticket that follows it
        follow = ticket(app, "MD-2")
        assert follow["linked_to"] == "MD-1"
        assert [e for e in follow["events"] if e["kind"] == "sender.unverified"][0]["data"][
            "refused"] == ["reopen"]
    else:
        said = [e for e in t["events"] if e["kind"] == "sender.unverified"][-1]["data"]
        assert said["refused"] == ["status", "cc", "close"]
        assert t["messages"][-1]["proof"] == ""


def test_unparseable_mail_is_quarantined_and_the_next_mail_flows(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    garbage = b"\x00\x01\x02 this is not a mail at all \xff\xfe\n" * 10
    s = ingest(app, [(garbage, PIPE), (mail(), PIPE)])
    assert (s.quarantined, s.new_tickets) == (1, 1)
    with app.sessions() as sess:
        row = sess.scalars(select(Inbound).where(Inbound.state == "quarantined")).one()
    assert "no mail headers" in (row.reason or "")
    assert app.blobs.get(row.digest) == garbage, "the raw bytes are kept"


def test_a_crashing_stage_quarantines_only_that_mail(make_app: Callable[..., App], db_url: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from maildesk.pipeline.stages import STAGES

    def explode(ctx: Any, w: Any) -> None:
        if w.parsed.subject == "boom":
            raise RuntimeError("rule engine exploded")
    app = make_app(db_url)
    after = [name for name, _fn in STAGES].index("customer") + 1
    app.stages = (*STAGES[:after], ("explode", explode), *STAGES[after:])
    s = ingest(app, [(mail(subject="before"), PIPE), (mail(subject="boom"), PIPE),
                     (mail(subject="after"), PIPE)])
    assert (s.new_tickets, s.quarantined) == (2, 1)
    assert [t["ref"] for t in tickets(app)] == ["MD-1", "MD-2"], "no gap in ticket numbers"
    assert [t["subject"] for t in tickets(app)] == ["before", "after"]
    with app.sessions() as sess:
        row = sess.scalars(select(Inbound).where(Inbound.state == "quarantined")).one()
    assert row.reason == "explode: RuntimeError: rule engine exploded"
    assert "in explode" in (row.traceback or ""), "the quarantine keeps the traceback"
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and "Traceback" in logged[0].traceback, "the traceback is logged at ERROR"
    assert "\n" not in logged[0].getMessage(), "the message is one line, the traceback a field"


def test_machines_mail_opens_no_ticket_and_gets_no_answer(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    s = ingest(app, [
        (mail(subject="Out of office", Auto_Submitted="auto-replied"), PIPE),
        (mail(subject="Undelivered", sender="MAILER-DAEMON@mx.test"), PIPE),
        (mail(subject="from us", sender="support@localhost"), PIPE),
        (mail(subject="null sender"), Envelope("smtp", "", ("support@localhost",))),
    ])
    assert (s.new_tickets, s.classified) == (0, 4)
    with app.sessions() as sess:
        assert sess.scalar(select(OutboxMail.id)) is None
        states = sorted(sess.scalars(select(Inbound.state)))
    assert states == ["auto-reply", "bounce", "bounce", "loop"]

def test_header_injection_in_subject_and_name_does_not_reach_our_headers(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    raw = (b"From: =?utf-8?q?Eve=0D=0ABcc=3A_victim=40x.test?= <eve@customer.test>\n"
           b"To: support@localhost\n"
           b"Subject: =?utf-8?q?hello=0D=0ABcc=3A_victim=40x.test?=\n"
           b"Message-ID: <inj@customer.test>\n\nhi\n")
    one(app, raw)
    ack = message_from_bytes(outbox_mail(app, "MD-1")[0], policy=policy.default)
    assert ack["Bcc"] is None
    assert all("\n" not in v and "\r" not in v for _k, v in ack.items())
    assert ack["Subject"].startswith("[MD-1] hello")


def test_attachments_are_stored_by_digest_with_safe_names(make_app: Callable[..., App],
                                                           db_url: str) -> None:
    from email.message import EmailMessage
    app = make_app(db_url)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "ana@customer.test", "support@localhost", "logs"
    m["Message-ID"] = "<att@customer.test>"
    m.set_content("see attached")
    m.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                     filename="../../etc/passwd\u202egnp.pdf")
    m.add_attachment("a,b\n1,2\n", subtype="csv", filename="export.csv")
    one(app, m.as_bytes())
    atts = ticket(app, "MD-1")["messages"][0]["attachments"]
    assert [a["filename"] for a in atts][1] == "export.csv"
    assert "/" not in atts[0]["filename"] and "\u202e" not in atts[0]["filename"]
    assert atts[0]["size"] == len(b"%PDF-1.4 fake")
    assert app.blobs.get(atts[0]["digest"]) == b"%PDF-1.4 fake"


def test_html_only_mail_gets_a_text_rendering(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    raw = (b"From: ana@customer.test\nTo: support@localhost\nSubject: html\n"
           b"Message-ID: <h@customer.test>\nContent-Type: text/html; charset=utf-8\n\n"
           b"<html><head><style>p{}</style><script>alert(1)</script></head><body>"
           b"<p>Hello <b>desk</b></p><p>See <a href='https://x.test/a'>this</a></p></body></html>\n")
    one(app, raw)
    text = ticket(app, "MD-1")["messages"][0]["text"]
    assert "Hello desk" in text and "https://x.test/a" in text
    assert "alert" not in text and "p{}" not in text


def test_broken_charsets_and_8bit_without_charset_still_make_tickets(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    raws = [
        b"From: a@customer.test\nTo: support@localhost\nSubject: caf\xe9 8bit\n"
        b"Message-ID: <8bit@c.test>\n\nL'imprimante du deuxi\xe8me \xe9tage est en panne.\n",
        b"From: b@customer.test\nTo: support@localhost\nSubject: =?x-unknown?q?weird?=\n"
        b"Message-ID: <cs@c.test>\nContent-Type: text/plain; charset=x-unknown-charset\n\n"
        b"caf\xe9\n",
        b"From: c@customer.test\nTo: support@localhost\nSubject: broken mime\n"
        b"Message-ID: <mime@c.test>\nContent-Type: multipart/mixed; boundary=XYZ\n\n"
        b"--XYZ\nContent-Type: text/plain\n\npart one, never closed\n",
    ]
    s = ingest(app, [(r, PIPE) for r in raws])
    assert s.new_tickets == 3, s.as_dict()
    assert "deuxi" in ticket(app, "MD-1")["messages"][0]["text"]
    assert "part one" in ticket(app, "MD-3")["messages"][0]["text"]


def test_a_mail_that_arrives_after_its_reply_joins_the_replys_ticket(
        make_app: Callable[..., App], db_url: str) -> None:
    """Imports and IMAP folders are not in date order (issue 14): the reply opens the ticket,
    and the mail it answered, arriving later, lands there, in one batch or two. A stranger
    whose mail carries that Message-ID does not."""
    app = make_app(db_url)
    first = mail(subject="VPN down", message_id="<first@customer.test>",
                 sender="ana@customer.test")
    reply = mail(subject="Re: VPN down", message_id="<reply@customer.test>",
                 sender="ana@customer.test", In_Reply_To="<first@customer.test>",
                 References="<first@customer.test>")
    s = ingest(app, [(reply, PIPE)])
    assert s.new_tickets == 1
    s = ingest(app, [(first, PIPE)])
    assert (s.new_tickets, s.follow_ups) == (0, 1)
    both = mail(subject="Printer", message_id="<p1@customer.test>", sender="bo@customer.test")
    its_reply = mail(subject="Re: Printer", message_id="<p2@customer.test>",
                     sender="bo@customer.test", References="<p1@customer.test>")
    s = ingest(app, [(its_reply, PIPE), (both, PIPE)])
    assert (s.new_tickets, s.follow_ups) == (1, 1)
    stranger = mail(subject="hello", message_id="<s2@evil.test>", sender="eve@evil.test",
                    References="<s1@customer.test>")
    ingest(app, [(stranger, PIPE)])
    victim = mail(subject="my password", message_id="<s1@customer.test>",
                  sender="cy@customer.test")
    s = ingest(app, [(victim, PIPE)])
    assert s.new_tickets == 1, "a stranger's References do not pull another's mail in"


def test_a_stranger_cannot_capture_a_future_mail_by_cc_and_references(
        make_app: Callable[..., App]) -> None:
    """Mallory opens a ticket with Alice in Cc and Alice's next Message-ID in References:
    Alice's mail must open her own ticket, not join Mallory's."""
    app = make_app()
    trap = mail(subject="hi", message_id="<m1@evil.test>", sender="mallory@evil.test",
                Cc="alice@customer.test", References="<alice2@customer.test>")
    ingest(app, [(trap, PIPE)])
    s = ingest(app, [(mail(subject="salary question", message_id="<alice2@customer.test>",
                           sender="alice@customer.test"), PIPE)])
    assert s.new_tickets == 1


def test_mail_without_a_sender_never_joins_another_by_its_tag(
        make_app: Callable[..., App]) -> None:
    app = make_app()
    ingest(app, [(b"Subject: alert one\n\nx\n", PIPE)])
    s = ingest(app, [(b"Subject: Re: [MD-1] alert one\n\nmore\n", PIPE)])
    assert s.new_tickets == 1
