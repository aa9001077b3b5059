"""Delivering outbox mail: to a maildir (the embedded default) or an SMTP relay.

One delivery path for every sender: the daemon's outbox worker, `maildesk outbox
send` and `maildesk jobs run` all call deliver_due().

A transport raises Transient for what may work later (4xx, network trouble,
our own disk full or unwritable) and Permanent for what never will (5xx, a
message that cannot be written as it is); deliver_due() turns that into
retries with capped exponential backoff, or a failed mail, and records every
attempt. Each mail is claimed in the database before it is sent, with a
compare-and-set from `queued` to `sending` that counts the attempt and leases
it, so two senders (a daemon and a cron job, two daemons) never both take it;
the result is recorded only by the claim that is still current. A sender that
crashes mid-send loses the lease, not the mail. A maildir delivery is
idempotent (the file is named after the outbox row): an attempt that wrote the
mail but could not record it finds the file and does not write a second copy.
Over SMTP the same case means at most one duplicate with the same Message-ID.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update

from ..config.schema import Relay
from ..errors import MaildeskError
from ..logs import domain_of
from ..mail.compose import ascii_address
from ..mail.parse import clean_address
from ..store.blobs import BlobError, fsync_dir
from ..store.handle import Store
from ..store.models import DeliveryAttempt, Event, OutboxMail, Ticket

log = logging.getLogger("maildesk.outbox")
T_OUTBOX, T_ATTEMPTS, T_EVENTS = OutboxMail.__table__, DeliveryAttempt.__table__, Event.__table__
T_TICKETS = Ticket.__table__
LEASE = timedelta(minutes=10)
# Mails a sender claims at once: what a sender that dies (kill -9, a power cut) leaves
# leased to nobody until LEASE runs out. 100 at once left up to 100 acknowledgements ten
# minutes late after each crash; a claim of 10 costs one more small commit per 10 mails.
CLAIM = 10
_CRLF = re.compile(rb"\r?\n")


class Transient(MaildeskError):
    pass


class Permanent(MaildeskError):
    pass


# what an OSError says about the mail itself rather than about our disk or the network:
# larger than a file may be here. Anything else (ENOSPC, EDQUOT, EIO, EAGAIN, EACCES,
# EROFS, ECONNREFUSED, ETIMEDOUT, ...) may be mended, so the mail waits and is retried.
_THE_MAILS_FAULT = frozenset({errno.EFBIG, errno.EMSGSIZE})


def classify(e: OSError) -> type[Transient] | type[Permanent]:
    """Whether an OSError met while delivering a mail may go away: a full disk fails no
    mail for good, only retries it later."""
    return Permanent if e.errno in _THE_MAILS_FAULT else Transient


class Transport(Protocol):
    def send(self, raw: bytes, envelope_from: str, to: list[str], key: str) -> str:
        """Deliver one mail; key names it, the same on every attempt."""
        ...

    def close(self) -> None: ...


class MaildirTransport:
    """Writes each mail into a maildir, so a new desk can read what it would send. The file
    is named by the key of the mail, so a second attempt at a mail already written finds it
    (in new/, or in cur/ once a reader took it) and writes no second copy."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, raw: bytes, envelope_from: str, to: list[str], key: str) -> str:
        try:
            return self._write(raw, envelope_from, to, f"{key}.maildesk")
        except OSError as e:
            raise classify(e)(f"maildir {self.path}: {type(e).__name__}: {e}") from e

    def _write(self, raw: bytes, envelope_from: str, to: list[str], name: str) -> str:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        new = self.path / "new" / name
        if new.exists() or (self.path / "cur" / name).exists() \
                or any((self.path / "cur").glob(f"{name}:*")):
            fsync_dir(self.path / "new")        # the earlier rename may not be on disk yet
            return f"already in {self.path} (written by an earlier attempt)"
        head = (f"Return-Path: <{envelope_from}>\n"
                f"X-Envelope-To: {', '.join(to)}\n").encode()
        tmp = self.path / "tmp" / name          # a leftover of a failed attempt is replaced
        with open(tmp, "wb") as f:
            f.write(head + raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, new)
        fsync_dir(self.path / "new")
        return f"written to {new}"

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

    def send(self, raw: bytes, envelope_from: str, to: list[str], key: str) -> str:
        rcpts = [ascii_address(clean_address(a)) for a in to]
        if not all(rcpts) or (envelope_from and not clean_address(envelope_from)):
            raise Permanent(f"malformed address in envelope: {envelope_from!r} -> {to!r}")
        utf8 = not (raw.isascii() and envelope_from.isascii()
                    and all(a.isascii() for a in rcpts))
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
        return f"250 accepted by {self.relay.host}:{self.relay.port}"   # sendmail: 250 or raise

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
    deferred: int = 0           # a transient failure: queued again for a later attempt
    failed: int = 0             # for good: a permanent failure, or the last attempt
    lost_claim: int = 0         # taken over by another sender after our lease ran out
    # seconds from queued to sent, of each mail sent (the monitor's delivery latency)
    latencies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "deferred": self.deferred, "failed": self.failed,
                "lost_claim": self.lost_claim}


def backoff(attempts: int, base: float, cap: float) -> timedelta:
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempts - 1)))


# an outbox mail's life: queued (new, or deferred after a transient failure: it has a
# last_error), sending (claimed by a sender), then sent or failed
STATUSES = ("queued", "sending", "sent", "failed")
# a mail a sender may take: queued and due, or claimed by a sender whose lease ran out
_TAKEN = ("queued", "sending")


def count_due(app: Store, now: datetime) -> int:
    with app.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(T_OUTBOX).where(
            T_OUTBOX.c.status.in_(_TAKEN), T_OUTBOX.c.next_attempt_at <= now)) or 0)


def _claim(app: Store, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Claim due mail with one compare-and-set: queued (or sending with an expired lease)
    and due becomes sending, its attempt counted, leased until now + LEASE. Whoever crashes
    holding it loses the lease, not the mail. The rows are as SQLAlchemy hands them (a value
    per column, of the column's type), with the claim's attempts and lease."""
    due = T_OUTBOX.c.status.in_(_TAKEN), T_OUTBOX.c.next_attempt_at <= now
    with app.engine.begin() as conn:
        # the ids first, then the update: as a subquery of the UPDATE, PostgreSQL may run a
        # LIMIT ... FOR UPDATE SKIP LOCKED again for each row and claim every due mail
        ids = select(T_OUTBOX.c.id).where(*due) \
            .order_by(T_OUTBOX.c.next_attempt_at, T_OUTBOX.c.id).limit(limit)
        if conn.dialect.name == "postgresql":
            ids = ids.with_for_update(skip_locked=True)
        chosen = list(conn.execute(ids).scalars())
        if not chosen:
            return []
        claimed = conn.execute(
            update(T_OUTBOX).where(T_OUTBOX.c.id.in_(chosen), *due)
            .values(status="sending", attempts=T_OUTBOX.c.attempts + 1,
                    next_attempt_at=now + LEASE)
            .returning(*T_OUTBOX.c)).mappings().all()
    return sorted((dict(r) for r in claimed), key=lambda r: r["id"])


def mail_key(row: dict[str, Any]) -> str:
    """A mail's name for a transport: the same on every attempt, unique across desks."""
    digest = hashlib.sha256(str(row["message_id"]).encode()).hexdigest()[:16]
    return f"outbox{row['id']}_{digest}"


def _attempt(app: Store, transport: Transport, row: dict[str, Any]) -> tuple[str, str]:
    """One try at one mail: ("sent" | "transient" | "permanent", what happened)."""
    try:
        raw = app.blobs.get(str(row["digest"]))
    except BlobError as e:        # the bytes are damaged or gone: no attempt will mend them
        return "permanent", f"the mail's stored bytes: {e}"
    except OSError as e:
        return "transient", f"reading the mail's stored bytes: {type(e).__name__}: {e}"
    try:
        return "sent", transport.send(raw, str(row["envelope_from"]), list(row["to"]),
                                      mail_key(row))
    except Transient as e:
        return "transient", str(e)
    except Permanent as e:
        return "permanent", str(e)
    except OSError as e:
        return ("transient" if classify(e) is Transient else "permanent"), \
            f"{type(e).__name__}: {e}"


def _record(app: Store, row: dict[str, Any], outcome: str, detail: str) -> str | None:
    """Record an attempt's outcome in a transaction of its own, if our claim is still the
    current one (still sending, with our attempt count and lease); the outcome as the
    attempts table names it, or None when another sender has taken the mail over."""
    cfg = app.settings.outbox
    now = datetime.now(timezone.utc)
    attempts = int(row["attempts"])
    values: dict[str, object] = {"last_error": None if outcome == "sent" else detail}
    if outcome == "sent":
        result = "sent"
        values |= {"status": "sent", "sent_at": now}
    elif outcome == "transient" and attempts < cfg.max_attempts:
        result = "retry"
        values |= {"status": "queued",
                   "next_attempt_at": now + backoff(attempts, cfg.retry_base, cfg.retry_max)}
    else:
        result = "failed"
        values["status"] = "failed"
    with app.engine.begin() as conn:
        ours = conn.execute(update(T_OUTBOX).where(
            T_OUTBOX.c.id == row["id"], T_OUTBOX.c.status == "sending",
            T_OUTBOX.c.attempts == attempts,
            T_OUTBOX.c.next_attempt_at == row["next_attempt_at"]).values(values)).rowcount
        if ours != 1:
            return None
        conn.execute(insert(T_ATTEMPTS).values(outbox_id=row["id"], at=now, result=result,
                                               detail=detail[:2000]))
        if result == "failed" and row["ticket_id"] is not None:
            conn.execute(insert(T_EVENTS).values(
                ticket_id=row["ticket_id"], kind="delivery.failed", at=now, actor=None,
                data={"to": row["to"], "message_id": row["message_id"],
                      "reason": detail[:500], "attempts": attempts}))
    return result


def _fields(app: Store, row: dict[str, Any], key: str, detail: str) -> dict[str, Any]:
    """A delivery's log fields: its ticket's ref, the template, the recipients' domains
    (never their addresses: the log is read by more people than the tickets) and, as
    `key` (answer, or the reason it failed), the first line of what the transport said."""
    ref = None
    if row["ticket_id"] is not None:
        with app.engine.connect() as conn:
            ref = conn.scalar(select(T_TICKETS.c.ref).where(T_TICKETS.c.id == row["ticket_id"]))
    answer = detail.strip().splitlines()[0][:200] if detail.strip() else ""
    code = answer[:3] if re.match(r"[2-5]\d\d\b", answer) else None
    return {"outbox_id": row["id"], "ref": ref, "template": row["template"],
            "recipient_domain": ",".join(dict.fromkeys(domain_of(a) for a in row["to"])),
            "attempt": row["attempts"], "code": code, key: answer}


def deliver_due(app: Store, transport: Transport, limit: int = CLAIM,
                progress: Callable[[], None] | None = None) -> RunResult:
    """Deliver every mail that is due now, claim by claim; progress is called after each."""
    result = RunResult()
    try:
        while True:
            rows = _claim(app, datetime.now(timezone.utc), limit)
            for row in rows:
                outcome, detail = _attempt(app, transport, row)
                recorded = _record(app, row, outcome, detail)
                if recorded is None:
                    result.lost_claim += 1
                    log.warning("outbox mail %s: %s, but another sender took it over after "
                                "our lease ran out; its result stands", row["id"], outcome)
                elif recorded == "sent":
                    result.sent += 1
                    result.latencies.append(
                        (datetime.now(timezone.utc) - row["created_at"]).total_seconds())
                    log.info("mail delivered", extra=_fields(app, row, "answer", detail))
                else:
                    if recorded == "retry":
                        result.deferred += 1
                    else:
                        result.failed += 1
                    fields = _fields(app, row, "reason", detail)
                    log.warning("delivery %s: %s", "failed, retrying" if recorded == "retry"
                                else "failed for good", fields["reason"], extra=fields)
                if progress is not None:
                    progress()
            if len(rows) < limit:
                return result
    finally:
        transport.close()


def next_due(app: Store) -> datetime | None:
    with app.engine.connect() as conn:
        return conn.scalar(select(T_OUTBOX.c.next_attempt_at)
                           .where(T_OUTBOX.c.status.in_(_TAKEN))
                           .order_by(T_OUTBOX.c.next_attempt_at).limit(1))
