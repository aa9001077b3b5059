"""Delivering outbox mail: to a maildir (the embedded default) or an SMTP relay.

A transport raises Transient for what may work later (4xx, network trouble)
and Permanent for what never will (5xx); deliver_due() turns that into
retries with capped exponential backoff, or a failed mail, and records every
attempt. A mail is leased before it is sent, so a crash mid-send means at
most one duplicate with the same Message-ID, never a lost mail.
"""
from __future__ import annotations

import logging
import os
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import and_, insert, select, update

from ..config.schema import Relay
from ..errors import MaildeskError
from ..mail.compose import ascii_address
from ..mail.parse import clean_address
from ..store.handle import Store
from ..store.models import DeliveryAttempt, Event, OutboxMail

log = logging.getLogger("maildesk.outbox")
T_OUTBOX, T_ATTEMPTS, T_EVENTS = OutboxMail.__table__, DeliveryAttempt.__table__, Event.__table__
LEASE = timedelta(minutes=10)
_CRLF = re.compile(rb"\r?\n")


class Transient(MaildeskError):
    pass


class Permanent(MaildeskError):
    pass


class Transport(Protocol):
    def send(self, raw: bytes, envelope_from: str, to: list[str]) -> str: ...
    def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a maildir, so a new desk can read what it would send."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self.count = 0

    def send(self, raw: bytes, envelope_from: str, to: list[str]) -> str:
        self.count += 1
        name = f"{time.time_ns()}.M{self.count}P{os.getpid()}.{socket.gethostname()}"
        head = (f"Return-Path: <{envelope_from}>\n"
                f"X-Envelope-To: {', '.join(to)}\n").encode()
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(head + raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "new" / name)
        fd = os.open(self.path / "new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return f"written to {self.path / 'new' / name}"

    def close(self) -> None:
        pass


class SmtpTransport:
    """One connection to the relay, reused for a run of deliveries."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        r = self.relay
        conn = smtplib.SMTP(r.host, r.port, timeout=r.timeout)
        conn.ehlo()
        if r.starttls:
            conn.starttls(context=ssl.create_default_context())
            conn.ehlo()
        if r.username:
            conn.login(r.username, r.secret() or "")
        return conn

    def send(self, raw: bytes, envelope_from: str, to: list[str]) -> str:
        rcpts = [ascii_address(clean_address(a)) for a in to]
        if not all(rcpts) or (envelope_from and not clean_address(envelope_from)):
            raise Permanent(f"malformed address in envelope: {envelope_from!r} -> {to!r}")
        utf8 = not (raw.isascii() and all(a.isascii() for a in rcpts))
        try:
            if self.conn is None:
                self.conn = self._connect()
            options: list[str] = []
            if utf8:
                if not self.conn.has_extn("smtputf8"):
                    raise Permanent(
                        f"{', '.join(a for a in rcpts if not a.isascii()) or 'the mail'}: an "
                        f"internationalised address (RFC 6532), and the relay "
                        f"{self.relay.host}:{self.relay.port} does not offer SMTPUTF8")
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            # stored mail has LF line ends; on the wire every line ends in CRLF
            refused = self.conn.sendmail(envelope_from, rcpts, _CRLF.sub(b"\r\n", raw),
                                         mail_options=options)
        except smtplib.SMTPRecipientsRefused as e:
            self.close()
            codes = [c for c, _m in e.recipients.values()]
            detail = "; ".join(f"{a}: {c} {m.decode(errors='replace')}"
                               for a, (c, m) in e.recipients.items())
            raise (Transient if all(400 <= c < 500 for c in codes) else Permanent)(detail) from e
        except Permanent:
            raise
        except smtplib.SMTPResponseException as e:
            self.close()
            said = e.smtp_error
            text = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
            msg = f"{e.smtp_code} {text}"
            raise (Transient if 400 <= e.smtp_code < 500 else Permanent)(msg) from e
        except (OSError, smtplib.SMTPException) as e:
            self.close()
            raise Transient(f"relay {self.relay.host}:{self.relay.port}: "
                            f"{type(e).__name__}: {e}") from e
        if refused:
            return f"accepted for some recipients; refused: {refused}"
        return f"accepted by {self.relay.host}:{self.relay.port}"

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self.conn = None


def make_transport(app: Store) -> Transport:
    s = app.settings
    if s.outbox.transport == "smtp":
        return SmtpTransport(s.outbox.relay)
    return MaildirTransport(s.outbox_maildir)


@dataclass
class RunResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0


def backoff(attempts: int, base: float, cap: float) -> timedelta:
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


def _claim(app: Store, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Lease due mail: whoever crashes holding it loses the lease, not the mail. The rows
    are as SQLAlchemy hands them: a value per column, of the column's type."""
    with app.engine.begin() as conn:
        q = select(T_OUTBOX).where(and_(T_OUTBOX.c.status == "queued",
                                        T_OUTBOX.c.next_attempt_at <= now)) \
            .order_by(T_OUTBOX.c.next_attempt_at, T_OUTBOX.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = [dict(r) for r in conn.execute(q).mappings()]
        if rows:
            conn.execute(update(T_OUTBOX).where(T_OUTBOX.c.id.in_([r["id"] for r in rows]))
                         .values(next_attempt_at=now + LEASE))
    return rows


def deliver_due(app: Store, transport: Transport, limit: int = 100) -> RunResult:
    result = RunResult()
    cfg = app.settings.outbox
    while True:
        now = datetime.now(timezone.utc)
        rows = _claim(app, now, limit)
        if not rows:
            break
        for row in rows:
            attempts = int(row["attempts"]) + 1
            values: dict[str, object] = {"attempts": attempts}
            try:
                detail = transport.send(app.blobs.get(str(row["digest"])),
                                        str(row["envelope_from"]), list(row["to"]))
                outcome = "sent"
                values |= {"status": "sent", "sent_at": datetime.now(timezone.utc),
                           "last_error": None}
                result.sent += 1
            except Transient as e:
                detail = str(e)
                if attempts >= cfg.max_attempts:
                    outcome, values["status"] = "failed", "failed"
                    result.failed += 1
                else:
                    outcome = "retry"
                    values["next_attempt_at"] = now + backoff(attempts, cfg.retry_base,
                                                              cfg.retry_max)
                    result.retried += 1
                values["last_error"] = detail
            except (Permanent, OSError) as e:
                detail = str(e)
                outcome = "failed"
                values |= {"status": "failed", "last_error": detail}
                result.failed += 1
            with app.engine.begin() as conn:
                conn.execute(update(T_OUTBOX).where(T_OUTBOX.c.id == row["id"]).values(values))
                conn.execute(insert(T_ATTEMPTS).values(outbox_id=row["id"], at=now,
                                                       result=outcome, detail=detail[:2000]))
                if outcome == "failed" and row["ticket_id"] is not None:
                    conn.execute(insert(T_EVENTS).values(
                        ticket_id=row["ticket_id"], kind="delivery.failed", at=now, actor=None,
                        data={"to": row["to"], "message_id": row["message_id"],
                              "reason": detail[:500], "attempts": attempts}))
            if outcome != "sent":
                log.warning("outbox mail %s to %s: %s (%s)", row["id"], ", ".join(row["to"]),
                            outcome, detail)
        if len(rows) < limit:
            break
    transport.close()
    return result


def next_due(app: Store) -> datetime | None:
    with app.engine.connect() as conn:
        return conn.scalar(select(T_OUTBOX.c.next_attempt_at)
                           .where(T_OUTBOX.c.status == "queued")
                           .order_by(T_OUTBOX.c.next_attempt_at).limit(1))
