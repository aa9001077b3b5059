"""fire(): the one way anything happens to a ticket.

It records the event, runs the admins' rules for its kind (their hits and
misses kept on the event, as Mailman keeps rule_hits and rule_misses), lets
the SLA clocks follow the ticket, and queues the notices that NOTICES names
for the kind (core/notices.py). A rule's change is an event too: it fires
`ticket.updated` (and `ticket.resolved`) with the rule as actor, one level
deeper; at MAX_DEPTH the rules stop and an event says so, so rules that set
each other's fields cannot loop.

Every write goes through the ledger, so a mail that fails later undoes all
that its events did.
"""
from __future__ import annotations

import logging
from typing import Any

from ..mail.classify import MACHINES, PERSON
from ..rules.effects import BaseEffects, apply_decision
from ..rules.engine import Decision
from ..rules.vocabulary import facts_for
from ..sla.track import follow
from ..store.rows import Pending, TicketRow
from ..tickets.audience import recipients
from .context import Context, Dropped
from .happening import Happening, Mail
from .notices import send_notices
from .outbox import notice
from .problems import follow as follow_problems

MAX_DEPTH = 5
log = logging.getLogger("maildesk.rules")

KINDS = {
    # a mail
    "ticket.created": "a mail (or an agent for a caller) opened the ticket",
    "customer.replied": "a person's mail on the ticket, not an agent's",
    "agent.replied": "an authenticated agent answered (silent: the customer got nothing)",
    "note.added": "an agent's internal note",
    "auto-reply.received": "a machine's answer (out of office) was noted on the ticket",
    "loop.received": "mail of a loop was noted on the ticket",
    "bounce.received": "a bounce was noted on the ticket",
    "complaint.received": "a spam complaint was noted on the ticket",
    "reply.refused": "a reply to a closed ticket whose queue refuses them",
    "ticket.reopened": "a reply reopened a resolved or closed ticket",
    "ticket.linked": "the ticket was linked to another",
    "ticket.merged": "the ticket was merged into another, or absorbed one",
    "ticket.split": "a customer's message was split off into a new ticket, or made it",
    "commands.applied": "an agent's command lines ran",
    "commands.refused": "an agent's command lines had errors: none ran",
    "commands.ignored": "command lines in a mail whose sender is no proven agent",
    "history.requested": "an agent asked for the whole thread by mail (#history)",
    "kb.sent": "articles of the knowledge base went to the customer with a reply (#kb)",
    "kb.drafted": "an agent's answer became a draft article (#kb new)",
    "sender.unverified": "nothing proved the sender, so the mail changed nothing",
    "token.refused": "a reply address that granted nothing",
    "delivery.failed": "a bounce says our mail did not arrive",
    "delivery.delayed": "a bounce says our mail is delayed",
    # a change
    "ticket.updated": "a field of the ticket changed",
    "ticket.resolved": "the ticket's status became resolved",
    "ticket.escalated": "a rule escalated the ticket",
    # time
    "sla.warning": "an SLA clock is near its target",
    "sla.breached": "an SLA clock passed its target",
    "sla.escalated": "an escalation level of a breached clock came",
    "reminder.sent": "a customer we wait for was reminded",
    # surveys
    "survey.sent": "the satisfaction survey went out",
    "survey.answered": "the customer rated the ticket",
    "survey.opted_out": "the customer wants no more surveys",
    # the knowledge base
    "kb.solved": "the requester said a suggested article solved it",
    # problems (core/problems.py)
    "problem.known_error": "the incident's problem is a known error: its requester is "
                           "given the workaround",
    "problem.resolved": "the problem was resolved: which of its incidents it resolved, "
                        "which it left",
}


def fire(ctx: Context, ticket: TicketRow, kind: str, *, actor: str | None,
         mail: Mail | None = None, context: dict[str, Any] | None = None, depth: int = 0,
         **data: Any) -> None:
    """Record the event, run its rules, let the clocks follow, queue its notices.

    context: values for the notices' templates that are not part of the record
    (a survey's links); depth: how many events deep a rule's change is."""
    if kind not in KINDS:
        raise ValueError(f"no event kind {kind!r} (core/fire.py KINDS)")
    record = ctx.ledger.add_event(ticket, kind, ctx.now, actor=actor, **data,
                                  **({"history": True} if ctx.history else {}))
    happening = Happening(ticket, kind, actor, data, mail, depth, context or {})
    _rules(ctx, happening, record)
    _clocks(ctx, happening)
    send_notices(ctx, happening)
    follow_problems(ctx, happening)


def _rules(ctx: Context, h: Happening, record: Pending) -> None:
    if not ctx.rules.watches(h.kind):
        return
    if h.depth >= MAX_DEPTH:
        log.warning("rules stopped on %s: they changed it %d events deep (%s by %s); a loop? "
                    "`maildesk tickets show %s` names the rules", h.ticket.ref, MAX_DEPTH,
                    h.kind, h.actor, h.ticket.ref)
        ctx.ledger.add_event(h.ticket, "rules.stopped", ctx.now, actor=h.actor, event=h.kind,
                             depth=h.depth, reason=f"rules changed the ticket {MAX_DEPTH} "
                             "events deep: a loop? (`maildesk tickets show` names the rules "
                             "that matched each event; `maildesk rules test` plays the chain)")
        return
    mail = h.mail
    facts = facts_for(ctx.settings.desk, h.ticket, mail.parsed if mail else None, ctx.now,
                      replies=lambda: ctx.ledger.message_count(h.ticket),
                      recipients=mail.recipients if mail else (),
                      mailbox=mail.mailbox if mail else None,
                      verified=mail.verified if mail else lambda: False,
                      event=h.data, actor=h.actor)
    decision: Decision = ctx.rules.evaluate(h.kind, facts)
    record.values["data"]["rules"] = {"hits": decision.hits, "misses": decision.misses}
    if decision.actions:
        apply_decision(decision, LedgerEffects(ctx, h.ticket, mail, h.depth + 1))


def _clocks(ctx: Context, h: Happening) -> None:
    """The clocks follow the ticket's state; three kinds matter beyond it (sla/track.py).
    Old mail's clocks run on its dates, unwatched until the import settles them
    (scheduler/sla_scan.py settle_history)."""
    if ctx.slas is None:
        return
    for clock in follow(ctx.slas, h.ticket, ctx.ledger.clocks_of(h.ticket), ctx.now,
                        created=h.kind == "ticket.created",
                        agent_replied=h.kind == "agent.replied" and not h.data.get("silent"),
                        customer_replied=h.kind == "customer.replied" and h.mail is not None
                        and h.mail.verdict == PERSON):
        ctx.ledger.add_clock(h.ticket, clock)
    if ctx.history:     # the scan must not act on old mail: the import's end settles them
        for clock in ctx.ledger.clocks_of(h.ticket):
            clock.next_check_at = None


def change(ctx: Context, ticket: TicketRow, actor: str, *, mail: Mail | None = None,
           depth: int = 0, note: dict[str, Any] | None = None,
           context: dict[str, Any] | None = None, **values: Any) -> None:
    """Set fields of a ticket: each change is a `ticket.updated` event (a status that
    becomes resolved a `ticket.resolved` too). note: more for the events' record;
    context: more for their notices' templates."""
    for name, new in values.items():
        old = getattr(ticket, name)
        if old == new:
            continue
        ctx.ledger.change(ticket, **{name: new})
        fire(ctx, ticket, "ticket.updated", actor=actor, mail=mail, depth=depth,
             context=context, field=name, old=old, new=new, **(note or {}))
        if resolves(name, new):
            fire(ctx, ticket, "ticket.resolved", actor=actor, mail=mail, depth=depth,
                 previous=old)


def resolves(field: str, new: Any) -> bool:
    """Whether a change resolves the ticket: it fires `ticket.resolved` after its
    `ticket.updated` (here and in `maildesk rules test`'s dry run alike)."""
    return field == "status" and new == "resolved"


class LedgerEffects(BaseEffects):
    """Actions on a real ticket: every change an event whose actor is `<kind>:<name>`."""

    def __init__(self, ctx: Context, ticket: TicketRow, mail: Mail | None = None,
                 depth: int = 0, kind: str = "rule") -> None:
        """mail: the mail being handled, if any (the SLA scan acts without one);
        kind: who acts: a rule, an agent by mail command, a customer (#close)."""
        self.ctx, self.mail, self.ticket, self.desk = ctx, mail, ticket, ctx.settings.desk
        self.depth, self.kind = depth, kind

    def _set(self, rule: str, values: dict[str, Any]) -> None:
        change(self.ctx, self.ticket, f"{self.kind}:{rule}", mail=self.mail, depth=self.depth,
               note={self.kind: rule}, **values)

    def link_problem(self, rule: str, ref: str) -> None:
        """Link the ticket to a problem ticket; a ref that names none links nothing, and an
        event says why (rules load without the database: this is where it is checked)."""
        problem = self.ctx.ledger.by_ref(ref)
        went = self.ctx.ledger.merged_into(problem) if problem is not None else None
        why = f"no ticket {ref}" if problem is None else \
            f"{ref} is a ticket of type {problem.type}, not a problem" \
            if problem.type != "problem" else \
            f"{ref} was merged into {went.ref}" if went is not None else \
            f"{self.ticket.ref} is a problem itself" if self.ticket.type == "problem" else None
        if why is None:
            self.change(rule, problem=ref)
            return
        log.info("rule %r: link_problem %s on %s refused: %s", rule, ref, self.ticket.ref, why)
        self.ctx.ledger.add_event(self.ticket, "link_problem.refused", self.ctx.now,
                                  actor=f"rule:{rule}", rule=rule, ref=ref, reason=why)

    def notify(self, rule: str, template: str, to: list[str], level: int = 1) -> None:
        people = [r for r in recipients(self.desk, self.ticket, to, level)
                  if r[1] != self.ticket.requester or "requester" in to]
        told = (self.ticket.number, template, tuple(a for _n, a in people))
        if self.mail is not None:   # rules that chain tell people once per mail, not per link
            if told in self.mail.told:
                return
            self.mail.told.add(told)
        if people:      # agents are told when nothing proves who wrote the mail it quotes
            person = self.mail is not None and self.mail.verdict not in MACHINES
            notice(self.ctx, self.ticket, template, people,
                   answering=self.mail.message if self.mail else None, rule=rule,
                   extra={"sender_verified": self.mail.verified()}
                   if self.mail is not None and person else None)

    def acknowledge(self, rule: str, template: str | None) -> None:
        if self.mail is not None:      # only a mail is acknowledged
            self.mail.acknowledgement = template
            self.mail.acknowledgement_rule = rule

    def suggest(self, rule: str, articles: int) -> None:
        if self.mail is not None:
            self.mail.suggest = articles

    def _escalated(self, rule: str, level: int, queue: str | None, group: str | None) -> None:
        fire(self.ctx, self.ticket, "ticket.escalated", actor=f"rule:{rule}", mail=self.mail,
             depth=self.depth, level=level, queue=queue, group=group, rule=rule)

    def drop(self, rule: str, reason: str) -> None:
        raise Dropped(f"rule {rule!r} dropped it as {reason}")
