"""`maildesk report`: the desk's figures for a period, for people, scripts and managers."""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from ..reports.metrics import DIMENSIONS, build, period
from ..reports.render import TABLE, as_csv, as_html, as_json, rows
from .context import Obj
from .output import EX_CANTCREAT, EX_USAGE, emit_table, fail, refuse_existing


@click.command("report")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), metavar="DATE",
              help="First day (UTC), e.g. 2026-11-01; default 29 days before --to.")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), metavar="DATE",
              help="Last day, included; default today.")
@click.option("--by", type=click.Choice(DIMENSIONS), help="One row per queue, category, ...")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]),
              default="table", show_default=True,
              help="table for people, csv and json for scripts, html for managers.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write to this file instead of stdout.")
@click.option("--force", is_flag=True, help="Replace the --out file if it is there.")
@click.pass_obj
def report(obj: Obj, start: datetime | None, end: datetime | None, by: str | None, fmt: str,
           out: Path | None, force: bool) -> None:
    """Volume, backlog, first response and resolution times, SLA compliance, CSAT,
    first-contact resolution and reopenings; definitions in the README."""
    today = datetime.now(timezone.utc).date()
    if any(d is not None and d.year >= 9999 for d in (start, end)):
        fail("--from and --to take days before 9999-01-01", EX_USAGE)
    first, last = period(start.date() if start else None, end.date() if end else None, today)
    if first >= last:
        fail("--from is after --to", EX_USAGE)
    if out is not None:
        refuse_existing(out, force)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        data = build(conn, first, last, by)
    if fmt == "table" and out is None:
        emit_table([{k: v for k, v in r.items() if k in ("group", *TABLE)} for r in rows(data)],
                   ["group", *TABLE])
        click.echo(f"{len(data.breaches)} SLA breaches; --format json or html for everything",
                   err=True)
        return
    text = {"json": lambda: as_json(data), "csv": lambda: as_csv(data),
            "html": lambda: as_html(data, app.templates, app.settings.desk.name),
            "table": lambda: as_csv(data)}[fmt]()
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror}", EX_CANTCREAT)
    click.echo(f"wrote {out}", err=True)


COMMANDS = [report]
