"""Queueing mail for a ticket: render, compose, keep the bytes, add an outbox row.

Runs inside the caller's transaction, so a ticket and the mail that tells the
customer about it commit together or not at all. The mail is also stored as
an outgoing message on the ticket: a reply that quotes our Message-ID in
References threads back to the ticket.
"""
from __future__ import annotations

import hashlib
from typing import Any

from ..mail.compose import Outgoing, compose, new_message_id
from ..pipeline.work import Context
from ..tickets.ledger import Pending, TicketRow
from ..tickets.refs import reply_address


def desk_address(ctx: Context, ticket: TicketRow) -> str:
    queue = ctx.settings.desk.queue(ticket.queue)
    return (queue.addresses or ctx.settings.desk.addresses)[0]


def queue_mail(ctx: Context, ticket: TicketRow, template: str, to: list[tuple[str, str]], *,
               answering: Pending | None, extra: dict[str, Any] | None = None,
               auto_submitted: str = "auto-replied", rule: str | None = None,
               reply_to: bool = True) -> None:
    """reply_to: give the ticket's reply address (mail to the customer); rule: who asked."""
    settings = ctx.settings
    address = desk_address(ctx, ticket)
    context = {
        "desk": {"name": settings.desk.name, "address": address},
        "ticket": ticket_view(ticket),
        "customer_name": ticket.requester_name or "",
        "message": {"text": answering.values["text"], "from": answering.values["from_addr"],
                    "subject": answering.values["subject"]} if answering else None,
        **(extra or {}),
    }
    rendered = ctx.templates.render(template, context)
    message_id = new_message_id(settings.desk.domain, ticket.ref)
    refs: tuple[str, ...] = ()
    in_reply_to = None
    if answering is not None:
        in_reply_to = answering.values["message_id"]
        refs = (in_reply_to,)
    raw = compose(Outgoing(
        from_name=settings.desk.name, from_addr=address, to=tuple(to),
        subject=rendered.subject, text=rendered.text, html=rendered.html,
        message_id=message_id, date=ctx.now, in_reply_to=in_reply_to, references=refs,
        reply_to=reply_address(ctx.secret, address, ticket.ref) if reply_to else None,
        auto_submitted=auto_submitted, x_loop=address, ticket_ref=ticket.ref))
    digest = ctx.blobs.put(raw)
    recipients = [a for _n, a in to]
    ctx.ledger.add_message(ticket, {
        "message_id": message_id,
        "dedupe_key": hashlib.sha256(f"out\0{message_id}".encode()).hexdigest(),
        "direction": "out", "visibility": "public", "from_addr": address,
        "from_name": settings.desk.name, "to": recipients, "cc": [],
        "subject": rendered.subject, "date": ctx.now, "text": rendered.text, "digest": digest,
        "defects": [], "created_at": ctx.now})
    ctx.ledger.add_outbox(ticket, {
        "template": template, "envelope_from": settings.envelope_from, "to": recipients,
        "subject": rendered.subject, "message_id": message_id, "digest": digest,
        "status": "queued", "attempts": 0, "next_attempt_at": ctx.now, "last_error": None,
        "created_at": ctx.now, "sent_at": None})
    ctx.ledger.add_event(ticket, "notification.queued", ctx.now,
                         actor=f"rule:{rule}" if rule else None, template=template,
                         to=recipients, message_id=message_id,
                         **({"rule": rule} if rule else {}))


def ticket_view(ticket: TicketRow) -> dict[str, Any]:
    """The ticket as templates see it: plain values, no database access."""
    return {k: getattr(ticket, k) for k in (
        "ref", "subject", "requester", "requester_name", "status", "type", "priority",
        "impact", "urgency", "problem", "category", "queue", "assignee", "created_at",
        "updated_at")} | {"tags": list(ticket.tags)} | {"cc": list(ticket.cc)}
