"""Outbox delivery through a real SMTP relay (aiosmtpd) and into a real maildir: claims,
retries, a full disk, a crash between delivering and recording; and the listener's 451."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import free_port, mail, run_cli
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from maildesk.app import App
from maildesk.intake import smtp as listener
from maildesk.intake.inbound import Envelope
from maildesk.notify import delivery
from maildesk.notify.delivery import (
    MaildirTransport,
    Permanent,
    SmtpTransport,
    Transient,
    backoff,
    classify,
    deliver_due,
    mail_key,
)
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
    assert (r.sent, r.deferred, r.failed) == (1, 0, 0)
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
    assert (r.sent, r.deferred) == (0, 1)
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
    # the listener writes through the store's engine (in `serve`, its process's own); the
    # blob store's engine reads what it stores: both point at a database nobody answers
    nowhere = "postgresql+psycopg://root@127.0.0.1:1/nowhere"
    app.engine = app.blobs.engine = make_engine(nowhere)
    loop = asyncio.new_event_loop()
    sessions = listener.Sessions(total=10, per_client=5)
    app.settings = app.settings.model_copy(update={
        "smtp": app.settings.smtp.model_copy(update={"port": free_port()}),
        "database": app.settings.database.model_copy(update={"url": nowhere})})
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
        loop.close()
        app.engine.dispose()


# -- the maildir: a full disk, a crash between delivering and recording, two senders -------

def delivered(app: App) -> list[Path]:
    return sorted((app.settings.outbox_maildir / "new").iterdir())


def test_a_full_disk_defers_the_mail_and_it_goes_once_there_is_room(
        make_app: Callable[..., App], db_url: str) -> None:
    """A real ENOSPC from the kernel: the maildir's temporary file for this mail is
    /dev/full. Before, any OSError failed the mail for good."""
    app = make_app(db_url)
    ingest(app, [(mail(), Envelope("pipe", None))])
    [row] = rows(app)
    tmp = app.settings.outbox_maildir / "tmp"
    tmp.mkdir(parents=True)
    full = tmp / f"{mail_key({'id': row.id, 'message_id': row.message_id})}.maildesk"
    full.symlink_to("/dev/full")
    r = deliver_due(app, delivery.make_transport(app))
    assert (r.sent, r.deferred, r.failed) == (0, 1, 0)
    [row] = rows(app)
    assert row.status == "queued" and row.attempts == 1
    assert "No space left on device" in (row.last_error or "")
    assert delivered(app) == []
    full.unlink()                                  # the operator made room
    make_due(app)
    r = deliver_due(app, delivery.make_transport(app))
    assert (r.sent, r.deferred, r.failed) == (1, 0, 0)
    assert rows(app)[0].status == "sent" and len(delivered(app)) == 1


def test_a_mail_written_but_not_recorded_is_not_written_again(
        make_app: Callable[..., App], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk filled up (or the process died) after the maildir file was written and
    before `sent` was committed: the next attempt finds the file and writes no copy."""
    app = make_app(db_url)
    ingest(app, [(mail(), Envelope("pipe", None))])
    record = delivery._record

    def full(*args: Any) -> Any:
        monkeypatch.setattr(delivery, "_record", record)
        raise OperationalError("UPDATE outbox", {}, Exception("database or disk is full"))
    monkeypatch.setattr(delivery, "_record", full)
    with pytest.raises(OperationalError):
        deliver_due(app, delivery.make_transport(app))
    assert len(delivered(app)) == 1
    [row] = rows(app)
    assert row.status == "sending", "claimed, its result not recorded"
    assert deliver_due(app, delivery.make_transport(app)).sent == 0, "leased: not due yet"
    make_due(app)                                   # the lease ran out
    r = deliver_due(app, delivery.make_transport(app))
    assert (r.sent, r.deferred, r.failed) == (1, 0, 0)
    assert len(delivered(app)) == 1, "one copy"
    [row] = rows(app)
    assert row.status == "sent" and row.attempts == 2
    with app.sessions() as s:
        [attempt] = s.scalars(select(DeliveryAttempt)).all()
    assert attempt.result == "sent" and "earlier attempt" in attempt.detail


def test_a_mail_a_reader_took_is_not_written_again(tmp_path: Path) -> None:
    box = MaildirTransport(tmp_path / "md")
    box.send(b"Subject: x\n\nhi\n", "desk@d.test", ["ana@c.test"], "outbox7_ab")
    [new] = (tmp_path / "md" / "new").iterdir()
    new.rename(tmp_path / "md" / "cur" / f"{new.name}:2,S")     # a mail client read it
    assert "earlier attempt" in box.send(b"x", "desk@d.test", ["ana@c.test"], "outbox7_ab")
    assert list((tmp_path / "md" / "new").iterdir()) == []


class Recorder:
    """A transport that keeps the key of every mail it is handed, slowly."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def send(self, raw: bytes, envelope_from: str, to: list[str], key: str) -> str:
        time.sleep(0.005)
        self.keys.append(key)
        return "recorded"

    def close(self) -> None:
        pass


def test_two_senders_at_once_never_send_one_mail_twice(make_app: Callable[..., App],
                                                       db_url: str) -> None:
    """A daemon and a cron `outbox send`, or two crons, on one database."""
    first = make_app(db_url)
    ingest(first, [(mail(subject=f"printer {i}"), Envelope("pipe", None)) for i in range(40)])
    apps = [first, make_app(db_url)]
    keys: list[str] = []
    start = threading.Barrier(2)
    results: list[delivery.RunResult] = []

    def sender(app: App) -> None:
        start.wait()
        results.append(deliver_due(app, Recorder(keys), limit=5))
    threads = [threading.Thread(target=sender, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(keys) == 40 and len(set(keys)) == 40
    assert sum(r.sent for r in results) == 40
    assert {r.status for r in rows(first)} == {"sent"}


def test_a_sender_that_dies_leaves_few_mails_to_wait_for_its_lease(
        make_app: Callable[..., App], db_url: str) -> None:
    """A sender killed mid-send holds its claim until LEASE runs out: what it claimed at
    once waits that long, so it claims a few at a time, and the next sender (the restarted
    daemon) takes the rest at once."""
    app = make_app(db_url)
    ingest(app, [(mail(subject=f"printer {i}"), Envelope("pipe", None)) for i in range(40)])

    class Dying(Recorder):
        def send(self, raw: bytes, envelope_from: str, to: list[str], key: str) -> str:
            raise KeyboardInterrupt        # as a kill: no code of the sender's runs after
    with pytest.raises(KeyboardInterrupt):
        deliver_due(app, Dying([]))
    assert [r.status for r in rows(app)].count("sending") == delivery.CLAIM <= 10
    keys: list[str] = []
    assert deliver_due(app, Recorder(keys)).sent == 40 - delivery.CLAIM


def test_a_sender_whose_lease_ran_out_does_not_record_over_the_next(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    ingest(app, [(mail(), Envelope("pipe", None))])
    [stale] = delivery._claim(app, datetime.now(timezone.utc), 10)
    make_due(app)                                   # its lease ran out
    assert deliver_due(app, Recorder([])).sent == 1
    assert delivery._record(app, stale, "transient", "451 too late") is None
    [row] = rows(app)
    assert row.status == "sent" and row.last_error is None


@pytest.mark.parametrize("code, kind", [
    (errno.ENOSPC, Transient), (errno.EDQUOT, Transient), (errno.EIO, Transient),
    (errno.EAGAIN, Transient), (errno.EACCES, Transient), (errno.ECONNREFUSED, Transient),
    (errno.ETIMEDOUT, Transient), (errno.EFBIG, Permanent)])
def test_an_oserror_fails_a_mail_only_when_the_mail_is_the_cause(code: int,
                                                                  kind: type) -> None:
    assert classify(OSError(code, os.strerror(code))) is kind


# -- the operator's commands: without the daemon ----------------------------------------

def relay_config(desk_config: Callable[..., Path], db_url: str, port: int) -> Path:
    return desk_config(db_url, outbox={"transport": "smtp", "retry_base": 3600,
                                       "relay": {"host": "127.0.0.1", "port": port,
                                                 "starttls": False}})


def test_outbox_send_show_and_retry(desk_config: Callable[..., Path], db_url: str,
                                    relay: tuple[Relay, int], tmp_path: Path) -> None:
    handler, port = relay
    cfg = relay_config(desk_config, db_url, port)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.eml")
        files[-1].write_bytes(mail(subject=f"printer {i}"))
    assert run_cli("ingest", *map(str, files), config=cfg).returncode == 0
    handler.answers = ["250 2.0.0 Ok", "550 5.1.1 no such user", "451 4.3.0 try later"]
    r = run_cli("outbox", "send", "--format", "json", config=cfg)
    assert r.returncode == 69, r.stderr
    assert json.loads(r.stdout) == {"sent": 1, "deferred": 1, "failed": 1, "lost_claim": 0}
    assert b"\nmaildesk: 1 mail(s) could not be delivered, for good" in r.stderr
    failed = json.loads(run_cli("outbox", "show", "2", "--format", "json", config=cfg).stdout)
    assert failed["status"] == "failed" and "550" in failed["last_error"]
    assert failed["to"] == ["ana@customer.test"] and failed["ticket"] == "MD-2"
    assert [a["result"] for a in failed["delivery_attempts"]] == ["failed"]
    assert ["Subject", "[MD-2] printer 1"] in failed["headers"]
    shown = run_cli("outbox", "show", "3", config=cfg)
    assert shown.returncode == 0
    assert b"status: queued (deferred)" in shown.stdout and b"451 4.3.0" in shown.stdout
    assert b"next attempt: 20" in shown.stdout
    raw = run_cli("outbox", "show", "1", "--raw", config=cfg).stdout
    assert raw == handler.received[0][2].replace(b"\r\n", b"\n")
    assert run_cli("outbox", "send", config=cfg).stdout == b"0 sent, 0 deferred, 0 failed\n", \
        "the deferred mail is not due yet"
    r = run_cli("outbox", "retry", "1", "2", "3", config=cfg)
    assert r.returncode == 66 and r.stdout == b"due now: 2 of 3\n", "1 was sent: left alone"
    r = run_cli("outbox", "send", config=cfg)
    assert r.returncode == 0 and r.stdout == b"2 sent, 0 deferred, 0 failed\n"
    assert sorted(m[2].count(b"printer") > 0 for m in handler.received) == [True] * 3
    listed = json.loads(run_cli("outbox", "list", "--format", "json", config=cfg).stdout)
    assert [(m["status"], m["attempts"]) for m in listed] == \
        [("sent", 1), ("sent", 1), ("sent", 2)]


def test_jobs_run_delivers_the_outbox(desk_config: Callable[..., Path], db_url: str,
                                      tmp_path: Path) -> None:
    """Pipe intake and cron, no daemon: the acknowledgement leaves with `jobs run`."""
    cfg = desk_config(db_url)
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    r = run_cli("jobs", "run", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[-1] == {"job": "outbox", "ran": True, "result": "1 sent"}
    assert len(list((tmp_path / "data" / "outbox" / "new").iterdir())) == 1
    listed = json.loads(run_cli("outbox", "list", "--format", "json", config=cfg).stdout)
    assert [m["status"] for m in listed] == ["sent"]
