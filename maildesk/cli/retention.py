"""`maildesk retention`: each queue's retention policy, run by hand or only shown
(README "Retention and privacy"); the daemon runs it hourly as the job `retention`."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

import click

from .context import Obj
from .output import FORMAT, emit_json, emit_table

SHOWN = 20      # refs a dry run names per queue and step in its table output


@click.group()
def retention() -> None:
    """How long each queue keeps tickets and mail (`retention:` of desk.queues)."""


@retention.command("run")
@click.option("--dry-run", is_flag=True,
              help="Show what it would do (the same changes, rolled back); change nothing.")
@FORMAT
@click.pass_obj
def retention_run(obj: Obj, dry_run: bool, fmt: str) -> None:
    """Apply each queue's policy now: close its resolved tickets after close_after, drop
    the raw mail of its closed ones after purge_raw_after, delete its closed ones after
    purge_after. Queues without a policy are left alone (the default: all of them)."""
    from ..scheduler.jobs import retention as run
    app = obj.app(existing=True)
    done = run(app, datetime.now(timezone.utc), dry_run)
    rows = [asdict(r) for r in done]
    if fmt == "json":
        emit_json({"dry_run": dry_run, "queues": rows})
        return
    emit_table(rows, ["queue", "closed", "raw_purged", "purged", "blobs"],
               empty="no queue has a retention policy (desk.queues[].retention): nothing "
                     "is closed or deleted")
    if dry_run:
        for r in done:
            for refs, what in ((r.purged_refs, "delete"),
                               (r.raw_purged_refs, "drop the raw mail of")):
                if refs:
                    more = f" and {len(refs) - SHOWN:,} more (--format json lists them)" \
                        if len(refs) > SHOWN else ""
                    click.echo(f"{r.queue}: would {what} {', '.join(refs[:SHOWN])}{more}")
        if rows:
            click.echo("nothing changed: that is what `maildesk retention run` would do",
                       err=True)


COMMANDS = [retention]
