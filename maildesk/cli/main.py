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
from typing import TYPE_CHECKING, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from ..errors import MaildeskError
from .context import Obj, startup_exit
from .output import (
    EX_CANTCREAT,
    EX_FAIL,
    EX_OK,
    EX_PIPE,
    EX_SOFTWARE,
    EX_USAGE,
    OutputError,
    fail,
    guarded_stdout,
)

if TYPE_CHECKING:
    from ..config.schema import Settings

PRIVATE_UMASK = 0o077


# command -> (the module maildesk/cli/MODULE.py whose COMMANDS hold it, the command's short
# help). The module is imported when the command runs: a run of `maildesk tickets list` does
# not load the pipeline, the rules and the SMTP listener; and `maildesk --help` lists the
# commands by the short help here, importing none of them (a module's imports take a
# second; the help, a few milliseconds). Tests check that this names every module's
# commands, with the short help `--help` would show once the module is loaded.
LAZY: dict[str, tuple[str, str]] = {
    "backup": ("backup", "Copy the desk into DEST, a new (or empty) folder, while it runs: "
                         "the database as one snapshot (SQLite's backup API; pg_dump on "
                         "PostgreSQL), then the blobs that snapshot refers to, each checked "
                         "against its sha256 in the copy, then MANIFEST.json (a folder "
                         "without it is an incomplete backup)."),
    "blobs": ("blobs", "Raw mail and attachments as stored (named by their sha256)."),
    "config": ("admin", "The configuration."),
    "db": ("admin", "The database schema."),
    "fetch": ("mailboxes",
              "Drain the configured IMAP mailboxes once (all, or those named), then exit."),
    "ingest": ("ingest", "Take mail from .eml files, mbox files, maildir folders, or stdin "
                         "(- or no PATH)."),
    "jobs": ("sla", "The scheduled jobs `maildesk serve` runs, each when its setting turns "
                    "it on; and outbox, the delivery of due mail the daemon's outbox worker "
                    "does."),
    "kb": ("kb", "Knowledge-base articles: Markdown files with front matter in kb.folder."),
    "keys": ("nodes", "The keys reply-address tokens are signed with, kept in the database "
                      "for every node."),
    "mailboxes": ("mailboxes", "IMAP mailboxes."),
    "nodes": ("nodes", "The daemons on this desk's database: state, heartbeat, the mailboxes "
                       "each leads."),
    "outbox": ("outbox", "Mail we send: queued (deferred when a try failed and it waits for "
                         "the next), sending, sent, failed."),
    "problems": ("problems", "Problem tickets: the root causes behind recurring incidents."),
    "quarantine": ("lists", "Mail kept without a ticket: unreadable mail, and (with --state) "
                            "spam, loops, bounces, auto-replies, list mail, and the settled: "
                            "duplicates, ratings, status requests and the rest."),
    "report": ("report", "Volume, backlog, first response and resolution times, SLA "
                         "compliance, CSAT, first-contact resolution and reopenings; "
                         "definitions in the README."),
    "requester": ("requester", "A requester's personal data: export it, erase it, and the "
                               "audit of both."),
    "restore": ("backup", "Make the desk the configuration names (data_dir, database.url) "
                          "from the backup in SRC: only where no desk is yet (no database "
                          "file or maildesk tables, no blobs; move one aside first)."),
    "retention": ("retention", "How long each queue keeps tickets and mail (`retention:` of "
                               "desk.queues)."),
    "rules": ("rules", "Check and try the rules."),
    "sla": ("sla", "SLA clocks: first response, next response and resolution, in business "
                   "time."),
    "status": ("status", "The desk's health: the database reachable, the schema current, the "
                         "daemon's workers running (a node's heartbeat), the inbound queue "
                         "moving (monitor.queue_stuck_after), each IMAP mailbox connected; "
                         "and key figures (queue, quarantine, outbox, SLA breaches)."),
    "tickets": ("act", "List and show tickets."),
    "triage": ("triage", "Triage on arrival: a model of this desk's settled tickets predicts "
                         "a new ticket's fields; rules decide whether to apply them "
                         "(predicted.category, predicted.confidence)."),
}


class LazyGroup(click.Group):
    """The top-level group: its own commands, and LAZY's, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            module = importlib.import_module(f"{__package__}.{LAZY[cmd_name][0]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        """The output's trouble, the same for every command. A reader that went away
        (`maildesk tickets list | head`) stops the command quietly with 141, as SIGPIPE
        stops a Unix tool; click would exit 1, as for a failure. Output that cannot be
        written (`> /dev/full`) is one line and 73. Either way what is still buffered goes
        to /dev/null, or Python's exit would complain of it; and stdout is flushed here,
        so that the last write fails here too, not in Python's flush at exit."""
        with guarded_stdout():
            try:
                try:
                    return super().invoke(ctx)
                finally:        # a command's sys.exit(69) too
                    sys.stdout.flush()
            except BrokenPipeError:
                _stdout_to_devnull()
                sys.exit(EX_PIPE)
            except OutputError as e:
                _stdout_to_devnull()
                fail(f"cannot write the output: {e.strerror}", EX_CANTCREAT)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands in --help: a command not loaded yet stands in by LAZY's
        short help, which click shortens to the terminal as it would the command's own."""
        shown = click.Group(commands={
            name: self.commands.get(name) or click.Command(name, help=LAZY[name][1])
            for name in self.list_commands(ctx)})
        shown.format_commands(ctx, formatter)


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
    ctx.obj = Obj(config, daemon=ctx.invoked_subcommand in ("serve", "listen"))


@cli.command()
@click.pass_obj
def serve(obj: Obj) -> None:
    """Run the daemon: SMTP listener, ingest worker, outbox delivery.

    Under systemd (Type=notify) it says READY=1 once it takes mail, and exits 78 on a
    bad configuration, 75 when the database or the port may come back
    (systemd/maildesk.service)."""
    import asyncio

    from ..daemon import Daemon
    from ..desk import StartupError
    from ..systemd import Notifier
    notifier = Notifier()
    notifier.status("opening the database and checking its schema")
    app = obj.app()
    try:
        asyncio.run(Daemon(app, obj.path, notifier).run())
    except StartupError as e:
        notifier.status(f"cannot start: {e}")
        fail(str(e), startup_exit(e))


@cli.command(hidden=True)
@click.option("--report-fd", type=int, required=True, metavar="FD",
              help="The pipe to the daemon that started this listener.")
@click.option("--turn-every", type=float, default=1.0, metavar="SECONDS",
              help="Seconds between the listener's signs of life on that pipe.")
@click.pass_obj
def listen(obj: Obj, report_fd: int, turn_every: float) -> None:
    """The SMTP listener of `maildesk serve`, which starts it in a process of its own
    (maildesk/intake/listening.py); not a command for people."""
    import asyncio

    from ..config.load import ConfigError, load_settings
    from ..intake.listening import listen as run

    def reread() -> Settings | None:
        try:
            return load_settings(obj.path)
        except ConfigError:     # the daemon, reloading too, says what is wrong
            return None
    try:
        os.fstat(report_fd)
    except OSError:
        fail(f"no pipe at file descriptor {report_fd}: `maildesk serve` starts the listener "
             "itself; run that", EX_USAGE)
    sys.exit(asyncio.run(run(obj.settings, report_fd, reread, turn_every)))


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(directory: Path, force: bool) -> None:
    """Write a commented starter configuration into DIRECTORY."""
    from .starter import write_starter
    if directory.exists() and not directory.is_dir():
        fail(f"cannot write {directory}: it is a file, not a folder", EX_CANTCREAT)
    try:
        written = write_starter(directory, force)
    except FileExistsError as e:
        fail(f"{e.filename} exists; use --force to overwrite", EX_CANTCREAT)
    except OSError as e:    # /proc/x, /dev/null/x, a folder of another user's
        fail(f"cannot write {e.filename or directory}: {e.strerror or e}", EX_CANTCREAT)
    for p in written:
        click.echo(f"wrote {p}")
    click.echo(f"next: maildesk --config {directory / 'maildesk.yaml'} serve")


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI and exit with its code. A maildesk error no command caught is still one
    line, not a traceback (the commands name the usual ones with their own exit codes), and
    a usage error is one line too (click's are three: usage, hint, error), naming the
    command's --help, and exits 64 as sysexits has it (click's own is 2)."""
    try:
        code = cli.main(args=argv, prog_name="maildesk", standalone_mode=False)
    except NoArgsIsHelpError as e:      # `maildesk tickets`: its help, as click shows it
        e.show()
        sys.exit(EX_USAGE)
    except click.UsageError as e:
        said = " ".join(e.format_message().splitlines())
        if e.ctx is not None:
            said = f"{said.rstrip('.')}; see {e.ctx.command_path} --help"
        fail(said, EX_USAGE)
    except click.ClickException as e:
        fail(" ".join(e.format_message().splitlines()), e.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EX_FAIL)
    except MaildeskError as e:
        fail(f"{type(e).__name__}: {e}", EX_FAIL)
    except Exception as e:   # a bug: 70, its traceback in one log line, not Python's 1
        _bug(e)
    sys.exit(code if isinstance(code, int) else EX_OK)


def _bug(e: Exception) -> NoReturn:
    """A failure no command foresaw: logged as every record is (one line, the traceback
    folded into it, in log.format once the settings were read), then exit 70."""
    import logging

    from ..errors import error_line
    if not logging.getLogger().handlers:     # the settings were never read
        from ..logs import setup
        setup("warning")
    logging.getLogger("maildesk").error(
        "maildesk failed (a bug: please report this line): %s", error_line(e), exc_info=e)
    sys.exit(EX_SOFTWARE)
