"""IMAP mailboxes: drain them once (`maildesk fetch`), see how they are doing."""
from __future__ import annotations

import ssl
from collections.abc import Mapping
from functools import partial
from typing import Any

import click
from imapclient.exceptions import IMAPClientError
from sqlalchemy import RowMapping, select
from sqlalchemy.exc import SQLAlchemyError

from ..errors import error_line
from ..intake.credentials import CredentialError
from ..intake.imap import T_STATE, AuthFailed, Drainer, LostLeadership, connect
from ..pipeline.driver import Summary
from ..pipeline.run import ingest
from ..store.leadership import Leadership
from .context import Obj
from .output import (
    EX_CONFIG,
    EX_NOPERM,
    EX_TEMPFAIL,
    EX_USAGE,
    FORMAT,
    TEXT_FORMAT,
    emit_json,
    emit_table,
    fail,
)

# fetch and mailboxes status alike: nothing to do until the configuration names a mailbox
NO_MAILBOXES = "no imap mailboxes configured; add an `imap:` entry to maildesk.yaml"


@click.command()
@click.argument("names", nargs=-1, metavar="[MAILBOX]...")
@TEXT_FORMAT
@click.pass_obj
def fetch(obj: Obj, names: tuple[str, ...], fmt: str) -> None:
    """Drain the configured IMAP mailboxes once (all, or those named), then exit.

    Exit 0 when every mailbox was drained, 77 when a login was refused, 75 when
    a server or the database could not be reached, or a running node (`maildesk
    serve`) leads the mailbox and drains it itself (run it again later).
    """
    boxes = obj.settings.imap
    unknown = set(names) - {b.name for b in boxes}
    if not boxes:
        fail(NO_MAILBOXES, EX_CONFIG)
    if unknown:
        fail(f"no imap mailbox named {', '.join(sorted(unknown))}", EX_USAGE)
    app = obj.app()
    leadership = Leadership(app.engine, app.settings.data_dir)
    worst = 0
    results: dict[str, Mapping[str, int | str]] = {}
    for box in boxes:
        if names and box.name not in names:
            continue
        try:
            if not leadership.take(box.name):
                led = "a running node (maildesk serve) leads this mailbox and drains it; " \
                      "not drained here"
                worst = max(worst, EX_TEMPFAIL)
                _say(fmt, f"{box.name}: {led}", err=True)
                results[box.name] = {"error": led}
                continue
            try:
                client = connect(box)
                try:
                    counts = Drainer(app, box, partial(ingest, app)).drain(
                        client, partial(leadership.holds, box.name))
                finally:
                    client.logout()
            finally:
                leadership.release(box.name)
            results[box.name] = {k: counts[k] for k in Summary().as_dict()}
            _say(fmt, f"{box.name}: {_line(counts)}")
        except (AuthFailed, CredentialError) as e:
            worst = max(worst, EX_NOPERM)
            _say(fmt, f"{box.name}: {e}", err=True)
            results[box.name] = {"error": str(e)}
        except (OSError, IMAPClientError, ssl.SSLError, SQLAlchemyError, LostLeadership) as e:
            worst = max(worst, EX_TEMPFAIL)
            what = error_line(e)
            _say(fmt, f"{box.name}: {box.host}:{box.effective_port}: {what}", err=True)
            results[box.name] = {"error": what}
    leadership.close()
    app.close()
    if fmt == "json":
        emit_json(results)
    raise SystemExit(worst)


def _line(d: Mapping[str, int]) -> str:
    return (f"{d['new_tickets']} new tickets, {d['follow_ups']} follow-ups, "
            f"{d['duplicates']} duplicates skipped, {d['quarantined']} quarantined")


def _say(fmt: str, text: str, err: bool = False) -> None:
    if fmt == "text":
        click.echo(text, err=err)


@click.group()
def mailboxes() -> None:
    """IMAP mailboxes."""


@mailboxes.command("status")
@FORMAT
@click.pass_obj
def mailboxes_status(obj: Obj, fmt: str) -> None:
    """Each mailbox: connected or its last error, UIDVALIDITY, last UID, mail taken."""
    boxes = obj.settings.imap
    if not boxes:
        fail(NO_MAILBOXES, EX_CONFIG)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        state = {r["mailbox"]: r for r in conn.execute(select(T_STATE)).mappings()}
    rows = []
    for b in boxes:
        r: RowMapping | dict[str, Any] = state.get(b.name, {})   # {}: never polled yet
        rows.append({
            "name": b.name, "server": f"{b.host}:{b.effective_port}", "folder": b.folder,
            "connected": bool(r.get("connected")), "uidvalidity": r.get("uidvalidity"),
            "last_uid": r.get("last_uid", 0), "taken": r.get("taken", 0),
            "last_success_at": r["last_success_at"].isoformat() if r.get("last_success_at")
            else None,
            "last_error": r.get("last_error"),
            "last_error_at": r["last_error_at"].isoformat() if r.get("last_error_at") else None})
    if fmt == "json":
        emit_json(rows)
    else:
        emit_table(rows, ["name", "server", "folder", "connected", "uidvalidity", "last_uid",
                          "taken", "last_success_at", "last_error"])


COMMANDS = [fetch, mailboxes]
