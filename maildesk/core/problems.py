"""Problems and their incidents: what a problem ticket's record does to the tickets
linked to it (their `problem` names its ref).

fire() hands every event here last. Three happenings matter, however they came (an
agent's mail, the command line, a rule):
- a problem becomes a known error while it has a workaround, or a known error's
  workaround changes: each linked incident not yet resolved gets `problem.known_error`,
  whose notice gives its requester the workaround (template known_error);
- an incident is linked to a problem that is a known error: the same, for it alone;
- a problem is resolved (or closed while open): each linked incident not yet resolved, in
  a queue whose resolve_with_problem is on, gets resolved_by (the problem's ref) and is
  resolved; its `ticket.resolved` tells its requester (template problem_resolved); an
  incident linked later to a problem resolved or closed is resolved at once, and hears
  nothing of its workaround.
Each incident's change is its own event, whose actor is `problem:REF`; the problem's
`problem.resolved` says which incidents it resolved and which it left.
"""
from __future__ import annotations

from typing import Any

from ..store.rows import TicketRow
from ..tickets.refs import redact
from .context import Context
from .happening import Happening

OPEN = ("new", "open", "pending")


def follow(ctx: Context, h: Happening) -> None:
    from .fire import change
    t, d = h.ticket, h.data
    if t.type == "problem":
        if h.kind == "ticket.resolved" or (h.kind == "ticket.updated" and _closed(d)):
            _resolve(ctx, t, h.depth + 1)
        elif h.kind == "ticket.updated" and _news(t, d):
            for incident in ctx.ledger.incidents_of(t.ref):
                _tell(ctx, t, incident, h.depth + 1)
    elif h.kind == "ticket.updated" and d.get("field") == "problem" and d.get("new"):
        problem = ctx.ledger.by_ref(str(d["new"]))
        if problem is None or problem.type != "problem":
            return
        if problem.status in OPEN:
            _tell(ctx, problem, t, h.depth + 1)
        elif t.status in OPEN and ctx.settings.desk.queue(t.queue).resolve_with_problem:
            # fixed already: its resolution, not its workaround (the linker refuses a
            # problem merged away, whose incidents went to the survivor)
            change(ctx, t, f"problem:{problem.ref}", depth=h.depth + 1,
                   resolved_by=problem.ref, status="resolved")


def _closed(d: dict[str, Any]) -> bool:
    """A problem closed without being resolved first: the agent is done with it, and its
    incidents are resolved as by its resolution. A merge closes it too, but has moved its
    incidents to the surviving problem before (pipeline/stages/agent.py _merge)."""
    return d.get("field") == "status" and d.get("new") == "closed" and d.get("old") in OPEN


def _news(problem: TicketRow, d: dict[str, Any]) -> bool:
    """Whether this change of a problem is news for its incidents' requesters: it became a
    known error with a workaround, or the workaround of a known error changed."""
    if d.get("field") == "known_error":
        return bool(d.get("new")) and bool(problem.workaround)
    return d.get("field") == "workaround" and problem.known_error and bool(d.get("new"))


def _tell(ctx: Context, problem: TicketRow, incident: TicketRow, depth: int) -> None:
    from .fire import fire
    if not problem.known_error or not problem.workaround or incident.type == "problem" \
            or incident.status not in OPEN:
        return
    prefix = ctx.settings.desk.ref_prefix     # for the customer: no token address of ours
    fire(ctx, incident, "problem.known_error", actor=f"problem:{problem.ref}", depth=depth,
         context={"problem_subject": redact(problem.subject, prefix)}, problem=problem.ref,
         workaround=redact(problem.workaround, prefix))


def _resolve(ctx: Context, problem: TicketRow, depth: int) -> None:
    from .fire import change, fire
    actor = f"problem:{problem.ref}"
    resolved: list[str] = []
    left: list[str] = []
    for incident in ctx.ledger.incidents_of(problem.ref):
        if incident.type == "problem" or incident.status not in OPEN:
            continue
        if not ctx.settings.desk.queue(incident.queue).resolve_with_problem:
            left.append(incident.ref)
            continue
        change(ctx, incident, actor, depth=depth, resolved_by=problem.ref, status="resolved")
        resolved.append(incident.ref)
    if resolved or left:
        why: dict[str, Any] = {"why_left": "their queue's resolve_with_problem is false"} \
            if left else {}
        fire(ctx, problem, "problem.resolved", actor=actor, depth=depth, resolved=resolved,
             left=left, **why)


def open_problem(ctx: Context, incident: TicketRow, name: str) -> TicketRow:
    """`#problem new`: a problem ticket for the incident, of its subject, queue and
    priority, assigned to the agent, who is its requester too (the record is the desk's;
    no customer hears of the problem itself). Its incidents are linked to it apart."""
    from .fire import fire
    agent = ctx.settings.desk.agent_named(name)
    assert agent is not None, name      # an agent's commands: the agent is known
    problem = ctx.ledger.open_ticket(
        subject=incident.subject, requester=agent.address,
        requester_name=agent.display_name or agent.name, cc=[], status="open",
        type="problem", priority=incident.priority, impact=incident.impact,
        urgency=incident.urgency, tags=[], problem=None, category=incident.category,
        queue=incident.queue, assignee=agent.name, created_at=ctx.now, updated_at=ctx.now)
    fire(ctx, problem, "ticket.created", actor=f"agent:{agent.name}", source="problem",
         incident=incident.ref)
    return problem
