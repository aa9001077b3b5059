"""The pipeline's first step: an accepted mail's bytes into a ParsedMail, which every stage
after it can count on."""
from __future__ import annotations

from dataclasses import replace

from ..core.context import Context, Quarantined
from ..mail.parse import UNKNOWN_SENDER, ParsedMail, Unparseable, Unread, parse, unreadable
from .work import Accepted, Crashed


def parse_mail(ctx: Context, a: Accepted) -> ParsedMail:
    """Parse, unless a worker process already did. Mail an operator released is a ticket
    even when it cannot be read: the original goes on it as an attachment. Mail that names
    no sender anywhere (no From, Sender, Reply-To, Return-Path or envelope) is still a
    ticket, from UNKNOWN_SENDER, which is never answered."""
    inbound = a.inbound
    try:
        if isinstance(a.parsed_ahead, Unread):
            if a.parsed_ahead.trace is not None:
                raise Crashed(a.parsed_ahead.reason, a.parsed_ahead.trace)
            raise Unparseable(a.parsed_ahead.reason)
        parsed = a.parsed_ahead or parse(a.raw, inbound.digest, inbound.mail_from,
                                         ctx.settings.limits)
    except Unparseable as e:
        if not inbound.released:
            raise Quarantined(str(e)) from None
        parsed = unreadable(a.raw, inbound.digest, inbound.mail_from, str(e))
    if not parsed.from_addr and parsed.bounce is None:   # MTAs sign bounces oddly: <@>
        parsed = replace(parsed, from_addr=UNKNOWN_SENDER,
                         defects=(*parsed.defects, "no sender"))
    return parsed
