"""`maildesk status`: the desk's health checks and key figures, for people and scripts.

The same checks as the daemon's GET /healthz (monitor/health.py), read from the
database, so it works whether or not the daemon runs; the daemon's worker threads are
known from its heartbeat (`maildesk nodes status`): without a running node they fail
as unknown. Exit 0 when every check passes, 69 (EX_UNAVAILABLE) when one fails.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import click

from .context import Obj
from .output import EX_UNAVAILABLE, FORMAT, emit_json, emit_table, second


def _shown(figs: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures as rows of a table for people."""
    rows = [{"figure": k.replace("_", " "), "value": v} for k, v in figs.items()
            if k not in ("sla_breached", "imap")]
    rows += [{"figure": f"sla breached {kind}", "value": n}
             for kind, n in sorted(figs["sla_breached"].items())] \
        or [{"figure": "sla breached", "value": 0}]      # said, not left out, when none
    for box, state in sorted(figs["imap"].items()):
        at = state["last_success_at"]
        rows.append({"figure": f"imap {box} last success",
                     "value": second(at.isoformat()) if at else "never"})
    return rows


@click.command("status")
@FORMAT
@click.pass_obj
def status(obj: Obj, fmt: str) -> None:
    """The desk's health: the database reachable, the schema current, the daemon's workers
    running (a node's heartbeat), the inbound queue moving (monitor.queue_stuck_after),
    each IMAP mailbox connected; and key figures (queue, quarantine, outbox, SLA
    breaches). Exit 0 when healthy, 69 when a check fails."""
    from ..monitor.health import checks, daemon_workers, figures, within
    app = obj.app(existing=True)
    found = checks(app.settings, app.engine, lambda: daemon_workers(app.engine))

    def read() -> dict[str, Any]:
        with app.engine.connect() as conn:
            return figures(conn, datetime.now(timezone.utc))
    got = within(app.settings.monitor.timeout, {"figures": read})["figures"]
    figs = {} if isinstance(got, BaseException) else got
    healthy = all(c.ok for c in found)
    if fmt == "json":
        emit_json({"status": "ok" if healthy else "failing",
                   "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in found},
                   "figures": figs})
    else:
        emit_table([{"check": c.name, "state": "ok" if c.ok else "FAILING",
                     "detail": c.detail} for c in found], ["check", "state", "detail"])
        if figs:
            click.echo()
            emit_table(_shown(figs), ["figure", "value"])
    if not healthy:
        raise SystemExit(EX_UNAVAILABLE)


COMMANDS = [status]
