"""An agent's answer to a problem proposal (core/proposals.py): the mail to its proposal
address makes the group of incidents one problem ticket, assigned to the agent.

Proof is the reply address's, as for any agent's token: the token was made for the
agent the proposal was mailed to, and From must be one of that agent's addresses, in
a mail with one From. Anyone else's mail to it, or a machine's, changes nothing.
"""
from __future__ import annotations

from ...core.context import Classified, Context, Refused
from ...core.proposals import accept, proposal
from ...mail.classify import PERSON
from ...tickets.apply import store_message
from ...tickets.refs import proposal_token_ok, read_proposal_address
from ..work import Work, recipients, reply_parts

PROPOSAL = "proposal"


def proposal_stage(ctx: Context, w: Work) -> None:
    found = next((r for r in map(read_proposal_address, recipients(w)) if r is not None), None)
    if found is None:
        return
    pid, code = found
    if w.verdict != PERSON:
        raise Classified(w.verdict, f"{w.verdict_reason}; not an answer to proposal {pid}")
    agent = ctx.settings.desk.agent(w.parsed.from_addr)
    row = proposal(ctx.ledger.conn, pid)
    if row is None:
        raise Refused(f"an answer to proposal {pid}, which does not exist")
    who = f"an answer to proposal {pid} from {w.parsed.from_addr}"
    if agent is None:
        raise Refused(f"{who}, who is no agent of this desk")
    if w.doubt:
        raise Refused(f"{who}: {w.doubt}")
    if not proposal_token_ok(code, ctx.secrets, pid, agent.address):
        raise Refused(f"{who}, to an address not made for them (it is made for the agent "
                      "the proposal was sent to, and for that proposal)")
    before = row["problem"]
    problem = accept(ctx, pid, agent)
    said = reply_parts(w)[0]
    if said.strip():        # the answer's words go on the problem; an empty yes is no note
        w.message = store_message(ctx.ledger, ctx.blobs, problem, w.parsed, w.inbound.digest,
                                  ctx.now, text=said, visibility="internal")
    if before:
        raise Classified(PROPOSAL, f"proposal {pid} was made {before} already")
    raise Classified(PROPOSAL, f"proposal {pid} made {problem.ref}, by {agent.name}")
