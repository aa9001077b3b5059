"""The ingest stages, in order. Each takes (Context, Work), and either fills in
Work or ends the mail's journey with a named Outcome.

Later stages (classify, identify, rules, sla) slot into STAGES by name.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

from ..config.schema import Desk
from ..mail.authentication import header_fields, proof, why_no_proof
from ..mail.classify import (
    ALERT,
    AUTO_REPLY,
    BOUNCE,
    BULK,
    COMPLAINT,
    LOOP,
    PERSON,
    SPAM,
    Verdict,
    classify,
)
from ..mail.parse import (
    UNKNOWN_SENDER,
    Unparseable,
    Unread,
    base_address,
    clean_address,
    message_ids,
    parse,
    unreadable,
)
from ..mail.quotes import split_reply
from ..notify.outbox import queue_mail, relay, reply_token
from ..rules.effects import LedgerEffects, apply_decision
from ..rules.vocabulary import facts_for
from ..sla.track import follow
from ..surveys.answer import Rating, parse_rating, record
from ..surveys.send import survey_opt_out
from ..tickets import apply, commands
from ..tickets import thread as threading
from ..tickets.ledger import TicketRow
from ..tickets.refs import (
    rate_token_ok,
    read_bounce_address,
    read_rate_address,
    read_token_ref,
    tagged_numbers,
)
from .work import (
    Arrival,
    Classified,
    Context,
    Crashed,
    Dropped,
    Duplicate,
    Quarantined,
    Refused,
    Work,
)

Stage = Callable[[Context, Work], None]
# local parts of addresses nobody reads: noreply, no-reply, gmail-noreply, donotreply,
# do_not_reply, noreply+bounces, bounces-123 ...
NO_REPLY = re.compile(r"(?:^|[-_.+])(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)(?:[-_.+]|$)",
                      re.IGNORECASE)


def parse_stage(ctx: Context, w: Work) -> None:
    """Parse, unless a worker process already did. Mail an operator released is a ticket
    even when it cannot be read: the original goes on it as an attachment. Mail that names
    no sender anywhere (no From, Sender, Reply-To, Return-Path or envelope) is still a
    ticket, from UNKNOWN_SENDER, which is never answered."""
    try:
        if isinstance(w.parsed_ahead, Unread):
            if w.parsed_ahead.trace is not None:
                raise Crashed(w.parsed_ahead.reason, w.parsed_ahead.trace)
            raise Unparseable(w.parsed_ahead.reason)
        w.parsed = w.parsed_ahead or parse(w.raw, w.inbound.digest, w.inbound.mail_from,
                                           ctx.settings.limits)
    except Unparseable as e:
        if not w.inbound.released:
            raise Quarantined(str(e)) from None
        w.parsed = unreadable(w.raw, w.inbound.digest, w.inbound.mail_from, str(e))
    if not w.parsed.from_addr and w.parsed.bounce is None:   # MTAs sign bounces oddly: <@>
        w.parsed = replace(w.parsed, from_addr=UNKNOWN_SENDER,
                           defects=(*w.parsed.defects, "no sender"))


def keep_stage(ctx: Context, w: Work) -> None:
    """The same mail by two routes (SMTP and IMAP, a resent file) is one mail."""
    assert w.parsed
    ref = ctx.ledger.stored_as(w.parsed.dedupe_key)
    if ref is not None:
        raise Duplicate(f"{w.parsed.message_id} is already on {ref}")


def _recipients(w: Work) -> list[str]:
    assert w.parsed
    seen = dict.fromkeys([*(a.lower() for a in w.inbound.rcpt_to), *w.parsed.to, *w.parsed.cc])
    return list(seen)


def classify_stage(ctx: Context, w: Work) -> None:
    """A person's mail or a machine's; floods from one sender count as a loop."""
    assert w.parsed
    desk = ctx.settings.desk
    if w.inbound.released:
        w.verdict, w.verdict_reason = PERSON, "released from the quarantine by an operator"
        return
    verdict = classify(w.parsed, w.inbound.mail_from, desk.addresses, desk.domain,
                       desk.spam_headers if desk.trust_spam_headers else {})
    when = w.parsed.date or ctx.now
    if verdict.kind == PERSON and w.parsed.from_addr not in ("", UNKNOWN_SENDER) \
            and ctx.ledger.recent_from(
            w.parsed.from_addr, when - timedelta(seconds=desk.flood_window), when) \
            >= desk.flood_limit:
        verdict = Verdict(LOOP, f"more than {desk.flood_limit} mails from "
                                f"{w.parsed.from_addr} in {desk.flood_window:.0f} s")
    if verdict.kind in (PERSON, AUTO_REPLY, BULK):
        alert = desk.alerts.match(w.parsed.from_addr, _recipients(w))
        if alert is not None:
            verdict = Verdict(ALERT, alert)
    w.verdict, w.verdict_reason = verdict.kind, verdict.reason
    if verdict.kind == SPAM:
        raise Dropped(verdict.reason)
    if verdict.kind == BOUNCE:      # never a message on a ticket, even when it threads
        _bounce(ctx, w)


def authenticate_stage(ctx: Context, w: Work) -> None:
    """An agent's From with DKIM or a trusted Authentication-Results for its domain. A mail
    whose From names no one person can prove nobody, by any means."""
    assert w.parsed
    w.head = header_fields(w.raw)
    w.doubt = why_no_proof(w.raw, w.head)
    agent = ctx.settings.desk.agent(w.parsed.from_addr)
    if agent is not None and domain_proof(ctx, w):
        w.proven_agent = agent.name


def via_our_mta(desk: Desk, inbound: Arrival) -> bool:
    """Mail our MTA handed over (the pipe, an IMAP mailbox it delivers to, an SMTP client
    among desk.trusted_relays): only on such mail are its Authentication-Results ours."""
    if inbound.source in ("pipe", "imap"):
        return True
    origin = (inbound.origin or "").split()     # smtp from <peer> helo <name>
    return inbound.source == "smtp" and len(origin) > 2 and desk.relayed_by_us(origin[2])


def domain_proof(ctx: Context, w: Work) -> str | None:
    """How the mail proves its From's domain (mail/authentication.py), or None. Looked for
    once, when first needed: a DKIM check may cost a DNS query."""
    assert w.parsed
    if not w.domain_checked:
        w.domain_checked = True
        desk, sender = ctx.settings.desk, w.parsed.from_addr
        domain = sender.rpartition("@")[2]
        if domain and sender != UNKNOWN_SENDER and w.doubt is None:
            w.domain_proof = proof(w.raw, domain, trusted_ids=desk.trusted_authserv_ids,
                                   via_mta=via_our_mta(desk, w.inbound),
                                   verify_dkim=desk.verify_dkim, dns=ctx.dns, fields=w.head)
    return w.domain_proof


def sender_proof(ctx: Context, w: Work, ticket: TicketRow | None) -> str:
    """How the sender of a mail on ticket is proven: `token`, a live reply address of this
    ticket made for them (or, answered by a participant, for its requester); else the
    From's domain proof; "" when nothing proves them (a plain From is anybody's)."""
    if w.doubt is not None:
        return ""
    if w.grant is not None and ticket is not None and w.grant.ref == ticket.ref:
        return "token"
    return domain_proof(ctx, w) or ""


def reply_parts(w: Work) -> tuple[str, str]:
    """The mail's new text and what it quotes (mail/quotes.py), split once: several stages
    ask, and the split is the costliest reading of a mail's text."""
    assert w.parsed
    if w.split is None:
        w.split = split_reply(w.parsed.text)
    return w.split


def survey_stage(ctx: Context, w: Work) -> None:
    """A rating by mail: a click on a rate link (the score is in the address) or a reply to
    the survey (the score is in its words). A reply with no rating in it is a reply."""
    assert w.parsed
    desk = ctx.settings.desk
    found = next((r for r in (read_rate_address(a, desk.ref_prefix) for a in _recipients(w))
                  if r is not None), None)
    if found is None:
        return
    ref, choice, code = found
    if w.verdict != PERSON:     # a vacation reply to the survey is no answer
        raise Classified(w.verdict, f"{w.verdict_reason}; not a rating")
    ticket = ctx.ledger.by_ref(ref)
    if ticket is None or not rate_token_ok(code, ctx.secrets, ref, ticket.requester):
        raise Refused(f"a rating for {ref} whose token is not its requester's")
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
    w.message = apply.store_message(ctx.ledger, ctx.blobs, ticket, w.parsed, w.inbound.digest,
                                    ctx.now, text=text, visibility="internal")
    raise Classified("rating", f"{ref} rated {rating.score}")


def thread_stage(ctx: Context, w: Work) -> None:
    assert w.parsed
    if w.ticket is not None:        # found already (a reply to a survey)
        return
    desk = ctx.settings.desk
    p = w.parsed
    agent = desk.agent(p.from_addr)     # an agent may write from another of their addresses
    w.grant, ticket = threading.by_token(ctx.ledger, _recipients(w),
                                         agent.address if agent else p.from_addr, ctx.secrets,
                                         desk.addresses, ctx.now.date(), desk.token_max_age)
    if w.grant is not None and w.grant.expired:     # the ticket it names, as a plain From
        w.grant = None
        w.token_refused = f"a reply address older than desk.token_max_age " \
                          f"({desk.token_max_age} days): it finds the ticket, no more"
    elif w.grant is None and any(read_token_ref(a, desk.addresses, desk.ref_prefix)
                                 for a in _recipients(w)):
        w.token_refused = "a reply address made for someone else or another ticket, " \
                          "or made up"
    how = "reply-address"
    known = p.from_addr != UNKNOWN_SENDER       # nobody is "already on" a ticket as no one
    if ticket is None and known:
        ticket, how = threading.by_tag(ctx.ledger, p.subject, p.from_addr,
                                       trusted=w.proven_agent is not None), "tag"
    if ticket is None:
        ticket, how = threading.by_references(ctx.ledger, p.thread_ids), "references"
    if ticket is None and p.has_message_id and known:
        ticket, how = threading.by_replies(ctx.ledger, p.message_id, p.from_addr), "replies"
    if ticket is None:
        _machine_without_ticket(ctx, w)
        return
    w.thread_by = how
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
        queue_mail(ctx, ticket, "refused", [(p.from_name, p.from_addr)], answering=None)
        ctx.ledger.add_event(ticket, "reply.refused", ctx.now, actor=p.from_addr,
                             message_id=p.message_id, digest=w.inbound.digest)
        raise Refused(f"{ticket.ref} is closed and its queue refuses replies")


def _machine_without_ticket(ctx: Context, w: Work) -> None:
    """Machines' mail opens no ticket: keep it, say why."""
    desk, kind = ctx.settings.desk, w.verdict
    if kind in (LOOP, COMPLAINT) or (kind == AUTO_REPLY and not desk.auto_replies_open_tickets) \
            or (kind == BULK and desk.bulk_mail == "ignore"):
        raise Classified(kind, w.verdict_reason)


def _bounce(ctx: Context, w: Work) -> None:
    """Find the mail a bounce answers (by our return path, else by a Message-ID of ours
    anywhere in the report) and put what failed, for whom and why, on its ticket."""
    assert w.parsed
    desk, ledger = ctx.settings.desk, ctx.ledger
    sent, via = None, "return path"
    for rcpt in w.inbound.rcpt_to:
        ref = read_bounce_address(rcpt, desk.ref_prefix)
        if ref is not None:
            sent = ledger.sent_mail(ref=ref, return_path=rcpt.lower())
            break
    if sent is None:
        via = "message-id"
        ours = [m for m in message_ids(w.raw[:500_000].decode("latin-1"))
                if m.endswith(f"@{desk.domain}>")]
        sent = ledger.sent_mail(message_ids=ours) if ours else None
    ticket = ledger.by_id(sent.ticket_id) if sent is not None else None
    if sent is None or ticket is None:
        raise Classified(BOUNCE, w.verdict_reason)
    failures = w.parsed.bounce.failures if w.parsed.bounce else ()
    details = [{"recipient": f.recipient, "status": f.status, "diagnostic": f.diagnostic,
                "permanent": f.permanent} for f in failures]
    data = {"message_id": sent.message_id, "reason": w.verdict_reason, "found_by": via,
            "failures": details, "bounce": w.parsed.message_id}
    if failures and not any(f.permanent for f in failures):
        ledger.add_event(ticket, "delivery.delayed", ctx.now, actor=w.parsed.from_addr, **data)
        raise Classified(BOUNCE, f"{w.verdict_reason}; a delay of {ticket.ref}'s mail")
    ledger.bounce(sent, ctx.now, f"bounced: {w.verdict_reason}"[:1000])
    ledger.add_event(ticket, "delivery.failed", ctx.now, actor=w.parsed.from_addr, **data)
    raise Classified(BOUNCE, f"{w.verdict_reason}; {ticket.ref}'s mail failed")


def identify_stage(ctx: Context, w: Work) -> None:
    """Who sent it. An agent's From counts only with proof: a token made for that agent and
    ticket, or DKIM or trusted Authentication-Results for the agent's domain."""
    assert w.parsed
    agent = ctx.settings.desk.agent(w.parsed.from_addr)
    if agent is None:
        return
    by_token = w.doubt is None and w.grant is not None and w.ticket is not None \
        and w.grant.ref == w.ticket.ref and w.grant.person == agent.address
    by_proof = w.proven_agent is not None and (w.ticket is not None
                                               or _requester(reply_parts(w)[0]) is not None)
    if by_token or by_proof:
        w.agent = agent.name
    elif not w.proven_agent:
        w.unverified_agent = agent.name


def _requester(text: str) -> str | None:
    """The customer of a `#requester ADDRESS` line among an agent's commands (text: the
    mail's new text)."""
    lines, _rest = commands.split_commands(text)
    for _n, line in lines:
        parts = line.split(None, 1)
        if parts[0].lower() == "#requester" and len(parts) == 2:
            return clean_address(parts[1]) or None
    return None


def _queue_for(ctx: Context, w: Work) -> str:
    if w.inbound.queue is not None:
        return w.inbound.queue
    rcpts = {base_address(a) for a in _recipients(w)}
    for q in ctx.settings.desk.queues:
        if rcpts.intersection(q.addresses):
            return q.name
    return ctx.settings.desk.default_queue


def apply_stage(ctx: Context, w: Work) -> None:
    """The mail onto its ticket. A customer's mail that nothing proves (sender_proof) is
    kept and its agents hear of it, but it changes nothing: no status, no new CC
    participants, no #close; and what it could not do is an event."""
    assert w.parsed
    p = w.parsed
    support = set(ctx.settings.desk.addresses)
    others = [a for a in dict.fromkeys((*p.to, *p.cc))
              if base_address(a) not in support and a != p.from_addr]
    if w.agent is not None:
        _agent_message(ctx, w)
        return
    if w.ticket is None:
        _open(ctx, w, others)
    else:
        _customer_reply(ctx, w, w.ticket, others)
    _unproven(ctx, w)


def _open(ctx: Context, w: Work, others: list[str]) -> None:
    assert w.parsed
    p, ledger = w.parsed, ctx.ledger
    ticket = apply.open_ticket(ledger, p, queue=_queue_for(ctx, w), cc=others, now=ctx.now,
                               linked_to=w.linked_to,
                               priority=ctx.settings.desk.priority("medium", "medium"))
    w.ticket, w.created = ticket, True
    w.message = apply.store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                                    verdict=w.verdict, proof=_message_proof(ctx, w, ticket))
    data = {"source": w.inbound.source, "message_id": p.message_id, "queue": ticket.queue}
    if w.verdict != PERSON:
        data["verdict"] = f"{w.verdict}: {w.verdict_reason}"
    ignored = [f"{ctx.settings.desk.ref_prefix}-{n}"
               for n in tagged_numbers(p.subject, ctx.settings.desk.ref_prefix)]
    if ignored and w.thread_by is None:
        data["tag_ignored"] = f"{ignored[0]}: the sender is not on that ticket"
    if w.linked_to is not None:
        data["follows"] = w.linked_to.ref
        ledger.add_event(w.linked_to, "ticket.linked", ctx.now, actor=p.from_addr,
                         new_ticket=ticket.ref, reason="reply to a closed ticket")
    ledger.add_event(ticket, "ticket.created", ctx.now, actor=p.from_addr, **data)


def _message_proof(ctx: Context, w: Work, ticket: TicketRow) -> str | None:
    """A person's mail is checked for proof; machines' mail is not looked at (None)."""
    return sender_proof(ctx, w, ticket) if w.verdict in (PERSON, BULK, ALERT) else None


def _customer_reply(ctx: Context, w: Work, ticket: TicketRow, others: list[str]) -> None:
    assert w.parsed
    p, ledger = w.parsed, ctx.ledger
    new, quoted = reply_parts(w)
    if w.verdict in (AUTO_REPLY, LOOP, BOUNCE, COMPLAINT):  # noted on the ticket, no change
        w.message = apply.store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest,
                                        ctx.now, text=new, quoted=quoted,
                                        visibility="internal", verdict=w.verdict)
        ledger.add_event(ticket, f"{w.verdict}.received", ctx.now, actor=p.from_addr,
                         reason=w.verdict_reason)
        return
    proven = sender_proof(ctx, w, ticket)
    w.message = apply.store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                                    text=new, quoted=quoted, verdict=w.verdict, proof=proven)
    if w.reopen:        # thread_stage reopens for a proven sender only
        ledger.add_event(ticket, "ticket.reopened", ctx.now, actor=p.from_addr,
                         previous=ticket.status)
        ledger.change(ticket, status="open")
    elif ticket.status in apply.STATUS_AFTER_CUSTOMER_REPLY and not proven:
        w.refused.append("status")
    elif ticket.status in apply.STATUS_AFTER_CUSTOMER_REPLY:
        before, after = ticket.status, apply.STATUS_AFTER_CUSTOMER_REPLY[ticket.status]
        ledger.change(ticket, status=after)
        ledger.add_event(ticket, "ticket.updated", ctx.now, actor=p.from_addr,
                         field="status", old=before, new=after)
        if before == "resolved":        # it was not solved after all: reports count this
            ledger.add_event(ticket, "ticket.reopened", ctx.now, actor=p.from_addr,
                             previous=before)
    people = threading.participants(ticket)
    participant = p.from_addr in people
    added: list[str] = []
    ignored = [] if participant else [  # by Message-ID, not on the ticket: a message, no more
        what for what, asked in (("cc", any(a not in people for a in others)), (
            "close", new.splitlines()[:1] == [ctx.settings.desk.close_keyword])) if asked]
    if participant and ctx.settings.desk.add_cc_participants \
            and any(a not in people for a in others):
        if proven:
            added = apply.add_participants(ledger, ticket, others)
        else:
            w.refused.append("cc")
    keyword = ctx.settings.desk.close_keyword
    if keyword and participant and new.splitlines()[:1] == [keyword] \
            and ticket.status != "closed":
        if proven:
            LedgerEffects(ctx, ticket, w, kind="customer").change(p.from_addr, status="closed")
        else:
            w.refused.append("close")
    ledger.add_event(ticket, "customer.replied", ctx.now, actor=p.from_addr,
                     message_id=p.message_id, thread_by=w.thread_by, cc_added=added,
                     sender_verified=bool(proven),
                     **({"not_on_ticket": ignored} if ignored else {}),
                     **({"unverified_agent": w.unverified_agent} if w.unverified_agent else {}))


def _unproven(ctx: Context, w: Work) -> None:
    """What a mail from someone without proof could not do, as events agents can see:
    command lines (only an authenticated agent's run), and a token, a status change,
    CC participants, a #close or a reopening that needed proof."""
    assert w.parsed and w.ticket
    p, ledger = w.parsed, ctx.ledger
    lines = [line for _n, line in commands.split_commands(reply_parts(w)[0])[0]] \
        if "#" in p.text else []
    if lines and (w.created or lines != [ctx.settings.desk.close_keyword]):   # else: #close
        ledger.add_event(w.ticket, "commands.ignored", ctx.now, actor=p.from_addr,
                         lines=lines[:20], reason="only an authenticated agent's mail runs "
                                                  "commands")
    if w.token_refused:
        ledger.add_event(w.ticket, "token.refused", ctx.now, actor=p.from_addr,
                         reason=w.token_refused)
    if w.refused or w.unverified_agent or (w.doubt and lines):
        claim = f"agent {w.unverified_agent}'s address" if w.unverified_agent else "a From"
        why = f"no proof can hold for this mail: {w.doubt}" if w.doubt else \
            "no live reply address of this ticket, no DKIM signature or trusted " \
            "Authentication-Results for its domain"
        ledger.add_event(w.ticket, "sender.unverified", ctx.now, actor=p.from_addr,
                         refused=w.refused, reason=f"{claim} that nothing proves: {why}")


def _agent_message(ctx: Context, w: Work) -> None:
    """An authenticated agent's mail: commands, then a reply (relayed) or an internal note."""
    assert w.parsed and w.agent
    p, ledger, desk = w.parsed, ctx.ledger, ctx.settings.desk
    if w.ticket is None:     # a proven agent's `#requester`: a ticket opened on their behalf
        _open_for_requester(ctx, w)
        return
    ticket = w.ticket
    new, quoted = reply_parts(w)
    lines, text = commands.split_commands(new)
    agent = desk.agent(p.from_addr)
    assert agent is not None
    plan = commands.plan(lines, desk, agent, desk.ref_prefix)
    for ref in [*plan.links, *([plan.merge_into] if plan.merge_into else [])]:
        if ledger.by_ref(ref) is None or ref == ticket.ref:
            plan.errors.append(f"#{'merge' if ref == plan.merge_into else 'link'} {ref}: "
                               "no such other ticket")
    refused = bool(plan.errors)
    w.note = note = (w.grant is not None and w.grant.purpose == "note") or plan.note or refused
    w.message = apply.store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                                    text=text if lines else new, quoted=quoted,
                                    visibility="internal" if note else "public",
                                    proof=sender_proof(ctx, w, ticket))
    actor = f"agent:{w.agent}"
    if refused:     # nothing is half-applied: no command, no relay; tell the agent why
        ledger.add_event(ticket, "commands.refused", ctx.now, actor=actor, errors=plan.errors)
        queue_mail(ctx, ticket, "command_error", [(agent.name, agent.address)],
                   answering=w.message, auto_submitted="auto-replied",
                   reply_to=agent.address, extra={"errors": plan.errors, "lines": plan.lines})
        return
    _apply_plan(ctx, w, plan, actor)
    if note:
        ledger.add_event(ticket, "note.added", ctx.now, actor=actor, message_id=p.message_id)
        return
    ledger.add_event(ticket, "agent.replied", ctx.now, actor=actor, message_id=p.message_id,
                     silent=plan.silent or not text)
    if plan.silent or not text:
        return
    w.public_reply = True
    relay(ctx, ticket, agent.display_name or agent.name, text,
          tuple((a.filename, a.content_type, a.data) for a in p.attachments),
          ledger.thread_of(ticket, threading.participants(ticket)), w.agent)
    if "status" not in plan.changes and ticket.status in ("new", "open"):
        LedgerEffects(ctx, w.ticket, w, kind="agent").change(w.agent, status="pending")


def _open_for_requester(ctx: Context, w: Work) -> None:
    """A phone call logged by mail: the ticket is the customer's, the text an internal note."""
    assert w.parsed and w.agent
    p, ledger, desk = w.parsed, ctx.ledger, ctx.settings.desk
    requester = _requester(reply_parts(w)[0])
    assert requester is not None
    lines, text = commands.split_commands(reply_parts(w)[0])
    lines = [(n, line) for n, line in lines if not line.lower().startswith("#requester")]
    ticket = apply.open_ticket(ledger, p, queue=_queue_for(ctx, w), cc=[], now=ctx.now,
                               linked_to=None, priority=desk.priority("medium", "medium"),
                               requester=requester, assignee=w.agent)
    w.ticket, w.created = ticket, True
    w.message = apply.store_message(ledger, ctx.blobs, ticket, p, w.inbound.digest, ctx.now,
                                    text=text, visibility="internal", proof=domain_proof(ctx, w))
    ledger.add_event(ticket, "ticket.created", ctx.now, actor=f"agent:{w.agent}",
                     source=w.inbound.source, on_behalf_of=requester)
    agent = desk.agent(p.from_addr)
    assert agent is not None
    plan = commands.plan(lines, desk, agent, desk.ref_prefix)
    if not plan.errors:
        _apply_plan(ctx, w, plan, f"agent:{w.agent}")
    queue_mail(ctx, ticket, "acknowledgement", [("", requester)], answering=None,
               reply_to=requester)


def _apply_plan(ctx: Context, w: Work, plan: commands.Plan, actor: str) -> None:
    assert w.ticket and w.agent
    fx, ticket, ledger = LedgerEffects(ctx, w.ticket, w, kind="agent"), w.ticket, ctx.ledger
    if plan.changes:
        fx.change(w.agent, **plan.changes)
    if plan.tags_add or plan.tags_remove:
        fx.tags(w.agent, plan.tags_add, plan.tags_remove)
    if plan.cc_add or plan.cc_remove:
        cc = [a for a in ticket.cc if a not in plan.cc_remove]
        fx.change(w.agent, cc=cc + [a for a in plan.cc_add if a not in cc])
    for ref in plan.links:
        ledger.add_event(ticket, "ticket.linked", ctx.now, actor=actor, related=ref)
    if plan.merge_into:
        target = ledger.by_ref(plan.merge_into)
        assert target is not None
        fx.change(w.agent, status="closed", linked_to=target.id)
        ledger.add_event(ticket, "ticket.merged", ctx.now, actor=actor, into=target.ref)
        ledger.add_event(target, "ticket.merged", ctx.now, actor=actor, absorbed=ticket.ref)
    if plan.lines:
        ledger.add_event(ticket, "commands.applied", ctx.now, actor=actor, lines=plan.lines)


def rules_stage(ctx: Context, w: Work) -> None:
    """The admins' rules for this mail's event: set fields, route, notify, escalate, drop."""
    assert w.parsed and w.ticket
    if not len(ctx.rules) or w.note:
        return
    facts = facts_for(ctx.settings.desk, w.ticket, w.parsed, ctx.now,
                      replies=lambda: ctx.ledger.message_count(w.ticket),  # type: ignore[arg-type]
                      recipients=tuple(_recipients(w)), mailbox=_mailbox(w),
                      verified=lambda: w.agent is not None
                      or bool(sender_proof(ctx, w, w.ticket)))
    event = "agent.replied" if w.agent else \
        "ticket.created" if w.created else "customer.replied"
    decision = ctx.rules.evaluate(event, facts)
    if decision.actions:
        apply_decision(decision, LedgerEffects(ctx, w.ticket, w), ctx.settings.desk)


def _mailbox(w: Work) -> str | None:
    origin = w.inbound.origin or ""
    return origin.split()[1] if w.inbound.source == "imap" and " " in origin else None


def may_acknowledge(ctx: Context, w: Work) -> str | None:
    """Why not to answer this mail automatically (RFC 3834), or None to answer it."""
    assert w.parsed and w.ticket
    p, desk = w.parsed, ctx.settings.desk
    if w.verdict != PERSON and not (w.verdict == BULK and desk.bulk_mail == "ticket"):
        return f"{w.verdict}: {w.verdict_reason}"
    if desk.ack_window and ctx.ledger.tickets_opened_by(
            p.from_addr, ctx.now - timedelta(seconds=desk.ack_window)) > 1:
        return f"{p.from_addr} was acknowledged within the last {desk.ack_window:.0f} s"
    # auto-submitted mail, null senders, mailer-daemons and our own addresses are not
    # PERSON verdicts (mail/classify.py); what is left is people who read no replies
    if NO_REPLY.search(p.from_addr.split("@", 1)[0]) or p.from_addr.endswith(".invalid"):
        return f"sender {p.from_addr} does not read replies"
    return None


def _notify_agents(ctx: Context, w: Work) -> None:
    """The assignee, else the queue's group, hears of the customer's mail, with reply tokens."""
    assert w.parsed and w.ticket
    if w.verdict in (AUTO_REPLY, LOOP, BOUNCE, COMPLAINT):
        return
    desk, ticket = ctx.settings.desk, w.ticket
    assignee = desk.agent_named(ticket.assignee)
    group = desk.queue(ticket.queue).group
    people = [assignee] if assignee else [
        a for a in desk.agents if group in a.groups or ticket.queue in a.queues]
    proven = _message_proof(ctx, w, ticket)
    for agent in people:
        queue_mail(ctx, ticket, "agent_notification", [(agent.name, agent.address)],
                   answering=w.message, auto_submitted="auto-generated",
                   reply_to=agent.address,
                   extra={"note_address": reply_token(ctx, ticket, agent.address, "note"),
                          "new_ticket": w.created,
                          "sender_verified": None if proven is None else bool(proven)})


def sla_stage(ctx: Context, w: Work) -> None:
    """Start, pause, resume or stop the ticket's SLA clocks after what this mail did."""
    if ctx.slas is None or w.ticket is None:
        return
    customer = w.agent is None and not w.created and w.verdict == PERSON and not w.note
    for clock in follow(ctx.slas, w.ticket, ctx.ledger.clocks_of(w.ticket), ctx.now,
                        created=w.created, agent_replied=w.public_reply,
                        customer_replied=customer):
        ctx.ledger.add_clock(w.ticket, clock)


def notify_stage(ctx: Context, w: Work) -> None:
    assert w.parsed and w.ticket
    if w.agent is not None:
        return
    _notify_agents(ctx, w)
    if not w.created:
        return
    why_not = may_acknowledge(ctx, w)
    if why_not is None and w.acknowledgement is None:
        why_not = f"rule {w.acknowledgement_rule!r} said no acknowledgement"
    if why_not:
        ctx.ledger.add_event(w.ticket, "acknowledgement.suppressed", ctx.now, reason=why_not)
        return
    queue_mail(ctx, w.ticket, w.acknowledgement or "acknowledgement",
               [(w.parsed.from_name, w.parsed.from_addr)], answering=w.message,
               rule=w.acknowledgement_rule, reply_to=w.parsed.from_addr)


STAGES: tuple[tuple[str, Stage], ...] = (
    ("parse", parse_stage),
    ("keep", keep_stage),
    ("classify", classify_stage),
    ("authenticate", authenticate_stage),
    ("survey", survey_stage),
    ("thread", thread_stage),
    ("identify", identify_stage),
    ("apply", apply_stage),
    ("rules", rules_stage),
    ("sla", sla_stage),
    ("notify", notify_stage),
)

