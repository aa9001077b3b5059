"""The daemon's log: one line a record, JSON on request, an event a line, floods counted.

A real `maildesk serve` writes its log to a file (conftest's Daemon); mail goes
in by SMTP and out through a real relay; the log is read as an operator's
collector would read it.
"""
from __future__ import annotations

import email
import json
import logging
import smtplib
import sqlite3
from collections.abc import Callable, Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import Daemon, free_port, mail, run_cli, wait_for
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from maildesk.errors import error_line
from maildesk.logs import JsonFormatter, RepeatFilter, TextFormatter

DESK = {"queues": [{"name": "general", "group": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
# a subject whose encoded word decodes to CR LF and the escape that turns a terminal red
HOSTILE = b"=?utf-8?q?VPN_down=0D=0AFAKE_ERROR_=1B[31mred?="


def hostile_mail() -> bytes:
    return mail(subject="placeholder", message_id="<hostile@customer.test>").replace(
        b"Subject: placeholder", b"Subject: " + HOSTILE)


class Relay:
    """The desk's relay: accepts everything and keeps it."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler, port = Relay(), free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield handler, port
    ctl.stop()


def send(d: Daemon, raw: bytes, rcpts: list[str] | None = None,
         sender: str = "ana@customer.test") -> None:
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail(sender, rcpts or ["support@localhost"], raw.replace(b"\n", b"\r\n"))


def records(d: Daemon) -> list[dict[str, Any]]:
    """Every line of the log as JSON: a line that is not is a failure here."""
    return [json.loads(line) for line in d.log.read_text().splitlines()]


def event(d: Daemon, message: str, **fields: Any) -> dict[str, Any] | None:
    return next((r for r in records(d) if r["message"] == message
                 and all(r.get(k) == v for k, v in fields.items())), None)


def test_json_log_says_each_event_in_one_object_a_line(
        daemon: Callable[..., Daemon], relay: tuple[Relay, int]) -> None:
    handler, port = relay
    d = daemon(desk=DESK, log={"format": "json"},
               outbox={"transport": "smtp", "relay": {"host": "127.0.0.1", "port": port,
                                                      "starttls": False}})
    send(d, mail(message_id="<one@customer.test>"))
    opened = wait_for(lambda: event(d, "ticket opened", ref="MD-1"), what="MD-1 opened")
    assert (opened["level"], opened["logger"], opened["queue"], opened["source"]) == \
        ("INFO", "maildesk.pipeline", "general", "smtp")
    assert opened["time"].endswith("Z") and opened["time"][10] == "T", "ISO 8601, UTC"
    accepted = event(d, "mail accepted", inbound_id=opened["inbound_id"])
    assert accepted and accepted["sender_domain"] == "customer.test" and accepted["size"] > 0

    # the agent's notice goes out through the relay; the agent answers its Reply-To
    def notice() -> email.message.EmailMessage | None:
        for rcpts, raw in handler.received:
            if rcpts == ["bob@desk.test"]:
                return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]
        return None
    reply_to = wait_for(notice, what="bob's notice")["Reply-To"].addresses[0].addr_spec
    answer = mail(subject="Re: [MD-1] Printer", sender="Bob <bob@desk.test>",
                  message_id="<bob1@desk.test>", body="Open tray 2.\n")
    send(d, answer, rcpts=[reply_to], sender="bob@desk.test")
    updated = wait_for(lambda: event(d, "ticket updated", ref="MD-1"), what="the update")
    assert updated["by"] == "bob" and "agent.replied" in updated["changed"]
    delivered = wait_for(lambda: [r for r in records(d) if r["message"] == "mail delivered"
                                  and r.get("recipient_domain") == "customer.test"
                                  and r.get("template") == "agent.reply"],
                         what="the relayed reply")
    assert delivered[0]["ref"] == "MD-1" and delivered[0]["code"] == "250"
    assert "ana@customer.test" not in d.log.read_text(), "a customer's domain only"

    send(d, hostile_mail())
    hostile = wait_for(lambda: event(d, "ticket opened", ref="MD-2"), what="MD-2 opened")
    assert hostile["subject"] == "VPN down FAKE ERROR [31mred"
    raw = d.log.read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw
    assert d.stop() == 0
    assert all(r["message"] != "FAKE ERROR" for r in records(d)), "no line of its own"


def test_text_log_is_one_line_a_record_and_a_flood_is_counted(
        daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {name: tag it, on: ticket.created, then: [{tags: {add: [x]}}]}\n")
    d = daemon(rules=[str(rules)], log={"repeats": 3, "repeat_window": "2s"})
    send(d, hostile_mail())
    wait_for(lambda: "ticket opened" in d.log.read_text(), what="the ticket")
    opened = next(line for line in d.log.read_text().splitlines() if "ticket opened" in line)
    assert " INFO maildesk.pipeline: ticket opened ref=MD-1 " in opened
    assert 'subject="VPN down FAKE ERROR [31mred"' in opened
    assert "\x1b" not in d.log.read_text()

    # rules that do not load: one line, where and what to do
    rules.write_text("- {name: broken, on: ticket.created, if: {subjekt: x}, then: []}\n")
    wait_for(lambda: "keeping the 1 running rules" in d.log.read_text(), 30, "the refusal")
    refused = next(line for line in d.log.read_text().splitlines() if "running rules" in line)
    assert f"{rules}:1:43: unknown field 'subjekt'" in refused
    assert "rules file changed but rules not loaded: " in refused
    assert "`maildesk rules check`" in refused

    # the database loses a table: every mail is refused with the same one-line error
    with sqlite3.connect(tmp_path / "data" / "maildesk.db") as c:
        c.execute("DROP TABLE inbound")
    for _ in range(12):
        with pytest.raises(smtplib.SMTPDataError):
            send(d, mail())
    log = d.log.read_text()
    errors = [line for line in log.splitlines() if "could not store a message" in line]
    assert len(errors) == 3, "three, then counted"
    assert errors[0].endswith("OperationalError: no such table: inbound [SQLITE_ERROR]")
    assert "[SQL:" not in log and "Background on this error" not in log
    assert d.stop() == 0          # the count of a window not yet over is written at the end
    summary = [line for line in d.log.read_text().splitlines() if "repeated" in line]
    assert len(summary) == 1 and "repeated 9 more times in the last" in summary[0]
    assert all(line[:4].isdigit() for line in d.log.read_text().splitlines()), \
        "every line starts a record"


def test_the_old_log_level_setting_is_log_level(desk_config: Callable[..., Path]) -> None:
    ok = desk_config(log_level="warning")
    r = run_cli("config", "check", config=ok)
    assert r.returncode == 0, r.stderr
    r = run_cli("config", "check", config=desk_config(log_level="warning",
                                                      log={"level": "info"}))
    assert r.returncode == 78
    assert b"log_level and log.level both set" in r.stderr and b"Traceback" not in r.stderr
    r = run_cli("config", "check", config=desk_config(log={"format": "xml"}))
    assert r.returncode == 78 and b"Traceback" not in r.stderr


def test_error_line_is_the_first_line_and_the_code() -> None:
    engine = create_engine("sqlite://")
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT * FROM nowhere WHERE x = 'ana@customer.test'"))
    assert "\n" in str(caught.value), "SQLAlchemy's own text is several lines"
    assert error_line(caught.value) == "OperationalError: no such table: nowhere [SQLITE_ERROR]"
    assert error_line(RuntimeError()) == "RuntimeError"


def record(msg: str, *args: object, level: int = logging.ERROR, **extra: Any
           ) -> logging.LogRecord:
    r = logging.LogRecord("maildesk.t", level, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_formatters_fold_messages_fields_and_tracebacks() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        import sys
        r = record("boom\r\nsecond line %s", "\x1b[31mred", ref="MD-1", subject="a\nb")
        r.exc_info = sys.exc_info()
    line = TextFormatter().format(r)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "boom second line [31mred ref=MD-1 subject=\"a b\" | Traceback (most recent" in line
    assert line.endswith(' | raise ValueError("first\\nsecond") | ValueError: first | second')
    out = json.loads(JsonFormatter().format(r))
    assert (out["message"], out["ref"], out["subject"]) == \
        ("boom second line [31mred", "MD-1", "a b")
    assert out["traceback"].startswith("Traceback (most recent call last): | ")


def test_repeats_are_counted_per_message_and_events_never() -> None:
    now = [0.0]
    said: list[logging.LogRecord] = []
    f = RepeatFilter(said.append, limit=2, window=60, clock=lambda: now[0])
    shown = [f.filter(record("db down: %s", i)) for i in range(5)]
    assert shown == [True, True, False, False, False]
    assert f.filter(record("other: %s", 1)), "another message has its own count"
    assert all(f.filter(record("mail delivered", level=logging.INFO)) for _ in range(50))
    assert said == []
    now[0] = 61.0
    assert f.filter(record("db down: %s", 9)), "a new window"
    assert [s.getMessage() for s in said] == \
        ["db down: 4 ... repeated 3 more times in the last 61 s"]
    f.flush(force=True)
    assert len(said) == 1, "nothing held back since"


def test_mail_taken_from_a_pipe_is_logged_once_committed(
        make_app: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    """A pipe's mail has its inbound id only once the batch is written: every line about it
    names that id (the one `maildesk quarantine show` takes), and is said after the commit."""
    from maildesk.intake.inbound import Envelope
    from maildesk.pipeline.run import ingest
    app = make_app()
    with caplog.at_level(logging.INFO, "maildesk.pipeline"):
        ingest(app, [(mail(), Envelope("pipe", "ana@customer.test")),
                     (b"no headers at all\n", Envelope("pipe", "eve@other.test"))])
    said = [(r.getMessage().split(":")[0], r.levelname, r.__dict__.get("source"),
             r.__dict__.get("sender_domain"), r.__dict__.get("ref"),
             r.__dict__.get("inbound_id")) for r in caplog.records]
    with app.engine.connect() as c:
        ids = dict(c.execute(text("SELECT state, id FROM inbound")).all())
    assert said == [("mail taken", "INFO", "pipe", "customer.test", None, ids["ticketed"]),
                    ("ticket opened", "INFO", "pipe", None, "MD-1", ids["ticketed"]),
                    ("mail taken", "INFO", "pipe", "other.test", None, ids["quarantined"]),
                    ("quarantined a mail", "WARNING", "pipe", None, None, ids["quarantined"])]
    assert "ana@customer.test" not in caplog.text


def test_mail_that_opens_no_ticket_says_why_in_a_line_of_its_own(
        make_app: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    """A duplicate, an auto-reply: each its own line with its inbound id and state, so that
    an operator finds in the log where an accepted mail went."""
    from maildesk.intake.inbound import Envelope
    from maildesk.pipeline.run import ingest
    app = make_app()
    first = mail(message_id="<once@customer.test>")
    away = mail(message_id="<away@customer.test>", subject="Out of office",
                **{"Auto-Submitted": "auto-replied"})
    with caplog.at_level(logging.INFO, "maildesk.pipeline"):
        ingest(app, [(first, Envelope("pipe", "ana@customer.test")),
                     (first, Envelope("pipe", "ana@customer.test")),
                     (away, Envelope("pipe", "bo@other.test"))])
    kept = [(r.getMessage(), r.__dict__["state"], r.__dict__["sender_domain"],
             r.__dict__["inbound_id"]) for r in caplog.records
            if r.getMessage().startswith("mail kept")]
    with app.engine.connect() as c:
        ids = dict(c.execute(text("SELECT state, id FROM inbound WHERE state != 'ticketed'"))
                   .all())
    assert len(ids) == 2, ids
    assert sorted(kept) == sorted(
        (f"mail kept without a ticket ({state})", state, domain, i)
        for (state, i), domain in zip(sorted(ids.items(), key=lambda x: x[1]),
                                      ["customer.test", "other.test"]))


def test_a_job_failing_on_a_dropped_table_logs_one_line(make_app: Callable[..., Any]) -> None:
    import io

    from maildesk.scheduler import service
    from maildesk.scheduler.jobs import jobs_for
    app = make_app()
    with app.engine.begin() as conn:
        conn.execute(text("DROP TABLE sla_clocks"))
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    jobs = logging.getLogger("maildesk.jobs")
    jobs.addHandler(handler)
    try:
        service._tick(app, next(j for j in jobs_for(app) if j.name == "sla_scan"), lambda: None)
    finally:
        jobs.removeHandler(handler)
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().rstrip().endswith(
        "ERROR maildesk.jobs: job sla_scan failed: OperationalError: no such table: sla_clocks "
        "[SQLITE_ERROR] job=sla_scan"), "no statement, no traceback: the database's fault"


def test_other_commands_log_in_the_desks_format_from_warning_up(
        desk_config: Callable[..., Path], tmp_path: Path) -> None:
    """`maildesk ingest` from a pipe or cron logs as the daemon would (json here, one
    object a line), but only what needs an operator: its own summary line says the rest,
    and an INFO line per mail would only repeat it."""
    cfg = desk_config(log={"format": "json", "level": "info"},
                      limits={"max_message_size": "1KiB"})
    (tmp_path / "big.eml").write_bytes(mail(body="x" * 3000))
    (tmp_path / "small.eml").write_bytes(mail(message_id="<small@customer.test>"))
    r = run_cli("ingest", str(tmp_path / "big.eml"), str(tmp_path / "small.eml"), config=cfg)
    assert r.returncode == 0, r.stderr
    *log, summary = [json.loads(line) for line in r.stderr.decode().splitlines()]
    assert [(x["level"], x["message"].split(":")[0]) for x in log] == [
        ("WARNING", f"quarantined {tmp_path / 'big.eml'}")], log
    assert summary["message"].startswith("ingested 2 messages: 1 new ticket"), summary
    assert (summary["logger"], summary["new_tickets"], summary["quarantined"],
            summary["tickets"]) == ("maildesk.ingest", 1, 1, ["MD-1"])


def test_libraries_chatter_is_kept_out(capsys: pytest.CaptureFixture[str]) -> None:
    """flufl.bounce says INFO for each detector it runs on each mail, dkimpy ERROR for each
    signature whose key is not in DNS: ordinary mail, not the operator's business."""
    from maildesk.logs import setup
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        setup("info", "json")
        logging.getLogger("flufl.bounce").info("Running detector: <class ...>")
        logging.getLogger("dkimpy").error("missing public key: b'default._domainkey.hse.ru.'")
        logging.getLogger("maildesk.pipeline").info("mail taken")
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in kept[0]:
            root.addHandler(h)
        root.setLevel(kept[1])
    said = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert said == ["mail taken"]
