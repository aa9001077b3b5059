"""The small HTTP server inside `maildesk serve`: the rating pages (surveys/web.py) and the
monitoring endpoints (monitor.py) are two sites on it, each on a port of its own.

It lives beside the SMTP listener, so it must not be able to stall it. h11 parses
HTTP/1.1 (the part where servers get request smuggling wrong); the connections run on an
asyncio loop of the server's own, in a daemon thread, so an open connection costs a file
descriptor and a coroutine, never a thread, and the daemon's loop never waits for a
client; the site's work (database reads and writes) runs in a pool of WORKERS threads, so
a server has WORKERS + 1 threads at most, whatever the traffic. The limits, which the
stdlib server lacks: a request has `timeout` seconds to arrive whole, however slowly it
trickles in (an idle or slow client is dropped without an answer); `max_connections` are
open at once and the next is answered 503 at once; the request line and headers may take
MAX_HEAD bytes (431), a form MAX_FORM (413, and 411 without a Content-Length); anything
that is not HTTP gets 400, never a traceback. One request per connection: no connection
idles between requests.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import h11

log = logging.getLogger("maildesk.web")
MAX_FORM = 8192          # bytes of a POSTed form: a rating and a 2,000-character comment
MAX_HEAD = 16384         # bytes of request line and headers (cookies of a shared domain)
CHUNK = 4096             # bytes read at a time, so MAX_HEAD is checked as the head grows
WORKERS = 4              # threads for a site's work
BACKLOG = 128
WARN_EVERY = 60.0        # seconds between log lines about a full server
LINGER = 1.0             # seconds to read what a client still sends after its answer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    form: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Site:
    """What a server serves. answer runs in the pool (it may block on the database);
    refused is the answer for a status the server gives by itself (400, 405, 411, 413,
    431, 500, 503). label and setting name the site in the log ("rating pages",
    "surveys.web")."""

    label: str
    setting: str
    methods: tuple[str, ...]
    answer: Callable[[Request], Response]
    refused: Callable[[int], Response]


def encode(response: Response) -> bytes:
    """The whole HTTP response; every one closes its connection."""
    head = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "X-Content-Type-Options: nosniff",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in response.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + response.body


def _refusal(site: Site, request: h11.Request) -> int | None:
    """The status of a request refused on its head alone: its body is never read."""
    if request.method.decode("ascii", "replace") not in site.methods:
        return 405
    if len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers) > MAX_HEAD:
        return 431
    if request.method == b"POST":
        length = next((int(v) for n, v in request.headers if n == b"content-length"), None)
        if length is None:             # no length, or chunked: browsers send a length
            return 411
        if length > MAX_FORM:
            return 413
    return None


async def _read(site: Site, reader: asyncio.StreamReader) -> Request | int | None:
    """The connection's request, a refusal's status, or None when the client left without
    one. h11.RemoteProtocolError: what arrived is not HTTP (its error_status_hint is 400 or
    431)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    head: h11.Request | None = None
    form = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(CHUNK))    # b"" at the end: h11 says how
        elif isinstance(event, h11.Request):
            refused = _refusal(site, event)
            if refused is not None:
                return refused
            head = event
            if head.method != b"POST":                     # answered without its body
                return Request(head.method.decode("ascii"),
                               head.target.decode("ascii", "replace"), b"")
        elif isinstance(event, h11.Data):
            form += event.data                             # h11 holds it to Content-Length
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return Request("POST", head.target.decode("ascii", "replace"), bytes(form))
        else:
            return None


class Server:
    """One site's HTTP server (limits in the module's docstring). The port is bound when
    it is made, so a daemon that cannot listen says so at start (OSError)."""

    def __init__(self, site: Site, host: str, port: int, timeout: float,
                 max_connections: int) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.socket = socket.create_server(address[:2], family=family, backlog=BACKLOG)
        self.site = site
        self.timeout = timeout
        self.max_connections = max_connections
        self.open = 0
        self.warned = -WARN_EVERY
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        name = site.setting.replace(".", "-")
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=name)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def shutdown(self) -> None:
        """Stop listening, drop open connections, let an answer being made finish."""
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
                log.warning("%s: %d connections open, the most allowed "
                            "(%s.max_connections); more are answered 503",
                            self.site.label, self.open, self.site.setting)
            writer.write(encode(self.site.refused(503)))  # fits the socket's buffer
            writer.close()
            return
        self.open += 1
        try:
            response = await self._exchange(reader)
            if response is not None:
                await self._send(reader, writer, response)
        except asyncio.CancelledError:
            pass                    # shutdown; ending quietly spares asyncio a false alarm
        finally:
            self.open -= 1
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader) -> Response | None:
        """The answer to the connection's request; None if none came in time."""
        try:
            async with asyncio.timeout(self.timeout):
                request = await _read(self.site, reader)
        except TimeoutError:
            log.debug("web: no whole request in %gs; connection closed", self.timeout)
            return None
        except h11.RemoteProtocolError as e:
            log.debug("web: bad request: %s", e)
            return self.site.refused(e.error_status_hint if e.error_status_hint in (400, 431)
                                     else 400)
        except OSError:                    # the client reset the connection
            return None
        if request is None:
            return None
        if isinstance(request, int):
            return self.site.refused(request)
        try:
            response = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.site.answer, request)
        except Exception:                  # a bug: its traceback, and no false hope
            log.exception("%s: %s failed", self.site.label, request.path)
            response = self.site.refused(500)
        log.debug("web: %s %s %d", request.method, request.path, response.status)
        return response

    async def _send(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    response: Response) -> None:
        """Write the answer, then read and drop what the client still sends for up to LINGER
        seconds: closing on unread bytes resets the connection, and the client might lose
        the answer (a 413 or 431 while its request is still coming). A client that does
        not take the answer in time is cut off."""
        writer.write(encode(response))
        try:
            async with asyncio.timeout(self.timeout):
                await writer.drain()
            writer.write_eof()
            async with asyncio.timeout(LINGER):
                while await reader.read(CHUNK):
                    pass
        except (TimeoutError, OSError):
            pass
