"""A mail that is not an authenticated agent's onto its ticket: a new ticket, or a reply.

A customer's mail that nothing proves (pipeline/sender.py) is kept and its
agents hear of it, but it changes nothing: no status, no new CC participants,
no #close, no reopening; what it could not do is an event agents can see.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from ...core.context import Context
from ...core.fire import LedgerEffects, change, fire
from ...core.triage import predicted
from ...mail.classify import BULK, MACHINES, PERSON
from ...mail.parse import ParsedMail, base_address
from ...store.rows import TicketRow
from ...tickets.apply import (
    STATUS_AFTER_CUSTOMER_REPLY,
    add_participants,
    open_ticket,
    store_message,
)
from ...tickets.commands import split_commands
from ...tickets.refs import tagged_numbers
from ...tickets.thread import participants
from ..sender import event_mail, message_proof, sender_proof
from ..work import Work, in_its_time, queue_for, reply_parts

# local parts of addresses nobody reads: noreply, no-reply, gmail-noreply, donotreply,
# do_not_reply, noreply+bounces, bounces-123 ...
NO_REPLY = re.compile(r"(?:^|[-_.+])(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)(?:[-_.+]|$)",
                      re.IGNORECASE)


def customer_stage(ctx: Context, w: Work) -> None:
    if w.agent is not None:
        return
    others = _others(set(ctx.settings.desk.addresses), w)
    if w.ticket is None:
        w.ticket = _open(ctx, w, others)
    else:
        _reply(ctx, w, w.ticket, others)
    _unproven(ctx, w, w.ticket)


def _others(support: set[str], w: Work) -> list[str]:
    """The people in To and Cc besides the sender and the desk: who the sender wrote to
    with us, candidates for CC participants. Only when the desk is among them: a mail that
    reached us by Bcc, or through an address the desk does not list (an alias, an old
    domain), was not written to talk with us in front of them, and to take everyone in
    To/Cc then would copy a desk's mail to whoever the sender was writing to."""
    p = w.parsed
    ours = support | {base_address(a.lower()) for a in w.inbound.rcpt_to}
    written = list(dict.fromkeys((*p.to, *p.cc)))
    if not any(base_address(a) in ours for a in written):
        return []
    return [a for a in written if base_address(a) not in ours and a != p.from_addr]


def may_acknowledge(ctx: Context, w: Work) -> tuple[str | None, bool]:
    """Why not to answer this new ticket's mail automatically (RFC 3834), or None to answer
    it; and whether the answer is the one notice that the sender's limit is reached.

    Every person's new ticket is acknowledged, as RT, Zammad and osTicket do: a customer
    must learn that MD-2 exists as well as MD-1. Loops are stopped before this, by the
    verdicts (auto-replies, bulk, X-Loop, floods); the per-sender limit is the last stop
    for whatever got past them, and it says so once instead of going quiet."""
    p, desk = w.parsed, ctx.settings.desk
    if w.verdict != PERSON and not (w.verdict == BULK and desk.bulk_mail == "ticket"):
        return f"{w.verdict}: {w.verdict_reason}", False
    # auto-submitted mail, null senders, mailer-daemons and our own addresses are not
    # PERSON verdicts (mail/classify.py); what is left is people who read no replies
    if NO_REPLY.search(p.from_addr.split("@", 1)[0]) or p.from_addr.endswith(".invalid"):
        return f"sender {p.from_addr} does not read replies", False
    if not (desk.ack_limit and desk.ack_window):
        return None, False
    opened = ctx.ledger.tickets_opened_by(p.from_addr, ack_since(ctx))
    if opened <= desk.ack_limit:
        return None, False
    if opened == desk.ack_limit + 1:
        return None, True
    return (f"{p.from_addr} wrote {opened} new tickets within {desk.ack_window:.0f} s, past "
            f"desk.ack_limit ({desk.ack_limit}); they were told once"), False


def ack_since(ctx: Context) -> datetime:
    """Since when a sender's new tickets count towards desk.ack_limit."""
    return ctx.now - timedelta(seconds=ctx.settings.desk.ack_window)


def customer_ahead(ctx: Context, mails: list[ParsedMail]) -> None:
    """How many tickets the batch's senders opened lately, read at once (Ledger.expect),
    when the acknowledgement limit will ask."""
    desk = ctx.settings.desk
    if desk.ack_limit and desk.ack_window:
        ctx.ledger.expect(opened=[(p.from_addr, ack_since(in_its_time(ctx, p)))
                                  for p in mails])


def _open(ctx: Context, w: Work, others: list[str]) -> TicketRow:
    p, ledger, desk = w.parsed, ctx.ledger, ctx.settings.desk
    ticket = open_ticket(ledger, p, queue=queue_for(desk, w), cc=others, now=ctx.now,
                         linked_to=w.linked_to, priority=desk.priority("medium", "medium"))
    w.ticket, w.created = ticket, True
    proven = message_proof(ctx, w, ticket)
    w.message = store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                              verdict=w.verdict, proof=proven)
    data: dict[str, Any] = {"source": w.inbound.source, "message_id": p.message_id,
                            "queue": ticket.queue}
    if w.verdict != PERSON:
        data["verdict"] = f"{w.verdict}: {w.verdict_reason}"
    ignored = [f"{desk.ref_prefix}-{n}" for n in tagged_numbers(p.subject, desk.ref_prefix)]
    if ignored and w.thread_by is None:
        data["tag_ignored"] = f"{ignored[0]}: the sender is not on that ticket"
    if w.linked_to is not None:
        data["follows"] = w.linked_to.ref
        fire(ctx, w.linked_to, "ticket.linked", actor=p.from_addr, new_ticket=ticket.ref,
             reason="reply to a closed ticket")
    if proven is not None:
        data["sender_verified"] = bool(proven)
    if ctx.triage is not None and (guess := predicted(ctx.triage, p.subject, p.text)):
        data["predicted"] = guess
    unacknowledged, limited = may_acknowledge(ctx, w)
    fire(ctx, ticket, "ticket.created", actor=p.from_addr,
         mail=event_mail(ctx, w, unacknowledged=unacknowledged, ack_limited=limited), **data)
    return ticket


def _reply(ctx: Context, w: Work, ticket: TicketRow, others: list[str]) -> None:
    p, ledger, desk = w.parsed, ctx.ledger, ctx.settings.desk
    new, quoted = reply_parts(w)
    if w.verdict in MACHINES:       # noted on the ticket, no change, nobody told
        w.message = store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                                  text=new, quoted=quoted, visibility="internal",
                                  verdict=w.verdict)
        fire(ctx, ticket, f"{w.verdict}.received", actor=p.from_addr, reason=w.verdict_reason)
        return
    proven = sender_proof(ctx, w, ticket)
    w.message = store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                              text=new, quoted=quoted, verdict=w.verdict, proof=proven)
    mail = event_mail(ctx, w)
    if w.reopen:        # thread_stage reopens for a proven sender only
        ledger.change(ticket, status="open")
        fire(ctx, ticket, "ticket.reopened", actor=p.from_addr, previous="closed")
    elif ticket.status in STATUS_AFTER_CUSTOMER_REPLY and not proven:
        w.refused.append("status")
    elif ticket.status in STATUS_AFTER_CUSTOMER_REPLY:
        before = ticket.status
        change(ctx, ticket, p.from_addr, mail=mail, status=STATUS_AFTER_CUSTOMER_REPLY[before])
        if before == "resolved":        # it was not solved after all: reports count this
            fire(ctx, ticket, "ticket.reopened", actor=p.from_addr, previous=before)
    people = participants(ticket)
    participant = p.from_addr in people
    keyword = desk.close_keyword
    closing = bool(keyword) and new.splitlines()[:1] == [keyword]
    added: list[str] = []
    ignored = [] if participant else [  # by Message-ID, not on the ticket: a message, no more
        what for what, asked in (("cc", any(a not in people for a in others)),
                                 ("close", closing)) if asked]
    if participant and desk.add_cc_participants and any(a not in people for a in others):
        if proven:
            added = add_participants(ledger, ticket, others)
        else:
            w.refused.append("cc")
    if closing and participant and ticket.status != "closed":
        if proven:
            LedgerEffects(ctx, ticket, mail, kind="customer").change(p.from_addr,
                                                                     status="closed")
        else:
            w.refused.append("close")
    extra: dict[str, Any] = {}
    if ignored:
        extra["not_on_ticket"] = ignored
    if w.unverified_agent:
        extra["unverified_agent"] = w.unverified_agent
    if w.merged_from:
        extra["merged_from"] = w.merged_from
    fire(ctx, ticket, "customer.replied", actor=p.from_addr, mail=mail,
         message_id=p.message_id, thread_by=w.thread_by, cc_added=added,
         sender_verified=bool(proven), **extra)


def _unproven(ctx: Context, w: Work, ticket: TicketRow) -> None:
    """What a mail from someone without proof could not do, as events agents can see:
    command lines (only an authenticated agent's run), and a token, a status change,
    CC participants, a #close or a reopening that needed proof."""
    p, desk = w.parsed, ctx.settings.desk
    lines = [line for _n, line in split_commands(reply_parts(w)[0])[0]] if "#" in p.text else []
    if lines and (w.created or lines != [desk.close_keyword]):   # else: #close
        fire(ctx, ticket, "commands.ignored", actor=p.from_addr, lines=lines[:20],
             reason="only an authenticated agent's mail runs commands")
    if w.token_refused:
        fire(ctx, ticket, "token.refused", actor=p.from_addr, reason=w.token_refused)
    if w.refused or w.unverified_agent or (w.doubt and lines):
        claim = f"agent {w.unverified_agent}'s address" if w.unverified_agent else "a From"
        why = f"no proof can hold for this mail: {w.doubt}" if w.doubt else \
            "no live reply address of this ticket, no DKIM signature or trusted " \
            "Authentication-Results for its domain"
        fire(ctx, ticket, "sender.unverified", actor=p.from_addr, refused=w.refused,
             reason=f"{claim} that nothing proves: {why}")

