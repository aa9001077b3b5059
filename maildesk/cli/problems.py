"""`maildesk problems`: the problem tickets, what is known of each, and how many incidents
wait on it; the groups of alike incidents that may be one (suggest), those proposed to a
lead (proposals), and making a proposal a problem (accept). Acting on problems is
`maildesk tickets problem|root-cause|workaround|known-error` (cli/act.py), as an agent's
mail commands do."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import click

from ..tickets.views import list_problems
from .act import AS, act_as, as_agent
from .context import Obj
from .output import EX_NOINPUT, EX_SOFTWARE, FORMAT, emit_json, emit_table, fail, minute


@click.group()
def problems() -> None:
    """Problem tickets: the root causes behind recurring incidents."""


@problems.command("list")
@FORMAT
@click.pass_obj
def problems_list(obj: Obj, fmt: str) -> None:
    """Problems, newest first: status, known error, root cause, workaround, and their
    incidents (all linked, and those not yet resolved)."""
    app = obj.app(existing=True)
    with app.sessions() as session:
        rows = list_problems(session)
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table([r | {"known_error": "yes" if r["known_error"] else "no"} for r in rows],
                   ["ref", "status", "known_error", "incidents", "open_incidents", "queue",
                    "assignee", "subject", "root_cause", "workaround"], empty="no problems")


@problems.command("suggest")
@click.option("--since", default=None, metavar="DURATION",
              help="Incidents opened this recently (7d, 48h); default problems.since.")
@click.option("--propose", is_flag=True,
              help="Propose each group now, as the job propose_problems does: recorded, and "
                   "mailed to the queue's group lead (else its agents).")
@FORMAT
@click.pass_obj
def problems_suggest(obj: Obj, since: str | None, propose: bool, fmt: str) -> None:
    """Groups of incidents that say the same thing at about the same time, not linked to
    a problem nor proposed yet: maybe one cause (problems.similarity, problems.span,
    problems.min_incidents). Without --propose it only shows them."""
    from ..config.durations import parse_duration
    from ..core.proposals import find
    from ..core.proposals import propose as propose_group
    settings = obj.settings.problems
    if since is not None:
        try:
            if not parse_duration(since):
                raise ValueError("0 holds no incident; give more than 0 (48h, 7d)")
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
        settings = settings.model_copy(update={"since": since})
    app = obj.app(existing=True)
    now = datetime.now(timezone.utc)
    with app.engine.begin() as conn:
        found = find(conn, settings, now, app.meaning if settings.embeddings else None)
        ids: list[int | None] = [None] * len(found)
        if propose:
            ctx = app.context(conn, now)
            ids = [propose_group(ctx, g) for g in found]
            ctx.write()
    rows: list[dict[str, Any]] = [
        {"proposal": pid, "incidents": [i.ref for i in g.incidents], "queue": g.queue,
         "words": list(g.words), "first": g.incidents[0].created_at.isoformat(),
         "last": g.incidents[-1].created_at.isoformat(), "subject": g.incidents[0].subject}
        for g, pid in zip(found, ids)]
    if fmt == "json":
        emit_json(rows)
        return
    emit_table([r | {"incidents": f"{len(r['incidents'])}: {' '.join(r['incidents'])}",
                     "words": ", ".join(r["words"]), "first": minute(r["first"])}
                for r in rows], (["proposal"] if propose else []) +
               ["incidents", "queue", "words", "first", "subject"],
               empty=f"no group of {settings.min_incidents} or more alike incidents in the "
                     f"last {settings.since}")


@problems.command("proposals")
@FORMAT
@click.pass_obj
def problems_proposals(obj: Obj, fmt: str) -> None:
    """Groups proposed as problems, newest first: to whom, the first incident's subject,
    and, once accepted, when, and the problem made of it with its assignee (whoever
    accepted it, unless it was reassigned since)."""
    from sqlalchemy import select

    from ..store.tables import T_PROPOSALS, T_TICKETS
    t = T_TICKETS.c
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        rows: list[dict[str, Any]] = [dict(r) for r in conn.execute(
            select(T_PROPOSALS).order_by(T_PROPOSALS.c.id.desc())).mappings()]
        found = {i: (ref, subject) for i, ref, subject in conn.execute(
            select(t.id, t.ref, t.subject).where(
                t.id.in_({i for r in rows for i in r["tickets"]})))}
        assignees = dict(conn.execute(select(t.ref, t.assignee).where(
            t.ref.in_({r["problem"] for r in rows if r["problem"]}))).all())

    def incident(i: int) -> tuple[str, str | None]:
        """An incident's ref and subject (`#id` and none, should it be gone)."""
        return found.get(i, (f"#{i}", None))
    out = [{"id": r["id"], "proposed_at": r["proposed_at"].isoformat(), "queue": r["queue"],
            "to": r["lead"], "incidents": [incident(i)[0] for i in r["tickets"]],
            "subject": incident(r["tickets"][0])[1] if r["tickets"] else None,
            "words": r["words"], "problem": r["problem"], "assignee": assignees.get(r["problem"]),
            "accepted_at": r["accepted_at"].isoformat() if r["accepted_at"] else None}
           for r in rows]
    if fmt == "json":
        emit_json(out)
    else:
        emit_table([r | {"proposed_at": minute(r["proposed_at"]), "to": r["to"] or "nobody",
                         "incidents": f"{len(r['incidents'])}: {' '.join(r['incidents'])}",
                         "words": ", ".join(r["words"]),
                         "accepted_at": minute(r["accepted_at"])}
                    for r in out], ["id", "proposed_at", "queue", "to", "incidents", "subject",
                                    "words", "accepted_at", "problem", "assignee"],
                   empty="no proposals")


@problems.command("accept")
@click.argument("proposal", type=int)
@AS
@FORMAT
@click.pass_obj
def problems_accept(obj: Obj, proposal: int, who: str, fmt: str) -> None:
    """Make a proposal a problem ticket assigned to you, its incidents linked to it, as
    an answer to the proposal's mail does (66: no such proposal)."""
    from sqlalchemy import select

    from ..store.tables import T_PROPOSALS
    from ..tickets.refs import proposal_address
    from ..tickets.views import show_ticket
    agent = as_agent(obj.settings.desk, who)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        row = conn.execute(select(T_PROPOSALS.c.queue, T_PROPOSALS.c.problem)
                           .where(T_PROPOSALS.c.id == proposal)).first()
    if row is None:
        fail(f"no proposal {proposal} (`maildesk problems proposals` lists them)", EX_NOINPUT)
    before = row[1]
    desk = obj.settings.desk
    support = (desk.queue(row[0]).addresses or desk.addresses)[0]
    to = proposal_address(app.secrets[0], support, proposal, agent.address)
    done = act_as(app, agent, to, f"Re: proposal {proposal}", "")
    if done.classified != 1:
        fail(f"proposal {proposal}: the pipeline did not take it ({done.as_dict()}); see "
             "`maildesk quarantine list --state all`", EX_SOFTWARE)
    with app.engine.connect() as conn:
        ref = conn.scalar(select(T_PROPOSALS.c.problem).where(T_PROPOSALS.c.id == proposal))
    with app.sessions() as session:
        made = show_ticket(session, str(ref))
    assert made is not None
    if fmt == "json":
        emit_json(made)
    elif before:        # a second answer opens no second problem, nor takes it over
        click.echo(f"{made['ref']}: proposal {proposal} was accepted already; its problem "
                   f"is assigned to {made['assignee'] or 'nobody'}")
    else:
        click.echo(f"{made['ref']}: problem of proposal {proposal}, assigned to {agent.name}")


COMMANDS = [problems]
