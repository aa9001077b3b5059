"""The rating pages' server under abuse, inside a real `maildesk serve` (issue 15, finding 5b):
idle connections are dropped after surveys.web.timeout and stall neither the pages nor the
SMTP listener of the same process; what is not HTTP gets a 4xx, never a traceback."""
from __future__ import annotations

import re
import smtplib
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import Daemon, desk_key, free_port, mail, wait_for

from maildesk.tickets.refs import rate_address

DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}]}


def start(daemon: Callable[..., Daemon], **web: object) -> tuple[Daemon, int]:
    """A daemon with its rating pages on; the web port listens a moment after SMTP's."""
    port = free_port()
    d = daemon(desk=DESK, surveys={"web": {"enabled": True, "port": port,
                                           "base_url": f"http://127.0.0.1:{port}/r", **web}})

    def serving() -> bool:
        try:
            return status(port, b"GET /r/x HTTP/1.1\r\nHost: x\r\n\r\n", 0.5) == 404
        except OSError:
            return False
    wait_for(serving, 10, "the rating pages")
    time.sleep(0.2)             # that connection is over on the server's side too
    return d, port


def smtp_delivery(port: int, message_id: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=2) as s:
        s.ehlo()
        s.mail("ana@customer.test")
        s.rcpt("support@localhost")
        code, _ = s.data(mail(message_id=message_id))
    return code


@contextmanager
def connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """n TCP connections to port that send nothing."""
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield opened
    finally:
        for s in opened:
            s.close()


def closed_by_server(s: socket.socket, deadline: float) -> bool:
    s.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def status(port: int, raw: bytes, timeout: float = 5) -> int | None:
    """The status code of the answer to raw; None when the connection ends without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        with s.makefile("rb") as f:     # the socket closes only once its file does
            line = f.readline().split()
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else None


def threads(d: Daemon) -> int:
    assert d.proc is not None
    status = Path(f"/proc/{d.proc.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_idle_connections_are_dropped_and_stall_neither_the_pages_nor_smtp(
        daemon: Callable[..., Daemon]) -> None:
    d, port = start(daemon, timeout=2)
    assert smtp_delivery(d.port, "<first@customer.test>") == 250
    secret = desk_key(d.config)
    code = rate_address(secret, "support@localhost", "MD-1", "ana@customer.test", "4") \
        .split("+", 1)[1].split("@", 1)[0]
    link = f"GET /r/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    wait_for(lambda: status(port, link) == 200, what="MD-1")
    before = threads(d)

    with connections(port, 200) as idle:
        opened = time.monotonic()
        time.sleep(0.2)                       # the server has taken them all
        during = threads(d)
        t = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/r/{code}", timeout=2) as page:
            assert page.status == 200 and b"Your rating for MD-1: Satisfied." in page.read()
        assert time.monotonic() - t < 2
        t = time.monotonic()
        assert smtp_delivery(d.port, "<second@customer.test>") == 250
        assert time.monotonic() - t < 2
        assert during - before < 10, f"{during - before} threads for 200 idle connections"

        assert all(closed_by_server(s, opened + 2 + 2) for s in idle), \
            "idle connections are closed after surveys.web.timeout (2 s)"
        assert 1.5 < time.monotonic() - opened < 4


def test_what_is_not_http_gets_a_4xx_and_no_traceback(daemon: Callable[..., Daemon]) -> None:
    d, port = start(daemon, max_connections=4)
    with connections(port, 4):
        time.sleep(0.2)
        t = time.monotonic()
        assert status(port, b"") == 503, "one too many"
        assert time.monotonic() - t < 1

    post = b"POST /r/md-1-4-abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    cases = {
        "Content-Length: abc": (post + b"Content-Length: abc\r\n\r\ncomment=x", 400),
        "Content-Length: -1": (post + b"Content-Length: -1\r\n\r\n", 400),
        "a form over MAX_FORM": (post + b"Content-Length: 10000000\r\n\r\ncomment=", 413),
        "a POST without a length": (post + b"\r\ncomment=x", 411),
        "a 64 KiB header line": (b"GET /r/md-1-4-abc HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: "
                                 + b"a" * 65536 + b"\r\n\r\n", 431),
        "not a request line": (b"HELLO\r\n\r\n", 400),
        "a method we do not take": (b"DELETE /r/md-1-4-abc HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    }
    for what, (raw, code) in cases.items():
        assert status(port, raw) == code, what
    assert status(port, b"GET /r/nothing HTTP/1.1\r\nHost: x\r\n\r\n") == 404, \
        "still serving"
    log = d.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log, log
