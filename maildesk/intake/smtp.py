"""The SMTP listener (aiosmtpd): check recipients, store durably, say 250.

It is deliberately thin: no ticket logic runs in the SMTP transaction. The
raw message and its envelope are fsynced and committed to the inbound queue
(accept()), then the client hears 250 and the ingest worker is woken. So a
slow rule or a broken mail can never make a sender time out and send again,
and a crash after 250 delays a ticket but loses nothing. The commits are
grouped (`Committer`): the mails whose DATA ended while a group was being
written are the next group, one transaction and one fsync for all of them,
as a database groups its log flushes; under load a mail waits for at most one
group before its own, and alone it is written at once.

It must also hold against hostile clients (issue 15): connections are capped
in total and per client (`Sessions`), a client that is silent outside DATA
is dropped after the short `smtp.idle_timeout`, a mail takes at most
`smtp.max_recipients`, envelope addresses with control characters are
refused, and what a flood causes is logged by count, not line by line.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Session, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from sqlalchemy import Engine

from ..config.schema import Settings
from ..errors import error_line, expected
from ..logs import domain_of
from ..logthrottle import LogThrottle
from ..mail.parse import base_address
from ..store.blobs import BlobStore
from ..store.handle import Store
from .inbound import CONTROL, Envelope, accept

log = logging.getLogger("maildesk.smtp")

@dataclass
class Writer:
    """The store as the listener process writes it (listening.py): the daemon's settings
    (the desk's addresses again after a reload), an engine whose transactions go first
    at SQLite's lock (store/turns.py), and the blobs."""

    settings: Settings
    engine: Engine
    blobs: BlobStore


class Committer:
    """The SMTP sessions' mails, stored in groups (accept()): each session awaits its own
    mail's inbound id, which comes only after the commit that holds it. Runs on the event
    loop (its queue needs no lock); the writing is done in the loop's executor."""

    def __init__(self, store: Store, most: int = 64) -> None:
        self.store = store
        self.most = most
        self._waiting: list[tuple[bytes, Envelope, asyncio.Future[int]]] = []
        self._writing: asyncio.Task[None] | None = None   # held: the loop keeps tasks weakly

    async def accept(self, raw: bytes, env: Envelope) -> int:
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[int] = loop.create_future()
        self._waiting.append((raw, env, mine))
        if self._writing is None:
            self._writing = loop.create_task(self._write())
        return await mine

    async def _write(self) -> None:
        """Groups, one after another, until nobody waits. A group that fails is tried
        again a mail at a time, so that each session hears of its own mail: 250 when it
        could be stored, the error (a 451) when not."""
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:self.most], self._waiting[self.most:]
                try:
                    await self._store(group)
                except Exception as e:  # noqa: BLE001 - each session is told its own
                    if len(group) == 1:
                        _tell(group[0][2], e)
                        continue
                    for one in group:
                        try:
                            await self._store([one])
                        except Exception as e:  # noqa: BLE001
                            _tell(one[2], e)
        finally:
            self._writing = None

    async def _store(self, group: list[tuple[bytes, Envelope, asyncio.Future[int]]]) -> None:
        ids = await asyncio.get_running_loop().run_in_executor(
            None, accept, self.store, [(raw, env) for raw, env, _ in group])
        for (_, _, waiting), inbound_id in zip(group, ids):
            _tell(waiting, inbound_id)


def _tell(waiting: asyncio.Future[int], outcome: int | BaseException) -> None:
    """A session's answer; none for one that is gone (its client hung up: the mail, if
    stored, is kept all the same, and a retry of it is a duplicate the pipeline knows)."""
    if waiting.done():
        return
    if isinstance(outcome, BaseException):
        waiting.set_exception(outcome)
    else:
        waiting.set_result(outcome)


class Handler:
    def __init__(self, app: Store, on_accept: Callable[[], None]) -> None:
        self.app = app
        self.on_accept = on_accept
        self.committer = Committer(app)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.app.settings.smtp.max_recipients:
            return "452 4.5.3 Too many recipients"
        if base_address(address.lower()) not in self.app.settings.desk.addresses:
            return f"550 5.1.1 <{address}>: no such mailbox at this desk"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        # MAIL FROM:<> is the null sender (aiosmtpd hands it over as "<>"): a bounce or an
        # auto-reply, which nothing may answer (RFC 5321 4.5.5, RFC 3834)
        null = envelope.mail_from in (None, "", "<>")
        env = Envelope(source="smtp", mail_from="" if null else envelope.mail_from,
                       rcpt_to=tuple(a.lower() for a in envelope.rcpt_tos),
                       origin=f"smtp from {peer} helo {session.host_name or '?'}"[:200])
        try:
            inbound_id = await self.committer.accept(raw, env)
        except Exception as e:  # database or disk trouble: the sender must retry
            log.error("could not store a message from %s: %s", peer, error_line(e),
                      exc_info=not expected(e))
            return "451 4.3.0 Temporary failure storing the message; please retry"
        self.on_accept()
        log.info("mail accepted", extra={"inbound_id": inbound_id, "peer": peer,
                                         "sender_domain": domain_of(env.mail_from or ""),
                                         "recipients": len(env.rcpt_to), "size": len(raw)})
        return f"250 2.0.0 Ok: queued as {inbound_id}"


def client_of(peer: Any) -> str:
    """What a connection counts against: its IP address; for IPv6 the /64, because one
    subscriber's network hands out addresses by the billion."""
    try:
        ip = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return str(peer)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


class Sessions:
    """The open SMTP sessions, counted per client, and the caps on them.

    One client (`client_of`) may hold `per_client` sessions, at most half of
    `total`, so it can never fill the listener alone. When many clients fill
    it between them (on loopback an attacker has 16 million addresses), a
    newcomer that holds at least two fewer than the busiest client takes the
    place of that client's oldest idle session: a flood of idle connections
    then makes room for an MTA instead of locking it out, while a session in a
    mail transaction is never cut. Anything else over a cap is refused with
    421 at once. Refusals, evictions and timeouts are logged through
    `LogThrottle`s. Our own MTAs (`relay`: desk.trusted_relays) relay everyone's
    mail from one address: the per-client cap is not theirs, the total is.
    """

    def __init__(self, total: int, per_client: int,
                 relay: Callable[[str], bool] = lambda client: False) -> None:
        self.total = total
        self.per_client = per_client
        self._relay = relay
        self._by_client: dict[str, dict[Listener, None]] = {}   # oldest first
        self._count = 0
        self._reports: asyncio.Task[None] | None = None
        self.refused = LogThrottle(log, "refused {count:,} more SMTP connections over a cap "
                                        "in the last {seconds:.0f} s")
        self.evicted = LogThrottle(log, "closed {count:,} more idle SMTP sessions to make room "
                                        "in the last {seconds:.0f} s")
        self.timed_out = LogThrottle(log, "{count:,} more SMTP sessions timed out in the last "
                                          "{seconds:.0f} s", level=logging.INFO)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Listener]:
        return iter([s for held in self._by_client.values() for s in held])

    def admit(self, session: Listener, client: str) -> str | None:
        """Count `session` against `client`; or say why not (the 421's text)."""
        held = len(self._by_client.get(client, ()))
        if held >= self.per_client and not self._relay(client):
            self.refused("refused an SMTP connection from %s: it holds %d, the most for one "
                         "client", client, held)
            return "Too many connections from your address"
        if self._count >= self.total:
            victim = self._idle_of_busiest(held)
            if victim is None:
                self.refused("refused an SMTP connection from %s: all %d sessions are taken",
                             client, self.total)
                return "Too many connections"
            self.evicted("closed an idle SMTP session of %s to make room for %s",
                         victim.client, client)
            victim.hang_up("421 4.7.0 Too many connections, closing an idle one, "
                           "try again later")
            self.release(victim)
        self._by_client.setdefault(client, {})[session] = None
        self._count += 1
        session.client = client
        return None

    def _idle_of_busiest(self, held: int) -> Listener | None:
        """The oldest idle session of the client holding most, if it holds 2 more than `held`."""
        busiest = sorted(self._by_client.values(), key=len, reverse=True)
        for sessions in busiest:
            if len(sessions) < held + 2:
                return None
            for s in sessions:
                if not s.busy:
                    return s
        return None

    def release(self, session: Listener) -> None:
        """Forget `session` (closed, or made room for another); again is harmless."""
        client = session.client
        if client is None or session not in self._by_client.get(client, {}):
            return
        del self._by_client[client][session]
        self._count -= 1
        if not self._by_client[client]:
            del self._by_client[client]

    def start_reports(self) -> None:
        """Write the throttled logs' summaries as their periods end, while we serve."""
        async def report() -> None:
            while True:
                await asyncio.sleep(5)
                self._flush(force=False)
        self._reports = asyncio.get_running_loop().create_task(report())

    def stop_reports(self) -> None:
        if self._reports is not None:
            self._reports.cancel()
        self._flush(force=True)

    def _flush(self, force: bool) -> None:
        for throttle in (self.refused, self.evicted, self.timed_out):
            throttle.flush(force)


class Listener(SMTP):
    """aiosmtpd's SMTP with RFC 3463 codes for size limits, the caps of `Sessions`, and a
    short timeout outside DATA."""

    def __init__(self, handler: Handler, sessions: Sessions, data_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions
        self._data_timeout = data_timeout
        self.client: str | None = None    # set when admitted
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        refusal = self._sessions.admit(self, client_of(transport.get_extra_info("peername")))
        if refusal is not None:     # RFC 5321 3.1: 421 may be the greeting
            assert isinstance(transport, asyncio.Transport)
            transport.write(f"421 4.7.0 {refusal}, try again later\r\n".encode())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.release(self)
        if self._admitted:         # a refused one never started aiosmtpd's session
            super().connection_lost(error)

    # The overrides repeat aiosmtpd's @syntax: HELP lists only commands that carry it.
    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """Controls are refused in the command as sent: aiosmtpd's address parser reads some
        (CR, NEL) as white space and would pass on an address the client never wrote."""
        if arg and CONTROL.search(arg):
            await self.push("501 5.1.7 Bad sender address syntax")
            return
        await super().smtp_MAIL(arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg and CONTROL.search(arg):
            await self.push("501 5.1.3 Bad recipient address syntax")
            return
        await super().smtp_RCPT(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """The message gets the long `smtp.timeout` (it may be large); aiosmtpd arms the
        timeout at each command, so every other command gets the short idle one."""
        self._reset_timeout(self._data_timeout)
        await super().smtp_DATA(arg)
        self._reset_timeout()

    def _timeout_cb(self) -> None:
        """Replaces aiosmtpd's, which hangs up without a word and logs each timeout: the
        client hears why (as from Postfix), and a flood of them is counted."""
        self._sessions.timed_out("SMTP session from %s timed out", self.client)
        self.hang_up("421 4.4.2 Timeout exceeded, closing connection")

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = (f"552 5.3.4 Message too big for this desk "
                      f"(limit {self.data_size_limit} bytes)")
        await super().push(status)

    @property
    def busy(self) -> bool:
        """In a mail transaction: MAIL FROM given and not yet answered after DATA."""
        env = getattr(self, "envelope", None)
        return env is not None and env.mail_from is not None

    def hang_up(self, reply: str) -> None:
        """Say `reply` and close, without waiting for a client that may not read."""
        if isinstance(self.transport, asyncio.Transport):
            self.transport.write(reply.encode() + b"\r\n")
            self.transport.close()

    async def shut(self) -> None:
        try:
            await super().push("421 4.3.2 maildesk is shutting down; please retry later")
        except Exception:  # the client may already be gone
            pass
        if self.transport is not None:
            self.transport.close()


async def start(app: Store, on_accept: Callable[[], None], sessions: Sessions
                ) -> asyncio.AbstractServer:
    s = app.settings.smtp
    handler = Handler(app, on_accept)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Listener(handler, sessions, data_timeout=s.timeout,
                         data_size_limit=s.max_message_size, enable_SMTPUTF8=True,
                         decode_data=False, timeout=s.idle_timeout,
                         hostname=app.settings.desk.domain, ident="maildesk ESMTP"),
        host=s.host, port=s.port)
    sessions.start_reports()
    return server


async def stop(server: asyncio.AbstractServer, sessions: Sessions, grace: float) -> None:
    """Stop accepting; let open transactions finish for `grace` seconds; 421 the rest."""
    server.close()
    for s in [s for s in sessions if not s.busy]:
        await s.shut()
    deadline = asyncio.get_running_loop().time() + grace
    while any(s.busy for s in sessions) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    for s in list(sessions):
        await s.shut()
    sessions.stop_reports()
    await server.wait_closed()
