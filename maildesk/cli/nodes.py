"""The desk's nodes (each `maildesk serve` on its database) and the keys they share.

The tables' modules (SQLAlchemy) are imported by the commands: `nodes --help` and
`keys --help` need none of them."""
from __future__ import annotations

from datetime import datetime, timezone

import click

from .context import Obj
from .output import EX_CONFIG, EX_NOINPUT, EX_USAGE, FORMAT, emit_json, emit_table, fail, second


@click.group()
def nodes() -> None:
    """The daemons on this desk's database: state, heartbeat, the mailboxes each leads."""


@nodes.command("status")
@FORMAT
@click.pass_obj
def nodes_status(obj: Obj, fmt: str) -> None:
    """Every node the desk has known: running (a heartbeat in the last 30 s), stopped, or
    gone (silent without having stopped: killed, or its host down); its heartbeat's age,
    the IMAP mailboxes it leads, and where it keeps raw mail."""
    from ..store import nodes as desk_nodes
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        rows = desk_nodes.status(conn, datetime.now(timezone.utc))
    if fmt == "json":
        emit_json(rows)
        return
    emit_table([r | {"started_at": second(r["started_at"].isoformat())} for r in rows],
               ["name", "state", "host", "pid", "heartbeat_s", "leads", "storage",
                "started_at"], empty="no node has run on this desk (`maildesk serve` starts one)")


@nodes.command("forget")
@click.argument("name")
@click.pass_obj
def nodes_forget(obj: Obj, name: str) -> None:
    """Remove a node that no longer runs from the list (a host taken out of the desk). A
    running node is refused (exit 64); an unknown name is 66."""
    from ..store import nodes as desk_nodes
    app = obj.app(existing=True)
    with app.engine.begin() as conn:
        problem = desk_nodes.forget(conn, name, datetime.now(timezone.utc))
    if problem is not None:
        fail(problem, EX_NOINPUT if problem.startswith("no node") else EX_USAGE)
    click.echo(f"forgot node {name}")


@click.group()
def keys() -> None:
    """The keys reply-address tokens are signed with, kept in the database for every node."""


@keys.command("list")
@FORMAT
@click.pass_obj
def keys_list(obj: Obj, fmt: str) -> None:
    """Each key generation: when it was made and what it does now (signs and verifies,
    verifies only, or retired); a fingerprint, never the key."""
    from ..store import keys as desk_keys
    _from_database(obj)
    app = obj.app(existing=True)
    with app.engine.connect() as conn:
        rows = desk_keys.listing(conn)
    if fmt == "json":
        emit_json(rows)
        return
    emit_table([r | {"created_at": second(r["created_at"].isoformat())} for r in rows],
               ["generation", "created_at", "use", "fingerprint"])


@keys.command("rotate")
@FORMAT
@click.pass_obj
def keys_rotate(obj: Obj, fmt: str) -> None:
    """Make a new key. Every node signs with it within a heartbeat (5 s); tokens in mail
    sent before stay good until the next rotation (the key before the newest still
    verifies). Rotate when a key may have leaked, or on a schedule longer than the time
    people take to answer mail."""
    from ..store import keys as desk_keys
    _from_database(obj)
    app = obj.app(existing=True)
    with app.engine.begin() as conn:
        generation = desk_keys.rotate(conn, datetime.now(timezone.utc))
    if fmt == "json":
        emit_json({"generation": generation})
    else:
        click.echo(f"key generation {generation} signs from now on; generation "
                   f"{generation - 1} still verifies")


def _from_database(obj: Obj) -> None:
    """Keys in files are the operator's to rotate (the config says how)."""
    if obj.settings.secret_file is not None:
        fail(f"this desk's keys are the files secret_file ({obj.settings.secret_file}) and "
             "previous_secret_file name: rotate them there (see the starter config), or "
             "remove secret_file to keep keys in the database", EX_CONFIG)


COMMANDS = [nodes, keys]
