"""Mutated mail through the whole intake: every mail ends somewhere named, nothing raises,
and an SMTP client always gets an answer; a flood gets one acknowledgement.

Seeds are the problem-mail corpus (tests/mails) and a plain mail; hypothesis flips,
cuts, repeats and splices their bytes and headers.
"""
from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Daemon, mail, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import Inbound, OutboxMail, Ticket

CORPUS = Path(__file__).parent / "mails"
SEEDS = [mail(), *(p.read_bytes().replace(b"@@DESK@@", b"support@localhost")
                   .replace(b"@@MESSAGE_ID@@", b"<md-1.x@localhost>")
                   .replace(b"@@RETURN_PATH@@", b"support+bounce-md-1-x@localhost")
                   for p in sorted(CORPUS.glob("*/*.eml")))]
ENDS = {"ticketed", "duplicate", "refused", "quarantined", "spam", "loop", "bounce",
        "auto-reply", "bulk"}
NASTY = [b"\x00", b"\r", b"\n", b"\r\n\r\n", b"--", b"=?utf-8?q?=0D=0A?=", b"\xff\xfe",
         b"Content-Type: multipart/mixed; boundary=\"\"\n", b"Content-Type: message/rfc822\n\n",
         b"Content-Transfer-Encoding: base64\n", b"charset=\"x-nope\"", b"=\n", b"<", b">",
         b"From: \n", b"Message-ID: <>\n", b"Subject: " + b"x" * 5000 + b"\n", b"\xc3"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        if op == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at:at + draw(st.integers(1, 400))]
        elif op == "insert":
            raw[at:at] = draw(st.sampled_from(NASTY) | st.binary(max_size=40))
        elif op == "repeat":
            end = draw(st.integers(at, min(len(raw), at + 300)))
            raw[at:at] = raw[at:end] * draw(st.integers(2, 20))
        elif op == "truncate":
            del raw[at:]
    return bytes(raw)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raws=st.lists(mutated(), min_size=1, max_size=4),
       null_sender=st.booleans())
def test_mutated_mail_always_ends_somewhere_named(make_app: Callable[..., App],
                                                  raws: list[bytes], null_sender: bool) -> None:
    app = getattr(test_mutated_mail_always_ends_somewhere_named, "app", None) or make_app()
    test_mutated_mail_always_ends_somewhere_named.app = app  # type: ignore[attr-defined]
    env = Envelope("smtp", "" if null_sender else "fuzz@customer.test", ("support@localhost",))
    with app.sessions() as s:
        before = s.scalar(select(func.max(Inbound.id))) or 0
    summary = ingest(app, [(r, env) for r in raws])
    assert sum(summary.as_dict().values()) == len(raws)
    with app.sessions() as s:
        states = s.scalars(select(Inbound.state).where(Inbound.id > before)).all()
    assert len(states) == len(raws) and set(states) <= ENDS, states


@pytest.fixture
def smtp_desk(daemon: Callable[..., Daemon]) -> Daemon:
    return daemon(desk={"ack_window": 3600, "flood_limit": 20, "flood_window": 600})


def _engine(d: Daemon):  # type: ignore[no-untyped-def]
    return create_engine(f"sqlite:///{d.config.parent / 'data' / 'maildesk.db'}")


def _settled(d: Daemon) -> bool:
    eng = _engine(d)
    with eng.connect() as c:
        queued = c.scalar(select(func.count()).select_from(Inbound)
                          .where(Inbound.state == "queued"))
    eng.dispose()
    return queued == 0


def test_smtp_answers_every_mutated_mail_and_command(smtp_desk: Daemon) -> None:
    port = smtp_desk.port

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(raw=mutated(), command=st.binary(max_size=300).filter(
        lambda b: b"\n" not in b and b"\r" not in b))
    def check(raw: bytes, command: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.ehlo()
            assert c.sock is not None
            c.sock.sendall(command + b"\r\n")
            code, _ = c.getreply()
            assert 200 <= code < 600, "a reply to any command line"
            c.rset()
            try:
                c.sendmail("fuzz@customer.test", ["support@localhost"], raw)
            except smtplib.SMTPResponseException as e:   # an answer, if not a 250
                assert 400 <= e.smtp_code < 600
            except smtplib.SMTPRecipientsRefused as e:
                assert all(400 <= code < 600 for code, _m in e.recipients.values())
    check()
    wait_for(lambda: _settled(smtp_desk), 120, "every accepted mail processed")
    assert smtp_desk.proc is not None and smtp_desk.proc.poll() is None, "still running"


def test_a_flood_of_1000_mails_by_smtp_gets_bounded_acknowledgements(smtp_desk: Daemon) -> None:
    start = time.monotonic()
    with smtplib.SMTP("127.0.0.1", smtp_desk.port, timeout=60) as c:
        for i in range(1000):
            raw = mail(subject=f"ALERT disk full on host {i}", sender="monitor@customer.test",
                       message_id=f"<alert{i}@monitor.customer.test>")
            c.sendmail("monitor@customer.test", ["support@localhost"], raw)
    wait_for(lambda: _settled(smtp_desk), 180, "the flood processed")
    eng = _engine(smtp_desk)
    with eng.connect() as c:
        tickets = c.scalar(select(func.count()).select_from(Ticket))
        acks = c.scalar(select(func.count()).select_from(OutboxMail)
                        .where(OutboxMail.template.like("acknowledgement%")))
        loops = c.scalar(select(func.count()).select_from(Inbound)
                         .where(Inbound.state == "loop"))
    eng.dispose()
    print(f"\n1000 mails by SMTP and processed in {time.monotonic() - start:.1f} s: "
          f"{tickets} tickets, {acks} acknowledgement(s), {loops} held as a loop")
    assert acks == 11, "desk.ack_limit (10) acknowledgements, then one notice of the limit"
    assert tickets == 20 and loops == 980, "the flood limit: 20 mails in 10 minutes"
