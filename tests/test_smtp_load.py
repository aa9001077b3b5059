"""The SMTP listener of a real `maildesk serve` under hostile load (issue 15): caps on
connections, the short idle timeout, the recipient cap, control characters in envelope
addresses, the open-file limit, and a log that stays small through all of it."""
from __future__ import annotations

import asyncio
import logging
import re
import resource
import selectors
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from conftest import Daemon, free_port, mail, run_cli, wait_for

from maildesk.intake.smtp import client_of


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def count(d: Daemon, table: str) -> int:
    with closing(sqlite3.connect(d.config.parent / "data" / "maildesk.db")) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@contextmanager
def open_files(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE for the block; a daemon started in it inherits it."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    if old[1] != resource.RLIM_INFINITY and old[1] < soft:
        pytest.skip(f"the hard open-file limit ({old[1]}) is below the {soft} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def connect(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


class Client:
    """A raw SMTP client: sends any bytes, reads one reply (its last line)."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = connect(port, source)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return line.rstrip(b"\r\n")

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def flood(port: int, sources: list[str], socks: list[socket.socket]) -> None:
    """Connect from each source into socks, 50 at a time: a batch is sent once the daemon has
    answered the one before, so none waits out a SYN dropped from a full accept queue (1 s
    each)."""
    for at in range(0, len(sources), 50):
        socks += [connect(port, source) for source in sources[at:at + 50]]
        socks[-1].recv(1, socket.MSG_PEEK)


def replies(socks: list[socket.socket], timeout: float = 20) -> list[bytes]:
    """What each socket has been sent, once every one has at least its first line."""
    got = [b""] * len(socks)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    waiting = set(range(len(socks)))
    while time.monotonic() < deadline:
        events = sel.select(0.2)
        for key, _ in events:
            i = key.data
            data = key.fileobj.recv(4096)   # type: ignore[union-attr]
            if not data:
                sel.unregister(key.fileobj)
            got[i] += data
            if b"\r\n" in got[i]:
                waiting.discard(i)
        if not waiting and not events:
            break
    sel.close()
    assert not waiting, f"{len(waiting)} connections got no reply at all"
    return got


def test_a_flood_of_idle_connections_is_capped_and_a_normal_client_gets_through(
        daemon: Callable[..., Daemon]) -> None:
    """1,100 idle connections: one client holds its 20, the crowd fills the 500 and gives
    way to newcomers, the rest hear 421 at once, and a normal mail is taken at once."""
    with open_files(1024):              # the common default: the daemon must live with it
        d = daemon()
    hog = ["127.0.0.2"] * 100
    crowd = [f"127.0.1.{n // 20 + 1}" for n in range(1000)]     # 50 addresses, 20 each
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with open_files(max(soft, len(hog) + len(crowd) + 300)):
        socks: list[socket.socket] = []
        try:
            flood(d.port, hog + crowd, socks)
            start = time.monotonic()
            with smtplib.SMTP("127.0.0.1", d.port, timeout=5) as s:
                s.sendmail("ana@customer.test", ["support@localhost"], crlf(mail()))
            accepted = time.monotonic() - start
            wait_for(lambda: count(d, "tickets") == 1, 2, "the normal mail's ticket")
            ticketed = time.monotonic() - start
            got = replies(socks)
        finally:
            for sock in socks:
                sock.close()
    assert accepted < 2 and ticketed < 2, (accepted, ticketed)
    first = [g.split(b"\r\n")[0] for g in got]
    at_door = [i for i, line in enumerate(first) if line.startswith(b"421 ")]
    evicted = [i for i, g in enumerate(got) if g.startswith(b"220 ") and b"\r\n421 " in g]
    held = [i for i, g in enumerate(got) if g.startswith(b"220 ") and b"421 " not in g]
    assert len(at_door) + len(evicted) + len(held) == 1100
    assert len(held) == 500 - 1, "the listener holds its 500, less the one the normal mail took"
    assert all(b"421 4.7.0 " in got[i] for i in at_door + evicted)
    hog_refused = [i for i in at_door if i < 100]
    assert len(hog_refused) == 80, "one client gets 20 connections, however many it opens"
    assert all(first[i] == b"421 4.7.0 Too many connections from your address, try again "
                          b"later" for i in hog_refused)
    shares = Counter((hog + crowd)[i] for i in held)
    assert len(shares) == 51 and max(shares.values()) - min(shares.values()) <= 1, \
        "idle sessions made room for newcomers until every client held as many"

    lines = d.log.read_text().splitlines()
    assert len(lines) < 40 and d.log.stat().st_size < 8000, lines
    assert d.stop() == 0
    text = d.log.read_text()

    def logged(one: str, summary: str) -> int:
        found = re.search(summary, text)
        return text.count(one) + (int(found.group(1).replace(",", "")) if found else 0)
    assert logged("refused an SMTP connection", r"refused ([\d,]+) more SMTP connections over "
                                                r"a cap in the last \d+ s") == len(at_door)
    assert logged("closed an idle SMTP session", r"closed ([\d,]+) more idle SMTP sessions to "
                                                 r"make room") == len(evicted)


def test_a_full_listener_makes_room_from_the_busiest_clients_idle_sessions_only(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon(smtp={"max_connections": 4, "max_connections_per_client": 2})
    a_busy, a_idle = Client(d.port, "127.0.0.2"), Client(d.port, "127.0.0.2")
    assert a_busy.cmd(b"EHLO a").startswith(b"250")
    assert a_busy.cmd(b"MAIL FROM:<ana@customer.test>").startswith(b"250")
    assert a_busy.cmd(b"RCPT TO:<support@localhost>").startswith(b"250")
    b_first, b_second = Client(d.port, "127.0.0.3"), Client(d.port, "127.0.0.3")
    c = Client(d.port, "127.0.0.4")             # full: A's idle session makes room
    assert c.greeting.startswith(b"220")
    assert a_idle.reply().startswith(b"421 4.7.0")
    e = Client(d.port, "127.0.0.5")             # full: B holds 2, more than E by 2
    assert e.greeting.startswith(b"220") and b_first.reply().startswith(b"421 4.7.0")
    late = Client(d.port, "127.0.0.6")          # A, B, C, E hold one each: no one to move
    assert late.greeting == b"421 4.7.0 Too many connections, try again later"
    assert Client(d.port, "127.0.0.4").greeting.startswith(b"421 4.7.0")
    assert a_busy.cmd(b"DATA").startswith(b"354")    # the transaction was never cut
    assert a_busy.cmd(crlf(mail()) + b".").startswith(b"250")
    for x in (a_busy, a_idle, b_first, b_second, c, e, late):
        x.close()


def test_a_silent_client_is_dropped_after_the_idle_timeout_but_not_during_data(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon(smtp={"idle_timeout": 1})
    silent = Client(d.port)
    assert silent.cmd(b"EHLO x").startswith(b"250")
    start = time.monotonic()
    assert silent.reply() == b"421 4.4.2 Timeout exceeded, closing connection"
    assert 0.9 < time.monotonic() - start < 3
    assert silent.file.readline() == b"", "and the connection is closed"

    slow = Client(d.port)
    slow.cmd(b"EHLO x")
    slow.cmd(b"MAIL FROM:<ana@customer.test>")
    slow.cmd(b"RCPT TO:<support@localhost>")
    assert slow.cmd(b"DATA").startswith(b"354")
    time.sleep(1.5)                                 # DATA has smtp.timeout, not the idle one
    assert slow.cmd(crlf(mail()) + b".").startswith(b"250")
    start = time.monotonic()                        # after the mail, the idle one again
    assert slow.reply().startswith(b"421 4.4.2")
    assert time.monotonic() - start < 3
    for x in (silent, slow):
        x.close()
    assert "SMTP session from 127.0.0.1 timed out" in d.log.read_text()


def test_the_101st_recipient_gets_452_and_the_mail_to_100_is_taken(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo()
        s.mail("ana@customer.test")
        for _ in range(100):
            assert s.rcpt("support@localhost")[0] == 250
        assert s.rcpt("support@localhost") == (452, b"4.5.3 Too many recipients")
        assert s.data(crlf(mail()))[0] == 250
    wait_for(lambda: count(d, "tickets") == 1, what="the mail's ticket")
    with closing(sqlite3.connect(d.config.parent / "data" / "maildesk.db")) as db:
        assert db.execute("SELECT json_array_length(rcpt_to) FROM inbound").fetchall() == [(100,)]


def test_control_characters_in_envelope_addresses_get_501_and_nothing_is_stored(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    c = Client(d.port)
    c.cmd(b"EHLO x")
    # NUL, SOH, TAB, ESC, DEL, a bare CR, C1 (NEL) in UTF-8, a byte that is not UTF-8
    for bad in (b"\x00", b"\x01", b"\t", b"\x1b", b"\x7f", b"\r", b"\xc2\x85", b"\xff"):
        assert c.cmd(b"MAIL FROM:<a" + bad + b"@x>") == b"501 5.1.7 Bad sender address syntax"
        assert c.cmd(b"RCPT TO:<support@localhost>").startswith(b"503"), "no transaction began"
        assert c.cmd(b"MAIL FROM:<ana@customer.test>").startswith(b"250")
        for rcpt in (b"support+" + bad + b"@localhost", b"support@local" + bad + b"host",
                     b"support" + bad + b"@localhost"):
            assert c.cmd(b"RCPT TO:<" + rcpt + b">") == \
                b"501 5.1.3 Bad recipient address syntax", (bad, rcpt)
        assert c.cmd(b"DATA").startswith(b"503"), "no recipient was taken"
        assert c.cmd(b"RSET").startswith(b"250")
    c.close()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:     # the same, without them
        assert s.sendmail("ana@customer.test", ["support@localhost"], crlf(mail())) == {}
    wait_for(lambda: count(d, "tickets") == 1, what="the good mail's ticket")
    assert count(d, "inbound") == 1


def test_the_daemon_raises_its_open_file_limit_to_hold_its_connections(
        daemon: Callable[..., Daemon]) -> None:
    from maildesk.intake.listening import HEADROOM
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 3000 + HEADROOM
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise to")
    with open_files(1024):
        d = daemon(smtp={"max_connections": 3000})
    expect = want if hard == resource.RLIM_INFINITY else hard
    assert f"open-file limit raised from 1024 to {expect}" in d.log.read_text()
    [listener] = d.listeners()       # the SMTP sessions are the listener process's
    limits = Path(f"/proc/{listener}/limits").read_text()
    assert re.search(rf"Max open files\s+{expect}\s", limits), limits


@pytest.mark.parametrize("pages", [0, 10])
def test_a_low_hard_limit_lowers_the_cap_and_says_so_once(
        tmp_path: Path, desk_config: Callable[..., Path], pages: int) -> None:
    """pages: the rating pages' connections, served by the daemon's process: not from the
    listener process's open-file limit."""
    from maildesk.intake.listening import HEADROOM
    room = 300 - HEADROOM
    cfg = desk_config(surveys={"web": {"enabled": True, "port": free_port(),
                                       "max_connections": pages}}) if pages else desk_config()
    port = int(re.search(r"port: (\d+)", cfg.read_text()).group(1))  # type: ignore[union-attr]
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maildesk", "--config", str(cfg), "serve"], stdout=out,
            stderr=out, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                              (300, 300)))
    d = Daemon(cfg, port, log)
    d.proc = proc
    try:
        wait_for(d._listening, 30, "the daemon to listen")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            assert s.sendmail("ana@customer.test", ["support@localhost"], crlf(mail())) == {}
        assert d.stop() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = [ln for ln in log.read_text().splitlines() if "open-file limit" in ln]
    assert len(said) == 1 and f"smtp.max_connections lowered to {room} (from 500), " \
                              "max_connections_per_client to" in said[0], said


def test_a_per_client_cap_over_half_the_total_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text("smtp:\n  max_connections: 30\n  max_connections_per_client: 20\n")
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 78
    assert b"max_connections_per_client (20) must be at most half of max_connections (30)" \
        in r.stderr


@pytest.mark.parametrize(("peer", "client"), [
    (("192.0.2.7", 4000), "192.0.2.7"),
    (("2001:db8:1:2:aaaa::1", 4000, 0, 0), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:bbbb::9", 4000, 0, 0), "2001:db8:1:2::/64"),
    (("::ffff:192.0.2.7", 4000, 0, 0), "192.0.2.7"),
])
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(peer: tuple[object, ...], client: str) -> None:
    assert client_of(peer) == client


def test_our_own_mta_is_one_address_for_everyone_and_not_held_to_the_per_client_cap(
        daemon: Callable[..., Daemon]) -> None:
    """The MTA named in desk.trusted_relays relays every sender's mail from one address:
    it may hold more than a client's share (the total still holds), anyone else may not."""
    d = daemon(desk={"trusted_relays": ["127.0.0.3"]},
               smtp={"max_connections": 40, "max_connections_per_client": 4})
    socks: list[socket.socket] = []
    try:
        flood(d.port, ["127.0.0.3"] * 10 + ["127.0.0.4"] * 6, socks)
        got = [g.split(b"\r\n")[0][:3] for g in replies(socks)]
    finally:
        for sock in socks:
            sock.close()
    assert got[:10] == [b"220"] * 10, "the relay"
    assert got[10:] == [b"220"] * 4 + [b"421"] * 2, "anyone else"


def test_running_out_of_file_descriptors_is_a_few_lines_not_a_traceback_a_second(
        caplog: pytest.LogCaptureFixture) -> None:
    """Past the open-file limit asyncio retries accept() every second and reports each
    failure with a traceback; the listener's loop handler counts them instead."""
    from maildesk.intake.listening import loop_error
    from maildesk.intake.smtp import Sessions
    sessions = Sessions(10, 5)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(300):
                loop_error(sessions, loop, {"message": "socket.accept() out of system resource",
                                            "exception": OSError(24, "Too many open files")})
            loop_error(sessions, loop, {"message": "something else broke"})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "accept" in r.getMessage()]
    assert 1 <= len(lines) <= 5 and not any(r.exc_info for r in lines)
    assert any("something else broke" in r.getMessage() for r in caplog.records)
