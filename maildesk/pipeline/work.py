"""What travels through the ingest pipeline, and the named ways it can end early.

Outcomes derive from BaseException (as Mailman's DiscardMessage does) so that
no `except Exception` in a stage can swallow them; only the driver catches.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config.schema import Settings
from ..mail.parse import ParsedMail, Unread
from ..notify.templates import Templates
from ..rules.engine import EMPTY, RuleSet
from ..sla.policy import Slas
from ..store.blobs import BlobBatch
from ..tickets.ledger import Ledger, Pending, TicketRow
from ..tickets.refs import Grant


class Outcome(BaseException):
    """A stage decided this mail's fate; what it wrote so far is kept."""

    state = "?"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Duplicate(Outcome):
    state = "duplicate"


class Refused(Outcome):
    state = "refused"


class Dropped(Outcome):
    """A rule dropped it (spam): kept raw, no ticket; what the stages wrote is rolled back."""

    state = "spam"


class Classified(Outcome):
    """A machine's mail that makes no ticket (auto-reply, loop, bounce, bulk): kept, noted."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.state = kind


class Quarantined(Outcome):
    """Kept raw for a person to look at; what the stages wrote is rolled back."""

    state = "quarantined"


class Crashed(Exception):
    """A crash that happened elsewhere (the parse worker), raised here with its traceback."""

    def __init__(self, reason: str, trace: str) -> None:
        super().__init__(reason)
        self.trace = trace


@dataclass(frozen=True)
class Context:
    """What stages may use. A new one per batch: `now` is the batch's clock."""

    ledger: Ledger
    settings: Settings
    blobs: BlobBatch
    templates: Templates
    secrets: tuple[bytes, ...]     # tokens are made with the first, read with any
    now: datetime
    rules: RuleSet = EMPTY
    slas: Slas | None = None       # None: no SLA clocks (tests of other things)
    dns: Callable[..., Any] | None = None   # DKIM key lookups; None: the system resolver

    def write(self) -> None:
        """What the batch decided into the tables, its blobs durable and indexed (the
        caller commits)."""
        self.ledger.write()
        self.blobs.finish()


@dataclass(frozen=True)
class Arrival:
    """An accepted mail as the pipeline sees its delivery: plain values, no row."""

    id: int | None                # inbound row id; None until written (ingest)
    source: str
    origin: str | None
    mail_from: str | None
    rcpt_to: tuple[str, ...]
    digest: str
    size: int
    received_at: datetime
    attempts: int = 0
    queue: str | None = None      # named by the intake (an IMAP mailbox); else by recipient
    released: bool = False        # an operator released it: a person's mail, read or not


@dataclass
class Work:
    inbound: Arrival
    raw: bytes
    parsed: ParsedMail | None = None
    parsed_ahead: ParsedMail | Unread | None = None   # by a worker process, or why not
    ticket: TicketRow | None = None
    thread_by: str | None = None          # reply-address | tag | references
    linked_to: TicketRow | None = None    # a closed ticket this mail's new ticket follows
    reopen: bool = False
    message: Pending | None = None
    grant: Grant | None = None            # a live token address of a ticket, for its sender
    agent: str | None = None              # set when the sender is an authenticated agent
    unverified_agent: str | None = None   # an agent's From that nothing proved
    proven_agent: str | None = None       # DKIM or a trusted Authentication-Results
    head: list[tuple[str, str]] = field(default_factory=list)  # header fields, on the wire
    doubt: str | None = None              # why no proof of the sender can hold (two Froms)
    split: tuple[str, str] | None = None  # (new text, quoted): see pipeline.stages.reply_parts
    domain_proof: str | None = None       # dkim | authentication-results, for the From domain
    domain_checked: bool = False          # domain_proof was looked for (DKIM costs DNS)
    refused: list[str] = field(default_factory=list)   # what an unproven sender could not do
    token_refused: str | None = None      # why a reply address of ours granted nothing
    note: bool = False                    # an agent's internal note
    verdict: str = "person"               # mail/classify.py
    verdict_reason: str = ""
    acknowledgement: str | None = "acknowledgement"   # the template; None: rules said no
    acknowledgement_rule: str | None = None
    created: bool = False
    public_reply: bool = False            # an agent's reply went to the customer
