"""A requester's "this solved it" under an article their acknowledgement suggested: a mail
to the solved address (tickets/refs.py) resolves the ticket as self-service, and the
people responsible for it hear which article did it.

The token in the address is an HMAC of the ticket and its requester, as a rate
address's is: nobody else can resolve the ticket this way, and an auto-reply to the
acknowledgement is not a click.
"""
from __future__ import annotations

from ...core.context import Classified, Context, Refused
from ...core.fire import change, fire
from ...tickets.apply import store_message
from ...tickets.refs import read_solved_address
from ..sender import event_mail
from ..work import Work, recipients, reply_parts, requesters_click

DONE = ("resolved", "closed")


def solved_stage(ctx: Context, w: Work) -> None:
    prefix = ctx.settings.desk.ref_prefix
    found = next((r for r in (read_solved_address(a, prefix) for a in recipients(w))
                  if r is not None), None)
    if found is None:
        return
    ref, rank, code = found
    ticket = requesters_click(ctx, w, ref, code, "solved", "a 'solved it'")
    slug = ctx.ledger.suggested(ticket).get(rank)
    if slug is None:
        raise Refused(f"{ref} suggested no article at rank {rank}")
    w.message = store_message(ctx.ledger, ctx.blobs, ticket, w.parsed, w.inbound.digest,
                              ctx.now, text=reply_parts(w)[0], visibility="internal")
    if ticket.status in DONE:
        raise Classified("solved", f"{ref} is {ticket.status} already; article {slug} "
                                   "said to have solved it")
    ctx.ledger.solve(ticket, rank, ctx.now)
    mail = event_mail(ctx, w)
    change(ctx, ticket, f"customer:{ticket.requester}", mail=mail,
           note={"resolved_by": "kb", "article": slug}, status="resolved")
    fire(ctx, ticket, "kb.solved", actor=ticket.requester, mail=mail, article=slug,
         rank=rank)
    raise Classified("solved", f"{ref} resolved by its requester: article {slug} solved it")
