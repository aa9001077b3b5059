"""Mail for a ticket into the outbox: a notice rendered from a template, or an agent's
reply relayed; composed, its bytes kept, an outbox row added.

Runs inside the caller's transaction, so a ticket and the mail that tells the
customer about it commit together or not at all. Every mail goes out through
_queue(), and none does in an import of old mail (Context.history). The mail is also stored as
an outgoing message on the ticket: a reply that quotes our Message-ID in
References threads back to the ticket. Every mail to an agent goes to that
agent alone, with a Reply-To that is the agent's own reply address of the
ticket: an agent who answers any notice is known as that agent.
"""
from __future__ import annotations

import hashlib
from dataclasses import fields
from email import message_from_bytes
from email.message import Message
from typing import Any

from ..kb.articles import Article
from ..mail.compose import Outgoing, compose, new_message_id
from ..mail.parse import Attachment
from ..store.rows import Pending, TicketRow
from ..tickets.audience import Person
from ..tickets.refs import bounce_address, carries_token, redact, token_address
from .context import Context

# what templates see of a ticket: its fields, but not the database's links
_VIEW = tuple(f.name for f in fields(TicketRow)
              if f.name not in ("id", "linked_to", "linked_ticket", "reminded_at"))


def desk_address(ctx: Context, ticket: TicketRow) -> str:
    return queue_address(ctx, ticket.queue)


def queue_address(ctx: Context, queue: str) -> str:
    return (ctx.settings.desk.queue(queue).addresses or ctx.settings.desk.addresses)[0]


def reply_token(ctx: Context, ticket: TicketRow, recipient: str, purpose: str = "reply") -> str:
    return token_address(ctx.secrets[0], desk_address(ctx, ticket), ticket.ref, recipient,
                         purpose, ctx.now.date())


def notice(ctx: Context, ticket: TicketRow, template: str, to: list[Person], *,
           answering: Pending | None, extra: dict[str, Any] | None = None,
           auto_submitted: str = "auto-generated", rule: str | None = None,
           actor: str | None = None, reply_address: str | None = None,
           attachments: tuple[Attachment, ...] = ()) -> None:
    """A templated mail to people. Each agent among them gets a mail of their own, whose
    Reply-To is their reply address of the ticket and whose template knows their note
    address; the others get one mail together, whose replies go to the requester's reply
    address when the requester is its one reader. reply_address: a Reply-To the caller
    made (a survey's rate address), for agents too (an agent may be the requester).
    attachments: files for the agents among them only."""
    desk = ctx.settings.desk
    others: list[Person] = []
    for name, address in to:
        agent = desk.agent(address)
        if agent is None:
            others.append((name, address))
            continue
        _templated(ctx, ticket, template, [(name, address)], answering,
                   (extra or {}) | {"note_address": reply_token(ctx, ticket, agent.address,
                                                                "note")},
                   auto_submitted, rule, actor,
                   reply_address or reply_token(ctx, ticket, agent.address),
                   tuple((a.filename, a.content_type, a.data) for a in attachments))
    if others:
        alone = [a for _n, a in others] == [ticket.requester]
        _templated(ctx, ticket, template, others, _theirs(ctx, answering), extra or {},
                   auto_submitted, rule, actor,
                   reply_address or (reply_token(ctx, ticket, ticket.requester)
                                     if alone else None))


def answer(ctx: Context, address: str, template: str, context: dict[str, Any],
           answering: str | None, sender: str | None = None,
           reply_to: str | None = None) -> None:
    """A mail to one person that belongs to no ticket (what an agent's `#mine` or a
    customer's status request asked for, a problem proposed to a lead), through the
    outbox like the digest: no ticket, no event; the inbound mail it answers is kept.
    From sender, a support address (default the first); Reply-To: reply_to, if given."""
    if ctx.history:     # a question in old mail was answered long ago
        return
    settings = ctx.settings
    sender = sender or settings.desk.addresses[0]
    rendered = ctx.templates.render(template, {
        "desk": {"name": settings.desk.name, "address": sender}, **context})
    out = Outgoing(
        from_name=settings.desk.name, from_addr=sender, to=(("", address),),
        subject=rendered.subject, text=rendered.text, html=rendered.html,
        message_id=new_message_id(settings.desk.domain), date=ctx.now,
        in_reply_to=answering, references=(answering,) if answering else (),
        reply_to=reply_to, auto_submitted="auto-replied" if answering else "auto-generated",
        x_loop=sender)
    raw, failed = _composed(out)
    ctx.ledger.add_outbox(None, _outbox_row(ctx, template, settings.envelope_from, [address],
                                            out, ctx.blobs.put(raw, fresh=True), failed))


def _theirs(ctx: Context, answering: Pending | None) -> Pending | None:
    """The message a notice to people who are not agents may quote and answer: a public
    one that no agent wrote. An internal note, an agent's mail (its words, its address, its
    Message-ID) are for agents: an agent's reply reaches customers only as relayed."""
    if answering is None or answering.values["visibility"] != "public" \
            or ctx.settings.desk.agent(answering.values["from_addr"]) is not None:
        return None
    return answering


def _templated(ctx: Context, ticket: TicketRow, template: str, to: list[Person],
               answering: Pending | None, extra: dict[str, Any], auto_submitted: str,
               rule: str | None, actor: str | None, reply_to: str | None,
               attachments: tuple[tuple[str, str, bytes], ...] = ()) -> None:
    settings = ctx.settings
    address = desk_address(ctx, ticket)
    prefix = settings.desk.ref_prefix
    context = {
        "desk": {"name": settings.desk.name, "address": address},
        "ticket": ticket_view(ticket),
        "customer_name": ticket.requester_name or "",
        "message": {"text": redact(answering.values["text"], prefix),
                    "from": answering.values["from_addr"],
                    "subject": redact(answering.values["subject"], prefix)}
        if answering else None,
        **extra,
    }
    rendered = ctx.templates.render(template, context)
    # threaded under the mail it answers; else under the last mail these people had of the
    # ticket (a survey, a reminder, an escalation), so that it is not a thread of its own
    thread = (answering.values["message_id"],) if answering is not None \
        else ctx.ledger.thread_of(ticket, {a for _n, a in to})
    _queue(ctx, ticket, template, Outgoing(
        from_name=settings.desk.name, from_addr=address, to=tuple(to),
        subject=rendered.subject, text=rendered.text, html=rendered.html,
        message_id=new_message_id(settings.desk.domain, ticket.ref), date=ctx.now,
        in_reply_to=thread[-1] if thread else None, references=thread,
        reply_to=reply_to, auto_submitted=auto_submitted, x_loop=address,
        ticket_ref=ticket.ref, attachments=attachments), rule=rule, actor=actor)


def relay(ctx: Context, ticket: TicketRow, sender_name: str, text: str,
          attachments: tuple[tuple[str, str, bytes], ...], thread: tuple[str, ...],
          agent: str, articles: tuple[Article, ...] = ()) -> None:
    """An agent's reply to the customer and the CC participants, from the support address.
    No token address of ours goes with it, however the agent quoted: a reply written under
    the quoted notification would hand the customer the agent's note address.
    articles: knowledge-base articles (`#kb`) after the reply's text, each its title and
    its Markdown, which reads as plain text (the relay has no HTML part)."""
    settings = ctx.settings
    address = desk_address(ctx, ticket)
    prefix = settings.desk.ref_prefix
    text, subject = redact(text, prefix), redact(ticket.subject or "your request", prefix)
    attachments, withheld = _without_tokens(attachments, prefix)
    if withheld:
        ctx.ledger.add_event(ticket, "attachment.withheld", ctx.now, actor=f"agent:{agent}",
                             files=withheld, reason="it holds a reply or note address of "
                             "ours (a forwarded notification?): a bearer secret")
    tag = f"[{ticket.ref}]"
    subject = f"Re: {subject}" if tag in subject else f"Re: {tag} {subject}"
    # the desk's footer (templates/agent_reply.txt.j2): whose desk, which ticket, how to
    # answer; after the agent's own signature, if they wrote one
    text = ctx.templates.text("agent_reply", {
        "text": "\n\n".join(part for part in (text.rstrip(), *(
            f"{a.title}\n{'=' * len(a.title)}\n\n{redact(a.body, prefix)}" for a in articles))
            if part),
        "signed": "\n-- \n" in f"\n{text}",
        "desk": {"name": settings.desk.name, "address": address},
        "ticket": ticket_view(ticket)}).rstrip()
    _queue(ctx, ticket, "agent.reply", Outgoing(
        from_name=f"{sender_name} ({settings.desk.name})", from_addr=address,
        to=((ticket.requester_name or "", ticket.requester),),
        cc=tuple(("", a) for a in ticket.cc), subject=subject, text=text, html=None,
        message_id=new_message_id(settings.desk.domain, ticket.ref), date=ctx.now,
        in_reply_to=thread[-1] if thread else None, references=thread,
        reply_to=reply_token(ctx, ticket, ticket.requester), auto_submitted="no",
        x_loop=address, ticket_ref=ticket.ref, attachments=attachments), actor=f"agent:{agent}")


def _without_tokens(attachments: tuple[tuple[str, str, bytes], ...], prefix: str
                    ) -> tuple[tuple[tuple[str, str, bytes], ...], list[str]]:
    """The attachments an agent's reply may pass on to the customer, and the names of
    those it may not. Text files are relayed with our token addresses redacted; an
    attached mail (the notification itself, forwarded) or any other file that holds one
    is withheld: its encodings may hide it from a redaction. (A token inside compressed
    data, a PDF's say, is not seen: the README says so.)"""
    kept, withheld = [], []
    for name, ctype, data in attachments:
        kind = ctype.lower()
        if kind.startswith("text/") and b"\x00" not in data:   # ASCII-based: redacted
            kept.append((name, ctype, redact(data.decode("latin-1"), prefix).encode("latin-1")))
        elif carries_token(data, prefix) or (kind == "message/rfc822" and any(
                carries_token(_decoded(part), prefix)
                for part in message_from_bytes(data).walk() if not part.is_multipart())):
            withheld.append(name)
        else:
            kept.append((name, ctype, data))
    return tuple(kept), withheld


def _decoded(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _queue(ctx: Context, ticket: TicketRow, template: str, out: Outgoing,
           rule: str | None = None, actor: str | None = None) -> None:
    if ctx.history:     # old mail was answered long ago: an import sends nothing, to nobody
        return
    raw, failed = _composed(out)
    digest = ctx.blobs.put(raw, fresh=True)      # a new Message-ID: never stored
    recipients = [a for _n, a in (*out.to, *out.cc)]
    settings = ctx.settings
    return_path = bounce_address(ctx.secrets[0], settings.envelope_from, ticket.ref,
                                 out.message_id) if settings.outbox.verp \
        else settings.envelope_from
    ctx.ledger.add_message(ticket, {
        "message_id": out.message_id,
        "dedupe_key": hashlib.sha256(f"out\0{out.message_id}".encode()).hexdigest(),
        "direction": "out", "visibility": "public", "from_addr": out.from_addr,
        "from_name": out.from_name, "to": [a for _n, a in out.to],
        "cc": [a for _n, a in out.cc], "subject": out.subject, "date": ctx.now,
        "text": out.text, "quoted": "", "verdict": "person", "digest": digest, "defects": [],
        "proof": None, "created_at": ctx.now})
    ctx.ledger.add_outbox(ticket, _outbox_row(ctx, template, return_path, recipients, out,
                                              digest, failed))
    actor = f"rule:{rule}" if rule else actor
    ctx.ledger.add_event(ticket, "notification.failed" if failed else "notification.queued",
                         ctx.now, actor=actor, template=template, to=recipients,
                         message_id=out.message_id, **({"rule": rule} if rule else {}),
                         **({"reason": failed} if failed else {}))


def _composed(out: Outgoing) -> tuple[bytes, str | None]:
    """The mail's bytes, or, when it cannot be composed, a note of why (kept, as failed)."""
    try:
        return compose(out), None
    except Exception as e:  # noqa: BLE001 - the ticket stands; this mail fails, said why
        failed = f"could not compose the mail: {type(e).__name__}: {e}"[:1000]
        return f"maildesk {failed}\n\n{out.text}".encode("utf-8", "replace"), failed


def _outbox_row(ctx: Context, template: str, envelope_from: str, to: list[str],
                out: Outgoing, digest: str, failed: str | None) -> dict[str, Any]:
    """An outbox row due now: queued, or failed with why when it could not be composed."""
    return {"template": template, "envelope_from": envelope_from, "to": to,
            "subject": out.subject, "message_id": out.message_id, "digest": digest,
            "status": "failed" if failed else "queued", "attempts": 0,
            "next_attempt_at": ctx.now, "last_error": failed, "created_at": ctx.now,
            "sent_at": None}


def ticket_view(ticket: TicketRow) -> dict[str, Any]:
    """The ticket as templates see it: plain values, no database access."""
    return {k: getattr(ticket, k) for k in _VIEW} | {"tags": list(ticket.tags),
                                                     "cc": list(ticket.cc)}
