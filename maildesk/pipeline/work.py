"""What travels through the ingest pipeline: an accepted mail, then its Work.

The driver parses each accepted mail first (pipeline/parse.py); the stages
get a Work whose `parsed` is always there. Helpers here are the readings of
a mail that several stages ask for, each done once per mail.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from ..config.schema import Agent, Desk
from ..core.context import Classified, Context, Refused
from ..errors import MaildeskError
from ..mail.classify import PERSON
from ..mail.parse import ParsedMail, Unread, base_address, written_at
from ..mail.quotes import split_reply
from ..store.rows import Pending, TicketRow
from ..tickets.refs import Grant, requester_token_ok


class Crashed(MaildeskError):
    """A crash that happened elsewhere (the parse worker), raised here with its traceback."""

    def __init__(self, reason: str, trace: str) -> None:
        super().__init__(reason)
        self.trace = trace


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
    # the agent a person at this machine acts as (`maildesk tickets assign ... --as NAME`):
    # set only by pipeline.run.act() for the mail the CLI writes, never from a mail, an
    # envelope or a stored row (a re-queued copy proves itself as any mail does)
    operator: str | None = None


@dataclass
class Accepted:
    """A mail to run through the pipeline: its delivery, its bytes, and maybe its parse."""

    inbound: Arrival
    raw: bytes
    parsed_ahead: ParsedMail | Unread | None = None   # by a worker process, or why not


@dataclass
class Work:
    """One mail's journey through the stages: what they found out, in order."""

    inbound: Arrival
    raw: bytes
    parsed: ParsedMail
    ticket: TicketRow | None = None
    thread_by: str | None = None          # reply-address | tag | references | survey
    merged_from: str | None = None        # the merged ticket the mail named (its survivor's)
    linked_to: TicketRow | None = None    # a closed ticket this mail's new ticket follows
    reopen: bool = False
    message: Pending | None = None
    grant: Grant | None = None            # a live token address of a ticket, for its sender
    agent: Agent | None = None            # set when the sender is an authenticated agent
    on_behalf_of: str | None = None       # a proven agent's `#requester`: a ticket for them
    views: list[tuple[str, str, str | None]] | None = None   # a proven agent's #mine ...
    unverified_agent: str | None = None   # an agent's From that nothing proved
    proven_agent: str | None = None       # DKIM or a trusted Authentication-Results
    head: list[tuple[str, str]] = field(default_factory=list)  # header fields, on the wire
    doubt: str | None = None              # why no proof of the sender can hold (two Froms)
    split: tuple[str, str] | None = None  # (new text, quoted): see reply_parts()
    rcpts: tuple[str, ...] | None = None  # see recipients()
    domain_proof: str | None = None       # dkim | authentication-results, for the From domain
    domain_checked: bool = False          # domain_proof was looked for (DKIM costs DNS)
    refused: list[str] = field(default_factory=list)   # what an unproven sender could not do
    token_refused: str | None = None      # why a reply address of ours granted nothing
    verdict: str = "person"               # mail/classify.py
    verdict_reason: str = ""
    created: bool = False


Stage = Callable[[Context, Work], None]


def in_its_time(ctx: Context, parsed: ParsedMail) -> Context:
    """The context a mail's stages run in: old mail (ctx.history) happens when it was
    written, its ticket, messages, events and clocks dated so."""
    return replace(ctx, now=written_at(parsed, ctx.now)) if ctx.history else ctx


def recipients(w: Work) -> tuple[str, ...]:
    """Every address the mail went to: the envelope's, then To and Cc (found once: most
    stages ask)."""
    if w.rcpts is None:
        w.rcpts = tuple(dict.fromkeys([*(a.lower() for a in w.inbound.rcpt_to), *w.parsed.to,
                                       *w.parsed.cc]))
    return w.rcpts


def reply_parts(w: Work) -> tuple[str, str]:
    """The mail's new text and what it quotes (mail/quotes.py), split once: several stages
    ask, and the split is the costliest reading of a mail's text."""
    if w.split is None:
        w.split = split_reply(w.parsed.text)
    return w.split


def mailbox(w: Work) -> str | None:
    """The IMAP mailbox a mail came from (its origin reads `imap MAILBOX ...`)."""
    origin = w.inbound.origin or ""
    return origin.split()[1] if w.inbound.source == "imap" and " " in origin else None


def queue_for(desk: Desk, w: Work) -> str:
    """The queue of a new ticket: the intake's, else the first queue a recipient names."""
    if w.inbound.queue is not None:
        return w.inbound.queue
    return desk.queue_for({base_address(a) for a in recipients(w)})


def requesters_click(ctx: Context, w: Work, ref: str, code: str, purpose: str,
                     what: str) -> TicketRow:
    """The ticket a click on one of its requester's links (a rating, "this solved it")
    is for; Classified when the mail is a machine's (a vacation reply to the mail that held
    the link clicks nothing), Refused when the token is not the requester's of ref or the
    mail is not from the requester: as with a reply address, the token proves the mail
    was sent to them, and From must name them (a forwarded link is worth nothing)."""
    if w.verdict != PERSON:
        raise Classified(w.verdict, f"{w.verdict_reason}; not {what}")
    ticket = ctx.ledger.by_ref(ref)
    if ticket is None or not requester_token_ok(code, ctx.secrets, ref, ticket.requester,
                                                purpose):
        raise Refused(f"{what} for {ref} whose token is not its requester's")
    if w.parsed.from_addr.lower() != ticket.requester.lower():
        raise Refused(f"{what} for {ref} from {w.parsed.from_addr}, who is not its "
                      "requester")
    return ticket
