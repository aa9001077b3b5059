"""The `maildesk` command: the operator's tool.

Every subcommand has --help; listings take --format json; exit codes follow
sysexits (75 = try again later, 78 = fix the configuration) so that an MTA
and shell scripts can act on them.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from ..app import StartupError
from ..errors import MaildeskError
from .context import Obj, setup_logging, startup_exit
from .output import EX_CANTCREAT, EX_FAIL, EX_OK, EX_USAGE, fail

PRIVATE_UMASK = 0o077


# command -> the module (maildesk/cli/NAME.py) whose COMMANDS hold it. Imported when the
# command runs: a run of `maildesk tickets list` does not load the pipeline, the rules and
# the SMTP listener (a test checks that this names every module's commands)
LAZY = {"ingest": "ingest", "fetch": "mailboxes", "mailboxes": "mailboxes", "tickets": "act",
        "quarantine": "lists", "outbox": "outbox", "rules": "rules", "sla": "sla",
        "jobs": "sla", "report": "report", "blobs": "blobs", "db": "admin", "config": "admin",
        "nodes": "nodes", "keys": "nodes", "kb": "kb",
        "problems": "problems", "triage": "triage", "status": "status",
        "requester": "requester", "retention": "retention"}


class LazyGroup(click.Group):
    """The top-level group: its own commands, and LAZY's, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            module = importlib.import_module(f"{__package__}.{LAZY[cmd_name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", metavar="PATH", envvar="MAILDESK_CONFIG",
              help="maildesk.yaml to use (or $MAILDESK_CONFIG); none: the embedded default "
                   "(SQLite and a maildir outbox under ./maildesk-data).")
@click.version_option(package_name="maildesk")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """maildesk: an email-centric IT service desk."""
    # Everything maildesk writes holds mail or secrets (the database and its WAL, blobs,
    # the outbox with agents' reply tokens, reports): for the desk's user alone, whatever
    # the umask of the shell or unit that started it. `init` is the exception: the
    # configuration it writes is read by the service's user, often not the installer.
    if ctx.invoked_subcommand != "init":
        os.umask(PRIVATE_UMASK)
    ctx.obj = Obj(config)


@cli.command()
@click.pass_obj
def serve(obj: Obj) -> None:
    """Run the daemon: SMTP listener, ingest worker, outbox delivery.

    Under systemd (Type=notify) it says READY=1 once it takes mail, and exits 78 on a
    bad configuration, 75 when the database or the port may come back
    (systemd/maildesk.service)."""
    import asyncio

    from ..daemon import Daemon
    from ..systemd import Notifier
    setup_logging(obj.settings)
    notifier = Notifier()
    notifier.status("opening the database and checking its schema")
    app = obj.app()
    try:
        asyncio.run(Daemon(app, obj.path, notifier).run())
    except StartupError as e:
        notifier.status(f"cannot start: {e}")
        fail(str(e), startup_exit(e))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(directory: Path, force: bool) -> None:
    """Write a commented starter configuration into DIRECTORY."""
    from .starter import write_starter
    try:
        written = write_starter(directory, force)
    except FileExistsError as e:
        fail(f"{e.filename} exists; use --force to overwrite", EX_CANTCREAT)
    for p in written:
        click.echo(f"wrote {p}")
    click.echo(f"next: maildesk --config {directory / 'maildesk.yaml'} serve")


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and exit with its code. A maildesk error no command caught is still one
    line, not a traceback (the commands name the usual ones with their own exit codes), and
    a usage error exits 64 as sysexits has it (click's own is 2)."""
    try:
        code = cli.main(args=argv, prog_name="maildesk", standalone_mode=False)
    except click.ClickException as e:
        e.show()
        sys.exit(EX_USAGE if isinstance(e, click.UsageError) else e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EX_FAIL)
    except MaildeskError as e:
        fail(f"{type(e).__name__}: {e}", EX_FAIL)
    sys.exit(code if isinstance(code, int) else EX_OK)
