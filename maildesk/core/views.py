"""What waits, by mail: for an agent, the answer to `#mine`, `#queue NAME` and
`#unassigned [QUEUE]`, and the daily digest of agents who asked for one; for a customer,
the answer to their status request. Each ticket listed carries the reader's own reply
address for it, so that answering one line of the list is answering that ticket."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..config.schema import Agent
from ..tickets.ledger import UNRESOLVED
from ..tickets.refs import token_address
from .context import Context
from .outbox import answer, queue_address


def send_agent_view(ctx: Context, agent: Agent, asked: list[tuple[str, str, str | None]],
                    message_id: str | None) -> bool:
    """`#mine`, `#queue NAME`, `#unassigned [QUEUE]`: the tickets waiting, most urgent
    first, each with the agent's own reply address for it, in one mail to the agent: the
    answer to their mail (message_id), or their daily digest (None: not sent when nothing
    waits). Whether it was sent."""
    lists: list[dict[str, Any]] = []
    for name, arg, wrong in asked:
        title = {"mine": "Assigned to you", "queue": f"Queue {arg}",
                 "unassigned": f"Unassigned{f' in {arg}' if arg else ''}"}[name]
        if wrong:
            lists.append({"title": title, "error": wrong, "tickets": []})
            continue
        mine = agent.queues if name == "unassigned" and not arg else ()
        rows = ctx.ledger.waiting(assignee=agent.name if name == "mine" else None,
                                  queues=(arg,) if arg else tuple(mine),
                                  unassigned=name == "unassigned")
        for r in rows:
            r["reply_to"] = token_address(ctx.secrets[0], queue_address(ctx, r["queue"]),
                                          r["ref"], agent.address, "reply", ctx.now.date())
            r["age"] = _age(ctx.now - r["updated_at"].replace(tzinfo=ctx.now.tzinfo))
        lists.append({"title": title, "error": None, "tickets": rows})
    if message_id is None and not any(v["tickets"] for v in lists):
        return False        # a digest with nothing in it is not sent
    answer(ctx, agent.address, "agent_view", {"agent": agent.name, "lists": lists}, message_id)
    return True


STATUS_LISTED = 50     # a status answer's tickets at most; "and N more" says the rest


def send_status(ctx: Context, requester: str, support: str, message_id: str | None) -> None:
    """A customer's tickets in one mail to them, from the support address they asked
    (the answer to their status request, message_id): those not yet resolved, then those
    changed within status.recent_days, each with the requester's own reply address. It
    greets nobody by name: the name in a status request's From is anyone's to write, and
    the desk's mail must not carry a forger's words to the real requester."""
    recent_days = ctx.settings.status.recent_days
    rows, total = ctx.ledger.requester_tickets(requester, STATUS_LISTED,
                                               since=ctx.now - timedelta(days=recent_days))
    for r in rows:
        r["reply_to"] = token_address(ctx.secrets[0], queue_address(ctx, r["queue"]),
                                      r["ref"], requester, "reply", ctx.now.date())
    answer(ctx, requester, "status", {
        "address": requester, "recent_days": recent_days,
        "open": [r for r in rows if r["status"] in UNRESOLVED],
        "recent": [r for r in rows if r["status"] not in UNRESOLVED],
        "more": total - len(rows)}, message_id, sender=support)


def _age(d: timedelta) -> str:
    hours = int(d.total_seconds() // 3600)
    return f"{hours // 24}d" if hours >= 48 else f"{hours}h"
