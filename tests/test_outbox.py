"""Outbox delivery through a real SMTP relay (aiosmtpd), and the listener's 451."""
from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import free_port, mail
from sqlalchemy import select, update

from maildesk.app import App
from maildesk.intake import smtp as listener
from maildesk.intake.inbound import Envelope
from maildesk.notify.delivery import SmtpTransport, backoff, deliver_due
from maildesk.pipeline.run import ingest
from maildesk.store.db import make_engine
from maildesk.store.models import DeliveryAttempt, Event, OutboxMail


class Relay:
    """A relay that answers what the test tells it to, and keeps what it accepted."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = self.answers.pop(0) if self.answers else "250 2.0.0 Ok"
        if answer.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                   envelope.original_content))
        return answer


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield handler, port
    ctl.stop()


def relay_app(make_app: Callable[..., App], db_url: str, port: int) -> App:
    return make_app(db_url, outbox={"transport": "smtp", "retry_base": 30, "retry_max": 600,
                                    "max_attempts": 3,
                                    "relay": {"host": "127.0.0.1", "port": port,
                                              "starttls": False}})


def rows(app: App) -> list[OutboxMail]:
    with app.sessions() as s:
        return list(s.scalars(select(OutboxMail).order_by(OutboxMail.id)))


def make_due(app: App) -> None:
    with app.sessions.begin() as s:
        s.execute(update(OutboxMail).values(next_attempt_at=datetime.now(timezone.utc)))


def test_relay_delivers_and_records_the_attempt(make_app: Callable[..., App], db_url: str,
                                                relay: tuple[Relay, int]) -> None:
    handler, port = relay
    app = relay_app(make_app, db_url, port)
    ingest(app, [(mail(), Envelope("pipe", None))])
    r = deliver_due(app, SmtpTransport(app.settings.outbox.relay))
    assert (r.sent, r.retried, r.failed) == (1, 0, 0)
    mail_from, rcpts, raw = handler.received[0]
    assert mail_from.startswith("support+bounce-md-1-") and rcpts == ["ana@customer.test"]
    m = message_from_bytes(raw, policy=policy.default)
    assert m["Subject"] == "[MD-1] Printer on floor 2 is jammed"
    assert rows(app)[0].status == "sent" and rows(app)[0].sent_at is not None
    with app.sessions() as s:
        assert [a.result for a in s.scalars(select(DeliveryAttempt))] == ["sent"]


def test_4xx_is_retried_with_backoff_then_5xx_fails(make_app: Callable[..., App], db_url: str,
                                                     relay: tuple[Relay, int]) -> None:
    handler, port = relay
    app = relay_app(make_app, db_url, port)
    ingest(app, [(mail(), Envelope("pipe", None))])
    handler.answers = ["451 4.3.0 try later", "550 5.1.1 no such user"]
    before = datetime.now(timezone.utc)
    r = deliver_due(app, SmtpTransport(app.settings.outbox.relay))
    assert (r.sent, r.retried) == (0, 1)
    row = rows(app)[0]
    assert row.status == "queued" and row.attempts == 1 and "451" in (row.last_error or "")
    assert row.next_attempt_at >= before + timedelta(seconds=29)
    assert deliver_due(app, SmtpTransport(app.settings.outbox.relay)).sent == 0, "not due yet"
    make_due(app)
    r = deliver_due(app, SmtpTransport(app.settings.outbox.relay))
    assert r.failed == 1
    row = rows(app)[0]
    assert row.status == "failed" and "550" in (row.last_error or "")
    with app.sessions() as s:
        assert [a.result for a in s.scalars(select(DeliveryAttempt).order_by(DeliveryAttempt.id))] \
            == ["retry", "failed"]
        ev = s.scalars(select(Event).where(Event.kind == "delivery.failed")).one()
        assert ev.data["to"] == ["ana@customer.test"] and "550" in ev.data["reason"]
    assert handler.received == []


def test_unreachable_relay_is_a_retry_until_max_attempts(make_app: Callable[..., App]) -> None:
    app = relay_app(make_app, "", free_port())
    ingest(app, [(mail(), Envelope("pipe", None))])
    for _ in range(3):
        make_due(app)
        deliver_due(app, SmtpTransport(app.settings.outbox.relay))
    row = rows(app)[0]
    assert row.status == "failed" and row.attempts == 3
    assert "ConnectionRefusedError" in (row.last_error or "")


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 60, 600).total_seconds() for n in range(1, 7)] == \
        [60, 120, 240, 480, 600, 600]


def test_listener_answers_451_when_the_database_is_down(make_app: Callable[..., App]) -> None:
    """A sender must retry, not believe us, when the commit did not happen."""
    app = make_app()
    app.engine = make_engine("postgresql+psycopg://root@127.0.0.1:1/nowhere")
    loop = asyncio.new_event_loop()
    sessions = listener.Sessions(total=10, per_client=5)
    app.settings = app.settings.model_copy(update={
        "smtp": app.settings.smtp.model_copy(update={"port": free_port()})})
    server = loop.run_until_complete(listener.start(app, lambda: None, sessions))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", app.settings.smtp.port, timeout=30) as s, \
                pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("ana@customer.test", ["support@localhost"],
                       mail().replace(b"\n", b"\r\n"))
        assert e.value.smtp_code == 451 and e.value.smtp_error.startswith(b"4.3.0")
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
