"""An authenticated agent's mail: commands, then a reply (relayed to the customer) or an
internal note. All commands of a mail are checked first: one bad line and none runs, and
the agent hears why (tickets/commands.py).

`#kb SLUG` sends published articles with the reply, so it needs a reply: with `#note`,
`#silent` or on the note address it is an error, as nothing would reach the customer.
`#split` makes a ticket of the customer's message the agent answers (the one the
notification they reply to was about, or the one `#split MESSAGE-ID` names): the message
and its attachments move to it, its sender its requester, the two tickets linked.
`#kb new` keeps the reply (or the agent's last public one) as a draft article; the
reply itself goes out as any other, so an agent answers, resolves and drafts at once.
"""
from __future__ import annotations

import re
from dataclasses import replace
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from ...config.schema import Agent
from ...core.context import Classified, Context
from ...core.fire import LedgerEffects, change, fire
from ...core.happening import Mail
from ...core.outbox import relay
from ...core.problems import open_problem
from ...core.views import send_agent_view
from ...kb import drafts
from ...kb.articles import SLUG
from ...mail.parse import message_ids
from ...store.blobs import BlobError
from ...store.rows import TicketRow
from ...tickets.apply import open_ticket, store_message
from ...tickets.commands import Plan, plan, split_commands
from ...tickets.problems import problem_errors
from ...tickets.refs import redact
from ...tickets.thread import participants, survivor
from ..sender import domain_proof, event_mail, sender_proof
from ..work import Work, queue_for, reply_parts


def agent_stage(ctx: Context, w: Work) -> None:
    agent = w.agent
    if agent is None:
        return
    if w.ticket is None:     # a proven agent's `#requester`: a ticket opened on their behalf
        if w.on_behalf_of:
            _open_for_requester(ctx, w, agent, w.on_behalf_of)
        elif w.views:
            send_agent_view(ctx, agent, w.views, w.parsed.message_id)
            raise Classified("answered", f"agent {agent.name} asked: "
                             + ", ".join(f"#{n} {a}".strip() for n, a, _e in w.views))
        return
    p, ledger, desk, ticket = w.parsed, ctx.ledger, ctx.settings.desk, w.ticket
    new, quoted = reply_parts(w)
    lines, text = split_commands(new)
    asked = plan(lines, desk, agent, desk.ref_prefix, ctx.kb)
    others: dict[str, TicketRow] = {}       # the tickets #link and #merge name
    for ref in [*asked.links, *([asked.merge_into] if asked.merge_into else [])]:
        other = ledger.by_ref(ref)
        what = f"#{'merge' if ref == asked.merge_into else 'link'} {ref}"
        if other is not None and ref == asked.merge_into:   # into where a merged one went
            other = survivor(ledger, other)[0]
        if ref == ticket.ref:
            asked.errors.append(f"{what}: a ticket cannot be "
                                f"{'merged into' if ref == asked.merge_into else 'linked to'} "
                                "itself")
        elif other is None:
            asked.errors.append(f"{what}: no such ticket")
        elif other is ticket:
            asked.errors.append(f"{what}: it was merged into {ticket.ref} already")
        else:
            others[ref] = other
    named = ledger.by_ref(asked.problem) if asked.problem else None
    went = ledger.merged_into(named) if named is not None else None
    into = others.get(asked.merge_into or "")
    asked.errors += problem_errors(asked, ticket.ref, ticket.type, ticket.workaround,
                                   (named.ref, named.type) if named else None,
                                   went.ref if went else None,
                                   (into.ref, into.type) if into else None)
    split_off = _to_split(ctx, w, ticket, asked) if asked.split is not None else None
    to_note = w.grant is not None and w.grant.purpose == "note"
    if asked.articles and (asked.note or asked.silent or to_note):
        asked.errors.append("#kb: an article goes to the customer with a reply, and a note "
                            "or #silent reaches nobody; send it in a reply")
    drafted = _drafted(ctx, ticket, agent, asked, text) if asked.draft is not None else None
    refused = bool(asked.errors)
    asks = (asked.history or bool(asked.views)) and not text and not asked.articles
    # asks: only questions; a #split's words are for the agents (answer the new ticket);
    # a problem's requester is the agent who made it: its words are the desk's record
    note = to_note or asked.note or refused or asks or (split_off is not None and bool(text)) \
        or ticket.type == "problem"
    w.message = store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                              text=text if lines else new, quoted=quoted,
                              visibility="internal" if note else "public",
                              proof=sender_proof(ctx, w, ticket))
    actor, mail = f"agent:{agent.name}", event_mail(ctx, w)
    if refused:     # nothing is half-applied: no command, no relay; tell the agent why
        fire(ctx, ticket, "commands.refused", actor=actor, mail=mail, errors=asked.errors,
             lines=asked.lines)
        return
    _carry_out(ctx, ticket, mail, asked, agent.name, others)
    if split_off is not None:
        _split(ctx, ticket, split_off, agent.name)
    if drafted is not None:
        fire(ctx, ticket, "kb.drafted", actor=actor, mail=mail, slug=drafted.stem,
             path=str(drafted))
    if asked.history:
        fire(ctx, ticket, "history.requested", actor=actor, mail=mail,
             context={"thread": ledger.conversation(ticket, participants(ticket))})
    if asked.views:
        send_agent_view(ctx, agent, [(n, a, None) for n, a in asked.views], p.message_id)
    if asks:
        return
    if note:
        fire(ctx, ticket, "note.added", actor=actor, mail=mail, message_id=p.message_id)
        return
    silent = asked.silent or not (text or asked.articles)
    fire(ctx, ticket, "agent.replied", actor=actor, mail=mail, message_id=p.message_id,
         silent=silent)
    if silent:
        return
    relay(ctx, ticket, agent.display_name or agent.name, text,
          tuple((a.filename, a.content_type, a.data) for a in p.attachments),
          ledger.thread_of(ticket, participants(ticket)), agent.name, tuple(asked.articles))
    if asked.articles:
        fire(ctx, ticket, "kb.sent", actor=actor, mail=mail,
             articles=[a.slug for a in asked.articles])
    if "status" not in asked.changes and ticket.status in ("new", "open"):
        # the desk's own step, not a command: the record says the reply moved it
        change(ctx, ticket, actor, mail=mail, note={"agent": agent.name, "after": "reply"},
               status="pending")


def _open_for_requester(ctx: Context, w: Work, agent: Agent, requester: str) -> None:
    """A phone call logged by mail: the ticket is the customer's, the text an internal note.
    The customer's acknowledgement answers no mail of theirs: it quotes nothing."""
    p, ledger, desk = w.parsed, ctx.ledger, ctx.settings.desk
    lines, rest = split_commands(reply_parts(w)[0])
    lines = [(n, line) for n, line in lines if not line.lower().startswith("#requester")]
    ticket = open_ticket(ledger, p, queue=queue_for(desk, w), cc=[], now=ctx.now,
                         linked_to=None, priority=desk.priority("medium", "medium"),
                         requester=requester, assignee=agent.name)
    w.ticket, w.created = ticket, True
    w.message = store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                              text=rest, visibility="internal", proof=domain_proof(ctx, w))
    mail = replace(event_mail(ctx, w), message=None)
    fire(ctx, ticket, "ticket.created", actor=f"agent:{agent.name}", mail=mail,
         source=w.inbound.source, on_behalf_of=requester)
    asked = plan(lines, desk, agent, desk.ref_prefix, ctx.kb)
    if not asked.errors:
        _carry_out(ctx, ticket, mail, asked, agent.name, {})


def _drafted(ctx: Context, ticket: TicketRow, agent: Agent, asked: Plan, text: str
             ) -> Path | None:
    """`#kb new`: the reply's text, else the agent's last public reply on the ticket, as a
    draft article under kb.folder; its path. None when another line is wrong (nothing is
    written for a refused mail), when there is nothing to draft from or no file could be
    written (the reason among asked.errors), and in an import of old mail, which leaves
    no trace outside the desk's database. Named by the agent's `#kb new SLUG-OR-TITLE`,
    else by the ticket's subject, else by its ref: drafts.slug_of() keeps of any of them
    only what a file name may hold."""
    folder, ref = ctx.kb.folder, ticket.ref
    assert folder is not None and asked.draft is not None    # plan() checked both
    prefix = ctx.settings.desk.ref_prefix     # a draft may be published: no token in it
    body = redact(text or _last_reply(ctx, ticket, agent), prefix)
    if not body:
        asked.errors.append("#kb new: nothing to draft from (write the answer below the "
                            "command lines, or reply to the customer first)")
    if asked.errors or ctx.history:
        return None
    named = asked.draft
    title = drafts.title_of(redact(ticket.subject if not named or SLUG.match(named)
                                   else named, prefix))
    slug = drafts.slug_of(named or title) or drafts.slug_of(f"answer {ref}")
    try:
        return drafts.write(folder, slug, drafts.text_of(
            title=title or f"Answer to {ref}", owner=agent.name,
            queue=str(asked.changes.get("queue", ticket.queue)), source=ref, body=body))
    except OSError as e:
        asked.errors.append(f"#kb new: the draft cannot be written under {folder}: "
                            f"{e.strerror or e}")
        return None


def _last_reply(ctx: Context, ticket: TicketRow, agent: Agent) -> str:
    """The text of the agent's last public reply on the ticket with words in it (a mail of
    commands alone is public too); "" when there is none."""
    mine = [text for m in ctx.ledger.conversation(ticket, set())
            if m["direction"] == "in" and m["visibility"] == "public"
            and m["from_addr"].lower() in agent.addresses and (text := (m["text"] or "").strip())]
    return mine[-1] if mine else ""


def _carry_out(ctx: Context, ticket: TicketRow, mail: Mail, asked: Plan, name: str,
               others: dict[str, TicketRow]) -> None:
    """The commands of a checked plan, each change an event with the agent as actor.
    others: the tickets its #link and #merge name, found."""
    actor = f"agent:{name}"
    fx = LedgerEffects(ctx, ticket, mail, kind="agent")
    if asked.changes:
        fx.change(name, **asked.changes)
    if asked.tags_add or asked.tags_remove:
        fx.tags(name, asked.tags_add, asked.tags_remove)
    if asked.cc_add or asked.cc_remove:
        cc = [a for a in ticket.cc if a not in asked.cc_remove]
        fx.change(name, cc=cc + [a for a in asked.cc_add if a not in cc])
    for ref in asked.links:
        fire(ctx, ticket, "ticket.linked", actor=actor, related=ref)
    if asked.problem is not None:     # tickets/problems.py checked it
        to = None if asked.problem == "none" else \
            open_problem(ctx, ticket, name).ref if asked.problem == "new" else asked.problem
        fx.change(name, problem=to)
    target = others.get(asked.merge_into or "")
    if target is not None:
        _merge(ctx, ticket, target, mail, name)
    if asked.lines:
        fire(ctx, ticket, "commands.applied", actor=actor, lines=asked.lines)


def _merge(ctx: Context, ticket: TicketRow, target: TicketRow, mail: Mail, name: str) -> None:
    """ticket into target: closed and linked to it, its messages moved, its requester and
    CC participants CC participants of target (target's requester stays its requester).
    The `ticket.merged` event with `into` is what says where it went: mail that names the
    merged ticket (its reply addresses, its tag, its Message-IDs) lands on target
    (tickets/thread.py survivor()). A problem's incidents are linked to the surviving
    problem first: closing a problem resolves the incidents it still holds."""
    actor = f"agent:{name}"
    if ticket.type == "problem":
        for incident in ctx.ledger.incidents_of(ticket.ref):
            LedgerEffects(ctx, incident, mail, kind="agent").change(name, problem=target.ref)
    LedgerEffects(ctx, ticket, mail, kind="agent").change(name, status="closed",
                                                          linked_to=target.id)
    people = [a for a in dict.fromkeys([ticket.requester, *ticket.cc])
              if a not in participants(target)]
    if people:
        LedgerEffects(ctx, target, mail, kind="agent").change(name, cc=[*target.cc, *people])
    moved = ctx.ledger.message_count(ticket)
    ctx.ledger.move_messages(ticket, target)     # the conversation goes on in one place
    fire(ctx, ticket, "ticket.merged", actor=actor, into=target.ref, moved=moved)
    fire(ctx, target, "ticket.merged", actor=actor, absorbed=ticket.ref, moved=moved,
         cc_added=people, requester=ticket.requester,
         requester_name=ticket.requester_name)


def _to_split(ctx: Context, w: Work, ticket: TicketRow, asked: Plan) -> dict[str, Any] | None:
    """The stored customer's message `#split` names: its Message-ID, else the nearest one
    this mail answers (a notification answers the message it is about); None with the
    reason among asked.errors."""
    desk, named = ctx.settings.desk, asked.split
    ids = [named] if named else list(w.parsed.thread_ids)

    def customers(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in found if m["direction"] == "in" and m["visibility"] == "public"
                and desk.agent(m["from_addr"]) is None]
    found = ctx.ledger.messages_on(ticket, ids)
    theirs = customers(found)
    if not theirs and not named:    # a client that names only our notification it answers
        found = ctx.ledger.messages_on(ticket, _answered(ctx, ticket, ids))
        theirs = customers(found)
    what = f"#split {named}".strip()
    if not theirs:
        asked.errors.append(
            f"{what}: no message of {ticket.ref} has that Message-ID" if named and not found
            else f"{what}: not a customer's message" if named
            else f"{what}: this mail answers no customer's message of {ticket.ref} (reply "
            "to the notification of the message to split off, or name its Message-ID: "
            "#split <id>)")
        return None
    if theirs[0]["first"]:
        asked.errors.append(f"{what}: {theirs[0]['message_id']} opened {ticket.ref}; "
                            "split off a later message")
        return None
    return theirs[0]


def _answered(ctx: Context, ticket: TicketRow, ids: list[str]) -> list[str]:
    """The Message-IDs that our mail among ids answered, newest first: a notification's
    In-Reply-To and References name the customer's message it relays. Read from its
    stored bytes' headers (mail clients that answer with In-Reply-To alone, or that trim
    References, leave the customer's message out of the agent's mail)."""
    answered: list[str] = []
    for digest in reversed(ctx.ledger.our_mail(ticket, ids)):
        try:
            raw = ctx.blobs.get(digest)
        except BlobError:       # `maildesk blobs verify` tells of it; the mail goes on
            continue
        head = raw[:64 * 1024].split(b"\r\n\r\n", 1)[0].decode("latin-1")
        headers = HeaderParser().parsestr(head, headersonly=True)
        answered += message_ids(headers.get("In-Reply-To", "")) + \
            tuple(reversed(message_ids(headers.get("References", ""))))
    return list(dict.fromkeys(answered))


def _split(ctx: Context, ticket: TicketRow, message: dict[str, Any], name: str) -> None:
    """A new ticket of one message of ticket: its sender the requester, in ticket's queue,
    linked to ticket; the message (attachments with it) moved there. The agent is told
    the new ref by a notification of it, whose reply address answers its requester."""
    prefix, actor, desk = ctx.settings.desk.ref_prefix, f"agent:{name}", ctx.settings.desk
    new = ctx.ledger.open_ticket(
        subject=_subject(message["subject"], prefix), requester=message["from_addr"],
        requester_name=message["from_name"], cc=[], status="new", type=ticket.type,
        priority=desk.priority("medium", "medium"), impact="medium", urgency="medium",
        tags=[], problem=None, category=None, queue=ticket.queue, assignee=None,
        created_at=ctx.now, updated_at=ctx.now, linked_ticket=ticket)
    ctx.ledger.move_message(message["id"], new)
    said = {"message_id": message["message_id"]}
    fire(ctx, new, "ticket.created", actor=actor, source="split", queue=new.queue,
         split_from=ticket.ref, **said)
    fire(ctx, ticket, "ticket.split", actor=actor, into=new.ref, **said)
    fire(ctx, new, "ticket.split", actor=actor, split_from=ticket.ref, **said)


def _subject(subject: str, prefix: str) -> str:
    """A split message's subject as its own ticket's: without our tags and reply prefixes."""
    subject = re.sub(rf"\[\s*{re.escape(prefix)}-\d+\s*\]\s*", "", subject, flags=re.I)
    return re.sub(r"^(?:\s*(?:re|aw|sv|fwd?|wg)\s*:\s*)+", "", subject, flags=re.I).strip()
