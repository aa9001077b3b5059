"""Draining IMAP mailboxes (imapclient) without losing or doubling a mail.

The order is what makes it safe: FETCH BODY.PEEK[] (the mail stays unread
and in place), commit the tickets together with the mailbox's new last UID,
and only then move, flag or delete. A crash before the commit means the
mail is fetched again; a crash after it leaves a committed mail in the
folder, which the next round recognises by its UID (at or below the last
committed one) and only moves, flags or deletes. If the server's UIDVALIDITY
changes, every UID we remember is void: we rescan, and dedupe by Message-ID
and content keeps the tickets from doubling.

Several daemons on one database (issue 18) each have a Poller for the same
mailbox; only the one that holds the mailbox's leadership (store/leadership.py)
drains it, the others stand by and take over when it dies. Leadership is
checked between batches, and each batch's commit is fenced as well: it
advances the last UID only from the value this drain read, so a leader that
lost its lock a moment ago cannot commit a batch its successor also takes.
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
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import SQLAlchemyError

from ..config.schema import Mailbox
from ..errors import MaildeskError, error_line
from ..mail.parse import ParsedMail, Unread
from ..store.db import upsert
from ..store.handle import Store
from ..store.leadership import Leadership
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


class Overtaken(OSError, MaildeskError):
    """Another node committed this mailbox's progress since this drain read it: the batch
    rolls back whole. An OSError, so that the pipeline takes it for what it is, nobody's
    mail's fault, and does not retry the batch mail by mail (pipeline/run.py)."""


class LostLeadership(MaildeskError):
    """This node no longer leads the mailbox: stop draining it now."""


def load_state(conn: Connection, name: str) -> State:
    """The mailbox's progress; its row is made on first use. Nodes starting together race
    to make it, hence the insert that leaves a row already there alone."""
    conn.execute(upsert(conn, T_STATE).values(mailbox=name, uidvalidity=None, last_uid=0, taken=0,
                                        connected=False).on_conflict_do_nothing())
    row = conn.execute(select(T_STATE).where(T_STATE.c.mailbox == name)).mappings().one()
    return State(row["uidvalidity"], int(row["last_uid"]), int(row["taken"]))


def note(app: Store, name: str, **values: Any) -> None:
    """Record connection health for `maildesk mailboxes status` (best effort)."""
    try:
        with app.engine.begin() as conn:
            load_state(conn, name)
            conn.execute(update(T_STATE).where(T_STATE.c.mailbox == name).values(**values))
    except SQLAlchemyError as e:
        log.warning("mailbox %s: cannot record its status: %s", name, error_line(e))


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


def announced(client: IMAPClient) -> bool:
    """Whether the server announced new mail (EXISTS, RECENT) since it was last asked.
    A server announces a message once, at the end of whichever command is running when it
    arrives: arriving during the drain's SEARCH, after the search was done, it is
    announced there and never again, so an IDLE begun after that waits for the next mail
    or the renewal. imaplib keeps such responses; imapclient reads them from the same
    dict (after SELECT)."""
    kept = client._imap.untagged_responses
    return bool(kept.pop("EXISTS", None)) | bool(kept.pop("RECENT", None))


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

    def drain(self, client: IMAPClient, leading: Callable[[], bool] = lambda: True
              ) -> Counter[str]:
        """One round: everything in the folder that is not yet done; what became of it.
        leading: asked before each batch; when it says no, LostLeadership is raised."""
        box, total = self.box, Counter[str]()
        info = client.select_folder(box.folder)
        announced(client)       # SELECT's own count, not news
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
        taken, committed = state.taken, state.last_uid
        chunks = (self._fetch(client, new[i:i + box.batch_size])
                  for i in range(0, len(new), box.batch_size))
        for (chunk, items), parsed in ahead.parse_ahead(
                chunks, lambda c: [(raw, None) for raw, _env in c[1]],
                ahead.worthwhile(len(new), box.batch_size), self.app.settings.limits):
            if not leading():
                raise LostLeadership(f"mailbox {box.name}: leadership lost")
            taken += len(items)

            def progress(conn: Connection, high: int = chunk[-1], taken: int = taken,
                         since: int = committed) -> None:
                done = conn.execute(update(T_STATE).where(
                    T_STATE.c.mailbox == box.name, T_STATE.c.last_uid == since).values(
                    uidvalidity=uidvalidity, last_uid=high, taken=taken,
                    last_success_at=_now()))
                if done.rowcount != 1:
                    raise Overtaken(f"mailbox {box.name}: another node committed its "
                                    "progress meanwhile; this batch is rolled back")
            total.update(self.ingest(items, parsed, progress).as_dict())
            committed = chunk[-1]
            self._finish(client, chunk)
        if not new:
            with self.app.engine.begin() as conn:
                conn.execute(update(T_STATE).where(T_STATE.c.mailbox == box.name).values(
                    uidvalidity=uidvalidity, last_uid=last, last_success_at=_now()))
        return total


class Poller(threading.Thread):
    """Keeps one mailbox drained inside `maildesk serve`: IDLE or polling, reconnecting;
    on several nodes, only while this node leads the mailbox."""

    def __init__(self, app: Store, box: Mailbox, ingest: Ingest,
                 on_mail: Callable[[], None], leadership: Leadership) -> None:
        super().__init__(name=f"imap-{box.name}", daemon=True)
        self.app, self.box, self.ingest, self.on_mail = app, box, ingest, on_mail
        self.leadership = leadership
        self.stopping = threading.Event()
        self.tokens = TokenSource(box) if box.oauth2 is not None else None
        self.leading = False

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            client = None
            try:
                if not self._lead():
                    break
                client = connect(self.box, self.tokens)
                note(self.app, self.box.name, connected=True, last_error=None)
                log.info("mailbox %s: connected to %s:%s as %s", self.box.name, self.box.host,
                         self.box.effective_port, self.box.username)
                delay = 1.0
                self._serve(client)
            except (LostLeadership, Overtaken) as e:
                log.warning("%s; stopped draining it", e)
                self._follow()
                continue
            except (AuthFailed, CredentialError) as e:
                self._failed(f"{e}")
            except (TimeoutError, OSError, IMAPClientError, ssl.SSLError) as e:
                self._failed(f"connection to {self.box.host}:{self.box.effective_port}: "
                             f"{type(e).__name__}: {_text(e)}")
            except SQLAlchemyError as e:
                self._failed(f"database: {error_line(e)}")
            finally:
                if client is not None:
                    _close(client)
            if not self.stopping.is_set():
                wait = min(BACKOFF_CAP, delay) * random.uniform(0.8, 1.2)
                log.info("mailbox %s: retrying in %.0f s", self.box.name, wait)
                self.stopping.wait(wait)
                delay = min(BACKOFF_CAP, delay * 2)
        if self.leading:       # a follower's stop says nothing about the leader's connection
            note(self.app, self.box.name, connected=False)
        self._follow()

    def _lead(self) -> bool:
        """Wait until this node leads the mailbox (False: stopped first). Another node's
        leadership ends when it stops or dies, so asking every second or so is a takeover
        within about a second of that."""
        name = self.box.name
        if self.leading:            # reconnecting to the server, or after a lost lock
            if self.leadership.holds(name):
                return True
            log.warning("mailbox %s: leadership lost", name)
            self._follow()
        standing_by = False
        while not self.stopping.is_set():
            if self.leadership.take(name):
                self.leading = True
                log.info("mailbox %s: leading (node %s)", name, self.app.settings.node.name)
                return True
            if not standing_by:
                log.info("mailbox %s: led by another node; standing by", name)
                standing_by = True
            self.stopping.wait(random.uniform(0.8, 1.2))
        return False

    def _follow(self) -> None:
        self.leadership.release(self.box.name)
        self.leading = False

    def _still_leading(self) -> bool:
        return self.leadership.holds(self.box.name)

    def _failed(self, what: str) -> None:
        log.error("mailbox %s: %s", self.box.name, what)
        note(self.app, self.box.name, connected=False, last_error=what[:1000],
             last_error_at=_now())

    def _serve(self, client: IMAPClient) -> None:
        drainer = Drainer(self.app, self.box, self.ingest)
        use_idle = self.box.idle and client.has_capability("IDLE")
        waiting = (f"mailbox {self.box.name}: waiting for mail by IDLE" if use_idle else
                   f"mailbox {self.box.name}: polling every {self.box.poll_interval:g} s"
                   + ("" if client.has_capability("IDLE") else " (the server has no IDLE)"))
        while not self.stopping.is_set():
            counts = drainer.drain(client, self._still_leading)
            if any(counts.values()):
                log.info("mailbox %s: %s", self.box.name, ", ".join(
                    f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v))
                self.on_mail()
            if announced(client):
                continue
            if waiting:
                log.info(waiting)     # once a connection: how this mailbox is watched
                waiting = ""
            self._wait(client if use_idle else None)

    def _wait(self, client: IMAPClient | None) -> None:
        """Until the server says something changed (IDLE, with a client), or poll_interval
        at most (IDLE renewed before servers drop it). Mail the server announced before IDLE
        began was caught by `announced`; mail that arrived after the last command and before
        IDLE began, the server announces at its next look at the mailbox (Dovecot: within
        mailbox_idle_check_interval, 30 s). Leadership is checked every second meanwhile."""
        if client is not None:
            client.idle()
        try:
            started = time.monotonic()
            limit = min(IDLE_RENEW, self.box.poll_interval)
            while not self.stopping.is_set() and time.monotonic() - started < limit:
                if not self._still_leading():
                    raise LostLeadership(f"mailbox {self.box.name}: leadership lost")
                if client is None:
                    self.stopping.wait(min(1.0, limit - (time.monotonic() - started)))
                elif client.idle_check(timeout=1.0):
                    return
        finally:
            if client is not None:
                client.idle_done()
