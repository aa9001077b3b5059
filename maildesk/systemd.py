"""systemd's notification protocol (sd_notify(3)) for `maildesk serve` under Type=notify.

READY=1 tells systemd (and the units ordered After= this one) that mail can be
taken in: the SMTP port accepts connections, the database answered and its schema
is this maildesk's. STATUS= is the line `systemctl status` shows; STOPPING=1 says
a stop has begun; WATCHDOG=1, sent by the daemon's ingest worker, lets systemd
restart a daemon that hangs (WatchdogSec=).

Each message is one datagram on the AF_UNIX socket named by $NOTIFY_SOCKET (a
leading @ names one in the abstract namespace): a few lines, no library needed.
Without NOTIFY_SOCKET (run by hand, under another supervisor) every call does nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

from .mail.headers import one_line

log = logging.getLogger("maildesk")


def watchdog_every(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; None when systemd watches no process, or another one ($WATCHDOG_PID)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """The messages to the service manager; safe to call from any thread."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        where = env.get("NOTIFY_SOCKET", "")
        self.where = where
        self.address = "\0" + where[1:] if where.startswith("@") else where
        self.every = watchdog_every(env) if where else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._pinged = float("-inf")
        self._failed = False

    def send(self, *lines: str) -> None:
        """One message, its lines together; a socket that is gone is said once in the log
        (the daemon runs on: systemd's timeouts tell the rest)."""
        if not self.address:
            return
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX,
                                               socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto("\n".join(lines).encode(), self.address)
            except OSError as e:
                if not self._failed:
                    self._failed = True
                    log.warning("cannot notify systemd at NOTIFY_SOCKET=%s: %s", self.where,
                                e.strerror or e)

    # STATUS= is one line: the protocol is one assignment per line
    def status(self, what: str) -> None:
        self.send(f"STATUS={one_line(what)}")

    def ready(self, what: str) -> None:
        self.send("READY=1", f"STATUS={one_line(what)}")

    def stopping(self, what: str) -> None:
        self.send("STOPPING=1", f"STATUS={one_line(what)}")

    def ping(self) -> None:
        """WATCHDOG=1, at most twice per `every`: the ingest worker calls this on each turn
        of its loop, and a busy one turns far more often than systemd needs to hear."""
        if self.every is None:
            return
        now = time.monotonic()
        if now - self._pinged >= self.every / 2:
            self._pinged = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
