"""An agent's From with DKIM or a trusted Authentication-Results for its domain. A mail
whose From names no one person can prove nobody, by any means."""
from __future__ import annotations

from ...core.context import Context
from ...mail.authentication import header_fields, why_no_proof
from ..sender import domain_proof
from ..work import Work


def authenticate_stage(ctx: Context, w: Work) -> None:
    w.head = header_fields(w.raw)
    w.doubt = why_no_proof(w.raw, w.head)
    agent = ctx.settings.desk.agent(w.parsed.from_addr)
    if agent is not None and domain_proof(ctx, w):
        w.proven_agent = agent.name
