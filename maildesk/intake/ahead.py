"""Parsing the next batch in a second process while this one is being stored.

Parsing is most of the CPU that taking mail costs, and the rest (tickets,
templates, writes) does not need the next batch yet; on two or more cores a
large import or a full mailbox drains nearly twice as fast. The child is
spawned, not forked: a forked child would share the parent's database
handles. A few messages are not worth a process: they are parsed inline.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from ..config.schema import Limits
from ..mail.parse import ParsedMail, Unread, parse_batch

B = TypeVar("B")
Parsed = list[ParsedMail | Unread]
log = logging.getLogger("maildesk.intake")


def worthwhile(messages: int, batch: int) -> bool:
    return (os.cpu_count() or 1) >= 2 and messages > batch


def parse_ahead(batches: Iterator[B], mails: Callable[[B], list[tuple[bytes, str | None]]],
                enabled: bool, limits: Limits) -> Iterator[tuple[B, Parsed | None]]:
    """Each batch with its parsed mails (None: parse inline), one batch ahead."""
    if not enabled:
        for batch in batches:
            yield batch, None
        return
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead: deque[tuple[B, Future[Parsed]]] = deque()
        for batch in batches:
            ahead.append((batch, pool.submit(parse_batch, mails(batch), limits)))
            if len(ahead) > 1:
                yield _result(*ahead.popleft())
        while ahead:
            yield _result(*ahead.popleft())


def _result(batch: B, future: Future[Parsed]) -> tuple[B, Parsed | None]:
    """The batch parsed, or (the worker died: a crash in C, memory) None: parse it inline,
    where each mail is on its own."""
    try:
        return batch, future.result()
    except Exception as e:  # noqa: BLE001 - BrokenProcessPool and whatever pickling raised
        log.error("the parse worker failed (%s: %s); parsing this batch inline",
                  type(e).__name__, e)
        return batch, None
