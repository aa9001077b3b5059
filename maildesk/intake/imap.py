"""Draining IMAP mailboxes (imapclient) without losing or doubling a mail.

The order is what makes it safe: FETCH BODY.PEEK[] (the mail stays unread
and in place), commit the tickets together with the mailbox's new last UID,
and only then move, flag or delete. A crash before the commit means the
mail is fetched again; a crash after it leaves a committed mail in the
folder, which the next round recognises by its UID (at or below the last
committed one) and only moves, flags or deletes. If the server's UIDVALIDITY
changes, every UID we remember is void: we rescan, and dedupe by Message-ID
and content keeps the tickets from doubling.
"""
from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..config.schema import Mailbox
from ..errors import MaildeskError
from ..mail.parse import ParsedMail, Unread
from ..store.handle import Store
from ..store.models import ImapState
from . import ahead
from .credentials import CredentialError, TokenSource, password
from .inbound import Envelope

log = logging.getLogger("maildesk.imap")
T_STATE = ImapState.__table__
IDLE_RENEW = 25 * 60      # servers may drop IDLE after 30 minutes (RFC 2177)
BACKOFF_CAP = 300.0
SEEN, DELETED = b"\\Seen", b"\\Deleted"


class AuthFailed(MaildeskError):
    """The server refused our login: a setting to fix, not a network hiccup."""


@dataclass(frozen=True)
class State:
    uidvalidity: int | None
    last_uid: int
    taken: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


def load_state(conn: Connection, name: str) -> State:
    row = conn.execute(select(T_STATE).where(T_STATE.c.mailbox == name)).mappings().first()
    if row is None:
        conn.execute(insert(T_STATE).values(mailbox=name, uidvalidity=None, last_uid=0, taken=0,
                                            connected=False))
        return State(None, 0, 0)
    return State(row["uidvalidity"], int(row["last_uid"]), int(row["taken"]))


def note(app: Store, name: str, **values: Any) -> None:
    """Record connection health for `maildesk mailboxes status` (best effort)."""
    try:
        with app.engine.begin() as conn:
            load_state(conn, name)
            conn.execute(update(T_STATE).where(T_STATE.c.mailbox == name).values(**values))
    except SQLAlchemyError as e:
        log.warning("mailbox %s: cannot record its status: %s", name, str(e).splitlines()[0])


def connect(box: Mailbox, tokens: TokenSource | None = None) -> IMAPClient:
    """Connected, upgraded to TLS as configured, and logged in."""
    context = ssl.create_default_context(cafile=str(box.ca_file) if box.ca_file else None)
    client = IMAPClient(box.host, port=box.effective_port, ssl=box.tls == "implicit",
                        ssl_context=context, timeout=box.timeout)
    try:
        if box.tls == "starttls":
            client.starttls(context)
        try:
            if box.oauth2 is not None:
                client.oauth2_login(box.username, (tokens or TokenSource(box)).get())
            else:
                client.login(box.username, password(box))
        except LoginError as e:
            raise AuthFailed(f"login as {box.username} refused: {_text(e)}; "
                             "check the password or token") from None
    except BaseException:
        _close(client)
        raise
    return client


def _text(e: BaseException) -> str:
    s = str(e)
    return s.removeprefix("b'").removeprefix('b"').rstrip("'\"") or type(e).__name__


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection is already gone; nothing to save
        try:
            client.shutdown()
        except Exception:
            pass


def _server_path(client: IMAPClient, path: str) -> str:
    """A folder path written with "/" in the config, with the server's own separator."""
    listing = client.list_folders(directory="", pattern="")
    sep = listing[0][1] if listing and listing[0][1] else b"/"
    return path.replace("/", sep.decode() if isinstance(sep, bytes) else sep)


class Counts(Protocol):
    def as_dict(self) -> dict[str, int]: ...


# stores a batch of mail and runs the pipeline over it, committing `also` with it: the
# pipeline's ingest() (pipeline/run.py), handed in by whoever starts the drain, so that
# intake imports no ticket logic
Ingest = Callable[[list[tuple[bytes, Envelope]], list[ParsedMail | Unread] | None,
                   Callable[[Connection], None]], Counts]


class Drainer:
    """One mailbox: fetch what is new, commit it, then move/flag/delete it."""

    def __init__(self, app: Store, box: Mailbox, ingest: Ingest) -> None:
        self.app, self.box, self.ingest = app, box, ingest
        self._target: str | None = None

    def _finish(self, client: IMAPClient, uids: list[int]) -> None:
        """The after-commit action. Safe to repeat: it only touches committed mail."""
        if not uids:
            return
        box = self.box
        if box.after == "flag":
            client.add_flags(uids, [SEEN], silent=True)
            return
        if box.after == "move":
            if self._target is None:
                self._target = _server_path(client, box.move_to)
                if not client.folder_exists(self._target):
                    client.create_folder(self._target)
            if client.has_capability("MOVE"):
                client.move(uids, self._target)
                return
            client.copy(uids, self._target)
        client.add_flags(uids, [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()

    def _fetch(self, client: IMAPClient, chunk: list[int]
               ) -> tuple[list[int], list[tuple[bytes, Envelope]]]:
        """One round trip for a batch; the mail stays unread and in place (PEEK)."""
        fetched = client.fetch(chunk, ["BODY.PEEK[]"])
        return chunk, [(bytes(fetched[u][b"BODY[]"]),
                        Envelope(source="imap", mail_from=None,
                                 origin=f"imap {self.box.name} uid {u}", queue=self.box.queue))
                       for u in chunk if u in fetched and b"BODY[]" in fetched[u]]

    def drain(self, client: IMAPClient) -> Counter[str]:
        """One round: everything in the folder that is not yet done; what became of it."""
        box, total = self.box, Counter[str]()
        info = client.select_folder(box.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        with self.app.engine.begin() as conn:
            state = load_state(conn, box.name)
        last = state.last_uid
        if state.uidvalidity is not None and state.uidvalidity != uidvalidity:
            log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; rescanning the folder, "
                        "mail already taken is skipped as duplicate", box.name,
                        state.uidvalidity, uidvalidity)
            last = 0
        if last:
            done = client.search(["UID", f"1:{last}"] + (["UNSEEN"] if box.after == "flag" else []))
            self._finish(client, [u for u in done if u <= last])
        new = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
        taken = state.taken
        chunks = (self._fetch(client, new[i:i + box.batch_size])
                  for i in range(0, len(new), box.batch_size))
        for (chunk, items), parsed in ahead.parse_ahead(
                chunks, lambda c: [(raw, None) for raw, _env in c[1]],
                ahead.worthwhile(len(new), box.batch_size), self.app.settings.limits):
            taken += len(items)

            def progress(conn: Connection, high: int = chunk[-1], taken: int = taken) -> None:
                conn.execute(update(T_STATE).where(T_STATE.c.mailbox == box.name).values(
                    uidvalidity=uidvalidity, last_uid=high, taken=taken,
                    last_success_at=_now()))
            total.update(self.ingest(items, parsed, progress).as_dict())
            self._finish(client, chunk)
        if not new:
            with self.app.engine.begin() as conn:
                conn.execute(update(T_STATE).where(T_STATE.c.mailbox == box.name).values(
                    uidvalidity=uidvalidity, last_uid=last, last_success_at=_now()))
        return total


class Poller(threading.Thread):
    """Keeps one mailbox drained inside `maildesk serve`: IDLE or polling, reconnecting."""

    def __init__(self, app: Store, box: Mailbox, ingest: Ingest,
                 on_mail: Callable[[], None]) -> None:
        super().__init__(name=f"imap-{box.name}", daemon=True)
        self.app, self.box, self.ingest, self.on_mail = app, box, ingest, on_mail
        self.stopping = threading.Event()
        self.tokens = TokenSource(box) if box.oauth2 is not None else None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            client = None
            try:
                client = connect(self.box, self.tokens)
                note(self.app, self.box.name, connected=True, last_error=None)
                log.info("mailbox %s: connected to %s:%s as %s", self.box.name, self.box.host,
                         self.box.effective_port, self.box.username)
                delay = 1.0
                self._serve(client)
            except (AuthFailed, CredentialError) as e:
                self._failed(f"{e}")
            except (TimeoutError, OSError, IMAPClientError, ssl.SSLError) as e:
                self._failed(f"connection to {self.box.host}:{self.box.effective_port}: "
                             f"{type(e).__name__}: {_text(e)}")
            except SQLAlchemyError as e:
                self._failed(f"database: {str(e).splitlines()[0]}")
            finally:
                if client is not None:
                    _close(client)
            if not self.stopping.is_set():
                wait = min(BACKOFF_CAP, delay) * random.uniform(0.8, 1.2)
                log.info("mailbox %s: retrying in %.0f s", self.box.name, wait)
                self.stopping.wait(wait)
                delay = min(BACKOFF_CAP, delay * 2)
        note(self.app, self.box.name, connected=False)

    def _failed(self, what: str) -> None:
        log.error("mailbox %s: %s", self.box.name, what)
        note(self.app, self.box.name, connected=False, last_error=what[:1000],
             last_error_at=_now())

    def _serve(self, client: IMAPClient) -> None:
        drainer = Drainer(self.app, self.box, self.ingest)
        use_idle = self.box.idle and client.has_capability("IDLE")
        while not self.stopping.is_set():
            counts = drainer.drain(client)
            if any(counts.values()):
                log.info("mailbox %s: %s", self.box.name, ", ".join(
                    f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v))
                self.on_mail()
            if use_idle:
                self._idle(client)
            else:
                self.stopping.wait(self.box.poll_interval)

    def _idle(self, client: IMAPClient) -> None:
        """Wait for the server to say something changed, or poll_interval at most: a mail
        that arrives between the last search and the start of IDLE may never be announced
        during IDLE (seen with Dovecot under load), and would wait for IDLE's renewal."""
        client.idle()
        try:
            started = time.monotonic()
            limit = min(IDLE_RENEW, self.box.poll_interval)
            while not self.stopping.is_set() and time.monotonic() - started < limit:
                if client.idle_check(timeout=1.0):
                    return
        finally:
            client.idle_done()
