"""SLA clocks for people and scripts, and running the scheduled jobs by hand."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from ..scheduler.jobs import OUTBOX, OUTBOX_ABOUT, PLANNED, jobs_for, run_job
from ..sla.views import clocks_of
from .context import Obj
from .output import EX_NOINPUT, FORMAT, emit_json, emit_table, fail, minute, stdout_console


@click.group()
def sla() -> None:
    """SLA clocks: first response, next response and resolution, in business time."""


@sla.command("show")
@click.argument("ref")
@FORMAT
@click.pass_obj
def sla_show(obj: Obj, ref: str, fmt: str) -> None:
    """Each clock of a ticket: policy, due time, business time used and left, pauses."""
    app = obj.app(existing=True)
    with app.sessions() as session:
        rows = clocks_of(session, app.slas, ref, datetime.now(timezone.utc))
    if rows is None:
        fail(f"no ticket {ref}", EX_NOINPUT)
    assert rows is not None
    if fmt == "json":
        emit_json(rows)
        return
    emit_table([r | {k: minute(r[k]) for k in ("due_at", "breached_at")} for r in rows],
               ["clock", "policy", "calendar", "state", "due_at", "used_hours",
                      "left_hours", "breached_at", "escalation_level"],
               empty=f"{ref} has no SLA clocks (no policy matches it)")
    console = stdout_console(highlight=False)
    for r in rows:
        for p in r["paused"]:
            console.print(f"{r['clock']} paused {minute(p['from'])} until "
                          f"{minute(p['to']) or 'now'}")


def _jobs_help() -> str:
    """The group's help, from the job registry: every job, named as `jobs run` takes it
    (\b: click keeps the lines as they are)."""
    width = max(len(p.name) for p in PLANNED)
    return ("The scheduled jobs `maildesk serve` runs, each when its setting turns it on; "
            "and outbox, the delivery of due mail the daemon's outbox worker does.\n\n\b\n"
            + "\n".join(f"{p.name:<{width}}  {p.about}" for p in PLANNED)
            + f"\n{OUTBOX.name:<{width}}  {OUTBOX_ABOUT}")


@click.group(help=_jobs_help())
def jobs() -> None:
    """Its help is made of the job registry, so that no job is left out (_jobs_help)."""


@jobs.command("run")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True,
              help="Run even if the interval has not passed; surveys go out without "
                   "waiting for surveys.delay.")
@FORMAT
@click.pass_obj
def jobs_run(obj: Obj, names: tuple[str, ...], force: bool, fmt: str) -> None:
    """Run the jobs that are due now (all, or NAMES), as the daemon would, then deliver the
    outbox (always: what a job queued leaves at once); for desks that run no daemon, from
    cron (`*/5 * * * * maildesk jobs run`). A job another process is running is left to it;
    a mail another sender took is left to it."""
    app = obj.app()
    known = {j.name: j for j in (*jobs_for(app), OUTBOX)}
    unknown = [n for n in names if n not in known]
    if unknown:
        fail(f"no job {', '.join(unknown)} (jobs: {', '.join(known)})", EX_NOINPUT)
    rows = []
    for name in dict.fromkeys((*(names or known), OUTBOX.name)):   # what they queued leaves
        result = run_job(app, known[name], datetime.now(timezone.utc), force=force)
        rows.append({"job": name, "ran": result is not None,
                     "result": result or "not due, or running elsewhere"})
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["job", "ran", "result"])


COMMANDS = [sla, jobs]
