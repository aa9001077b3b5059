"""The log as an operator greps it and a collector parses it: one line a record.

Every record is one line, whatever it carries: a message, a field or a
traceback with a line break (an exception's text, a customer's subject with
CR LF or an escape sequence) is folded, so one record never looks like two
and nothing in the log colours a terminal. Two formats (setting `log.format`):

- text: `TIME LEVEL LOGGER: message key=value ...`, for people and grep; a
  traceback ends the line, its lines joined by ` | ` as Python wrote them, so
  that `grep Traceback` finds the record and the line says where it broke.
- json: one object a line with time, level, logger, message, the event's
  fields (what a caller passes in `extra=`) and `traceback`, for journald,
  Loki or any collector. Twenty lines of json.dumps, not python-json-logger:
  that library's field renaming and class-path configuration would be more
  than this.

The same warning or error over and over (a database down fails every poll the
same way) is let through `log.repeats` times in `log.repeat_window`, then counted and
said once: "... repeated 57 times in the last 60 s" (RepeatFilter).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# what every LogRecord has: anything else on a record came in `extra=` and is a field
_STANDARD = {*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime",
             "taskName"}
LONGEST = 20000        # characters of a message or field: a log line is not an archive


def fold(text: str) -> str:
    """text on one line: its line breaks and control characters (CR, LF, ESC, ...) folded
    to spaces by one_line(), as in a header we send (imported on the first line logged: a
    command that logs nothing, `tickets list`, does without the mail modules)."""
    from .mail.headers import one_line
    return one_line(text, LONGEST)


def domain_of(address: str) -> str:
    """An address's domain, all a log line at INFO says of a customer's address; "" for
    the null sender."""
    return fold(address.rpartition("@")[2].strip("<> ").lower())


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event's own fields: what the caller passed in `extra=`."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD
            and k != "traceback"}


def _traceback(record: logging.LogRecord) -> str | None:
    """The record's traceback in one line, its lines joined by ` | `: the exception's, or
    one the caller kept as text (`extra={"traceback": ...}`, a crash in a worker)."""
    kept = record.__dict__.get("traceback")
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
    elif isinstance(kept, str):
        text = kept
    elif record.stack_info:
        text = record.stack_info
    else:
        return None
    return " | ".join(fold(line) for line in text[-LONGEST:].splitlines() if line.strip())


def _time(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC, to the millisecond: the same in every node's log, sortable."""
    at = datetime.fromtimestamp(record.created, timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _value(v: Any) -> Any:
    """A field as JSON can hold it, folded: a string from a mail stays on its line."""
    if isinstance(v, str):
        return fold(v)
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return fold(str(v))


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: message key=value ... | traceback`; a value with a space or a
    quote is quoted as JSON quotes it."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), record.levelname, f"{record.name}:",
                 fold(record.getMessage())]
        for k, v in fields(record).items():
            if v is None:           # JSON says null; here, nothing to say
                continue
            v = _value(v)
            text = v if isinstance(v, str) else json.dumps(v)
            if not text or any(c in text for c in ' "='):
                text = json.dumps(text)
            parts.append(f"{k}={text}")
        tb = _traceback(record)
        if tb is not None:          # last and unquoted: read as Python wrote it
            parts.append(f"| {tb}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object a line; non-ASCII escaped, so no byte in it can move a cursor."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _time(record), "level": record.levelname,
                               "logger": record.name, "message": fold(record.getMessage())}
        for k, v in fields(record).items():
            out.setdefault(k, _value(v))
        tb = _traceback(record)
        if tb is not None:
            out["traceback"] = tb
        return json.dumps(out, ensure_ascii=True, default=str)


def json_line(logger: str, message: str, values: dict[str, Any]) -> str:
    """A command's own summary as one INFO record of the JSON log: where `log.format` is
    json, a collector reading the command's stderr finds nothing but JSON objects."""
    record = logging.LogRecord(logger, logging.INFO, "", 0, message, None, None)
    record.__dict__.update(values)
    return JsonFormatter().format(record)


@dataclass
class _Seen:
    since: float                 # when this message's window began
    count: int = 0               # how often it came in the window
    last: str = ""               # the last one held back, as logged


class RepeatFilter(logging.Filter):
    """The same warning or error (logger, level and format string) `limit` times a
    `window`, then counted; the count is written as one record of its own when the
    window is over (at the next record of any kind, or by flush()). Below WARNING every
    record passes: an event is worth its line, however often it happens."""

    def __init__(self, emit: Callable[[logging.LogRecord], object], limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.emit, self.limit, self.window, self.clock = emit, limit, window, clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or "repeated" in record.__dict__:
            return True       # events are each worth their line; a summary is ours
        key = (record.name, record.levelno, str(record.msg))
        with self._lock:
            now = self.clock()
            ended = self._sweep(now)
            seen = self._seen.setdefault(key, _Seen(now))
            seen.count += 1
            shown = seen.count <= self.limit
            if not shown:
                seen.last = record.getMessage()
        for summary in ended:
            self.emit(summary)
        return shown

    def flush(self, force: bool = False) -> None:
        """Write the counts of windows that are over (of every window, when force)."""
        with self._lock:
            ended = self._sweep(self.clock(), force)
        for summary in ended:
            self.emit(summary)

    def _sweep(self, now: float, force: bool = False) -> list[logging.LogRecord]:
        """Forget the windows that are over; the summaries of those that held some back."""
        out = []
        for key, seen in list(self._seen.items()):
            if force or now - seen.since >= self.window:
                del self._seen[key]
                held = seen.count - self.limit
                if held > 0:
                    name, level, _msg = key
                    out.append(logging.makeLogRecord({
                        "name": name, "levelno": level, "levelname": logging.getLevelName(level),
                        "msg": "%s ... repeated %d more times in the last %.0f s",
                        "args": (seen.last, held, now - seen.since), "repeated": held}))
        return out


_FORMATS: dict[str, type[logging.Formatter]] = {"text": TextFormatter, "json": JsonFormatter}


def setup(level: str, format: str = "text", repeats: int = 10, window: float = 60.0
          ) -> RepeatFilter:
    """Send every record to stderr, one line each in `format`, repeats held back; returns
    the filter, whose flush(force=True) the caller may call at the end."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMATS[format]())
    repeat = RepeatFilter(handler.handle, repeats, window)
    handler.addFilter(repeat)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("aiosmtpd", "alembic", "apscheduler", "flufl.bounce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # dkimpy says ERROR for every signature it cannot check (a key not in DNS, a timeout):
    # ordinary mail, whose verdict the desk records itself (authentication.py); an ERROR
    # line each would page whoever alerts on ERROR
    logging.getLogger("dkimpy").setLevel(logging.CRITICAL)
    # aiosmtpd's session log warns once per unknown command, quoting what the client sent:
    # a hostile client writes the log at will. Our listener logs what matters, throttled.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    return repeat
