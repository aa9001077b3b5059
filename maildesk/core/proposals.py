"""Recurring incidents put to a person as one problem.

`maildesk problems suggest` and the job propose_problems group the incidents of the
last `problems.since` that no problem holds yet (ml/cluster.py: alike in their words,
arrived within `problems.span` of each other). Each new group is a problem_proposals
row and a mail (template problem_proposal) to the lead of its queue's group, or,
when the group has no lead, to the queue's agents: the incidents, what they share,
and a reply address (tickets/refs.py proposal_address) made for that agent alone.
Their answer to it, proven as any agent's token is (the token is theirs and From
names them), makes the problem ticket, assigned to them, and links every incident
of the group to it (accept()). A group is proposed once: its incidents are not
grouped again while a proposal holds them.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select, update

from ..config.durations import parse_duration
from ..config.schema import Agent, Problems
from ..ml.words import ticket_terms
from ..store.rows import TicketRow
from ..store.tables import T_PROPOSALS, T_TICKETS
from ..tickets.audience import queue_agents, queue_lead
from ..tickets.openings import Opening, not_merged, openings
from ..tickets.refs import proposal_address
from .context import Context
from .outbox import answer, queue_address

if TYPE_CHECKING:
    from ..ml.cluster import Group


def recent_incidents(conn: Connection, since: datetime) -> list[Opening]:
    """Incidents opened since then that no problem holds, not merged away, and not in a
    proposal already."""
    proposed = {i for ids in conn.scalars(select(T_PROPOSALS.c.tickets)
                                          .where(T_PROPOSALS.c.proposed_at >= since
                                                 - timedelta(days=1))) for i in ids or ()}
    t = T_TICKETS.c
    found = openings(conn, t.type == "incident", t.created_at >= since, t.problem.is_(None),
                     not_merged())
    return [i for i in found if i.id not in proposed]


@dataclass(frozen=True)
class Found:
    """A group of alike incidents, and the queue most of them are in."""

    incidents: tuple[Opening, ...]
    words: tuple[str, ...]
    queue: str


def find(conn: Connection, settings: Problems, now: datetime,
         meaning: Callable[[list[int], list[str]], Any] | None = None) -> list[Found]:
    """The groups among the recent incidents, largest first. meaning: the embeddings of
    incidents (by id and text), with problems.embeddings: compared instead of words."""
    from ..ml.cluster import Doc, groups  # numpy and scipy: loaded for this alone
    incidents = recent_incidents(conn, now - timedelta(seconds=parse_duration(settings.since)))
    by_id = {i.id: i for i in incidents}
    texts = [f"{i.subject}\n{i.text}" for i in incidents]
    docs = [Doc(i.id, i.created_at.timestamp(), ticket_terms(t))
            for i, t in zip(incidents, texts)]
    vectors = meaning([i.id for i in incidents], texts) if meaning is not None else None
    return [_found(g, by_id) for g in groups(
        docs, similarity=settings.embedding_similarity if vectors is not None
        else settings.similarity, span=parse_duration(settings.span),
        min_size=settings.min_incidents, meaning=vectors)]


def _found(group: Group, by_id: dict[int, Opening]) -> Found:
    members = tuple(by_id[k] for k in group.keys)
    queues = Counter(i.queue for i in members)
    top = max(queues.values())
    return Found(members, group.words, next(i.queue for i in members if queues[i.queue] == top))


def proposed_to(ctx: Context, queue: str) -> list[Agent]:
    """Who hears of a group in queue: its group's lead, else the agents of the queue."""
    return queue_lead(ctx.settings.desk, queue) or queue_agents(ctx.settings.desk, queue)


def propose(ctx: Context, found: Found) -> int:
    """Record the group and mail it to whoever proposed_to() names (each their own reply
    address); the proposal's id."""
    conn = ctx.ledger.conn
    people = proposed_to(ctx, found.queue)
    pid = int(conn.execute(insert(T_PROPOSALS).values(
        proposed_at=ctx.now, queue=found.queue, lead=people[0].address if people else None,
        tickets=[i.id for i in found.incidents], words=list(found.words), problem=None,
        accepted_at=None).returning(T_PROPOSALS.c.id)).scalar_one())
    for agent in people:
        sender = queue_address(ctx, found.queue)
        answer(ctx, agent.address, "problem_proposal", {
            "agent": agent.display_name or agent.name, "proposal": pid,
            "incidents": [_view(i) for i in found.incidents], "words": list(found.words),
            "queue": found.queue},
            None, sender=sender,
            reply_to=proposal_address(ctx.secrets[0], sender, pid, agent.address))
    return pid


def _view(i: Opening) -> dict[str, Any]:
    return {"ref": i.ref, "subject": i.subject, "status": i.status,
            "created_at": i.created_at, "text": i.text[:300]}


def proposal(conn: Connection, pid: int) -> dict[str, Any] | None:
    row = conn.execute(select(T_PROPOSALS).where(T_PROPOSALS.c.id == pid)).mappings().first()
    return dict(row) if row else None


def accept(ctx: Context, pid: int, agent: Agent) -> TicketRow:
    """The problem ticket of proposal pid, opened by agent and assigned to them, every
    incident of it that no problem took meanwhile linked to it; or the one made before,
    when it was accepted already (a second answer opens no second problem)."""
    from .fire import change, fire
    conn = ctx.ledger.conn
    row = proposal(conn, pid)
    assert row is not None, pid         # the stage found it
    if row["problem"]:
        made = ctx.ledger.by_ref(row["problem"])
        if made is not None:
            return made
    incidents = [t for t in (ctx.ledger.by_id(i) for i in row["tickets"]) if t is not None]
    lead = incidents[0] if incidents else None
    subject = f"Recurring: {lead.subject}" if lead else f"Recurring incidents ({pid})"
    problem = ctx.ledger.open_ticket(
        subject=subject, requester=agent.address,
        requester_name=agent.display_name or agent.name, cc=[], status="open",
        type="problem", priority=lead.priority if lead else "P3",
        impact=lead.impact if lead else "medium", urgency=lead.urgency if lead else "medium",
        tags=[], problem=None, category=lead.category if lead else None, queue=row["queue"],
        assignee=agent.name, created_at=ctx.now, updated_at=ctx.now)
    fire(ctx, problem, "ticket.created", actor=f"agent:{agent.name}", source="proposal",
         proposal=pid, words=row["words"], incidents=[t.ref for t in incidents])
    for t in incidents:
        if t.problem is None and t.type == "incident":
            change(ctx, t, f"agent:{agent.name}", note={"proposal": pid}, problem=problem.ref)
    conn.execute(update(T_PROPOSALS).where(T_PROPOSALS.c.id == pid)
                 .values(problem=problem.ref, accepted_at=ctx.now))
    return problem
