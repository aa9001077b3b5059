"""Running the desk: the database schema and the configuration."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import click
from sqlalchemy import Engine

from ..app import writable_dir
from ..config.schema import Settings
from ..desk import DataDirError
from ..errors import error_line
from ..store import migrate
from ..store.db import make_engine, shown_url, sqlite_file
from .context import Obj, startup_exit
from .output import EX_CANTCREAT, EX_CONFIG, EX_TEMPFAIL, FORMAT, emit_json, emit_table, fail


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Apply schema migrations up to this version of maildesk."""
    settings = obj.settings
    try:
        writable_dir(settings.data_dir)
    except DataDirError as e:
        fail(str(e), EX_CANTCREAT)
    from sqlalchemy.exc import SQLAlchemyError
    engine = make_engine(settings.database_url)
    try:
        before, after = migrate.upgrade(engine)
    except SQLAlchemyError as e:   # the database is down, refused us, or holds what a step
        # cannot change; anything else is a bug, left to the CLI's exit 70
        fail(f"cannot upgrade {shown_url(engine.url)}: {error_line(e)}", EX_TEMPFAIL)
    finally:
        engine.dispose()
    click.echo(f"schema at {after}" + ("" if before == after else f" (was {before or 'empty'})"))


@click.group()
def config() -> None:
    """The configuration."""


@config.command("check")
@click.pass_obj
def config_check(obj: Obj) -> None:
    """Validate the configuration, templates, rules and articles, and try the data directory
    and the database as `serve` would; exit 0 if good, else what `serve` would exit with: 78 fix
    the configuration, 73 the data directory cannot be written, 75 the database is down.

    The data directory gets a probe file, written and removed; the database is only read.
    """
    from ..app import load_kb, load_rules
    from ..desk import StartupError
    from ..notify.templates import Templates
    settings = obj.settings
    templates = Templates(settings.templates_dir)
    problems = templates.check()
    if problems:
        fail("; ".join(problems), EX_CONFIG)
    try:
        rules = load_rules(settings, templates)
        articles = len(load_kb(settings).articles)
    except StartupError as e:
        fail(str(e), EX_CONFIG)
    try:
        writable_dir(settings.data_dir, make=False)
    except DataDirError as e:
        fail(str(e), EX_CANTCREAT)
    click.echo(f"{obj.path or 'embedded default'}: ok ({len(rules)} rules; {articles} "
               f"articles; data_dir "
               f"{settings.data_dir} writable; database {_schema(settings)})")


def _schema(settings: Settings) -> str:
    """The database's schema as `serve` will find it, in words; fail() when serve would."""
    from ..desk import StartupError, read_schema, refuse_schema
    db_file = sqlite_file(settings.database_url)
    if db_file is not None and not db_file.exists():
        return f"{db_file} not made yet: `maildesk serve` makes it"
    engine = make_engine(settings.database_url)
    try:
        at = read_schema(engine, upgrade=False)
        if not settings.database.auto_upgrade:
            refuse_schema(engine, at)
        if at == migrate.HEAD:
            _beside_the_nodes(settings, engine)
    except StartupError as e:
        fail(str(e), startup_exit(e))
    finally:
        engine.dispose()
    if at == migrate.HEAD:
        return f"schema at {at}, current"
    return f"schema at {at or 'none'}: `maildesk serve` upgrades it to {migrate.HEAD}"


def _beside_the_nodes(settings: Settings, engine: Engine) -> None:
    """fail() as `serve` would if the running nodes keep this one from starting (another
    node's name, or mail on a disk of its own beside theirs)."""
    from ..store import nodes
    me = nodes.Node.of(settings)
    with engine.connect() as conn:
        refused = nodes.refusal(conn, me, datetime.now(timezone.utc), checking=True)
    if refused is not None:
        fail(str(refused), EX_CONFIG)


@config.command("show")
@FORMAT
@click.pass_obj
def config_show(obj: Obj, fmt: str) -> None:
    """The settings in effect, defaults included (secrets hidden)."""
    data = _hidden(obj.settings.model_dump(mode="json"))
    if fmt == "json":
        emit_json(data)
        return
    rows = [{"setting": k, "value": v} for k, v in _flatten(data)]
    emit_table(rows, ["setting", "value"])


def _hidden(d: Any) -> Any:
    """The settings with every secret hidden: any password (the relay's, each IMAP
    mailbox's) and the password in a database URL."""
    if isinstance(d, list):
        return [_hidden(v) for v in d]
    if not isinstance(d, dict):
        return d
    out = {k: "********" if k == "password" and v else _hidden(v) for k, v in d.items()}
    if out.get("url") and "://" in str(out["url"]):
        out["url"] = shown_url(str(out["url"]))
    return out


def _flatten(d: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), d)]


COMMANDS = [db, config]
