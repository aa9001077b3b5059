"""Which events send which mail to whom: one table, read by fire() after the rules.

Audiences are answered by tickets/audience.py, so a new ticket's notice, a
customer's reply and an SLA escalation to `assignee` reach the same people.
Nobody is told of what they did themselves: an agent who opens, assigns or
answers hears nothing of it. A rule's `notify` is the admins' own table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..kb.search import customer_words
from ..mail.classify import MACHINES
from ..mail.parse import Attachment
from ..sla.views import answer_due
from ..store.rows import TicketRow
from ..tickets.audience import Person, recipients, responsible
from ..tickets.refs import rate_address
from .context import Context
from .happening import Happening, Mail
from .outbox import desk_address, notice
from .suggestions import suggest


def _always(h: Happening) -> str | None:
    return None


def _person(h: Happening) -> str | None:
    return "a machine's mail" if h.mail is not None and h.mail.verdict in MACHINES else None


def _acknowledged(h: Happening) -> str | None:
    m = h.mail
    if m is None:
        return "no mail to acknowledge"
    if m.unacknowledged is None and m.acknowledgement is None:
        return f"rule {m.acknowledgement_rule!r} said no acknowledgement"
    return m.unacknowledged


def _assigned(h: Happening) -> str | None:
    return None if h.data.get("field") == "assignee" and h.data.get("new") else "not assigned"


def _auto_closed(h: Happening) -> str | None:
    """A requester hears that a job closed their resolved ticket: auto_close or a queue's
    retention (close_after), the same closing."""
    return None if h.actor in ("job:auto_close", "job:retention") else "not closed by a job"


def _by_problem(h: Happening) -> str | None:
    return None if (h.actor or "").startswith("problem:") else "not resolved by a problem"


def _split_off(h: Happening) -> str | None:
    return None if h.data.get("split_from") else "the ticket a message was split from"


def _problem_made(h: Happening) -> str | None:
    """The agent who made a problem (`#problem new`, a proposal's answer) is its assignee
    and its requester, and the actor: told nothing as either. This notice gives them its
    reply address, to write its record by mail."""
    return None if h.data.get("source") in ("problem", "proposal") else "not a problem made"


def _rated_by_mail(h: Happening) -> str | None:
    return None if h.data.get("via") == "mail" else "rated on the web page, which thanked them"


@dataclass(frozen=True)
class Notice:
    template: str            # "{template}": the event's data names it; "{acknowledgement}":
                             # the mail's (acknowledgement, unless a rule chose another)
    audience: str            # see _audience()
    skip: Callable[[Happening], str | None] = _always   # why not, or None to send
    replies: bool = False    # it answers the mail's sender (Auto-Submitted: auto-replied)
    said: str | None = None  # a skipped notice is this event, with the reason
    rate: bool = False       # replies go to the rate address (a survey)
    attach: bool = False     # the mail's attachments go with it (to agents, capped)


NOTICES: dict[str, tuple[Notice, ...]] = {
    "ticket.created": (Notice("agent_notification", "responsible", _person, attach=True),
                       Notice("{acknowledgement}", "requester", _acknowledged, replies=True,
                              said="acknowledgement.suppressed"),
                       Notice("agent_notification", "actor", _problem_made)),
    "customer.replied": (Notice("agent_notification", "responsible", _person, attach=True),),
    "ticket.updated": (Notice("agent_notification", "new_assignee", _assigned),
                       Notice("ticket_closed", "requester", _auto_closed)),
    "commands.refused": (Notice("command_error", "actor", replies=True),),
    "history.requested": (Notice("ticket_history", "actor", replies=True),),
    "ticket.split": (Notice("agent_notification", "actor", _split_off),),
    "reply.refused": (Notice("refused", "sender", replies=True),),
    "sla.escalated": (Notice("{template}", "{notify}"),),
    "reminder.sent": (Notice("pending_reminder", "requester"),),
    "survey.sent": (Notice("survey", "requester", rate=True),),
    "survey.answered": (Notice("survey_thanks", "requester", _rated_by_mail, replies=True),),
    "kb.solved": (Notice("kb_solved", "responsible"),),
    "problem.known_error": (Notice("known_error", "requester"),),
    "ticket.resolved": (Notice("problem_resolved", "requester", _by_problem),),
}


def send_notices(ctx: Context, h: Happening) -> None:
    promise: dict[str, str] | None = None      # the ticket's, once for all its notices
    # the articles a new ticket's acknowledgement offers; its agents are told which
    suggested = suggest(ctx, h.ticket, h.mail) if h.kind == "ticket.created" and \
        h.mail is not None and _acknowledged(h) is None and not h.mail.ack_limited else []
    for n in NOTICES.get(h.kind, ()):
        why_not = n.skip(h)
        if why_not is not None:
            if n.said:
                ctx.ledger.add_event(h.ticket, n.said, ctx.now, reason=why_not)
            continue
        people = [p for p in _audience(ctx, h, n.audience)
                  if n.audience == "actor" or not _is_actor(ctx, h, p)]
        if not people:
            continue
        template, rule = n.template, None
        if template == "{template}":
            template = str(h.data["template"])
        elif template == "{acknowledgement}" and h.mail is not None:
            template = "acknowledgement_limit" if h.mail.ack_limited \
                else h.mail.acknowledgement or "acknowledgement"
            rule = h.mail.acknowledgement_rule
        if promise is None:
            promise = _promise(ctx, h.ticket)
        extra: dict[str, Any] = {**promise, **h.data, **h.context,
                                 "new_ticket": h.kind == "ticket.created",
                                 "suggestions": suggested,
                                 "assigned": n.audience == "new_assignee"}
        if template == "agent_notification":
            extra |= _requester_open(ctx, h.ticket)
            if h.kind == "ticket.created" and h.mail is not None:
                extra["similar"] = _similar(ctx, h.ticket, h.mail)
        files: tuple[Attachment, ...] = ()
        if n.attach and h.mail is not None and h.mail.parsed.attachments:
            files, extra["attachments"] = _attachments(h.mail.parsed.attachments,
                                                       ctx.settings.desk.agent_attachments)
        t = h.ticket
        notice(ctx, t, template, people, attachments=files,
               answering=h.mail.message if h.mail else None, extra=extra,
               auto_submitted="auto-replied" if n.replies else "auto-generated", rule=rule,
               reply_address=rate_address(ctx.secrets[0], desk_address(ctx, t), t.ref,
                                          t.requester) if n.rate else None)


def _attachments(files: tuple[Attachment, ...], limit: int
                 ) -> tuple[tuple[Attachment, ...], list[dict[str, Any]]]:
    """The files that go with an agents' notification, in order while they fit in limit
    bytes, and a line for each for its template (name, size, sent or left out)."""
    sent: list[Attachment] = []
    said: list[dict[str, Any]] = []
    room = limit
    for f in files:
        fits = len(f.data) <= room
        if fits:
            sent.append(f)
            room -= len(f.data)
        said.append({"name": f.filename, "size": _size(len(f.data)), "sent": fits})
    return tuple(sent), said


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


OTHERS_LISTED = 5   # the requester's other open tickets named in a notification to agents


def _requester_open(ctx: Context, ticket: TicketRow) -> dict[str, Any]:
    """The requester's other tickets not yet resolved, for agents: the last changed few
    (ref, subject, status) and how many in all. A customer who writes again about the same
    thing is often on another ticket already."""
    rows, total = ctx.ledger.requester_tickets(ticket.requester, OTHERS_LISTED,
                                               besides=ticket.ref)
    return {"requester_open": rows, "requester_open_count": total}


def _similar(ctx: Context, ticket: TicketRow, mail: Mail) -> list[dict[str, Any]]:
    """Resolved incidents like a new incident's opening mail (tickets/similar.py)."""
    if ticket.type != "incident" or ctx.history:
        return []
    agents = {a for agent in ctx.settings.desk.agents for a in agent.addresses}
    return ctx.similar.find(ctx.ledger.conn, ctx.settings.similar, agents, ctx.now,
                            customer_words(mail.parsed.subject, mail.parsed.text),
                            besides=ticket.id)


def _promise(ctx: Context, ticket: TicketRow) -> dict[str, str]:
    """respond_by and respond_within for the templates, while a first answer is owed."""
    if ctx.slas is None:
        return {}
    return answer_due(ctx.slas, ctx.ledger.clocks_of(ticket))


def _audience(ctx: Context, h: Happening, audience: str) -> list[Person]:
    desk, t = ctx.settings.desk, h.ticket
    if audience == "responsible":
        return [(a.name, a.address) for a in responsible(desk, t)]
    if audience == "requester":
        return [(t.requester_name or "", t.requester)]
    if audience == "sender":
        return [(h.mail.parsed.from_name, h.mail.parsed.from_addr)] if h.mail else []
    if audience == "actor":
        agent = desk.agent_named(_agent_of(h.actor))
        return [(agent.name, agent.address)] if agent else []
    if audience == "new_assignee":
        agent = desk.agent_named(str(h.data["new"]))
        return [(agent.name, agent.address)] if agent else []
    return recipients(desk, t, [str(h.data["notify"])], int(h.data.get("level", 1)))


def _agent_of(actor: str | None) -> str | None:
    return actor[len("agent:"):] if actor and actor.startswith("agent:") else None


def _is_actor(ctx: Context, h: Happening, person: Person) -> bool:
    """An agent is not told of what they did (but hears what they asked for: their
    commands' errors, the history; those notices are for the `actor` audience)."""
    name = _agent_of(h.actor)
    if name is None:
        return False
    agent = ctx.settings.desk.agent_named(name)
    return agent is not None and agent.address == person[1]
