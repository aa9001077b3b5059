"""A rating by mail: a click on a rate link (the score is in the address) or a reply to
the survey (the score is in its words). A reply with no rating in it is a reply."""
from __future__ import annotations

from ...core.context import Classified, Context, Refused
from ...surveys.answer import Rating, parse_rating, record
from ...surveys.send import survey_opt_out
from ...tickets.apply import store_message
from ...tickets.refs import read_rate_address
from ..work import Work, recipients, reply_parts, requesters_click


def survey_stage(ctx: Context, w: Work) -> None:
    desk = ctx.settings.desk
    found = next((r for r in (read_rate_address(a, desk.ref_prefix) for a in recipients(w))
                  if r is not None), None)
    if found is None:
        return
    ref, choice, code = found
    ticket = requesters_click(ctx, w, ref, code, "rate", "a rating")
    if choice == "optout":
        survey_opt_out(ctx, ticket)
        raise Classified("opted-out", f"{ticket.requester} wants no more surveys")
    text = reply_parts(w)[0]
    rating = Rating(int(choice), text.strip()[:2000]) if choice \
        else parse_rating(text, ctx.settings.surveys.scale)
    if rating is None:
        w.ticket, w.thread_by = ticket, "survey"
        return
    if not record(ctx, ticket, rating, via="mail"):
        raise Refused(f"{ref} has no open survey (never sent, or answered already)")
    w.message = store_message(ctx.ledger, ctx.blobs, ticket, w.parsed, w.inbound.digest,
                              ctx.now, text=text, visibility="internal")
    raise Classified("rating", f"{ref} rated {rating.score}")
