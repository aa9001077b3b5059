"""A status request: a person's mail to the `+status` sub-address of a support address, or
whose subject is just "status" and which names no ticket, is answered with a list of the
sender's tickets (core/views.py) and opens none.

The list goes to the From address alone (never Reply-To or Cc): a forged From sends it
to its owner, who asked for nothing but learns nothing new. A machine's mail is never
answered (a vacation reply to our answer must not ask again), and status.limit answers
per sender in status.window, counted in the outbox, end any loop that got past that.
"""
from __future__ import annotations

import re
from datetime import timedelta

from ...config.durations import parse_duration
from ...core.context import Classified, Context
from ...core.views import send_status
from ...mail.classify import PERSON
from ...mail.parse import UNKNOWN_SENDER, base_address
from ...tickets.refs import read_token_ref
from ...tickets.thread import by_references
from ..work import Work, recipients

STATUS = "status"
_SUBJECT = re.compile(r"\s*status\s*[.!?]*\s*", re.IGNORECASE)


def status_stage(ctx: Context, w: Work) -> None:
    settings, p = ctx.settings, w.parsed
    if not settings.status.enabled or w.ticket is not None:    # a reply to a survey
        return
    support = _status_address(settings.desk.addresses, recipients(w))
    if support is None:
        if w.verdict != PERSON or not _asks_by_subject(ctx, w):
            return
        support = next((base_address(a) for a in recipients(w)
                        if base_address(a) in settings.desk.addresses),
                       settings.desk.addresses[0])
    elif w.verdict != PERSON:     # a vacation reply to our answer asks for nothing
        raise Classified(w.verdict, f"{w.verdict_reason}; not a status request")
    if p.from_addr in ("", UNKNOWN_SENDER):
        raise Classified(STATUS, "a status request from nobody: not answered")
    if ctx.history:
        raise Classified(STATUS, "a status request in old mail (an import): not answered")
    limit, window = settings.status.limit, settings.status.window
    sent = ctx.ledger.sent_to(p.from_addr, STATUS,
                              ctx.now - timedelta(seconds=parse_duration(window)))
    if sent >= limit:
        raise Classified(STATUS, f"not answered: {p.from_addr} had {sent} status answers "
                                 f"within status.window ({window}), status.limit is {limit}")
    send_status(ctx, p.from_addr, support, p.message_id)
    raise Classified(STATUS, f"answered {p.from_addr}'s status request")


def _status_address(support: list[str], rcpts: tuple[str, ...]) -> str | None:
    """The support address whose `+status` sub-address the mail went to, if any."""
    asked = {a.replace("@", "+status@", 1): a for a in support}
    return next((asked[a] for a in rcpts if a in asked), None)


def _asks_by_subject(ctx: Context, w: Work) -> bool:
    """The subject is just "status" and the mail names no ticket: no reply address of
    ours, no Message-ID of a ticket's mail in In-Reply-To or References (a subject tag
    it cannot have). A reply on a ticket is about that ticket, whatever its subject; a
    proven agent's mail is work (`#requester` opens a ticket titled as it is)."""
    desk, p = ctx.settings.desk, w.parsed
    return _SUBJECT.fullmatch(p.subject) is not None and w.proven_agent is None \
        and not any(read_token_ref(a, desk.addresses, desk.ref_prefix) for a in recipients(w)) \
        and by_references(ctx.ledger, p.thread_ids) is None
