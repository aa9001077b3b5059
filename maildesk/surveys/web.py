"""Rating links for the web, for desks that prefer them to mailto links (off by default).

Mail security scanners open every link in a mail, so a GET only shows a page
that asks to confirm; the rating is recorded on the POST that page sends.
The link carries the same token as the rate address, so it is good for one
ticket's requester, once. Pages are plain HTML with no script and a strict
Content-Security-Policy.

The server lives inside `maildesk serve`, beside the SMTP listener, so it must
not be able to stall it. h11 parses HTTP/1.1 (the part where servers get
request smuggling wrong); the connections run on an asyncio loop of the
server's own, in a daemon thread, so an open connection costs a file
descriptor and a coroutine, never a thread, and the daemon's loop never waits
for a browser; the pages' database work runs in a pool of WORKERS threads, so
the server has WORKERS + 1 threads at most, whatever the traffic. The limits,
which the stdlib server lacks: a request has `surveys.web.timeout` seconds to
arrive whole, however slowly it trickles in (an idle or slow client is dropped
without an answer); `surveys.web.max_connections` are open at once and the
next is answered 503 at once; the request line and headers may take MAX_HEAD
bytes (431), a form MAX_FORM (413, and 411 without a Content-Length); anything
that is not HTTP gets 400, never a traceback. One request per connection: a
rating is one GET and one POST, and no connection idles between requests.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import formatdate
from html import escape
from http import HTTPStatus
from urllib.parse import parse_qs

import h11
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..app import App
from ..core.context import Context
from ..errors import error_line
from ..store.rows import TicketRow
from ..tickets.refs import read_rate_address, requester_token_ok
from .answer import SCALES, Rating, record
from .send import survey_opt_out

log = logging.getLogger("maildesk.surveys")
MAX_FORM = 8192          # bytes of a POSTed form: a rating and a 2,000-character comment
MAX_HEAD = 16384         # bytes of request line and headers (cookies of a shared domain)
CHUNK = 4096             # bytes read at a time, so MAX_HEAD is checked as the head grows
WORKERS = 4              # threads for the pages' database work
BACKLOG = 128
WARN_EVERY = 60.0        # seconds between log lines about a full server
LINGER = 1.0             # seconds to read what a client still sends after its answer
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


@dataclass(frozen=True)
class Page:
    status: int
    title: str
    body: str                                       # HTML
    headers: tuple[tuple[str, str], ...] = ()


BAD_REQUEST = Page(400, "Bad request", "<p>This is not a request this server understands.</p>")
REFUSED = {
    400: BAD_REQUEST,
    405: Page(405, "Not allowed", "<p>Rating pages take GET and POST only.</p>",
              (("Allow", "GET, POST"),)),
    411: Page(411, "Length required", "<p>A form needs a Content-Length.</p>"),
    413: Page(413, "Too large", "<p>This form is larger than a rating and a comment.</p>"),
    431: Page(431, "Headers too large", "<p>The request's headers are too large.</p>"),
}
BUSY = Page(503, "Busy", "<p>Too many people at once; please try again in a minute.</p>",
            (("Retry-After", "60"),))
BROKEN = Page(500, "Sorry", "<p>Something went wrong on our side.</p>")
UNAVAILABLE = Page(503, "Try again later", "<p>Your answer cannot be recorded just now; "
                                           "please try again in a few minutes.</p>",
                   (("Retry-After", "300"),))


def _html(title: str, body: str) -> bytes:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
            f"max-width:32em;margin:2em auto;padding:0 1em;color:#1d2430}}button{{font-size:1em;"
            f"padding:.6em 1.2em}}textarea{{width:100%;min-height:5em}}</style></head><body>"
            f"<h1>{escape(title)}</h1>{body}</body></html>").encode()


def _response(page: Page) -> bytes:
    """The whole HTTP response; every one closes its connection."""
    data = _html(page.title, page.body)
    head = [f"HTTP/1.1 {page.status} {HTTPStatus(page.status).phrase}",
            f"Date: {formatdate(usegmt=True)}",
            "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(data)}",
            f"Content-Security-Policy: {CSP}",
            "X-Frame-Options: DENY",
            "Cache-Control: no-store",
            "Referrer-Policy: no-referrer",
            "Connection: close",
            *(f"{name}: {value}" for name, value in page.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + data


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    form: bytes


def _refusal(request: h11.Request) -> Page | None:
    """A request refused on its head alone: its body is never read."""
    if request.method not in (b"GET", b"POST"):
        return REFUSED[405]
    if len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers) > MAX_HEAD:
        return REFUSED[431]
    if request.method == b"POST":
        length = next((int(v) for n, v in request.headers if n == b"content-length"), None)
        if length is None:             # no length, or chunked: browsers send a length
            return REFUSED[411]
        if length > MAX_FORM:
            return REFUSED[413]
    return None


async def _read(reader: asyncio.StreamReader) -> Request | Page | None:
    """The connection's request, a refusal, or None when the client left without one.
    h11.RemoteProtocolError: what arrived is not HTTP (its error_status_hint is 400 or 431)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    head: h11.Request | None = None
    form = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(CHUNK))    # b"" at the end: h11 says how
        elif isinstance(event, h11.Request):
            refused = _refusal(event)
            if refused is not None:
                return refused
            head = event
            if head.method == b"GET":                      # answered without its body
                return Request("GET", head.target.decode("ascii", "replace"), b"")
        elif isinstance(event, h11.Data):
            form += event.data                             # h11 holds it to Content-Length
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return Request("POST", head.target.decode("ascii", "replace"), bytes(form))
        else:
            return None


def _target(app: App, conn: Connection, path: str
            ) -> tuple[str, str | None, TicketRow, Context] | Page:
    code = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]   # behind any prefix
    found = read_rate_address(f"x+{code}@x", app.settings.desk.ref_prefix)
    if found is None or found[1] is None:
        return Page(404, "Not found", "<p>This is not a rating link.</p>")
    ref, choice, token = found
    ctx = app.context(conn, datetime.now(timezone.utc))
    ticket = ctx.ledger.by_ref(ref)
    if ticket is None or not requester_token_ok(token, app.secrets, ref, ticket.requester,
                                                     "rate"):
        return Page(403, "Link not valid", "<p>This rating link is not valid.</p>")
    return ref, choice, ticket, ctx


def _confirm(app: App, path: str) -> Page:
    """GET: the question and a form to confirm it; nothing changes."""
    with app.engine.connect() as conn:
        target = _target(app, conn, path)
    if isinstance(target, Page):
        return target
    ref, choice, _ticket, _ctx = target
    if choice == "optout":
        question = "Send me no more satisfaction surveys."
    else:
        label = dict(SCALES[app.settings.surveys.scale]).get(int(choice or 0), choice)
        question = f"Your rating for {ref}: {label}."
    return Page(200, f"Rate {ref}", f"<p>{escape(question)}</p><form method=post>"
                f"<p><label>Anything to add? (optional)<br><textarea name=comment "
                f"maxlength=2000></textarea></label></p><p><button>Confirm</button></p>"
                f"</form>")


def _record(app: App, path: str, body: bytes) -> Page:
    """POST: the rating (or the opt-out) and its comment, once."""
    form = parse_qs(body.decode("utf-8", "replace"))
    comment = (form.get("comment") or [""])[0].strip()[:2000]
    with app.engine.begin() as conn:
        target = _target(app, conn, path)
        if isinstance(target, Page):
            return target
        ref, choice, ticket, ctx = target
        if choice == "optout":
            survey_opt_out(ctx, ticket)
            done = True
        else:
            done = record(ctx, ticket, Rating(int(choice or 0), comment), via="web")
        ctx.write()
    if done:
        return Page(200, "Thank you", "<p>Thank you: your answer is recorded.</p>")
    return Page(409, "Already answered",
                f"<p>{escape(ref)} has been rated already, or has no survey.</p>")


def _answer(app: App, request: Request) -> Page:
    if request.method == "GET":
        return _confirm(app, request.path)
    return _record(app, request.path, request.form)


class RatingServer:
    """The rating pages' HTTP server (limits in the module's docstring). The port is bound
    when it is made, so a daemon that cannot listen says so at start."""

    def __init__(self, app: App) -> None:
        web = app.settings.surveys.web
        family, _, _, _, address = socket.getaddrinfo(
            web.host or None, web.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.socket = socket.create_server(address[:2], family=family, backlog=BACKLOG)
        self.app = app
        self.timeout = web.timeout
        self.max_connections = web.max_connections
        self.open = 0
        self.warned = -WARN_EVERY
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ratings")
        self.thread = threading.Thread(target=self._run, name="ratings", daemon=True)

    def start(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def shutdown(self) -> None:
        """Stop listening, drop open connections, let a page that is being recorded finish."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join()
        else:
            self.socket.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.loop.close()

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, sock=self.socket)
        await self.stopping.wait()
        server.close()
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0)             # the aborted connections' sockets close

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if self.open >= self.max_connections:
            if time.monotonic() - self.warned >= WARN_EVERY:
                self.warned = time.monotonic()
                log.warning("rating pages: %d connections open, the most allowed "
                            "(surveys.web.max_connections); more are answered 503",
                            self.open)
            writer.write(_response(BUSY))   # fits the socket's buffer: no waiting for it
            writer.close()
            return
        self.open += 1
        try:
            page = await self._exchange(reader)
            if page is not None:
                await self._send(reader, writer, page)
        except asyncio.CancelledError:
            pass                    # shutdown; ending quietly spares asyncio a false alarm
        finally:
            self.open -= 1
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader) -> Page | None:
        """The page that answers the connection's request; None if none came in time."""
        try:
            async with asyncio.timeout(self.timeout):
                request = await _read(reader)
        except TimeoutError:
            log.debug("web: no whole request in %gs; connection closed", self.timeout)
            return None
        except h11.RemoteProtocolError as e:
            log.debug("web: bad request: %s", e)
            return REFUSED.get(e.error_status_hint, BAD_REQUEST)
        except OSError:                    # the client reset the connection
            return None
        if not isinstance(request, Request):
            return request
        try:
            page = await asyncio.get_running_loop().run_in_executor(
                self.pool, _answer, self.app, request)
        except SQLAlchemyError as e:       # the database is down: the customer may retry
            log.error("rating page: %s", error_line(e))
            page = UNAVAILABLE
        except Exception:                  # a bug: its traceback, and no false hope
            log.exception("rating page %s failed", request.path)
            page = BROKEN
        log.debug("web: %s %s %d", request.method, request.path, page.status)
        return page

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    page: Page) -> None:
        """Write the answer, then read and drop what the client still sends for up to LINGER
        seconds: closing on unread bytes resets the connection, and the client might lose
        the answer (a 413 or 431 while its request is still coming). A client that does
        not take the answer in time is cut off."""
        writer.write(_response(page))
        try:
            async with asyncio.timeout(self.timeout):
                await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await reader.read(CHUNK):
                    pass
        except (TimeoutError, OSError):
            pass
