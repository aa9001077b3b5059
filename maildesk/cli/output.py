"""Output for people (rich tables) and for scripts (--format json), and exit codes."""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:       # rich is imported where a table is printed: `--help` needs none
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
EX_CANTCREAT = 73   # cannot write: `report --out`, `init` over files, data_dir (but ingest)
EX_TEMPFAIL = 75    # try again later: the database is down, the port taken; ingest: data_dir
EX_NOPERM = 77      # a login was refused (`fetch`)
EX_CONFIG = 78      # fix the configuration: settings, templates, rules, an old schema
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


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
               empty: str = "nothing to show") -> None:
    from rich.console import Console
    from rich.table import Table
    # piped output keeps whole values: `| grep` and `| less -S` want full lines
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 240)
    if not rows:
        console.print(f"[dim]{empty}[/dim]")
        return
    table = Table(show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c.replace("_", " "), overflow="ellipsis", no_wrap=True,
                         max_width=48 if c in LONG else None)
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in columns])
    console.print(table)


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


def read_mail(path: Path) -> ParsedMail:
    """A mail file (.eml) parsed as the pipeline parses it, or one line and the exit code:
    66 when the file cannot be read, 65 when it is no mail."""
    from ..mail.parse import Unparseable, parse
    from ..store.blobs import digest_of
    try:
        raw = path.read_bytes()
    except OSError as e:
        fail(f"{path}: {e.strerror or e}", EX_NOINPUT)
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
