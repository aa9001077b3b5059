"""Logging of events that an attacker can repeat at will: the first few, then a count.

A refused connection or a dropped silent session is worth a line, but a
hostile client causes thousands a minute, and a line each buried everything
else and filled the disk (issue 15: 120 MB of log in two and a half minutes).
So each kind of event gets a `LogThrottle`: the first `burst` events of a
period are logged as they come, the rest are counted and reported in one
line when the period is over, so the operator still learns how many there
were.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class LogThrottle:
    """One kind of event: `burst` lines per `period` seconds, then a summary line.

    `summary` is a str.format template with `{count}` (the events not logged
    one by one) and `{seconds}` (the length of the period they fell in), e.g.
    "refused {count:,} more connections in the last {seconds:.0f} s". The
    summary is written by the first event after the period, or by `flush()`,
    which the owner calls now and then (and with `force` at shutdown) so a
    flood that stops is still counted.
    """

    def __init__(self, log: logging.Logger, summary: str, *, level: int = logging.WARNING,
                 burst: int = 5, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.summary = summary
        self.level = level
        self.burst = burst
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()   # reusable from worker threads, not only the loop
        self._since: float | None = None
        self._seen = 0

    def __call__(self, msg: str, *args: object) -> None:
        """One event: logged as `msg % args` while the period's burst lasts, else counted."""
        with self._lock:
            now = self.clock()
            report = self._roll(now, force=False)
            if self._since is None:
                self._since = now
            self._seen += 1
            shown = self._seen <= self.burst
        self._write(report)
        if shown:
            self.log.log(self.level, msg, *args)

    def flush(self, force: bool = False) -> None:
        """Write the summary of a period that is over (any period, when `force`)."""
        with self._lock:
            report = self._roll(self.clock(), force)
        self._write(report)

    def _roll(self, now: float, force: bool) -> str | None:
        """End the period if it is over; return its summary if events went unlogged."""
        if self._since is None or (not force and now - self._since < self.period):
            return None
        unlogged, seconds = self._seen - self.burst, now - self._since
        self._since, self._seen = None, 0
        return self.summary.format(count=unlogged, seconds=seconds) if unlogged > 0 else None

    def _write(self, report: str | None) -> None:
        if report is not None:
            self.log.log(self.level, "%s", report)
