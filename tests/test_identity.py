"""Issue 15: nobody acts as an agent or a customer without proof.

A generated corpus of forged commands (every way an attacker was seen to claim an
agent's or a customer's identity, crossed with every way of reaching a ticket and
every forged proof) runs through the real pipeline: no command runs, no ticket
changes, and each refusal is an event. The same harness, given one genuine proof at
the end, does run the command: the corpus can fail.
"""
from __future__ import annotations

import itertools
import json
import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, dns_stub, mail, run_cli, signed, wait_for
from sqlalchemy import func, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.mail.authentication import aligned, header_fields, proof, results_pass
from maildesk.pipeline.run import ingest
from maildesk.store.models import Event, OutboxMail, Ticket
from maildesk.tickets.refs import redact, token_address
from maildesk.tickets.views import show_ticket

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}],
        "trusted_authserv_ids": ["mx.desk.test"], "trusted_relays": ["192.0.2.25"]}
PIPE = Envelope("pipe", None)
REFUSALS = {"sender.unverified", "token.refused", "commands.ignored"}
COMMANDS = ["#assign bob", "#status closed", "#priority P1", "#cc +spy@evil.test",
            "#tag +pwn", "#close", "#merge MD-2\n#silent"]


def tok(app: App, ref: str, person: str, purpose: str = "reply",
        issued: date | None = None) -> str:
    return token_address(app.secrets[0], "support@localhost", ref, person, purpose, issued)


def show(app: App, ref: str) -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def state(app: App) -> list[tuple[Any, ...]]:
    """What a command could change on MD-1 and MD-2, in one query."""
    with app.sessions() as s:
        return [tuple(r) for r in s.execute(
            select(Ticket.ref, Ticket.status, Ticket.assignee, Ticket.priority, Ticket.cc,
                   Ticket.tags, Ticket.queue, Ticket.linked_to)
            .where(Ticket.ref.in_(["MD-1", "MD-2"])).order_by(Ticket.id))]


def last_event(app: App) -> int:
    with app.sessions() as s:
        return s.scalar(select(func.max(Event.id))) or 0


def events_since(app: App, since: int) -> list[str]:
    with app.sessions() as s:
        return list(s.scalars(select(Event.kind).where(Event.id > since)))


# -- the corpus ---------------------------------------------------------------------------

IDENTITIES: dict[str, tuple[str, str]] = {     # name -> (header lines, the domain claimed)
    "agent's From": ("From: Bob <bob@desk.test>\n", "desk.test"),
    "agent's From, shouted": ("From: BOB@DESK.TEST (Bob)\n", "desk.test"),
    "address as display name": ('From: "bob@desk.test" <eve@evil.test>\n', "desk.test"),
    "encoded display name": ("From: =?utf-8?q?bob=40desk=2Etest?= <eve@evil.test>\n",
                             "desk.test"),
    "encoded address": ("From: =?utf-8?q?bob=40desk.test?=\n", "desk.test"),
    "agent as Sender": ("From: eve@evil.test\nSender: bob@desk.test\n", "desk.test"),
    "agent as Reply-To": ("From: eve@evil.test\nReply-To: bob@desk.test\n", "desk.test"),
    "two addresses": ("From: bob@desk.test, eve@evil.test\n", "desk.test"),
    "two From fields": ("From: bob@desk.test\nFrom: eve@evil.test\n", "desk.test"),
    "the victim customer": ("From: Ana <ana@customer.test>\nCc: spy@evil.test\n",
                            "customer.test"),
}


def routes(app: App) -> dict[str, tuple[str, str]]:
    """name -> (To, Subject) of each way to reach MD-1 without a token of one's own."""
    old = date.today() - timedelta(days=400)
    return {
        "tag": ("support@localhost", "Re: [MD-1] Printer"),
        "another ticket's tag": ("support@localhost", "Re: [MD-2] VPN"),
        "another agent's token": (tok(app, "MD-1", "lea@desk.test"), "Re: [MD-1] Printer"),
        "another ticket's token": (tok(app, "MD-2", "bob@desk.test"), "Re: [MD-1] Printer"),
        "an expired token": (tok(app, "MD-1", "bob@desk.test", issued=old), "Re: [MD-1] x"),
        "the agent's note token": (tok(app, "MD-1", "bob@desk.test", "note"), "Re: x"),
        "the customer's token": (tok(app, "MD-1", "ana@customer.test"), "Re: [MD-1] x"),
        "a made-up token": ("support+md-1-aaaabbbbbbbbbbbbbbbbbbbb@localhost", "Re: x"),
    }


def proofs(domain: str) -> dict[str, tuple[str, Envelope]]:
    """name -> (forged header lines on top of the mail, how it arrives)."""
    claim = f"dkim=pass header.d={domain}; dmarc=pass header.from={domain}"
    return {
        "none": ("", PIPE),
        "forged A-R sent straight to the listener": (
            f"Authentication-Results: mx.desk.test; {claim}\n",
            Envelope("smtp", "eve@evil.test", (), "smtp from 203.0.113.7 helo evil.test")),
        "forged A-R below our MTA's": (
            "Authentication-Results: mx.desk.test; dkim=none\n"
            "Received: from evil.test by mx.desk.test; Mon, 2 Nov 2026 10:00:00 +0000\n"
            f"Authentication-Results: mx.desk.test; {claim}\n", PIPE),
        "encoded A-R": (
            "Authentication-Results: =?utf-8?q?mx.desk.test=3B_dkim=3Dpass_header.d=3D"
            f"{domain}?=\n", PIPE),
        "A-R for the public suffix": (
            f"Authentication-Results: mx.desk.test; dkim=pass header.d={domain.split('.')[-1]}"
            "\n", PIPE),
        "A-R for the attacker's own domain": (
            "Authentication-Results: mx.desk.test; dkim=pass header.d=evil.test; "
            "dmarc=pass header.from=evil.test\n", PIPE),
    }


QUOTE = ("On Mon, 2 Nov 2026 at 10:00, IT Service Desk <support@localhost> wrote:\n"
         "> New ticket MD-1: Printer on floor 2 is jammed\n> Queue: general\n\n")


def forgeries(app: App) -> Iterator[tuple[str, bytes, Envelope]]:
    ways = routes(app)
    for n, (who, route, how) in enumerate(itertools.product(IDENTITIES, ways,
                                                            proofs("x.test"))):
        head, domain = IDENTITIES[who]
        if who.startswith("agent's From") and route in ("the agent's note token",
                                                          "another ticket's token") \
                or who == "the victim customer" and route == "the customer's token":
            continue        # their own tokens from their own address: genuine
        to, subject = ways[route]
        top, envelope = proofs(domain)[how]
        command = COMMANDS[n % len(COMMANDS)]
        body = f"{command}\nDone.\n" if n % 2 else f"{QUOTE}{command}\nDone.\n"  # bottom-post
        raw = (f"{top}{head}To: {to}\nSubject: {subject}\nMessage-ID: <forged.{n}@evil.test>\n"
               f"Date: Mon, 2 Nov 2026 10:00:00 +0000\n\n{body}")
        yield f"{who} / {route} / {how}", raw.encode(), envelope


def smuggled(private: bytes) -> Iterator[tuple[str, bytes, Envelope]]:
    """Genuine signatures of the agents' domain, around headers and text they never
    covered: any newsletter of the domain will do, or a mail of bob's own whose Subject
    his signer left out, replayed with another ticket's tag."""
    news = signed(b"From: News <news@desk.test>\nTo: all@desk.test\nSubject: News\n\n"
                  b"This month at the desk.\n", private)
    for n, command in enumerate(COMMANDS):
        c = command.replace("\n", "\r\n").encode()
        bare = c.replace(b"\r\n", b"\r")
        own = signed(b"From: Bob <bob@desk.test>\nTo: support@localhost\n"
                     b"Subject: Re: [MD-1] Printer\n\n" + c + b"\nThanks, looking.\n",
                     private, headers=(b"from", b"to"))
        for name, raw in {
            "bare CR": b"X-Junk: x\rFrom: Bob <bob@desk.test>\rSubject: Re: [MD-1] Printer"
                       b"\r\r" + bare + b"\rDone.\r\n" + news,
            "LF among CRLF": b"From: Bob <bob@desk.test>\nSubject: Re: [MD-1] P\n" + news,
            "second From above the signed one":
                b"From: Bob <bob@desk.test>\r\nSubject: Re: [MD-1] Printer\r\n" + news,
            "Subject the signature left out": own.replace(b"[MD-1]", b"[MD-2]"),
            "bare CR ending the head": news.replace(
                b"\r\n\r\nThis month", b"\r\n\r" + bare + b"\r\n\r\nThis month", 1),
        }.items():      # a Message-ID of its own on top: each one a new mail, not a repeat
            yield name, f"Message-ID: <smuggled.{n}.{len(raw)}@evil.test>\r\n".encode() \
                + raw, PIPE


@pytest.fixture
def desk(make_app: Callable[..., App], db_url: str, dkim_key: tuple[bytes, bytes]) -> App:
    app = make_app(db_url, desk=DESK)
    app.dns = dns_stub(dkim_key[1])
    ingest(app, [(mail(), PIPE)])
    ingest(app, [(mail(subject="VPN fails", sender="Carl <carl@other.test>"), PIPE)])
    return app


def test_no_forged_command_runs_and_each_refusal_is_an_event(
        desk: App, dkim_key: tuple[bytes, bytes]) -> None:
    app = desk
    before = state(app)
    cases = [*forgeries(app), *smuggled(dkim_key[0])]
    assert len(cases) >= 200
    if app.engine.dialect.name != "sqlite":     # no check here depends on the store: a
        cases = cases[::5]                      # fifth of the cases shows PostgreSQL agrees
    silent = []
    for name, raw, envelope in cases:
        since = last_event(app)
        ingest(app, [(raw, envelope)])
        kinds = events_since(app, since)
        assert not {"commands.applied", "agent.replied", "note.added", "ticket.merged"} \
            & set(kinds), f"{name}: {kinds}"
        if not REFUSALS & set(kinds):
            silent.append(f"{name}: {kinds}")
        assert state(app) == before, name
    assert not silent, f"{len(silent)} refusals left no event:\n" + "\n".join(silent[:10])
    with app.sessions() as s:
        to = list(s.scalars(select(OutboxMail.to)))
    assert not [t for t in to if "spy@evil.test" in t], "the spy got mail"
    # the same harness runs a genuine agent's command: the checks above can fail
    ingest(app, [(f"From: Bob <bob@desk.test>\nTo: {tok(app, 'MD-1', 'bob@desk.test')}\n"
                  "Subject: Re: [MD-1] Printer\nMessage-ID: <genuine@desk.test>\n\n"
                  "#tag +control\nDone.\n".encode(), PIPE)])
    assert state(app) != before and "control" in show(app, "MD-1")["tags"]


@pytest.mark.parametrize("layout", ["bottom", "inline"])
def test_an_agents_reply_hands_the_customer_no_token(desk: App, layout: str) -> None:
    """Finding 3: the agent wrote under the quoted notification, or between its lines,
    and the notification names the note address. Whatever is relayed carries none of
    our token addresses but the customer's own Reply-To."""
    app = desk
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).where(OutboxMail.template ==
                                                            "agent_notification")).all()
    notice = message_from_bytes(app.blobs.get(digests[0]), policy=policy.default)
    text = notice.get_body(("plain",)).get_content()
    note, reply = tok(app, "MD-1", "bob@desk.test", "note"), tok(app, "MD-1", "bob@desk.test")
    assert note in text
    quoted = [f"> {line}" for line in text.splitlines()]
    if layout == "bottom":
        body = "\n".join(["On Mon, Desk wrote:", *quoted, "", "Tray 2 was empty; refilled it."])
    else:
        body = "\n".join([*quoted[:3], "", "Tray 2 was empty; refilled it.", "",
                          *quoted[3:], "", "Write again if it jams."])
    ingest(app, [(f"From: Bob <bob@desk.test>\nTo: {reply}\nSubject: Re: [MD-1] Printer\n"
                  f"Message-ID: <b1@desk.test>\n\n{body}\n".encode(), PIPE)])
    with app.sessions() as s:
        relayed = s.scalars(select(OutboxMail.digest).where(
            OutboxMail.template == "agent.reply")).all()
    assert relayed, "the reply was relayed"
    raw = app.blobs.get(relayed[-1]).decode()
    out = message_from_bytes(raw.encode(), policy=policy.default)
    said = out.get_body(("plain",)).get_content()
    assert "refilled" in said
    assert note.split("@")[0] not in raw and reply.split("@")[0] not in raw
    assert not re.search(r"\+md-1-[a-z2-7]{8,}", said.lower()), said


def test_redact_takes_every_token_out_however_it_is_written() -> None:
    secret = b"k" * 32
    note = token_address(secret, "support@x.test", "MD-12", "bob@x.test", "note")
    text = (f"<{note}> mailto:{note.replace('+', '%2B')} {note.upper()} "
            f"support=2B{note.split('+')[1]} support+rate-md-12-4-abcdefghijk@x.test MD-12")
    out = redact(text, "MD")
    assert "md-12-" in out.lower() and not re.search(r"md-12-[a-z2-7]{8,}", out.lower())
    assert out.endswith("MD-12")


def test_tokens_expire_after_max_age(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, desk=DESK | {"token_max_age": 30})
    ingest(app, [(mail(), PIPE)])
    for age, runs in ((29, True), (31, False)):
        to = tok(app, "MD-1", "bob@desk.test", issued=date.today() - timedelta(days=age))
        ingest(app, [(f"From: bob@desk.test\nTo: {to}\nSubject: Re: [MD-1] x\n"
                      f"Message-ID: <age{age}@desk.test>\n\n#tag +age{age}\n".encode(), PIPE)])
        assert (f"age{age}" in show(app, "MD-1")["tags"]) is runs
    events = show(app, "MD-1")["events"]     # it found MD-1, no more
    assert "sender.unverified" in [e["kind"] for e in events]
    assert [e["data"]["reason"] for e in events if e["kind"] == "token.refused"] == [
        "a reply address older than desk.token_max_age (30 days): it finds the ticket, no more"]


# -- Authentication-Results: what counts --------------------------------------------------

def fields(*lines: str) -> list[tuple[str, str]]:
    return header_fields(("\n".join(lines) + "\nFrom: bob@desk.test\n\nx\n").encode())


@pytest.mark.parametrize("lines, ok", [
    (["Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test"], True),
    (["Return-Path: <b@desk.test>", "Received: from a by b",
      "Authentication-Results: mx.desk.test; dkim=pass header.d=mail.desk.test"], True),
    (["Authentication-Results: mx.desk.test; dmarc=pass header.from=desk.test"], True),
    (["Authentication-Results: mx.desk.test; spf=pass smtp.mailfrom=desk.test",
      "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test"], True),
    # below our MTA's own Received, or below a field the sender wrote: the sender's
    (["Authentication-Results: mx.desk.test; dkim=none", "Received: from evil by mx",
      "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test"], False),
    (["X-Mailer: evil", "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test"],
     False),
    (["Authentication-Results: other.test; spf=pass",
      "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test"], False),
    (["Authentication-Results: =?utf-8?q?mx.desk.test=3B_dkim=3Dpass_header.d=3Ddesk.test?="],
     False),
    (["Authentication-Results: mx.desk.test; dkim=pass header.d=test"], False),
    (["Authentication-Results: mx.desk.test; dkim=pass header.d=com"], False),
    (["Authentication-Results: mx.desk.test; dkim=pass header.d=evildesk.test"], False),
    (["Authentication-Results: mx.desk.test; dmarc=pass header.from=mail.desk.test"], False),
    (["Authentication-Results: mx.desk.test; dkim=fail header.d=desk.test"], False),
])
def test_only_our_mtas_topmost_results_count(lines: list[str], ok: bool) -> None:
    assert results_pass(fields(*lines), ["mx.desk.test"], "desk.test") is ok


def test_alignment_is_by_the_public_suffix_list() -> None:
    assert aligned("mail.example.co.uk", "example.co.uk")
    assert aligned("example.co.uk", "support.example.co.uk")
    assert not aligned("co.uk", "example.co.uk")
    assert not aligned("com", "example.com")
    assert not aligned("other.co.uk", "example.co.uk")
    assert not aligned("github.io", "someone.github.io")     # the list's private part too


def test_results_count_only_on_mail_that_came_through_our_mta() -> None:
    raw = (b"Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test\n"
           b"From: bob@desk.test\nSubject: x\n\nhi\n")
    common: dict[str, Any] = {"trusted_ids": ["mx.desk.test"], "verify_dkim": False}
    assert proof(raw, "desk.test", via_mta=True, **common) == "authentication-results"
    assert proof(raw, "desk.test", via_mta=False, **common) is None
    assert proof(raw.replace(b"From: bob", b"From: bob@desk.test\nFrom: bob"), "desk.test",
                 via_mta=True, **common) is None, "two From fields: whose would it be?"
    assert proof(raw.replace(b"\n", b"\r\n", 1), "desk.test", via_mta=True, **common) is None


def _send_from(port: int, source: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10) as c:
        c.sendmail("bob@desk.test", ["support@localhost"], raw)


def test_a_forged_results_header_sent_straight_to_the_listener_proves_nothing(
        daemon: Callable[..., Daemon]) -> None:
    """Against a real `maildesk serve`: the same Authentication-Results header counts when
    it comes from the MTA named in trusted_relays (127.0.0.2 here) and is nothing when
    anyone else connects and writes it (127.0.0.1)."""
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.1, source_address=("127.0.0.2", 0))
    except ConnectionRefusedError:
        pass
    except OSError as e:
        pytest.skip(f"cannot send from 127.0.0.2 here: {e}")
    d = daemon(desk=DESK | {"trusted_relays": ["127.0.0.2"], "verify_dkim": False})
    _send_from(d.port, "127.0.0.1", mail())

    def show_cli() -> dict[str, Any]:
        r = run_cli("tickets", "show", "MD-1", "--format", "json", config=d.config)
        return json.loads(r.stdout) if r.returncode == 0 else {}
    wait_for(lambda: show_cli().get("ref") == "MD-1", what="MD-1")
    for n, source in enumerate(("127.0.0.1", "127.0.0.2")):
        _send_from(d.port, source, (
            "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test\n"
            f"From: bob@desk.test\nTo: support@localhost\nSubject: Re: [MD-1] x\n"
            f"Message-ID: <ar{n}@desk.test>\n\n#tag +from-{source}\n").encode())
    t = wait_for(lambda: (lambda t: t if "commands.applied" in [
        e["kind"] for e in t.get("events", [])] else None)(show_cli()), what="the MTA's mail")
    assert t["tags"] == ["from-127.0.0.2"]
    other = json.loads(run_cli("tickets", "show", "MD-2", "--format", "json",
                               config=d.config).stdout)
    assert other["requester"] == "bob@desk.test", "the forgery: a stranger's ticket"
    assert "sender.unverified" in [e["kind"] for e in other["events"]]


def test_agents_and_tickets_show_say_sender_not_verified(
        desk: App, desk_config: Callable[..., Path], db_url: str) -> None:
    """The forged reply reaches the ticket and its agents (nothing is lost), marked; the
    customer's genuine reply (to their reply address) is not."""
    app = desk
    for n, to in enumerate(("support@localhost", tok(app, "MD-1", "ana@customer.test"))):
        ingest(app, [(mail(subject="Re: [MD-1] Printer", body=f"Reply {n}.\n", to=to), PIPE)])
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).where(
            OutboxMail.template == "agent_notification").order_by(OutboxMail.id)).all()
    notices = [app.blobs.get(d).decode() for d in digests]
    forged, genuine = [t for t in notices if "Reply 0." in t], [t for t in notices
                                                               if "Reply 1." in t]
    assert forged and genuine
    assert all("SENDER NOT VERIFIED" in t for t in forged)
    assert not any("SENDER NOT VERIFIED" in t for t in genuine)
    messages = show(app, "MD-1")["messages"]
    assert [m["sender_verified"] for m in messages if m["direction"] == "in"] == \
        [False, False, True], "a first mail without DKIM is a plain From too"
    shown = run_cli("tickets", "show", "MD-1", config=desk_config(db_url, desk=DESK)).stdout
    assert shown.count(b"(sender not verified)") == 2, shown.decode()


def test_rules_can_treat_unverified_senders_apart(make_app: Callable[..., App], db_url: str,
                                                 tmp_path: Path,
                                                 dkim_key: tuple[bytes, bytes]) -> None:
    rules = tmp_path / "identity.yaml"
    rules.write_text("- name: resets need a verified sender\n  on: [ticket.created]\n"
                     "  if:\n    sender_verified: false\n"
                     "  then:\n    - tags: {add: [verify-caller]}\n")
    app = make_app(db_url, desk=DESK, rules=[str(rules)])
    app.dns = dns_stub(dkim_key[1])
    plain = mail(subject="Reset my password", sender="Bob <bob@desk.test>")
    ingest(app, [(plain, PIPE)])
    ingest(app, [(signed(plain.replace(b"Message-ID: <", b"Message-ID: <2"), dkim_key[0]),
                  PIPE)])
    assert show(app, "MD-1")["tags"] == ["verify-caller"]
    assert show(app, "MD-2")["tags"] == [], "signed by its domain: verified"


def test_dkim_keys_are_asked_of_dns_once_an_hour() -> None:
    from maildesk.mail.authentication import KeyCache
    asked: list[bytes] = []

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        asked.append(name)
        if name.startswith(b"broken"):
            raise OSError("resolver down")
        return b"v=DKIM1; p=x" if name.startswith(b"k") else None
    cache = KeyCache(lookup, size=4)
    for _ in range(3):
        assert cache(b"k1._domainkey.a.test") == b"v=DKIM1; p=x"
        assert cache(b"missing._domainkey.a.test") is None
        assert cache(b"broken._domainkey.a.test") is None
    assert len(asked) == 3, "each name once"
    for n in range(10):
        cache(f"k{n}._domainkey.b.test".encode())
    assert len(cache._kept) <= 4


def _relayed(app: App) -> list[bytes]:
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).where(
            OutboxMail.template == "agent.reply").order_by(OutboxMail.id)).all()
    return [app.blobs.get(d) for d in digests]


def test_attachments_hand_over_no_token_and_mails_go_as_mails(desk: App) -> None:
    """Found by a tester: the relay redacted the text but passed on an attached (forwarded)
    notification and a text file naming the note address; the customer then acted as
    the agent. An attached mail also went out base64, which RFC 2046 forbids."""
    app = desk
    with app.sessions() as s:
        digests = s.scalars(select(OutboxMail.digest).where(
            OutboxMail.template == "agent_notification")).all()
    notice = app.blobs.get(digests[0])
    note, reply = tok(app, "MD-1", "bob@desk.test", "note"), tok(app, "MD-1", "bob@desk.test")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Bob <bob@desk.test>", reply, "Re: [MD-1] Printer"
    m["Message-ID"] = "<bob-final@bob-laptop.corp.internal>"
    m.set_content("Fixed; notes attached.\n")
    m.add_attachment(notice, maintype="message", subtype="rfc822", filename="notice.eml")
    m.add_attachment(f"Ask me at {note} if it jams.\n".encode(), maintype="text",
                     subtype="plain", filename="notes.txt")
    m.add_attachment(b"From: vendor@example.com\r\nSubject: spare tray\r\n\r\nOn its way.\r\n",
                     maintype="message", subtype="rfc822", filename="vendor.eml")
    m.add_attachment(b"%PDF-1.4 manual", maintype="application", subtype="pdf",
                     filename="manual.pdf")
    m.add_attachment(f"<x>{note}</x>".encode("utf-16"), maintype="text", subtype="xml",
                     filename="wide.xml")         # UTF-16: no ASCII reading finds the code
    ingest(app, [(bytes(m), PIPE)])
    raw = _relayed(app)[-1]
    out = message_from_bytes(raw, policy=policy.default)
    assert not re.search(rb"\+md-1-[a-z2-7]{8,}", raw.split(b"\n\n", 1)[1].lower()), \
        "a token in the body or an attachment"
    names = {p.get_filename(): p for p in out.iter_attachments()}
    assert set(names) == {"notes.txt", "vendor.eml", "manual.pdf"}
    assert "-removed@" in names["notes.txt"].get_content()
    vendor = names["vendor.eml"]
    assert vendor.get_content_type() == "message/rfc822" and vendor["Content-Transfer-Encoding"] \
        == "7bit" and vendor.get_content()["Subject"] == "spare tray"
    withheld = [e for e in show(app, "MD-1")["events"] if e["kind"] == "attachment.withheld"]
    assert withheld and withheld[0]["data"]["files"] == ["notice.eml", "wide.xml"]
    # and nothing of the agent's own mail, nor the notifications to agents, goes along
    assert b"corp.internal" not in raw and b"bob-final" not in raw
    with app.sessions() as s:
        notices = set(s.scalars(select(OutboxMail.message_id).where(
            OutboxMail.template == "agent_notification")))
    threading_ids = f"{out['In-Reply-To']} {out['References']}"
    assert not [n for n in notices if n in threading_ids], threading_ids
    assert [m["proof"] for m in show(app, "MD-1")["messages"]
            if m["from"] == "bob@desk.test"] == ["token"], "an agent's proof is recorded too"


@pytest.mark.parametrize("relays, said", [
    (["999.1.1.1"], "not an IP address or network"),
    (["0.0.0.0/0"], "is every address"),
    (["::/0"], "is every address"),
])
def test_a_bad_trusted_relay_is_named_in_one_line(desk_config: Callable[..., Path],
                                                  relays: list[str], said: str) -> None:
    r = run_cli("config", "check", config=desk_config(desk={"trusted_relays": relays}))
    assert r.returncode != 0 and said in r.stderr.decode() and b"Traceback" not in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1, r.stderr
