"""The SMTP listener in a process of its own, which `maildesk serve` starts and stops.

In the daemon's process the listener shared the interpreter's lock with the ingest
worker, whose parsing, rules and notices take several milliseconds of CPU per mail:
each of the half-dozen turns of an SMTP transaction waited for the worker's slice, and
a sender waited 80 ms for a 250 in the median and more than a second at the 99th
percentile (issue 22). Here the listener has a core's time to itself: it reads the
mail, stores it (smtp.py's group commit, whose transactions go first at SQLite's lock,
store/turns.py) and says 250; the daemon's worker makes the tickets.

The two talk over a pipe, a byte at a time, listener to daemon: R (listening), A (a
mail stored: wake the worker), T (the listener's event loop turned: the watchdog's
sign of life), or E and a line (it could not listen, and why; then it exits). The
daemon tells it to stop with SIGTERM and to re-read its settings with SIGHUP. It dies
with the daemon (PR_SET_PDEATHSIG): a daemon killed outright leaves no listener behind
holding the port.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..config.schema import Settings
from ..store.blob_rows import open_blobs
from ..store.db import make_engine
from .smtp import Sessions, Writer, start, stop

log = logging.getLogger("maildesk.smtp")
READY, ACCEPTED, TURNED, ERROR = b"R", b"A", b"T", b"E"
TURN_EVERY = 1.0     # seconds between the listener's signs of life, unless told
# Open files the listener needs besides its SMTP sessions: the database, blobs, the log,
# and a burst of connections accepted only to be refused (asyncio accepts up to 100 at
# a time before any is closed).
HEADROOM = 160
PR_SET_PDEATHSIG = 1


def open_file_room(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit if it is below `wanted`; return how
    many of the `wanted` open files the limit now allows.

    The soft limit is often 1,024 while the hard one is far higher. Past it,
    accept() fails: no mail gets in, and asyncio logs a traceback per attempt
    (issue 15: 120 MB of log in two and a half minutes).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, e)
            return soft
        log.info("open-file limit raised from %d to %d", soft, target)
        soft = target
    return min(soft, wanted)


def fit_sessions(sessions: Sessions, settings: Settings) -> None:
    """Lower the SMTP caps to what the open-file limit holds, saying so in one line."""
    room = open_file_room(sessions.total + HEADROOM) - HEADROOM
    if room >= sessions.total:
        return
    total, per_client = max(2, room), sessions.per_client
    sessions.total = total
    sessions.per_client = max(1, min(per_client, total // 2))
    log.warning("the open-file limit leaves room for %d SMTP sessions: smtp.max_connections "
                "lowered to %d (from %d), max_connections_per_client to %d (from %d); "
                "raise the hard limit (LimitNOFILE= in systemd) to lift it",
                max(room, 0), total, settings.smtp.max_connections, sessions.per_client,
                per_client)


def loop_error(sessions: Sessions, loop: asyncio.AbstractEventLoop,
               context: dict[str, Any]) -> None:
    """asyncio's report of an error no task caught. Out of file descriptors, the listener
    retries accept() every second, each time with a traceback: throttled, like the
    listener's own refusals; anything else as asyncio reports it."""
    if context.get("message", "").startswith("socket.accept() out of system resource"):
        sessions.refused("cannot accept SMTP connections: %s; raise the open-file "
                         "limit (LimitNOFILE=) or lower smtp.max_connections",
                         context.get("exception"))
        return
    loop.default_exception_handler(context)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):    # not Linux: the pipe's end stops it instead
        pass


async def listen(settings: Settings, report: int, reread: Callable[[], Settings | None],
                 turn_every: float = TURN_EVERY) -> int:
    """The listener process's life; its exit code. report: the pipe to the daemon;
    turn_every: seconds between its signs of life (the daemon's watchdog wants them at
    least twice per interval)."""
    _die_with_parent()
    say = os.fdopen(report, "wb", buffering=0)
    engine = make_engine(settings.database_url, urgent=True)
    store = Writer(settings, engine, open_blobs(settings, engine))
    try:
        return await _serve(store, say, reread, turn_every)
    finally:
        store.blobs.close()
        engine.dispose()


async def _serve(store: Writer, say: BinaryIO, reread: Callable[[], Settings | None],
                 turn_every: float) -> int:
    """listen()'s listening, on its store, until told to stop."""
    loop = asyncio.get_running_loop()
    settings = store.settings
    sessions = Sessions(settings.smtp.max_connections, settings.smtp.max_connections_per_client,
                        lambda client: store.settings.desk.relayed_by_us(client))
    fit_sessions(sessions, settings)
    loop.set_exception_handler(lambda lp, ctx: loop_error(sessions, lp, ctx))

    def accepted() -> None:
        say.write(ACCEPTED)
    try:
        listening = await start(store, accepted, sessions)
    except OSError as e:
        say.write(ERROR + f"{e.errno} {e.strerror}\n".encode())
        return 1
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    def reload() -> None:
        fresh = reread()
        if fresh is not None:
            store.settings = fresh.model_copy(update={"smtp": settings.smtp})
    loop.add_signal_handler(signal.SIGHUP, reload)
    say.write(READY)
    while not stopping.is_set():
        try:
            say.write(TURNED)
        except BrokenPipeError:         # the daemon is gone
            break
        try:
            await asyncio.wait_for(stopping.wait(), turn_every)
        except TimeoutError:
            pass
    await stop(listening, sessions, settings.smtp.shutdown_grace)
    return 0


class ListenerProcess:
    """The daemon's side: starts `maildesk listen`, hears it, stops it."""

    def __init__(self, config: Path | None, on_accept: Callable[[], None],
                 turn_every: float = TURN_EVERY) -> None:
        self.config, self.on_accept, self.turn_every = config, on_accept, turn_every
        self.proc: subprocess.Popen[bytes] | None = None
        self.turned = time.monotonic()
        self.accepted_at = float("-inf")   # when a mail was last stored (monotonic)
        self._read = -1
        self._error = b""
        self._ready: asyncio.Future[None] | None = None
        self.ended: asyncio.Event = asyncio.Event()

    async def start(self) -> None:
        """Start it and wait until it listens; OSError (its errno and words) if it cannot."""
        loop = asyncio.get_running_loop()
        read, write = os.pipe()
        config = ["--config", str(self.config)] if self.config is not None else []
        # systemd hears the daemon alone (NotifyAccess=main)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maildesk", *config, "listen", "--report-fd",
                 str(write), "--turn-every", f"{self.turn_every:g}"],
                pass_fds=(write,), env=env)
        finally:
            os.close(write)
        self._read = read
        self._ready = loop.create_future()
        loop.add_reader(read, self._hear)
        await self._ready

    def _hear(self) -> None:
        try:
            got = os.read(self._read, 4096)
        except OSError:
            got = b""
        if not got:         # the listener has ended
            asyncio.get_running_loop().remove_reader(self._read)
            os.close(self._read)
            self.ended.set()
            if self._ready is not None and not self._ready.done():
                code, _, words = self._error[1:].decode(errors="replace").strip() \
                    .partition(" ")
                self._ready.set_exception(OSError(
                    int(code) if code.isdigit() else errno.EIO,
                    words or "the listener process ended before it listened"))
            return
        if self._error:     # the rest of the line that says why it could not listen
            self._error += got
            return
        got, error, why = got.partition(ERROR)
        self._error = error + why
        if ACCEPTED in got:
            self.accepted_at = time.monotonic()
            self.on_accept()
        if TURNED in got:
            self.turned = time.monotonic()
        if READY in got and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reload(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)

    async def stop(self, grace: float) -> None:
        """SIGTERM: it stops accepting, lets open transactions finish for `grace` seconds
        and says 421 to the rest; killed if it has not ended well after that."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, grace + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
