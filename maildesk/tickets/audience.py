"""Who hears of a ticket: one answer for the pipeline's notices, the rules' `to:` and the
SLA escalations.

`responsible()` is the people who answer for a ticket now: its assignee, or
while nobody is assigned, the agents of its queue (the queue's group and
those who list the queue). A new ticket's notice, a customer's reply, an
SLA breach and a rule's `to: assignee` all reach these same people.
"""
from __future__ import annotations

from ..config.schema import Agent, Desk
from ..store.rows import TicketRow

Person = tuple[str, str]     # (display name, address)


def responsible(desk: Desk, ticket: TicketRow) -> list[Agent]:
    assignee = desk.agent_named(ticket.assignee)
    return [assignee] if assignee is not None else queue_agents(desk, ticket.queue)


def queue_agents(desk: Desk, queue: str) -> list[Agent]:
    """The agents of a queue: its group's, and those who list the queue."""
    group = desk.queue(queue).group
    return [a for a in desk.agents if (group and group in a.groups) or queue in a.queues]


def group_lead(desk: Desk, ticket: TicketRow) -> list[Agent]:
    """The lead of the ticket's queue's group, if it has one."""
    return queue_lead(desk, ticket.queue)


def queue_lead(desk: Desk, queue: str) -> list[Agent]:
    """The lead of the queue's group, if it has one."""
    name = desk.queue(queue).group
    group = next((g for g in desk.groups if g.name == name), None)
    lead = desk.agent_named(group.lead) if group else None
    return [lead] if lead else []


def recipients(desk: Desk, ticket: TicketRow, to: list[str], level: int = 1) -> list[Person]:
    """(name, address) for a rule's or an escalation's `to`: requester, assignee (the
    people responsible while nobody is assigned), group_lead, agents, a group (from level
    2 on with its lead), or an address."""
    out: list[Person] = []
    for t in to:
        if t == "requester":
            out.append((ticket.requester_name or "", ticket.requester))
        elif t == "assignee":
            out.extend((a.name, a.address) for a in responsible(desk, ticket))
        elif t == "group_lead":
            out.extend((a.name, a.address) for a in group_lead(desk, ticket))
        elif t == "agents":
            out.extend((a.name, a.address) for a in desk.agents)
        elif "@" in t:
            out.append(("", t))
        else:
            members = [a for a in desk.agents if t in a.groups]
            group = next((g for g in desk.groups if g.name == t), None)
            lead = desk.agent_named(group.lead) if group and level >= 2 else None
            if lead is not None:
                members.append(lead)
            out.extend((a.name, a.address) for a in members)
    return list(dict.fromkeys(out))
