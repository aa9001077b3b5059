"""An event as fire() hands it to the steps after its record: the rules, the clocks, the
notices; and the mail that caused it, when a mail did."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..mail.classify import PERSON
from ..mail.parse import ParsedMail
from ..store.rows import Pending, TicketRow


@dataclass
class Mail:
    """The mail that caused an event, as the rules and the notices see it."""

    parsed: ParsedMail
    message: Pending | None                  # as stored on the ticket: notices answer it
    verdict: str = PERSON                    # mail/classify.py
    recipients: tuple[str, ...] = ()
    mailbox: str | None = None               # the IMAP mailbox it came from
    verified: Callable[[], bool] = lambda: False   # asked only by a rule that wants it
    unacknowledged: str | None = None        # why its sender gets no acknowledgement
    ack_limited: bool = False                # its sender reached desk.ack_limit: they get
                                             # acknowledgement_limit instead, whatever a
                                             # rule chose
    acknowledgement: str | None = "acknowledgement"   # the template; a rule may change it
    acknowledgement_rule: str | None = None
    suggest: int | None = None               # articles its acknowledgement suggests at most,
                                             # if a rule said (suggest_articles)
    told: set[tuple[int, str, tuple[str, ...]]] = field(default_factory=set)   # see notify()


@dataclass(frozen=True)
class Happening:
    """One fired event, as the steps after the record see it."""

    ticket: TicketRow
    kind: str
    actor: str | None
    data: dict[str, Any]
    mail: Mail | None = None
    depth: int = 0
    context: dict[str, Any] = field(default_factory=dict)


