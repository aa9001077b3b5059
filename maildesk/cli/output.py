"""Output for people (rich tables) and for scripts (--format json), and exit codes."""
from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:       # rich is imported where a table is printed: `--help` needs none
    from rich.console import Console
    from rich.text import Text

    from ..mail.parse import ParsedMail

# Exit codes: sysexits.h, what an MTA or a script can act on. This is the one place in the
# code, and the README's "Exit codes" table the one place in the docs (a test compares them).
EX_OK = 0
EX_FAIL = 1         # a check found problems: `blobs verify`, `ingest --repair` not mended
EX_USAGE = 64       # the command line is wrong (click's usage errors too)
EX_DATAERR = 65     # the input is damaged: an unparseable .eml, a damaged stored mail
EX_NOINPUT = 66     # what was named is not there: a ticket, held mail, a file, a job, the desk
EX_NOUSER = 67      # `--as NAME` names no configured agent
EX_UNAVAILABLE = 69  # `outbox send`: a mail not delivered, for good; `status`: a check fails
EX_SOFTWARE = 70    # maildesk failed: a bug, with its traceback in the log
EX_CANTCREAT = 73   # cannot write: --out, `init`, data_dir (but ingest), stdout (a full disk)
EX_TEMPFAIL = 75    # try again later: the database is down, the port taken; ingest: data_dir
EX_NOPERM = 77      # a login was refused (`fetch`)
EX_CONFIG = 78      # fix the configuration: settings, templates, rules, an old schema, no imap
EX_PIPE = 141       # the reader of the output went away (`| head`): 128 + SIGPIPE, as a shell
#                     reports any tool SIGPIPE stopped

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                      show_default=True, help="table for people, json for scripts.")
# for a command that shows one thing (a ticket, a mail, an article) rather than a listing
TEXT_FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]),
                           default="text", show_default=True,
                           help="text for people, json for scripts.")


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


# the columns of free text a table cuts short, so that the columns after them stay in view
LONG = ("subject", "reason", "to", "root_cause", "workaround")


def stdout_console(**options: Any) -> Console:
    """A rich Console on stdout for the commands' text. Rich answers a reader that went away
    with exit 1 of its own (Console.on_broken_pipe); this one lets the BrokenPipeError go on
    to the top-level group, which stops every command alike with 141 (main.LazyGroup)."""
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    return PipedConsole(**options)


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
               empty: str = "nothing to show") -> None:
    from rich.table import Table
    # piped output keeps whole values: `| grep` and `| less -S` want full lines
    shown = stdout_console(soft_wrap=False, width=None if sys.stdout.isatty() else 240)
    if not rows:
        shown.print(f"[dim]{empty}[/dim]")
        return
    table = Table(show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c.replace("_", " "), overflow="ellipsis", no_wrap=True,
                         max_width=48 if c in LONG else None)
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in columns])
    shown.print(table)


# what a mail may carry that a terminal would obey: C0 and C1 controls (ESC starts escape
# sequences, BEL rings), and the bidi overrides that reorder what is shown
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe(text: str) -> str:
    """Text from a mail as it may reach an operator's terminal."""
    return _UNSAFE.sub("\ufffd", text)


def _cell(v: Any) -> Text:
    """A table cell as plain text: `[/x]` or `[link=...]` in a subject is not rich markup."""
    from rich.text import Text
    if v is None:
        return Text("-")
    if isinstance(v, list):
        return Text(safe(", ".join(map(str, v))))
    return Text(safe(str(v)))


# a row's id as the databases store it (64-bit): a larger number is a usage error, not a
# driver's OverflowError
ROW_ID = click.IntRange(1, 2**63 - 1)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr, then exit: what went wrong and what to do."""
    click.echo(f"maildesk: {message}", err=True)
    sys.exit(code)


class OutputError(OSError):
    """Writing the command's output (stdout) failed: a full disk, an I/O error; not a
    file of the desk's own, which says its own error."""


class _Stdout(io.FileIO):
    """stdout's file descriptor, whose failed writes say they were the output's. A closed
    pipe stays a BrokenPipeError: the reader went away, which is no failure (141)."""

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(e.errno, e.strerror) from e


@contextmanager
def guarded_stdout() -> Iterator[None]:
    """Make a failed write to stdout an OutputError, told apart from a failed write of
    the desk's own files (which have their own messages and exit codes) by where it
    happened rather than by its errno. Only a real file descriptor is guarded: a test's
    CliRunner gives sys.stdout none, and writes to memory."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield
        return
    given = sys.stdout
    given.flush()
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_Stdout(fd, "w", closefd=False)), encoding=given.encoding,
        errors=given.errors, line_buffering=bool(given.line_buffering))
    try:
        yield
    finally:
        sys.stdout = given


def refuse_existing(path: Path, force: bool) -> None:
    """--out names a file to write: never a folder, nor a file there already unless
    --force (it may be the desk's own maildesk.yaml); 73 either way, as for any file
    maildesk cannot write."""
    if path.is_dir():
        fail(f"{path} is a folder; give --out the name of a file to write", EX_CANTCREAT)
    if path.exists() and not force:
        fail(f"{path}: there is a file there already; give another --out, or --force to "
             "replace it", EX_CANTCREAT)


def read_input(path: Path) -> bytes:
    """A file a command reads, or one line and 66 when it is not there or cannot be read
    (click.Path(exists=True) would make that a usage error, 64)."""
    try:
        return path.read_bytes()
    except OSError as e:
        fail(f"{path}: {e.strerror or e}", EX_NOINPUT)


def read_mail(path: Path) -> ParsedMail:
    """A mail file (.eml) parsed as the pipeline parses it, or one line and the exit code:
    66 when the file cannot be read, 65 when it is no mail."""
    from ..mail.parse import Unparseable, parse
    from ..store.blobs import digest_of
    raw = read_input(path)
    try:
        return parse(raw, digest_of(raw))
    except Unparseable as e:
        fail(f"{path}: {e}", EX_DATAERR)


def write_raw(data: bytes) -> None:
    """A mail's bytes as they are, for a file or a pipe; never to a terminal, which would
    run the escape sequences a hostile mail carries (retitle it, clear it, ...)."""
    if sys.stdout.isatty():
        fail("--raw writes the mail's bytes as they are, escape sequences too: send them to "
             "a file or a pipe (`... --raw > mail.eml`, `... --raw | less`)", EX_USAGE)
    sys.stdout.buffer.write(data)


def minute(iso: str | None, width: int = 16) -> str | None:
    """An ISO time as people read it: to the minute (a table) or the second, UTC."""
    return iso[:width].replace("T", " ") if iso else None


def second(iso: str | None) -> str | None:
    return minute(iso, 19)
