"""The SMTP listener (aiosmtpd): check recipients, store durably, say 250.

It is deliberately thin: no ticket logic runs in the SMTP transaction. The
raw message and its envelope are fsynced and committed to the inbound queue
(accept()), then the client hears 250 and the ingest worker is woken. So a
slow rule or a broken mail can never make a sender time out and send again,
and a crash after 250 delays a ticket but loses nothing.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from ..app import App
from ..mail.parse import base_address
from .inbound import Envelope, accept

log = logging.getLogger("maildesk.smtp")


class Handler:
    def __init__(self, app: App, on_accept: Callable[[], None]) -> None:
        self.app = app
        self.on_accept = on_accept

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        if base_address(address.lower()) not in self.app.settings.desk.addresses:
            return f"550 5.1.1 <{address}>: no such mailbox at this desk"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        env = Envelope(source="smtp", mail_from=envelope.mail_from or "",
                       rcpt_to=tuple(a.lower() for a in envelope.rcpt_tos),
                       origin=f"smtp from {peer} helo {session.host_name or '?'}"[:200])
        try:
            inbound_id = await asyncio.get_running_loop().run_in_executor(
                None, accept, self.app, raw, env)
        except Exception as e:  # database or disk trouble: the sender must retry
            log.error("could not store a message from %s: %s: %s", peer, type(e).__name__,
                      str(e).splitlines()[0] if str(e) else "")
            return "451 4.3.0 Temporary failure storing the message; please retry"
        self.on_accept()
        return f"250 2.0.0 Ok: queued as {inbound_id}"


class Listener(SMTP):
    """aiosmtpd's SMTP with RFC 3463 codes for size limits and a session registry."""

    def __init__(self, handler: Handler, sessions: set[Listener], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sessions = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)

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

    async def shut(self) -> None:
        try:
            await super().push("421 4.3.2 maildesk is shutting down; please retry later")
        except Exception:  # the client may already be gone
            pass
        if self.transport is not None:
            self.transport.close()


async def start(app: App, on_accept: Callable[[], None],
                sessions: set[Listener]) -> asyncio.AbstractServer:
    s = app.settings.smtp
    handler = Handler(app, on_accept)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Listener(handler, sessions, data_size_limit=s.max_message_size,
                         enable_SMTPUTF8=True, decode_data=False, timeout=s.timeout,
                         hostname=app.settings.desk.domain, ident="maildesk ESMTP"),
        host=s.host, port=s.port)


async def stop(server: asyncio.AbstractServer, sessions: set[Listener], grace: float) -> None:
    """Stop accepting; let open transactions finish for `grace` seconds; 421 the rest."""
    server.close()
    for s in [s for s in sessions if not s.busy]:
        await s.shut()
    deadline = asyncio.get_running_loop().time() + grace
    while any(s.busy for s in sessions) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    for s in list(sessions):
        await s.shut()
    await server.wait_closed()
