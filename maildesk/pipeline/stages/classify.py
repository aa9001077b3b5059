"""A person's mail or a machine's; floods from one sender count as a loop. A bounce goes
onto the ticket whose mail it answers, never as a message."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ...core.context import Classified, Context, Dropped
from ...core.fire import fire
from ...mail.classify import ALERT, AUTO_REPLY, BOUNCE, BULK, LOOP, PERSON, SPAM, Verdict, classify
from ...mail.parse import UNKNOWN_SENDER, ParsedMail, message_ids
from ...store.rows import TicketRow
from ...tickets.refs import read_bounce_address, read_token_ref
from ..work import Work, in_its_time, recipients


def classify_stage(ctx: Context, w: Work) -> None:
    desk, p = ctx.settings.desk, w.parsed
    if w.inbound.released:
        w.verdict, w.verdict_reason = PERSON, "released from the quarantine by an operator"
        return
    verdict = classify(p, w.inbound.mail_from, desk.addresses, desk.domain,
                       desk.spam_headers if desk.trust_spam_headers else {})
    if verdict.kind == PERSON and p.from_addr not in ("", UNKNOWN_SENDER):
        on = _agents_ticket(ctx, w)
        if ctx.ledger.recent_from(p.from_addr, *flood_window(ctx, p), on) >= desk.flood_limit:
            verdict = Verdict(LOOP, f"more than {desk.flood_limit} mails from "
                                    f"{p.from_addr}{f' on {on.ref}' if on else ''} in "
                                    f"{desk.flood_window:.0f} s")
    if verdict.kind in (PERSON, AUTO_REPLY, BULK):
        alert = desk.alerts.match(p.from_addr, recipients(w))
        if alert is not None:
            verdict = Verdict(ALERT, alert)
    w.verdict, w.verdict_reason = verdict.kind, verdict.reason
    if verdict.kind == SPAM:
        raise Dropped(verdict.reason)
    if verdict.kind == BOUNCE:      # never a message on a ticket, even when it threads
        _bounce(ctx, w)


def flood_window(ctx: Context, p: ParsedMail) -> tuple[datetime, datetime]:
    """The dates between which the sender's mail counts towards a flood: by the mails' own
    dates, so that a backlog imported at once is no flood; on both sides of this one's
    date, so that mail dated backwards is counted too."""
    when, window = p.date or ctx.now, timedelta(seconds=ctx.settings.desk.flood_window)
    return when - window, when + window


def classify_ahead(ctx: Context, mails: list[ParsedMail]) -> None:
    """The loop guard's counts of the batch's senders, read at once (Ledger.expect)."""
    ctx.ledger.expect(recent=[(p.from_addr, *flood_window(in_its_time(ctx, p), p))
                              for p in mails if p.from_addr not in ("", UNKNOWN_SENDER)])


def _agents_ticket(ctx: Context, w: Work) -> TicketRow | None:
    """The ticket an agent's mail to its reply address is about, whose mail alone counts
    towards the agent's flood: an agent working a queue writes dozens of mails in ten
    minutes, each to another ticket, while a loop (their autoresponder and a customer's
    answering each other) goes round one ticket. None for anyone else's mail."""
    desk = ctx.settings.desk
    if desk.agent(w.parsed.from_addr) is None:
        return None
    found = next((r for r in (read_token_ref(a, desk.addresses, desk.ref_prefix)
                              for a in recipients(w)) if r is not None), None)
    return ctx.ledger.by_ref(found[0]) if found is not None else None


def _bounce(ctx: Context, w: Work) -> None:
    """Find the mail a bounce answers (by our return path, else by a Message-ID of ours
    anywhere in the report) and put what failed, for whom and why, on its ticket."""
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
    data: dict[str, Any] = {"message_id": sent.message_id, "reason": w.verdict_reason,
                            "found_by": via, "failures": details, "bounce": w.parsed.message_id}
    if failures and not any(f.permanent for f in failures):
        fire(ctx, ticket, "delivery.delayed", actor=w.parsed.from_addr, **data)
        raise Classified(BOUNCE, f"{w.verdict_reason}; a delay of {ticket.ref}'s mail")
    ledger.bounce(sent, ctx.now, f"bounced: {w.verdict_reason}"[:1000])
    fire(ctx, ticket, "delivery.failed", actor=w.parsed.from_addr, **data)
    raise Classified(BOUNCE, f"{w.verdict_reason}; {ticket.ref}'s mail failed")
