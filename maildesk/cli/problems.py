"""`maildesk problems`: the problem tickets, what is known of each, and how many incidents
wait on it. Acting on them is `maildesk tickets problem|root-cause|workaround|known-error`
(cli/act.py), as an agent's mail commands do."""
from __future__ import annotations

import click

from ..tickets.views import list_problems
from .context import Obj
from .output import FORMAT, emit_json, emit_table


@click.group()
def problems() -> None:
    """Problem tickets: the root causes behind recurring incidents."""


@problems.command("list")
@FORMAT
@click.pass_obj
def problems_list(obj: Obj, fmt: str) -> None:
    """Problems, newest first: status, known error, workaround, and their incidents (all
    linked, and those not yet resolved)."""
    app = obj.app(existing=True)
    with app.sessions() as session:
        rows = list_problems(session)
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table([r | {"known_error": "yes" if r["known_error"] else "no"} for r in rows],
                   ["ref", "status", "known_error", "incidents", "open_incidents", "queue",
                    "assignee", "subject", "workaround"], empty="no problems")


COMMANDS = [problems]
