"""Keeping a ticket's SLA clocks in step with the ticket, after each thing that happens.

Mostly from the ticket's state, so that every path that changes a ticket (a
mail, an agent's command, a rule, a scheduled job) gets the same clocks:
pending pauses the running clocks, new or open runs them again (a reopened
ticket's resolution clock too), resolved or closed stops them. Two events
matter beyond the state: an agent's public reply stops the first and next
response clocks, and a customer's reply after that starts a next response
clock. A ticket whose policy changed (its priority did) keeps the time used.
"""
from __future__ import annotations

from datetime import datetime

from ..store.rows import PAUSED, RUNNING, STOPPED, ClockRow, TicketRow
from .clocks import pause, resume, retarget, start, stop
from .policy import SlaPolicy, Slas

ACTIVE, WAITING, DONE = ("new", "open"), ("pending",), ("resolved", "closed")


def follow(slas: Slas, ticket: TicketRow, clocks: list[ClockRow], now: datetime, *,
           created: bool = False, agent_replied: bool = False,
           customer_replied: bool = False) -> list[ClockRow]:
    """Bring clocks in step (in place); returns the clocks to add."""
    policy = slas.policy_for(ticket)
    added: list[ClockRow] = []
    if policy is None:
        return added
    for c in clocks:
        if c.state != STOPPED and c.policy != policy.name:
            retarget(c, slas.named(c.policy) or policy, policy, now)
    if created:
        added += [start(k, policy, now) for k in ("first_response", "resolution")
                  if k in policy.targets]
    mine = [*clocks, *added]

    def of(c: ClockRow) -> SlaPolicy:
        return slas.named(c.policy) or policy

    if agent_replied:
        for c in mine:
            if c.kind in ("first_response", "next_response"):
                stop(c, of(c), now)
    elif customer_replied and "next_response" in policy.targets and ticket.status not in DONE:
        first_open = any(c.kind == "first_response" and c.state != STOPPED for c in mine)
        waiting = any(c.kind == "next_response" and c.state != STOPPED for c in mine)
        if not first_open and not waiting:
            added.append(start("next_response", policy, now))
            mine.append(added[-1])
    for c in mine:
        if ticket.status in WAITING and c.state == RUNNING:
            pause(c, of(c), now)
        elif ticket.status in ACTIVE and (c.state == PAUSED or (
                c.kind == "resolution" and c.state == STOPPED)):
            resume(c, of(c), now)
        elif ticket.status in DONE:
            stop(c, of(c), now)
    return added
