"""Who sent a mail and what proves it: asked by several stages, found out once per mail.

Proof is one test for agents and customers alike (README, Security): a live
reply address of this ticket made for the sender (`token`), or a DKIM
signature or a trusted Authentication-Results for the From's domain. A
plain From proves nothing. The mail the operator CLI writes for an agent
(`maildesk tickets assign ... --as NAME`) is proven by who runs it (`operator`):
only pipeline.run.act() marks a mail so, nothing in a mail can.
"""
from __future__ import annotations

from ..config.schema import Desk
from ..core.context import Context
from ..core.happening import Mail
from ..mail.authentication import proof
from ..mail.classify import ALERT, BULK, PERSON
from ..mail.parse import UNKNOWN_SENDER
from ..store.rows import TicketRow
from .work import Arrival, Work, mailbox, recipients

OPERATOR = "operator"   # the proof of the CLI's mail for the agent it acts as


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
    if not w.domain_checked:
        w.domain_checked = True
        desk, sender = ctx.settings.desk, w.parsed.from_addr
        domain = sender.rpartition("@")[2]
        if w.inbound.operator is not None:     # the CLI's mail: proven only as its agent
            agent = desk.agent(sender)
            w.domain_proof = OPERATOR if agent is not None and w.doubt is None \
                and agent.name == w.inbound.operator else None
        elif domain and sender != UNKNOWN_SENDER and w.doubt is None:
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
    if w.inbound.operator is not None:
        return domain_proof(ctx, w) or ""
    if w.grant is not None and ticket is not None and w.grant.ref == ticket.ref:
        return "token"
    return domain_proof(ctx, w) or ""


def message_proof(ctx: Context, w: Work, ticket: TicketRow) -> str | None:
    """A person's mail is checked for proof; machines' mail is not looked at (None)."""
    return sender_proof(ctx, w, ticket) if w.verdict in (PERSON, BULK, ALERT) else None


def event_mail(ctx: Context, w: Work, unacknowledged: str | None = None,
               ack_limited: bool = False) -> Mail:
    """The mail as fire() hands it to the rules and the notices."""
    return Mail(parsed=w.parsed, message=w.message, verdict=w.verdict,
                recipients=recipients(w), mailbox=mailbox(w),
                verified=lambda: w.agent is not None or bool(sender_proof(ctx, w, w.ticket)),
                unacknowledged=unacknowledged, ack_limited=ack_limited)
