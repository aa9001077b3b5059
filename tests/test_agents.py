"""Agents at work from their own mail client: notifications, replies, notes, proof of sender."""
from __future__ import annotations

import email
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, dns_stub, mail, reply_address, signed, wait_for
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.mail.quotes import split_reply
from maildesk.pipeline.run import ingest
from maildesk.store.models import OutboxMail, Ticket
from maildesk.tickets.refs import token_address
from maildesk.tickets.views import show_ticket

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
PIPE = Envelope("pipe", None)


@pytest.fixture
def app(make_app: Callable[..., App], db_url: str) -> App:
    return make_app(db_url, desk=DESK)


def sent(app: App, ref: str) -> list[email.message.EmailMessage]:
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).join(Ticket)
                            .where(Ticket.ref == ref).order_by(OutboxMail.id)).all()
    return [email.message_from_bytes(app.blobs.get(d), policy=policy.default)  # type: ignore[misc]
            for d in digests]


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def agent_mail(agent: str, to: str, body: str, subject: str = "Re: [MD-1] Printer",
               attach: bool = False) -> bytes:
    m = EmailMessage()
    m["From"] = f"{agent.title()} <{agent}@desk.test>"
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{agent}.{abs(hash(body))}@desk.test>"
    m.set_content(body)
    if attach:
        m.add_attachment(b"step 1: open tray", maintype="application", subtype="pdf",
                         filename="howto.pdf")
    return m.as_bytes()


QUOTED = ("Please open tray 2 and remove the paper.\n\n"
          "On Mon, 2 Nov 2026 at 10:00, IT Service Desk <support@localhost> wrote:\n"
          "> New ticket MD-1: Printer on floor 2 is jammed\n> Queue: general\n")


def agent_words(m: EmailMessage) -> str:
    """An agent's relayed reply without the desk's footer (tested in test_customer_mail)."""
    words, footer = m.get_body(("plain",)).get_content().split("\n\n-- \n", 1)  # type: ignore[union-attr]
    assert footer.startswith("Service Desk | MD-"), footer
    return words.strip()


def test_new_ticket_notifies_the_queue_group_with_tokens_of_their_own(app: App) -> None:
    ingest(app, [(mail(Cc="Bo <bo@customer.test>"), PIPE)])
    notices = [m for m in sent(app, "MD-1") if m["To"].addresses[0].domain == "desk.test"]
    assert [m["To"].addresses[0].addr_spec for m in notices] == ["bob@desk.test",
                                                                  "lea@desk.test"]
    bob = notices[0]
    assert bob["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-1", "bob@desk.test")
    assert bob["Reply-To"].addresses[0].addr_spec != notices[1]["Reply-To"].addresses[0].addr_spec
    text = bob.get_body(("plain",)).get_content()
    assert token_address(app.secrets[0], "support@localhost", "MD-1", "bob@desk.test",
                         "note") in text
    assert "It blinks red." in text


def reply_token(app: App, agent: str, purpose: str = "reply") -> str:
    return token_address(app.secrets[0], "support@localhost", "MD-1", f"{agent}@desk.test",
                         purpose)


def test_agent_reply_is_relayed_from_the_desk_with_quotes_stripped(app: App) -> None:
    ingest(app, [(mail(Cc="Bo <bo@customer.test>"), PIPE)])
    to = reply_token(app, "bob")
    ingest(app, [(agent_mail("bob", to, QUOTED, attach=True), Envelope("smtp", "bob@desk.test",
                                                                        (to,)))])
    t = show(app, "MD-1")
    mine = t["messages"][-2]      # bob's, then our relay of it
    assert (mine["from"], mine["visibility"], mine["text"]) == \
        ("bob@desk.test", "public", "Please open tray 2 and remove the paper.")
    assert t["status"] == "pending"
    assert "agent.replied" in [e["kind"] for e in t["events"]]
    out = sent(app, "MD-1")[-1]
    assert out["From"].addresses[0].addr_spec == "support@localhost"
    assert out["From"].addresses[0].display_name.startswith("bob")
    assert [a.addr_spec for a in out["To"].addresses] == ["ana@customer.test"]
    assert [a.addr_spec for a in out["Cc"].addresses] == ["bo@customer.test"]
    assert "bob@desk.test" not in out.as_string(), "the agent's address stays hidden"
    assert agent_words(out) == "Please open tray 2 and remove the paper."
    assert [(p.get_filename(), p.get_content()) for p in out.iter_attachments()] == \
        [("howto.pdf", b"step 1: open tray")]
    assert out["Subject"] == "Re: [MD-1] Printer on floor 2 is jammed"
    assert out["References"].split()[0] == show(app, "MD-1")["messages"][0]["message_id"]
    assert out["Reply-To"].addresses[0].addr_spec == token_address(
        app.secrets[0], "support@localhost", "MD-1", "ana@customer.test")


@pytest.mark.parametrize("how", ["note address", "#note line"])
def test_internal_notes_never_reach_the_customer(app: App, how: str) -> None:
    ingest(app, [(mail(), PIPE)])
    before = len(sent(app, "MD-1"))
    if how == "note address":
        to, body = reply_token(app, "lea", "note"), "Toner is on order.\n"
    else:
        to, body = reply_token(app, "lea"), "#note\nToner is on order.\n"
    ingest(app, [(agent_mail("lea", to, body), PIPE)])
    t = show(app, "MD-1")
    assert (t["messages"][-1]["visibility"], t["messages"][-1]["text"]) == \
        ("internal", "Toner is on order.")
    assert len(sent(app, "MD-1")) == before, "nothing sent"
    assert t["events"][-1]["kind"] == "note.added" and t["status"] == "new"


@pytest.mark.parametrize("case", ["no token, only the tag", "token of another agent",
                                  "token of another ticket", "guessed token"])
def test_forged_agent_mail_runs_nothing_and_is_flagged(app: App, case: str) -> None:
    ingest(app, [(mail(), PIPE), (mail(subject="second", sender="cy@customer.test"), PIPE)])
    before = len(sent(app, "MD-1"))
    to = {"no token, only the tag": "support@localhost",
          "token of another agent": reply_token(app, "lea"),
          "token of another ticket": token_address(app.secrets[0], "support@localhost",
                                                   "MD-2", "bob@desk.test"),
          "guessed token": "support+md-1-abcdefghijabcdefghij@localhost"}[case]
    ingest(app, [(agent_mail("bob", to, "#note\nsecret\n"), PIPE)])
    t = show(app, "MD-1")
    assert "agent.replied" not in [e["kind"] for e in t["events"]]
    assert all(m["visibility"] == "public" for m in t["messages"])
    if case == "token of another ticket":
        # the token is genuine for MD-2: bob's note lands there, and only there
        assert show(app, "MD-2")["messages"][-1]["visibility"] == "internal"
        return
    # as a customer mail: the tag does not let a non-participant in: a new ticket
    refs = [x["ref"] for x in _tickets(app)]
    assert refs[0] == "MD-3" and show(app, "MD-3")["requester"] == "bob@desk.test"
    assert len(sent(app, "MD-1")) == before


def _tickets(app: App) -> list[dict[str, Any]]:
    from maildesk.tickets.listing import list_tickets
    with app.sessions() as s:
        return list_tickets(s.connection())


def test_agent_from_as_participant_without_proof_is_a_flagged_customer_reply(app: App) -> None:
    ingest(app, [(mail(Cc="bob@desk.test"), PIPE)])
    ingest(app, [(agent_mail("bob", "support@localhost", "#assign me\n"), PIPE)])
    t = show(app, "MD-1")
    replied = [e for e in t["events"] if e["kind"] == "customer.replied"]
    assert replied[-1]["data"]["unverified_agent"] == "bob"
    assert "agent.replied" not in [e["kind"] for e in t["events"]]


@pytest.mark.parametrize("text, new", [
    ("Thanks!\n\nOn Tue, 3 Nov 2026, 09:12 Desk <support@x> wrote:\n> old\n", "Thanks!"),
    ("Danke.\n\nAm 03.11.2026 um 09:12 schrieb Desk <support@x>:\n> alt\n", "Danke."),
    ("Merci.\n\nLe mar. 3 nov. 2026 à 09:12, Desk <support@x> a écrit :\n> ancien\n",
     "Merci."),
    ("Gracias.\n\nEl mar, 3 nov 2026 a las 9:12, Desk (<support@x>) escribió:\n> viejo\n",
     "Gracias."),
    ("Done.\n\n-----Original Message-----\nFrom: Desk\nSent: Tuesday\n", "Done."),
    ("Done.\n\n________________________________\nFrom: Desk <support@x>\nSent: Tuesday\n"
     "To: Ana\nSubject: x\n", "Done."),
    ("Done.\n\nFrom: Desk <support@x>\nSent: Tuesday, 3 November 2026 09:12\nTo: Ana\n",
     "Done."),
    ("Fixed it.\n\nSent from my iPhone\n", "Fixed it."),
    ("Fixed it.\n-- \nAna Lima\nACME\n", "Fixed it."),
    ("Answer first.\n> quoted\n> more\n", "Answer first."),
    ("> quoted\nanswer below the quote\n", "answer below the quote"),   # bottom-posted
])
def test_quote_and_signature_stripping(text: str, new: str) -> None:
    assert split_reply(text)[0] == new


def test_agent_reply_end_to_end_through_smtp(daemon: Callable[..., Daemon]) -> None:
    from test_smtp import cli_json, outbox_files, send
    d = daemon(desk=DESK)
    send(d.port, mail(message_id="<e2e@customer.test>"))
    files = wait_for(lambda: len(outbox_files(d)) >= 3 and outbox_files(d), what="3 mails")
    notices = [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    to_bob = next(m for m in notices if m["To"].addresses[0].addr_spec == "bob@desk.test")
    reply_to = to_bob["Reply-To"].addresses[0].addr_spec
    send(d.port, agent_mail("bob", reply_to, QUOTED), rcpts=[reply_to], sender="bob@desk.test")
    files = wait_for(lambda: len(outbox_files(d)) >= 4 and outbox_files(d), what="the relay")
    relayed = email.message_from_bytes(files[-1].read_bytes(), policy=policy.default)
    assert relayed["To"].addresses[0].addr_spec == "ana@customer.test"
    assert "bob@desk.test" not in relayed.as_string()
    assert agent_words(relayed) == \
        "Please open tray 2 and remove the paper."
    shown = cli_json(d, "tickets", "show", "MD-1")
    assert shown["status"] == "pending"
    assert Path(d.config).exists()


def test_every_command_is_applied_and_recorded(app: App) -> None:
    ingest(app, [(mail(), PIPE), (mail(subject="other", sender="cy@customer.test"), PIPE)])
    body = ("#assign me\n#queue general\n#impact high\n#urgency high\n#type request\n"
            "#category printers\n#tag +hardware +floor2\n#cc +bo@customer.test\n"
            "#link MD-2\n\nI ordered a new drum.\n")
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), body), PIPE)])
    t = show(app, "MD-1")
    assert (t["assignee"], t["impact"], t["urgency"], t["priority"], t["type"],
            t["category"], t["tags"], t["cc"]) == \
        ("bob", "high", "high", "P1", "request", "printers", ["hardware", "floor2"],
         ["bo@customer.test"])
    assert t["status"] == "pending", "a public reply waits for the customer"
    updates = [e for e in t["events"] if e["kind"] == "ticket.updated"]
    assert updates and all(e["actor"] == "agent:bob" for e in updates)
    assert "ticket.linked" in [e["kind"] for e in t["events"]]
    out = sent(app, "MD-1")[-1]
    assert agent_words(out) == "I ordered a new drum."
    assert [a.addr_spec for a in out["Cc"].addresses] == ["bo@customer.test"]
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"),
                             "#status resolved\n#silent\nFixed on site.\n"), PIPE)])
    assert show(app, "MD-1")["status"] == "resolved"
    assert sent(app, "MD-1")[-1]["Message-ID"] == out["Message-ID"], "#silent sends nothing"


def test_a_bad_command_applies_nothing_and_tells_the_agent(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    body = "#assign me\n#queue nowhere\n#frobnicate\n\nHello customer.\n"
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), body), PIPE)])
    t = show(app, "MD-1")
    assert t["assignee"] is None and t["status"] == "new"
    assert t["messages"][-2]["visibility"] == "internal"
    answer = sent(app, "MD-1")[-1]
    assert answer["To"].addresses[0].addr_spec == "bob@desk.test"
    text = answer.get_body(("plain",)).get_content()
    assert "line 2: #queue nowhere: no queue 'nowhere'" in text
    assert "line 3: #frobnicate: unknown command #frobnicate" in text
    assert not any(m["To"].addresses[0].addr_spec == "ana@customer.test"
                   and "Hello customer" in m.get_body(("plain",)).get_content()
                   for m in sent(app, "MD-1"))


def test_merge_closes_into_the_other_ticket(app: App) -> None:
    ingest(app, [(mail(), PIPE), (mail(subject="same printer", sender="cy@customer.test"),
                                  PIPE)])
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), "#merge MD-2\n"), PIPE)])
    t1, t2 = show(app, "MD-1"), show(app, "MD-2")
    assert t1["status"] == "closed" and t1["linked_to"] == "MD-2"
    assert any(e["kind"] == "ticket.merged" for e in t2["events"])


# -- DKIM and Authentication-Results ----------------------------------------------------

def test_dkim_signed_agent_mail_is_proof_even_without_a_token(app: App,
                                                             dkim_key: tuple[bytes, bytes]
                                                             ) -> None:
    private, record = dkim_key
    app.dns = dns_stub(record)
    ingest(app, [(mail(), PIPE)])
    raw = signed(agent_mail("bob", "support@localhost", "#assign me\nOn my way.\n"), private)
    ingest(app, [(raw, PIPE)])
    t = show(app, "MD-1")
    assert t["assignee"] == "bob" and "agent.replied" in [e["kind"] for e in t["events"]]


def test_dkim_of_another_domain_or_a_tampered_mail_proves_nothing(
        app: App, dkim_key: tuple[bytes, bytes]) -> None:
    private, record = dkim_key
    app.dns = dns_stub(record)
    ingest(app, [(mail(), PIPE)])
    tampered = signed(agent_mail("bob", "support@localhost", "#assign me\n"), private) \
        .replace(b"Re: [MD-1] Printer", b"Re: [MD-1] Printez")
    ingest(app, [(tampered, PIPE)])
    assert show(app, "MD-1")["assignee"] is None
    assert show(app, "MD-2")["requester"] == "bob@desk.test", "an ordinary, new ticket"


def test_agent_opens_a_ticket_for_a_caller_with_requester(app: App,
                                                         dkim_key: tuple[bytes, bytes]) -> None:
    private, record = dkim_key
    app.dns = dns_stub(record)
    raw = signed(agent_mail("bob", "support@localhost",
                            "#requester caller@customer.test\n#priority P2\nPhone: VPN fails.\n",
                            subject="VPN fails for caller"), private)
    ingest(app, [(raw, PIPE)])
    t = show(app, "MD-1")
    assert (t["requester"], t["assignee"], t["priority"]) == ("caller@customer.test", "bob", "P2")
    assert t["messages"][0]["visibility"] == "internal"
    assert sent(app, "MD-1")[0]["To"].addresses[0].addr_spec == "caller@customer.test"


@pytest.mark.parametrize("headers, proven", [
    (["mx.desk.test; dkim=pass header.d=desk.test"], True),
    (["mx.desk.test; dmarc=pass header.from=desk.test"], True),
    (["mx.desk.test; dkim=fail header.d=desk.test"], False),
    (["evil.test; dkim=pass header.d=desk.test"], False),
    # a forgery claiming our authserv-id below an untrusted header counts for nothing
    (["other.test; spf=pass", "mx.desk.test; dkim=pass header.d=desk.test"], False),
    (["mx.desk.test; dkim=pass header.d=other.test"], False),
])
def test_trusted_authentication_results(make_app: Callable[..., App], db_url: str,
                                        headers: list[str], proven: bool) -> None:
    app = make_app(db_url, desk=DESK | {"trusted_authserv_ids": ["mx.desk.test"],
                                        "verify_dkim": False})
    ingest(app, [(mail(), PIPE)])
    # as an MTA adds them: on top, the first one ours
    raw = b"".join(f"Authentication-Results: {h}\n".encode() for h in headers) + \
        agent_mail("bob", "support@localhost", "#assign me\n")
    ingest(app, [(raw, PIPE)])
    assert (show(app, "MD-1")["assignee"] == "bob") is proven


# -- customers' side, rotation, assignment -----------------------------------------------

def test_customer_closes_with_the_keyword_and_cc_can_be_turned_off(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk=DESK | {"add_cc_participants": False})
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(mail(subject="Re: [MD-1] x", body="#close\nAll good now, thanks.\n",
                       Cc="boss@customer.test", to=reply_address(app)), PIPE)])
    t = show(app, "MD-1")
    assert t["status"] == "closed" and t["cc"] == []
    closed = [e for e in t["events"] if e["kind"] == "ticket.updated"][-1]
    assert closed["actor"] == "customer:ana@customer.test"


def test_a_strangers_tag_opens_a_ticket_that_says_why(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(mail(subject="Re: [MD-1] me too", sender="eve@attacker.test"), PIPE)])
    created = show(app, "MD-2")["events"][0]
    assert created["data"]["tag_ignored"] == "MD-1: the sender is not on that ticket"


def test_tokens_survive_a_key_rotation_while_the_old_key_is_named(
        make_app: Callable[..., App], tmp_path: Path) -> None:
    app = make_app(desk=DESK)
    ingest(app, [(mail(), PIPE)])
    old_token = reply_token(app, "bob")
    old_key = tmp_path / "old.key"
    old_key.write_bytes(app.secrets[0])
    new_key = tmp_path / "new.key"
    new_key.write_text("f" * 64)
    rotated = make_app(desk=DESK, secret_file=str(new_key), previous_secret_file=str(old_key))
    ingest(rotated, [(agent_mail("bob", old_token, "#assign me\n"), PIPE)])
    assert show(rotated, "MD-1")["assignee"] == "bob"
    done = make_app(desk=DESK, secret_file=str(new_key))
    ingest(done, [(agent_mail("bob", old_token, "#assign lea\n"), PIPE)])
    assert show(done, "MD-1")["assignee"] == "bob", "after the grace period the token is dead"


def test_assignment_by_another_agent_notifies_the_assignee(app: App) -> None:
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(agent_mail("bob", reply_token(app, "bob"), "#assign lea\n"), PIPE)])
    last = sent(app, "MD-1")[-1]
    assert last["To"].addresses[0].addr_spec == "lea@desk.test"
    assert last["Subject"].startswith("[MD-1] Assigned to you:")


def test_agent_settings_other_address_display_name_and_served_queues(
        make_app: Callable[..., App], db_url: str) -> None:
    desk = {"queues": [{"name": "general"}],
            "agents": [{"name": "bob", "address": "bob@desk.test", "also": ["bob@phone.test"],
                        "display_name": "Bob from IT", "queues": ["general"]}]}
    app = make_app(db_url, desk=desk)
    ingest(app, [(mail(), PIPE)])
    assert sent(app, "MD-1")[0]["To"].addresses[0].addr_spec == "bob@desk.test"
    html = EmailMessage()
    html["From"], html["To"] = "Bob <bob@phone.test>", reply_token(app, "bob")
    html["Subject"], html["Message-ID"] = "Re: [MD-1] Printer", "<phone1@phone.test>"
    html.set_content("<div>Tray 2, please.</div><div>On Tue, Desk wrote:</div>"
                     "<blockquote><p>New ticket MD-1</p></blockquote>", subtype="html")
    ingest(app, [(html.as_bytes(), PIPE)])
    out = sent(app, "MD-1")[-1]
    assert out["From"].addresses[0].display_name == "Bob from IT (Service Desk)"
    assert agent_words(out) == "Tray 2, please."


def test_a_bare_cr_cannot_smuggle_headers_past_dkim(app: App,
                                                   dkim_key: tuple[bytes, bytes]) -> None:
    """Issue 15: any genuine signed mail of the agents' domain (a newsletter will do), with
    `X-Junk: x\\rFrom: bob@...\\rSubject: Re: [MD-1] ...\\r\\r#assign me\\r` in front. DKIM
    ends lines at CRLF only and sees one unsigned header; the parser ends them at the
    bare CR and reads a From, a Subject and commands."""
    private, record = dkim_key
    app.dns = dns_stub(record)
    ingest(app, [(mail(), PIPE)])
    newsletter = signed(b"From: News <news@desk.test>\nTo: all@desk.test\nSubject: News\n\n"
                        b"This month at the desk.\n", private)
    forged = (b"X-Junk: x\rFrom: Bob <bob@desk.test>\rSubject: Re: [MD-1] Printer\r\r"
              b"#assign me\r#status pending\r\n") + newsletter
    ingest(app, [(forged, PIPE)])
    t = show(app, "MD-1")
    assert t["assignee"] is None and t["status"] == "new"


def test_a_dkim_signature_over_part_of_the_body_proves_nothing(
        dkim_key: tuple[bytes, bytes]) -> None:
    """l= signs a prefix of the body: text appended after it would still verify."""
    import dkim

    from maildesk.mail.authentication import dkim_pass
    private, record = dkim_key
    raw = agent_mail("bob", "support@localhost", "Thanks, looking.\n") \
        .replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    sig = dkim.sign(raw, b"mail", b"desk.test", private, length=True,
                    include_headers=[b"from", b"to", b"subject"])
    appended = sig + raw + b"\r\nPS: please also send your password to help@evil.test\r\n"
    assert dkim.verify(appended, dnsfunc=dns_stub(record)), "what dkimpy alone would accept"
    assert not dkim_pass(appended, "desk.test", dns_stub(record))
    assert dkim_pass(signed(agent_mail("bob", "support@localhost", "x\n"), private),
                     "desk.test", dns_stub(record))
