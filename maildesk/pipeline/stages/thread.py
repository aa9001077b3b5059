"""Which ticket a mail belongs to (tickets/thread.py says in what order of trust), and
what a reply to a closed ticket does: the queue's closed_reply_policy decides, and only a
proven sender may reopen. Mail that names a merged ticket lands on its survivor; a live
reply address of the merged ticket proves there what it proved on the merged one (the
merge made its people the survivor's)."""
from __future__ import annotations

from dataclasses import replace

from ...core.context import Classified, Context, Refused
from ...core.fire import fire
from ...mail.classify import AUTO_REPLY, BULK, COMPLAINT, LOOP
from ...mail.parse import UNKNOWN_SENDER, ParsedMail
from ...tickets.refs import read_token_ref
from ...tickets.thread import by_references, by_replies, by_tag, by_token, survivor
from ..sender import event_mail, sender_proof
from ..work import Work, recipients


def thread_stage(ctx: Context, w: Work) -> None:
    if w.ticket is not None:        # found already (a reply to a survey)
        return
    desk, p = ctx.settings.desk, w.parsed
    agent = desk.agent(p.from_addr)     # an agent may write from another of their addresses
    w.grant, ticket = by_token(ctx.ledger, recipients(w),
                               agent.address if agent else p.from_addr, ctx.secrets,
                               desk.addresses, ctx.now.date(), desk.token_max_age)
    if w.grant is not None and w.grant.expired:     # the ticket it names, as a plain From
        w.grant = None
        w.token_refused = f"a reply address older than desk.token_max_age " \
                          f"({desk.token_max_age} days): it finds the ticket, no more"
    elif w.grant is None and any(read_token_ref(a, desk.addresses, desk.ref_prefix)
                                 for a in recipients(w)):
        w.token_refused = "a reply address made for someone else or another ticket, " \
                          "or made up"
    how = "reply-address"
    known = p.from_addr != UNKNOWN_SENDER       # nobody is "already on" a ticket as no one
    if ticket is None and known:
        ticket, how = by_tag(ctx.ledger, p.subject, p.from_addr,
                             trusted=w.proven_agent is not None), "tag"
    if ticket is None:
        ticket, how = by_references(ctx.ledger, p.thread_ids), "references"
    if ticket is None and p.has_message_id and known:
        ticket, how = by_replies(ctx.ledger, p.message_id, p.from_addr), "replies"
    if ticket is None:
        _machine_without_ticket(ctx, w)
        return
    w.thread_by = how
    ticket, passed = survivor(ctx.ledger, ticket)
    if passed:
        w.merged_from = passed[0]
        if w.grant is not None and w.grant.ref in passed:
            w.grant = replace(w.grant, ref=ticket.ref, via=w.grant.ref)
    if ticket.status != "closed" or w.proven_agent or (w.grant and desk.agent(p.from_addr)):
        w.ticket = ticket
        return
    policy = desk.closed_reply_policy(ticket.queue)
    if policy == "reopen" and not sender_proof(ctx, w, ticket):
        w.refused.append("reopen")      # a plain From may not reopen: a new ticket follows it
        w.linked_to = ticket
    elif policy == "reopen":
        w.ticket, w.reopen = ticket, True
    elif policy == "new":
        w.linked_to = ticket
    else:
        fire(ctx, ticket, "reply.refused", actor=p.from_addr, mail=event_mail(ctx, w),
             message_id=p.message_id, digest=w.inbound.digest)
        raise Refused(f"{ticket.ref} is closed and its queue refuses replies")


def thread_ahead(ctx: Context, mails: list[ParsedMail]) -> None:
    """Whether stored replies answered the batch's mails, looked up at once (by_replies,
    through Ledger.expect)."""
    ctx.ledger.expect(replies_to=[p.message_id for p in mails
                                  if p.has_message_id and p.from_addr != UNKNOWN_SENDER])


def _machine_without_ticket(ctx: Context, w: Work) -> None:
    """Machines' mail opens no ticket: keep it, say why."""
    desk, kind = ctx.settings.desk, w.verdict
    if kind in (LOOP, COMPLAINT) or (kind == AUTO_REPLY and not desk.auto_replies_open_tickets) \
            or (kind == BULK and desk.bulk_mail == "ignore"):
        raise Classified(kind, w.verdict_reason)
