"""The `maildesk` command as an operator and an MTA use it."""
from __future__ import annotations

import json
import mailbox
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import mail, run_cli

MBOX_FROM = b"From ana@customer.test Mon Nov  2 09:30:00 2026\n"


def tickets_json(config: Path, *args: str) -> list[dict]:
    r = run_cli("tickets", "list", "--format", "json", *args, config=config)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_ingest_eml_mbox_maildir_and_stdin(desk_config: Callable[..., Path], tmp_path: Path,
                                           db_url: str) -> None:
    cfg = desk_config(db_url)
    eml = tmp_path / "one.eml"
    eml.write_bytes(mail(subject="from an eml file", message_id="<e1@c.test>"))
    box = tmp_path / "old.mbox"
    box.write_bytes(MBOX_FROM + mail(subject="mbox first", message_id="<m1@c.test>",
                                     body="From here on it is broken.\n").replace(
        b"From here", b">From here") + b"\n" +
        MBOX_FROM + mail(subject="Re: [MD-2] mbox first", message_id="<m2@c.test>") + b"\n")
    md = mailbox.Maildir(tmp_path / "md", create=True)
    md.add(mail(subject="from a maildir", message_id="<d1@c.test>"))
    r = run_cli("ingest", str(eml), str(box), str(tmp_path / "md"), config=cfg)
    assert r.returncode == 0, r.stderr
    assert b"4 messages: 3 new tickets, 1 follow-ups, 0 duplicates skipped" in r.stderr
    r = run_cli("ingest", "--format", "json", config=cfg,
                input=mail(subject="from a pipe", message_id="<p1@c.test>"))
    assert r.returncode == 0 and json.loads(r.stdout)["tickets"] == ["MD-4"]
    r = run_cli("ingest", "-", config=cfg, input=mail(subject="again", message_id="<p1@c.test>",
                                                       ).replace(b"again", b"from a pipe"))
    assert r.returncode == 0 and b"1 duplicates skipped" in r.stderr
    subjects = [t["subject"] for t in tickets_json(cfg)]
    assert subjects == ["from a pipe", "from a maildir", "mbox first", "from an eml file"], \
        "newest first"
    shown = json.loads(run_cli("tickets", "show", "MD-2", "--format", "json", config=cfg).stdout)
    assert "From here on" in shown["messages"][0]["text"], "mbox >From quoting undone"


def test_ingest_takes_the_envelope_from_the_mta(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    r = run_cli("ingest", "--sender", "", "--recipient", "support@localhost", "--format",
                "json", config=cfg, input=mail(subject="Delivery Status Notification"))
    assert r.returncode == 0
    assert json.loads(r.stdout)["classified"] == 1, "null sender: a bounce, no ticket"
    assert json.loads(run_cli("outbox", "list", "--format", "json", config=cfg).stdout) == []
    r = run_cli("ingest", "--sender", "ana@customer.test", "--recipient", "support@localhost",
                "--format", "json", config=cfg, input=mail(subject="A person"))
    assert json.loads(r.stdout)["new_tickets"] == 1


@pytest.mark.parametrize("flag", ["--sender", "--recipient"])
def test_ingest_refuses_a_control_character_in_the_envelope(
        desk_config: Callable[..., Path], flag: str) -> None:
    """As the SMTP listener answers 501: an address with ESC, CR or LF in it is no address,
    and stored it would reach logs, terminals and replies."""
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=mail(message_id="<one@c.test>")).returncode == 0
    for queue in ((), ("--queue",)):
        r = run_cli("ingest", *queue, flag, "evil\x1b[31m\r\nx@example.net", config=cfg,
                    input=mail(message_id="<two@c.test>"))
        assert r.returncode == 64 and r.stderr.count(b"\n") == 1, r.stderr
        assert b"control character in an envelope address" in r.stderr
        assert b"\x1b" not in r.stderr and b"\r" not in r.stderr
    assert len(tickets_json(cfg)) == 1


def test_ingest_exits_75_when_the_database_is_down(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config("postgresql+psycopg://root@127.0.0.1:1/nowhere")
    r = run_cli("ingest", config=cfg, input=mail())
    assert r.returncode == 75, r.stderr
    assert r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr


def test_ingest_of_a_missing_file_exits_66_with_nothing_done(
        desk_config: Callable[..., Path], tmp_path: Path) -> None:
    """A mistyped name after good ones stops the import before its first mail: one line,
    no summary of nothing, and no half import to sort out afterwards."""
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=mail(subject="before")).returncode == 0
    good = tmp_path / "good.eml"
    good.write_bytes(mail())
    (tmp_path / "plain").mkdir()
    for bad, said in [("/nonexistent/mail.eml", "no such file or folder"),
                      (str(tmp_path / "plain"),
                       "a folder, but not a maildir (no cur/ and new/ inside)")]:
        r = run_cli("ingest", str(good), bad, config=cfg)
        assert r.returncode == 66, r.stderr
        assert r.stderr.decode() == f"maildesk: {bad}: {said}; nothing was ingested\n"
    assert [t["subject"] for t in tickets_json(cfg)] == ["before"]


def test_bad_config_names_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text("desk:\n  name: x\n  ref_prefx: MD\nsmtp:\n  port: lots\n")
    r = run_cli("tickets", "list", config=cfg)
    assert r.returncode == 78
    lines = r.stderr.decode().strip().splitlines()
    assert any(f"{cfg}:3:3: desk.ref_prefx: unknown setting" in ln for ln in lines), lines
    assert any(f"{cfg}:5:9: smtp.port:" in ln and "'lots'" in ln for ln in lines), lines
    assert "Traceback" not in r.stderr.decode()


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text("desk:\n  name: [unclosed\n")
    r = run_cli("serve", config=cfg)
    assert r.returncode == 78
    assert r.stderr.decode().startswith(f"maildesk: {cfg}:") and r.stderr.count(b"\n") == 1


def test_init_writes_a_config_that_works_and_env_var_selects_it(tmp_path: Path) -> None:
    r = run_cli("init", str(tmp_path / "desk"))
    assert r.returncode == 0
    for name in ("maildesk.yaml", "rules.yaml", "templates/README.txt"):
        assert (tmp_path / "desk" / name).is_file()
    assert "acknowledgement.txt.j2" in (tmp_path / "desk/templates/README.txt").read_text()
    cfg = tmp_path / "desk" / "maildesk.yaml"
    r = run_cli("config", "check", env={"MAILDESK_CONFIG": str(cfg)})
    assert r.returncode == 0, r.stderr
    shown = json.loads(run_cli("config", "show", "--format", "json", config=cfg).stdout)
    assert shown["data_dir"] == str(tmp_path / "desk" / "maildesk-data")
    assert run_cli("init", str(tmp_path / "desk")).returncode == 73, "no silent overwrite"


def test_config_show_hides_every_secret(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(
        database={"url": "postgresql+psycopg://desk:db-s3cret@127.0.0.1/test"},
        outbox={"relay": {"host": "smtp.example.com", "password": "relay-s3cret"}},
        imap=[{"name": "support", "host": "imap.example.com", "username": "u",
               "password": "imap-s3cret"}])
    for fmt in ("json", "table"):
        r = run_cli("config", "show", "--format", fmt, config=cfg)
        assert r.returncode == 0, r.stderr
        assert b"s3cret" not in r.stdout and b"********" in r.stdout
    shown = json.loads(run_cli("config", "show", "--format", "json", config=cfg).stdout)
    assert shown["imap"][0]["password"] == "********"
    assert shown["database"]["url"] == "postgresql+psycopg://desk:***@127.0.0.1/test"


def test_template_override_is_used(desk_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "acknowledgement.subject.j2").write_text("Got it: {{ ticket.ref }}\n")
    cfg = desk_config(templates_dir=str(tmp_path / "tpl"))
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    out = json.loads(run_cli("outbox", "list", "--format", "json", config=cfg).stdout)
    assert out[0]["subject"] == "Got it: MD-1"


def test_broken_template_override_stops_start_with_file_and_line(
        desk_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "acknowledgement.txt.j2").write_text("Hello\n{{ ticket.ref \n")
    cfg = desk_config(templates_dir=str(tmp_path / "tpl"))
    r = run_cli("ingest", config=cfg, input=mail())
    assert r.returncode == 78
    assert b"acknowledgement.txt.j2:2: template error" in r.stderr


@pytest.mark.parametrize("args, code, said", [
    (("quarantine", "show", "9" * 24), 64, b"is not in the range"),
    (("quarantine", "retry", "9" * 24), 64, b"is not in the range"),
    (("tickets", "list", "--limit", "9" * 24), 64, b"is not in the range"),
    (("report", "--format", "html", "--out", "/nonexistent/dir/x.html"), 73,
     b"maildesk: cannot write /nonexistent/dir/x.html: No such file or directory"),
    (("report", "--from", "9999-12-31", "--to", "9999-12-31"), 64, b"before 9999-01-01"),
])
def test_out_of_range_input_is_one_line_not_a_traceback(
        desk_config: Callable[..., Path], args: tuple[str, ...], code: int, said: bytes) -> None:
    cfg = desk_config()
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli(*args, config=cfg)
    assert (r.returncode, b"Traceback" in r.stderr) == (code, False), r.stderr
    assert said in r.stderr


def test_tables_for_people(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    run_cli("ingest", config=cfg, input=mail())
    r = run_cli("tickets", "list", config=cfg)
    assert b"MD-1" in r.stdout and b"ana@customer.test" in r.stdout
    r = run_cli("tickets", "show", "MD-1", config=cfg)
    assert b"It blinks red." in r.stdout and b"ticket.created" in r.stdout
    assert b"acknowledgement" in run_cli("outbox", "list", config=cfg).stdout
    assert b"quarantine is empty" in run_cli("quarantine", "list", config=cfg).stdout


def test_outbox_commands_on_an_empty_desk(tmp_path: Path) -> None:
    """No configuration, a fresh directory: no desk yet (66, nothing made); then a new desk
    (`db upgrade` makes it): each answers in one line, with its code."""
    def run(*args: str) -> Any:
        return run_cli(*args, cwd=tmp_path, env={"MAILDESK_CONFIG": ""})
    for args in (["outbox", "list"], ["outbox", "show", "1"], ["outbox", "send"],
                 ["outbox", "retry", "1"]):
        r = run(*args)
        assert r.returncode == 66 and r.stderr.startswith(b"maildesk: no desk at "), args
    assert not (tmp_path / "maildesk-data").exists()
    assert run("db", "upgrade").returncode == 0
    assert run("outbox", "list").stdout == b"the outbox is empty\n"
    r = run("outbox", "show", "1")
    assert r.returncode == 66 and r.stderr == \
        b"maildesk: no outbox mail with id 1 (see `maildesk outbox list`)\n"
    r = run("outbox", "send", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == \
        {"sent": 0, "deferred": 0, "failed": 0, "lost_claim": 0}
    assert run("outbox", "send").stdout == b"0 sent, 0 deferred, 0 failed\n"
    r = run("outbox", "retry", "1")
    assert r.returncode == 66 and r.stdout == b"due now: 0 of 1\n"
    assert b"not failed or queued outbox mail" in r.stderr and b"Traceback" not in r.stderr
    assert run("outbox", "show", "x").returncode == 64
    r = run("jobs", "run", "outbox", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout) == \
        [{"job": "outbox", "ran": True, "result": "nothing due"}]


def test_db_upgrade_reports_the_schema(desk_config: Callable[..., Path], db_url: str) -> None:
    from maildesk.store.migrate import HEAD
    cfg = desk_config(db_url)
    r = run_cli("db", "upgrade", config=cfg)
    assert r.returncode == 0 and r.stdout.startswith(f"schema at {HEAD} (was empty)".encode())
    assert run_cli("db", "upgrade", config=cfg).stdout == f"schema at {HEAD}\n".encode()


def test_migration_head_constant_matches_the_scripts() -> None:
    from maildesk.store import migrate
    assert migrate.script_head() == migrate.HEAD


def test_quarantine_retry_requeues(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    run_cli("ingest", config=cfg, input=b"garbage without headers\n")
    q = json.loads(run_cli("quarantine", "list", "--format", "json", config=cfg).stdout)
    assert len(q) == 1
    r = run_cli("quarantine", "retry", str(q[0]["id"]), config=cfg)
    assert r.returncode == 0 and r.stdout == b"re-queued 1 of 1\n"
    assert json.loads(run_cli("quarantine", "list", "--format", "json", config=cfg).stdout) == []
    assert yaml.safe_load(cfg.read_text())  # config untouched


def test_large_import_parses_ahead_and_threads_every_reply(
        desk_config: Callable[..., Path], tmp_path: Path, db_url: str) -> None:
    """More than one batch: parsing runs in a second process, the result must not change."""
    cfg = desk_config(db_url, limits={"max_message_size": "100KiB"})
    parts = []
    for i in range(300):
        if i % 3 == 2:   # a reply to the mail before it, by References only
            raw = mail(subject="Re: question", message_id=f"<big{i}@c.test>",
                       sender=f"user{i - 1}@c.test", References=f"<big{i - 1}@c.test>")
        else:
            raw = mail(subject=f"question {i}", message_id=f"<big{i}@c.test>",
                       sender=f"user{i}@c.test")
        parts.append(MBOX_FROM + raw + b"\n")
    parts.insert(150, MBOX_FROM + b"From: big@c.test\n\n" + b"too big to read\n" * 9000 + b"\n")
    box = tmp_path / "big.mbox"
    box.write_bytes(b"".join(parts))
    r = run_cli("ingest", "--format", "json", str(box), config=cfg)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["new_tickets"], s["follow_ups"], s["quarantined"]) == (200, 100, 1)
    rows = tickets_json(cfg, "--limit", "0")
    assert len(rows) == 200 and all(t["message_count"] in (1, 2) for t in rows)
    assert sum(t["message_count"] == 2 for t in rows) == 100


def test_every_built_in_template_compiles() -> None:
    """Start-up checks only a desk's own templates (compiling all of them cost a pipe
    delivery most of its time); the built-in ones are checked here."""
    from maildesk.notify.templates import Templates
    t = Templates()
    names = t.text_env.list_templates(filter_func=lambda n: n.endswith(".j2"))
    assert len(names) > 20
    for name in names:
        (t.html_env if name.endswith(".html.j2") else t.text_env).get_template(name)


def test_a_broken_override_template_is_named_at_start(tmp_path: Path) -> None:
    own = tmp_path / "templates"
    own.mkdir()
    (own / "acknowledgement.txt.j2").write_text("Hello {{ ticket.ref \n")
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(f"data_dir: data\ntemplates_dir: {own}\n")
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 78 and b"acknowledgement.txt.j2:1" in r.stderr, r.stderr


def test_a_subject_is_never_markup_or_terminal_control(desk_config: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    """Issue 15: `[/x] printer` made `tickets list` exit 1 (rich markup); ESC and BEL in a
    mail reached the operator's terminal."""
    cfg = desk_config()
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: a@customer.test\nTo: support@localhost\nSubject: [/x] printer "
                    b"[link=https://evil.test]click[/link]\n\nfine\x1b]0;owned\x07 \x1b[31mred\n")
    assert run_cli("ingest", str(eml), config=cfg).returncode == 0
    r = run_cli("tickets", "list", config=cfg)
    assert r.returncode == 0 and b"[/x] printer" in r.stdout, r.stderr
    assert b"[link=https://evil.test]" in r.stdout
    r = run_cli("tickets", "show", "MD-1", config=cfg)
    assert r.returncode == 0 and b"\x1b]0;" not in r.stdout and b"\x07" not in r.stdout
    assert b"\x1b[31m" not in r.stdout and b"fine" in r.stdout


def test_the_starter_config_names_every_setting() -> None:
    """`maildesk init` writes config/maildesk.yaml and the README promises every setting,
    with its default, is in it: a new setting must be added there too."""
    from maildesk.config.schema import Settings
    text = (Path(__file__).parent.parent / "config" / "maildesk.yaml").read_text()
    missing = []

    def walk(model: Any, path: str) -> None:
        for name, field in model.model_fields.items():
            if f"{name}:" not in text:
                missing.append(path + name)
            if hasattr(field.annotation, "model_fields"):
                walk(field.annotation, f"{path}{name}.")
    walk(Settings, "")
    assert not missing


ROOT = Path(__file__).parent.parent


def test_the_jobs_help_and_the_readme_name_every_job() -> None:
    """The help is made from the job registry; the README's table is written by hand."""
    from maildesk.scheduler.jobs import OUTBOX, PLANNED
    names = [p.name for p in PLANNED] + [OUTBOX.name]
    said = run_cli("jobs", "--help").stdout.decode()
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `maildesk jobs run"))
    for name in names:
        assert f"\n  {name} " in said, (name, said)
        assert f"`{name}`" in row, (name, row)


def test_the_starter_configs_readme_references_name_its_sections() -> None:
    """`(README: "Problem management")` in a comment of `maildesk init`'s configuration
    names a heading of the README, or a term it explains in bold."""
    readme = (ROOT / "README.md").read_text()
    named = re.findall(r'README[:,] "([^"]+)"', (ROOT / "config" / "maildesk.yaml").read_text())
    assert "Problem management" in named and "Triage on arrival" in named
    for name in named:
        assert re.search(rf"^#+ {re.escape(name)}|\*\*{re.escape(name)}\*\*", readme, re.M), name
