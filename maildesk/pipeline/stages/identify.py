"""Who sent it. An agent's From counts only with proof: a token made for that agent and
ticket, or DKIM or trusted Authentication-Results for the agent's domain. A machine's
mail from an agent's address (their out-of-office answering a notice) is no agent's word:
it runs no command and reaches no customer; it is noted, like any machine's mail."""
from __future__ import annotations

from ...core.context import Context
from ...mail.classify import MACHINES
from ...tickets.commands import requester_line, views
from ..work import Work, reply_parts


def identify_stage(ctx: Context, w: Work) -> None:
    agent = ctx.settings.desk.agent(w.parsed.from_addr)
    if agent is None or w.verdict in MACHINES:
        return
    by_token = w.doubt is None and w.grant is not None and w.ticket is not None \
        and w.grant.ref == w.ticket.ref and w.grant.person == agent.address
    if w.proven_agent is not None and w.ticket is None:
        w.on_behalf_of = requester_line(reply_parts(w)[0])
        w.views = None if w.on_behalf_of else views(reply_parts(w)[0], ctx.settings.desk)
    if by_token or (w.proven_agent is not None and (
            w.ticket is not None or w.on_behalf_of or w.views)):
        w.agent = agent
    elif not w.proven_agent:
        w.unverified_agent = agent.name
