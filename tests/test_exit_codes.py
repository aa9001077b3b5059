"""Exit codes: sysexits, one table in the README, one list in the code, and every error
situation the table names answered with its code in one line, never a traceback."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import mail, run_cli

from maildesk.cli import output
from maildesk.cli.main import cli
from maildesk.store.migrate import HEAD

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):      # the top level loads its commands lazily
        command = group.get_command(ctx, name)
        assert command is not None, f"{name} is listed but not found (cli/main.py LAZY)"
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    """The stderr of a failed run: one line, no traceback."""
    err = r.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_every_command_and_subcommand_has_help() -> None:
    commands = list(_commands(cli))
    assert ("tickets", "show") in commands and ("db", "upgrade") in commands
    for args in [(), *commands]:
        r = CliRunner().invoke(cli, [*args, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output, (args, r.output)


def test_the_readme_table_lists_the_codes_the_code_has() -> None:
    text = README.read_text()
    table = text[text.index("### Exit codes"):].split("\n\n")[2]
    rows = {int(m[1]): m[2] for m in re.finditer(r"^\| (\d+) \| (EX_\w+) \|", table, re.M)}
    code = {v: k for k, v in vars(output).items() if k.startswith("EX_")}
    assert rows == code


def test_a_usage_error_is_64_and_one_line(desk_config: Callable[..., Path]) -> None:
    """One line as every error, not click's three (usage, hint, error); it names the
    command's --help, whose own output is click's as ever."""
    r = run_cli("tickets", "list", "--status", "bogus", config=desk_config())
    assert r.returncode == 64
    said = one_line(r)
    assert said.startswith("maildesk: Invalid value for '--status': bogus")
    assert said.endswith("; see maildesk tickets list --help\n")
    r = run_cli("bogus")
    assert r.returncode == 64
    assert one_line(r) == "maildesk: No such command 'bogus'; see maildesk --help\n"
    assert run_cli("tickets", "list", "--help").stdout.startswith(
        b"Usage: maildesk tickets list [OPTIONS]\n")


@pytest.mark.parametrize("args", [
    ("rules", "test", "{missing}", "--rules", "{rules}"),
    ("kb", "suggest", "{missing}"),
    ("triage", "predict", "{missing}"),
    ("ingest", "{missing}"),
])
def test_a_file_that_is_not_there_is_66_everywhere(desk_config: Callable[..., Path],
                                                   tmp_path: Path,
                                                   args: tuple[str, ...]) -> None:
    """What was named is not there: 66 (EX_NOINPUT), as the README's table says, not the
    usage error (64) click.Path(exists=True) makes of it."""
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {name: x, on: ticket.created, then: [{set: {queue: general}}]}\n")
    missing = tmp_path / "missing.eml"
    r = run_cli(*(a.format(missing=missing, rules=rules) for a in args), config=cfg)
    assert r.returncode == 66, r.stderr
    assert one_line(r).startswith(f"maildesk: {missing}: ")


@pytest.mark.parametrize("args", [("fetch",), ("mailboxes", "status")])
def test_no_mailbox_to_fetch_is_a_configuration_error(desk_config: Callable[..., Path],
                                                      args: tuple[str, ...]) -> None:
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    r = run_cli(*args, config=cfg)
    assert r.returncode == 78
    assert one_line(r) == "maildesk: no imap mailboxes configured; add an `imap:` entry to " \
                          "maildesk.yaml\n"


@pytest.mark.parametrize("args", [
    ("tickets", "show", "MD-999"),
    ("sla", "show", "MD-999"),
    ("rules", "test", "{eml}", "--ticket", "MD-999"),
])
def test_a_missing_ticket_is_66_everywhere(desk_config: Callable[..., Path], tmp_path: Path,
                                           args: tuple[str, ...]) -> None:
    cfg = desk_config(rules=[])
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail())
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {name: x, on: customer.replied, then: [{set: {queue: general}}]}\n")
    args = tuple(a.format(eml=eml) for a in args)
    if args[0] == "rules":
        args = (*args, "--rules", str(rules))
    r = run_cli(*args, config=cfg)
    assert r.returncode == 66 and one_line(r) == "maildesk: no ticket MD-999\n"


def test_rule_errors_are_78_as_in_config_check(desk_config: Callable[..., Path],
                                               tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, on: ticket.created, then: [{set: {queue: nope}}]}\n")
    r = run_cli("rules", "check", str(bad), config=desk_config())
    assert r.returncode == 78 and "1 problem; the rules were not loaded" in r.stderr.decode()
    r = run_cli("config", "check", config=desk_config(rules=[str(bad)]))
    assert r.returncode == 78


def test_a_port_in_use_is_75_not_a_configuration_error(desk_config: Callable[..., Path]
                                                       ) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli("serve", config=desk_config(smtp={"port": port}))
    assert r.returncode == 75, r.stderr
    last = r.stderr.decode().splitlines()[-1]
    assert last.startswith(f"maildesk: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in last.lower()
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.parametrize("args, code", [
    (("ingest",), 75),          # the MTA keeps the mail and retries
    (("serve",), 73),
    (("db", "upgrade"), 73),
    (("jobs", "run"), 73),
])
def test_a_data_dir_that_cannot_be_written_is_one_line(
        desk_config: Callable[..., Path], tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    cfg = desk_config(data_dir=str(tmp_path / "file" / "data"))
    r = run_cli(*args, config=cfg, input=mail())
    assert r.returncode == code
    assert one_line(r).startswith(f"maildesk: data_dir {tmp_path}/file/data is not writable "
                                  "by uid ")
    assert "Not a directory; fix: " in r.stderr.decode()


def test_init_over_a_desk_is_73(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path)).returncode == 0
    r = run_cli("init", str(tmp_path))
    assert r.returncode == 73 and "use --force to overwrite" in one_line(r)


@pytest.mark.parametrize("where, why", [("/proc/x", "No such file or directory"),
                                        ("/dev/null/x", "Not a directory"),
                                        ("/dev/null", "it is a file, not a folder"),
                                        ("/sys/kernel/x", "")])
def test_init_where_nothing_can_be_written_is_73_and_one_line(where: str, why: str) -> None:
    r = run_cli("init", where)
    assert r.returncode == 73
    assert one_line(r).startswith(f"maildesk: cannot write {where}: {why}")


@pytest.mark.parametrize("args", [
    ("report", "--format", "csv", "--out", "{out}"),
    ("requester", "export", "ana@customer.test", "--out", "{out}"),
])
def test_out_replaces_no_file_without_force_and_writes_no_folder(
        desk_config: Callable[..., Path], tmp_path: Path, args: tuple[str, ...]) -> None:
    """`report --out maildesk.yaml` once replaced the desk's configuration: every --out
    refuses a file that is there unless --force, and a folder, with 73 (cannot write)."""
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    kept = cfg.read_bytes()
    r = run_cli(*(a.format(out=cfg) for a in args), config=cfg)
    assert r.returncode == 73
    assert one_line(r) == f"maildesk: {cfg}: there is a file there already; give another " \
                          "--out, or --force to replace it\n"
    assert cfg.read_bytes() == kept
    r = run_cli(*(a.format(out=tmp_path) for a in args), config=cfg)
    assert r.returncode == 73
    assert one_line(r) == f"maildesk: {tmp_path} is a folder; give --out the name of a file " \
                          "to write\n"
    out = tmp_path / "out"
    out.write_text("old\n")
    r = run_cli(*(a.format(out=out) for a in args), "--force", config=cfg)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != b"old\n"


def _old_schema(db_url: str) -> None:
    """A database as an older maildesk (schema 0010) left it."""
    from alembic import command
    from sqlalchemy import create_engine

    from maildesk.store import migrate
    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0010")
    engine.dispose()


def test_an_old_schema_without_auto_upgrade_is_refused_in_one_line(
        desk_config: Callable[..., Path], db_url: str) -> None:
    """No daemon that says `listening` and logs UndefinedTable every 5 s, no SQL
    traceback from a command: one line naming the command to run, exit 78."""
    _old_schema(db_url)
    cfg = desk_config(db_url, database={"url": db_url, "auto_upgrade": False})
    for args in (("serve",), ("tickets", "list"), ("ingest",), ("jobs", "run")):
        r = run_cli(*args, config=cfg, input=mail())
        assert r.returncode == 78, (args, r.stderr)
        assert one_line(r).endswith(f": schema is at 0010, older than this maildesk ({HEAD}); "
                                    "run `maildesk db upgrade` (database.auto_upgrade is "
                                    "false)\n")
    assert run_cli("db", "upgrade", config=cfg).stdout == \
        f"schema at {HEAD} (was 0010)\n".encode()
    assert run_cli("tickets", "list", config=cfg).returncode == 0


def test_config_check_tries_the_data_dir_and_the_schema(desk_config: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    """What `serve` would stumble on, `config check` (run before a restart) finds first,
    with serve's exit code and what to do."""
    (tmp_path / "file").write_text("not a directory\n")
    r = run_cli("config", "check", config=desk_config(data_dir=str(tmp_path / "file" / "d")))
    assert r.returncode == 73 and "is not writable by uid" in one_line(r)
    cfg = desk_config()
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 0, r.stderr
    assert b"data_dir " + str(tmp_path / "data").encode() + b" writable" in r.stdout
    assert b"maildesk.db not made yet" in r.stdout
    assert not (tmp_path / "data").exists(), "a check makes nothing, not even the directory"
    (tmp_path / "data").mkdir()
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "data").iterdir()) == [], "the probe file is removed"
    db_url = f"sqlite:///{tmp_path / 'data' / 'maildesk.db'}"
    _old_schema(db_url)
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 0 and b"schema at 0010: `maildesk serve` upgrades it" in r.stdout
    r = run_cli("config", "check", config=desk_config(database={"auto_upgrade": False}))
    assert r.returncode == 78
    assert f"schema is at 0010, older than this maildesk ({HEAD}); run `maildesk db upgrade`" \
        in one_line(r)
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("config", "check", config=desk_config(database={"auto_upgrade": False}))
    assert r.returncode == 0 and f"schema at {HEAD}, current".encode() in r.stdout
    r = run_cli("config", "check", config=desk_config(
        database={"url": "postgresql+psycopg://root@127.0.0.1:1/nowhere"}))
    assert r.returncode == 75 and "cannot read the schema" in one_line(r)


READERS = [("tickets", "list"), ("tickets", "show", "MD-1"), ("outbox", "list"),
           ("quarantine", "list"), ("quarantine", "show", "1"), ("quarantine", "retry", "1"),
           ("sla", "show", "MD-1"), ("report",), ("blobs", "verify"), ("mailboxes", "status"),
           ("status",)]


def test_reading_where_there_is_no_desk_makes_none(tmp_path: Path) -> None:
    """A reading command in the wrong directory says so; it leaves no empty desk that the
    next command would take for the real one. Writing commands still make the desk."""
    here = tmp_path / "elsewhere"
    here.mkdir()
    cfg = tmp_path / "maildesk.yaml"    # mailboxes status wants a mailbox to show
    cfg.write_text(f"data_dir: {here / 'maildesk-data'}\n"
                   "imap: [{name: support, host: imap.example.com, username: u, "
                   "password: p}]\n")
    for args in READERS:
        r = run_cli(*args, cwd=here, config=cfg if args[0] == "mailboxes" else None)
        assert r.returncode == 66, (args, r.stderr)
        assert one_line(r) == f"maildesk: no desk at {here / 'maildesk-data'} (maildesk.db " \
                              "missing); run `maildesk serve` to make one, or pass --config\n"
    assert list(here.iterdir()) == []
    assert run_cli("ingest", cwd=here, input=mail()).returncode == 0
    r = run_cli("tickets", "show", "MD-1", cwd=here)
    assert r.returncode == 0 and b"It blinks red." in r.stdout


def test_a_database_without_the_schema_is_no_desk(desk_config: Callable[..., Path],
                                                  db_url: str) -> None:
    from sqlalchemy import create_engine, inspect
    cfg = desk_config(db_url)
    if db_url.startswith("sqlite"):     # a file that is there, but empty
        engine = create_engine(db_url)
        engine.connect().close()
        engine.dispose()
    r = run_cli("tickets", "list", config=cfg)
    assert r.returncode == 66 and "(no maildesk schema); run `maildesk serve`" in one_line(r)
    engine = create_engine(db_url)
    assert inspect(engine).get_table_names() == [], "a reading command made no tables"
    engine.dispose()
    assert run_cli("jobs", "run", config=cfg).returncode == 0, "a writing one makes the desk"
    assert run_cli("tickets", "list", config=cfg).returncode == 0


def test_the_lazy_top_level_names_every_modules_commands() -> None:
    """cli/main.py loads a command's module when it runs: each module's COMMANDS must be
    named there, or its command would be missing from `maildesk --help` and from use; and
    with the short help the command has, which `maildesk --help` lists without loading it."""
    import importlib
    import pkgutil

    import maildesk.cli
    from maildesk.cli.main import LAZY
    found = {}
    for info in pkgutil.iter_modules(maildesk.cli.__path__):
        module = importlib.import_module(f"maildesk.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            found[command.name] = (info.name, command.get_short_help_str(limit=10**6))
    wrong = {name: entry for name, entry in found.items() if LAZY.get(name) != entry}
    assert not wrong, f"cli/main.py LAZY should have: {wrong!r}"
    assert found == LAZY, f"LAZY names commands no module has: {set(LAZY) - set(found)}"


def test_a_bug_is_70_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """What no command foresaw exits 70 (EX_SOFTWARE, as the README's table says), its
    traceback folded into one log line, not Python's exit 1 and twenty lines."""
    import logging

    from maildesk.cli.main import main

    def boom() -> None:
        raise ZeroDivisionError("division by zero\nsecond line")
    cli.add_command(click.Command("boom", callback=boom))
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        for old in handlers:
            root.removeHandler(old)
        with pytest.raises(SystemExit) as exited:
            main(["boom"])
    finally:
        cli.commands.pop("boom")
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
    assert exited.value.code == 70
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and "ZeroDivisionError: division by zero" in said[0], said
    assert "Traceback" in said[0] and "a bug" in said[0]


def _big_ticket(cfg: Path) -> None:
    """MD-1 with a long body, its acknowledgement (outbox 1), and an auto-reply kept."""
    body = "".join(f"line {i} of a long log the customer pasted\n" for i in range(20_000))
    assert run_cli("ingest", config=cfg, input=mail(body=body)).returncode == 0
    assert run_cli("ingest", config=cfg,
                   input=mail(Auto_Submitted="auto-replied")).returncode == 0


def _kept(cfg: Path) -> str:
    import json
    return str(json.loads(run_cli("quarantine", "list", "--state", "all", "--format", "json",
                                  config=cfg).stdout)[0]["id"])


@pytest.mark.parametrize("args, read", [
    (("tickets", "show", "MD-1", "--format", "json"), 10),
    (("tickets", "show", "MD-1"), 10),
    (("tickets", "list"), 0),
    (("outbox", "show", "1"), 0),
    (("outbox", "show", "1", "--format", "json"), 0),
    (("quarantine", "show", "{kept}"), 0),
    (("sla", "show", "MD-1"), 0),
])
def test_a_reader_that_goes_away_stops_the_command_quietly_with_141(
        desk_config: Callable[..., Path], args: tuple[str, ...], read: int) -> None:
    """`maildesk tickets show MD-1 | head -c 10`: the pipe closes while the command still
    writes, or before it writes at all. A Unix tool stops by SIGPIPE (the shell's 141) and
    says nothing; click's own handling said 1, a failure, to `set -o pipefail`, and so did
    rich's for the text it prints."""
    cfg = desk_config()
    _big_ticket(cfg)
    args = tuple(a.format(kept=_kept(cfg)) for a in args)
    proc = subprocess.Popen([sys.executable, "-m", "maildesk", "--config", str(cfg), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert len(proc.stdout.read(read)) == read
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == output.EX_PIPE and err == b""


@pytest.mark.parametrize("args", [
    ("tickets", "list"),
    ("tickets", "show", "MD-1"),
    ("tickets", "show", "MD-1", "--format", "json"),
    ("quarantine", "show", "{kept}", "--raw"),
    ("outbox", "show", "1", "--raw"),
    ("outbox", "show", "1"),
])
def test_output_that_cannot_be_written_is_73_and_one_line(
        desk_config: Callable[..., Path], args: tuple[str, ...]) -> None:
    """`> /dev/full`: the disk the output goes to is full. One line, 73 (cannot write),
    for every command: not a traceback, neither the command's nor Python's flush at exit."""
    cfg = desk_config()
    _big_ticket(cfg)
    args = tuple(a.format(kept=_kept(cfg)) for a in args)
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "maildesk", "--config", str(cfg), *args],
                           stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 73, r.stderr
    assert r.stderr == b"maildesk: cannot write the output: No space left on device\n"
