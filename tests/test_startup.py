"""Start-up: `maildesk --help` and `--version` load none of the desk (no SQLAlchemy, no
pydantic, no mail parser, no DKIM), and list the commands as they would with every command
loaded. How fast it all starts is measured by bench/startup.py, not here."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from conftest import mail

from maildesk.cli.main import LAZY, LazyGroup, cli

HEAVY = ("sqlalchemy", "pydantic", "mailparser", "dkim", "dns", "jinja2", "rich")

# run in a fresh interpreter: what it imported, as JSON, whatever the command's exit
_PROBE = """import json, sys
from maildesk.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported_by(*args: str, stdin: bytes | None = None) -> set[str]:
    """The top-level packages a fresh `maildesk ARGS` imported."""
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                       check=True, input=stdin)
    return {name.split(".")[0] for name in json.loads(r.stderr.splitlines()[-1])}


def test_importing_the_cli_loads_none_of_the_desk() -> None:
    r = subprocess.run([sys.executable, "-c", "import json, sys, maildesk.cli.main; "
                        "print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(r.stdout)}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["init", "--help"],
                                  ["serve", "--help"], ["ingest", "--help"],
                                  ["tickets", "--help"], ["quarantine", "--help"],
                                  ["status", "--help"], ["nodes", "--help"],
                                  ["keys", "--help"]])
def test_help_and_version_load_none_of_the_desk(args: list[str]) -> None:
    loaded = imported_by(*args)
    assert not loaded & set(HEAVY), f"maildesk {' '.join(args)} imported {loaded & set(HEAVY)}"
    assert "maildesk" in loaded


def test_a_command_still_loads_what_it_needs() -> None:
    """The probe sees imports: a command that reads the settings shows pydantic in it."""
    assert "pydantic" in imported_by("config", "show")


def _listing(group: click.Group, width: int) -> str:
    ctx = click.Context(group, info_name="maildesk", terminal_width=width,
                        max_content_width=width)
    formatter = ctx.make_formatter()
    group.format_commands(ctx, formatter)
    return formatter.getvalue()


@pytest.mark.parametrize("width", [40, 80, 120, 250])
def test_the_help_lists_each_lazy_command_as_the_command_itself_would(width: int) -> None:
    """LAZY's short help stands in for the command's own, shortened to the terminal the same
    way (test_exit_codes checks each entry against its command)."""
    own = {name: command for name, command in cli.commands.items() if name not in LAZY}
    lazy, loaded = LazyGroup(commands=dict(own)), LazyGroup(commands=dict(own))
    ctx = click.Context(loaded)
    for name in LAZY:
        loaded.get_command(ctx, name)
    assert set(loaded.commands) == set(own) | set(LAZY)
    assert set(lazy.commands) == set(own), "nothing loaded for the lazy listing"
    assert _listing(lazy, width) == _listing(loaded, width)


def test_a_pipe_delivery_loads_no_model_no_resolver_no_bar(
        desk_config: Callable[..., Path]) -> None:
    """The MTA's pipe (one mail on stdin, SQLite) makes its ticket without machine learning,
    the DKIM resolver (the mail is not signed), the PostgreSQL driver, the progress bar, or
    the knowledge base's Markdown and stemmers (the desk has no articles)."""
    cfg = desk_config()
    loaded = imported_by("--config", str(cfg), "ingest", "--format", "json",
                         stdin=mail())
    assert {"sqlalchemy", "mailparser", "jinja2"} <= loaded, "the probe saw the ingest"
    unwanted = {"sklearn", "torch", "sentence_transformers", "numpy", "scipy", "dkim", "dns",
                "psycopg", "psycopg2", "rich", "markdown_it", "snowballstemmer"}
    assert not loaded & unwanted, loaded & unwanted
    out = subprocess.run([sys.executable, "-m", "maildesk", "--config", str(cfg), "tickets",
                          "list", "--format", "json"], capture_output=True, check=True)
    assert len(json.loads(out.stdout)) == 1, "and the mail is on its ticket"


def test_a_listing_loads_no_orm_no_templates_no_rules(desk_config: Callable[..., Path]
                                                      ) -> None:
    """`tickets list` opens the database and checks its schema, nothing of the App: no ORM
    and no mapped classes, no templates, rules, SLA calendars or knowledge base."""
    cfg = desk_config()
    assert subprocess.run([sys.executable, "-m", "maildesk", "--config", str(cfg), "ingest"],
                          input=mail(), check=True).returncode == 0
    r = subprocess.run([sys.executable, "-c", _PROBE, "--config", str(cfg), "tickets", "list",
                        "--format", "json", "--search", "printer"], capture_output=True,
                       check=True)
    modules = set(json.loads(r.stderr.splitlines()[-1]))
    assert "sqlalchemy" in modules and "maildesk.store.lean" in modules, "the probe saw it"
    unwanted = {"sqlalchemy.orm", "maildesk.store.models", "maildesk.app", "jinja2",
                "maildesk.rules.engine", "maildesk.sla.policy", "maildesk.kb.library",
                "maildesk.mail.headers", "rich", "alembic"}
    assert not modules & unwanted, modules & unwanted


def test_the_listings_lean_tables_are_the_models_columns() -> None:
    """store/lean.py names the columns tickets list reads without the ORM: each must be a
    column of models.py, of the same type (a renamed or retyped column fails here)."""
    from maildesk.store import lean, models
    for lean_table, model in ((lean.TICKETS, models.Ticket), (lean.MESSAGES, models.Message)):
        columns = model.__table__.c
        assert lean_table.name == model.__tablename__
        for c in lean_table.c:
            assert c.name in columns, f"{lean_table.name}.{c.name} is no column of the model"
            assert type(c.type) is type(columns[c.name].type), f"{lean_table.name}.{c.name}"
