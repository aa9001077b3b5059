"""A desk's first day, played as the README tells it, against a real `maildesk serve`, the
real CLI and real SMTP: the quick start as written; a customer's two tickets in a minute;
an agent answering each kind of mail the desk sends agents; pipe and cron without the
daemon; report and digest on a new desk; an import of old mail; Postfix's `+` addresses.
What a customer or an agent would read is read from the outbox maildir, as they would."""
from __future__ import annotations

import email
import os
import re
import shlex
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
import yaml
from conftest import Daemon, run_cli, wait_for

README = Path(__file__).resolve().parent.parent / "README.md"
CUSTOMER = "ana@customer.test"
BOB = "bob@desk.test"
AGENTS = [{"name": "bob", "address": BOB, "queues": ["general"]}]


def quick_start() -> list[list[str]]:
    """The commands of the README's quick start after the daemon runs, as argv lists."""
    text = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    after = text.split("Then, in another terminal", 1)[1]
    commands, line = [], ""
    for part in re.findall(r"^    (.+)$", after, re.MULTILINE):
        line += part.strip()
        if line.endswith("\\"):
            line = line[:-1]
            continue
        commands.append(shlex.split(line.split("  #", 1)[0]))
        line = ""
    return commands


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def maildesk(argv: list[str]) -> list[str]:
    """`maildesk ...` as this Python runs it (the checkout under test, not an installed one)."""
    return [sys.executable, "-m", "maildesk", *argv[1:]] if argv[0] == "maildesk" else argv


def mails(outbox: Path) -> list[EmailMessage]:
    """What the desk sent, oldest first, as the people it wrote to will read it."""
    files = sorted((p for d in ("new", "cur") for p in (outbox / d).glob("*")),
                   key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in files]


def to(m: EmailMessage) -> str:
    return str(m["To"].addresses[0].addr_spec)


def text(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def reply_to(m: EmailMessage) -> str:
    return str(m["Reply-To"].addresses[0].addr_spec)


def a_mail(sender: str, rcpt: str, subject: str, body: str, *, headers: str = "",
           answering: EmailMessage | None = None, date: datetime | None = None) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    m["Date"] = format_datetime(date or datetime.now(timezone.utc))
    if answering is not None:
        m["In-Reply-To"] = answering["Message-ID"]
        m["References"] = answering["Message-ID"]
    m.set_content(body)
    return headers.encode() + m.as_bytes()


def smtp(port: int, sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.sendmail(sender, [rcpt], raw)


class Desk:
    """A running desk and what it sent."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.outbox = d.config.parent / "data" / "outbox"
        self.seen: set[str] = set()

    def next_mail(self, who: str, what: str = "mail") -> EmailMessage:
        """The oldest mail to who not taken yet (each is taken once)."""
        def found() -> EmailMessage | None:
            for m in mails(self.outbox):
                if to(m) == who and m["Message-ID"] not in self.seen:
                    self.seen.add(m["Message-ID"])
                    return m
            return None
        return wait_for(found, 60, f"{what} to {who}")  # type: ignore[no-any-return]

    def send(self, sender: str, rcpt: str, raw: bytes) -> None:
        smtp(self.d.port, sender, rcpt, raw)

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run_cli(*args, config=self.d.config)


@pytest.fixture
def desk(daemon: Callable[..., Daemon]) -> Iterator[Desk]:
    d = daemon(desk={"agents": AGENTS, "ack_window": 3600, "ack_limit": 10,
                     "trusted_relays": ["127.0.0.1"],
                     "trusted_authserv_ids": ["mx.desk.test"]})
    yield Desk(d)
    assert d.stop() == 0, "a clean stop"


# -- the quick start, as written ---------------------------------------------------------

def test_the_readme_quick_start_as_written(tmp_path: Path) -> None:
    commands = quick_start()
    assert [c[0] for c in commands] == ["swaks", "maildesk", "maildesk", "maildesk"]
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed (.ci/run installs it)")
    if listening(2525):
        pytest.skip("127.0.0.1:2525, the embedded default's port, is taken")
    env = {k: v for k, v in os.environ.items() if k != "MAILDESK_CONFIG"}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "maildesk", "serve"], cwd=tmp_path,
                             env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: serve.poll() is None and listening(2525), 30,
                 "maildesk serve on 127.0.0.1:2525")
        out = [subprocess.run(maildesk(c), cwd=tmp_path, env=env, capture_output=True,
                              timeout=120) for c in commands]
        assert all(r.returncode == 0 for r in out), [r.stderr for r in out]
        assert b"250" in out[0].stdout, "swaks: accepted"
        assert re.search(rb"MD-1 .*Printer on floor 2 is jammed", out[1].stdout)
        assert b"It blinks red." in out[2].stdout
        assert b"acknowledgement" in out[3].stdout
        ack = wait_for(lambda: mails(tmp_path / "maildesk-data" / "outbox"), 30,
                       "the acknowledgement in maildesk-data/outbox/new/")[0]
        assert to(ack) == "ana@example.org" and "[MD-1]" in ack["Subject"]
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        log.close()


# -- customers ---------------------------------------------------------------------------

def test_two_tickets_from_one_customer_in_a_minute_are_both_acknowledged(desk: Desk) -> None:
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "Printer jammed", "Floor 2."))
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "VPN down", "Since 9:00."))
    first = desk.next_mail(BOB, "bob's notice of MD-1")
    assert "[MD-1]" in first["Subject"]
    acks = [m for m in wait_for(lambda: [m for m in mails(desk.outbox) if to(m) == CUSTOMER]
                                if len([m for m in mails(desk.outbox) if to(m) == CUSTOMER])
                                == 2 else None, 60, "two acknowledgements")]
    assert sorted(re.findall(r"\[MD-\d\]", " ".join(m["Subject"] for m in acks))) == \
        ["[MD-1]", "[MD-2]"]
    assert all("We have received your message" in text(m) for m in acks)


def test_postfix_plus_addresses_thread_replies(desk: Desk, tmp_path: Path) -> None:
    """With `recipient_delimiter = +` the MTA hands support+TOKEN@ to the desk: by SMTP
    and by the pipe (`--recipient ${original_recipient}`), a reply finds its ticket."""
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "Printer jammed", "Floor 2."))
    ack = desk.next_mail(CUSTOMER, "the acknowledgement")
    token = reply_to(ack)
    assert re.fullmatch(r"support\+md-1-\w+@localhost", token)
    desk.send(CUSTOMER, token, a_mail(CUSTOMER, token, "Re: printer", "Still jammed.",
                                      answering=ack))
    raw = a_mail(CUSTOMER, token, "another word", "And it beeps.")
    r = run_cli("ingest", "--sender", CUSTOMER, "--recipient", token, config=desk.d.config,
                input=raw)
    assert r.returncode == 0, r.stderr
    shown = wait_for(lambda: (lambda t: t if t.count(b"\nin ") == 3 else None)(
        desk.cli("tickets", "show", "MD-1").stdout), 30, "three mails on MD-1")
    assert b"Still jammed." in shown and b"And it beeps." in shown
    assert b"MD-2" not in desk.cli("tickets", "list").stdout


# -- agents ------------------------------------------------------------------------------

def test_an_agent_answers_each_kind_of_desk_mail(desk: Desk) -> None:
    """A new-ticket notice, a customer's reply, a command error, the history, the list of
    what waits: each answered from a mail client, as the mail says, and each does its
    thing."""
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "Printer jammed", "Floor 2, red light."))
    ack = desk.next_mail(CUSTOMER, "the acknowledgement")
    notice = desk.next_mail(BOB, "the new-ticket notice")
    assert "New ticket MD-1" in text(notice) and "Floor 2, red light." in text(notice)

    # 1. the new-ticket notice: answered with a command and words for the customer
    desk.send(BOB, reply_to(notice), a_mail(BOB, reply_to(notice), "Re: " + notice["Subject"],
                                            "#assign me\nIs it tray 2?", answering=notice))
    relayed = desk.next_mail(CUSTOMER, "bob's answer")
    assert text(relayed).startswith("Is it tray 2?") and BOB not in relayed.as_string()
    assert relayed["In-Reply-To"] == ack["Message-ID"]

    # 2. the customer's reply, as bob hears of it
    desk.send(CUSTOMER, reply_to(relayed), a_mail(CUSTOMER, reply_to(relayed),
                                                  "Re: " + relayed["Subject"],
                                                  "Yes, tray 2.", answering=relayed))
    heard = desk.next_mail(BOB, "the customer's reply")
    assert "The customer wrote on MD-1" in text(heard) and "Yes, tray 2." in text(heard)
    desk.send(BOB, reply_to(heard), a_mail(BOB, reply_to(heard), "Re: x", "#status bogus\n",
                                           answering=heard))

    # 3. the command error
    error = desk.next_mail(BOB, "the command error")
    assert "bogus" in text(error)
    desk.send(BOB, reply_to(error), a_mail(BOB, reply_to(error), "Re: x", "#history\n",
                                           answering=error))

    # 4. the history
    history = desk.next_mail(BOB, "the history")
    assert [w in text(history) for w in ("Floor 2, red light.", "Is it tray 2?",
                                         "Yes, tray 2.")] == [True] * 3
    desk.send(BOB, reply_to(history), a_mail(BOB, reply_to(history), "Re: x",
                                             "#status resolved\nTray 2 is fixed.",
                                             answering=history))
    fixed = desk.next_mail(CUSTOMER, "bob's last answer")
    assert text(fixed).startswith("Tray 2 is fixed.")
    assert "Service Desk | MD-1" in text(fixed), "the desk's footer"

    # 5. what waits: asked of the desk itself, proven by the MTA's Authentication-Results
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "VPN down", "Since 9:00."))
    desk.next_mail(CUSTOMER, "the acknowledgement of MD-2")
    desk.next_mail(BOB, "the new-ticket notice of MD-2")
    proven = "Authentication-Results: mx.desk.test; dkim=pass header.d=desk.test\n"
    desk.send(BOB, "support@localhost", a_mail(BOB, "support@localhost", "todo",
                                               "#mine\n#unassigned\n", headers=proven))
    view = desk.next_mail(BOB, "what waits")
    assert view["Subject"] == "Assigned to you: 0; Unassigned: 1"
    address = re.search(r"reply: (support\+md-2-\w+@localhost)", text(view))
    assert address, text(view)
    desk.send(BOB, address.group(1), a_mail(BOB, address.group(1), "Re: VPN",
                                            "#assign me\nI'll call you.", answering=view))
    call = desk.next_mail(CUSTOMER, "bob's answer on MD-2")
    assert text(call).startswith("I'll call you.") and "[MD-2]" in call["Subject"]
    listed = desk.cli("tickets", "list", "--assignee", "bob", "--format", "json")
    assert listed.returncode == 0 and b'"MD-2"' in listed.stdout and b'"MD-1"' in listed.stdout


# -- without the daemon ------------------------------------------------------------------

def test_pipe_and_cron_deliver_without_the_daemon(desk_config: Callable[..., Path],
                                                  tmp_path: Path) -> None:
    cfg = desk_config()
    outbox = tmp_path / "data" / "outbox"
    raw = a_mail(CUSTOMER, "support@localhost", "Printer jammed", "Floor 2.")
    r = run_cli("ingest", "--sender", CUSTOMER, "--recipient", "support@localhost",
                config=cfg, input=raw)
    assert r.returncode == 0, r.stderr
    assert mails(outbox) == [], "queued: only the daemon or cron sends"
    # the README's cron line, as the desk's user would have it
    cron = re.search(r"^    \*/5 \* \* \* \* (\S+) --config \S+ (jobs run)$", README.read_text(),
                     re.MULTILINE)
    assert cron, "the README's cron line for pipe intake"
    r = run_cli(*cron.group(2).split(), config=cfg)
    assert r.returncode == 0, r.stderr
    sent = mails(outbox)
    assert [to(m) for m in sent] == [CUSTOMER] and "[MD-1]" in sent[0]["Subject"]
    assert run_cli(*cron.group(2).split(), config=cfg).returncode == 0
    assert len(mails(outbox)) == 1, "each mail leaves once"


def test_report_and_digest_on_a_new_desk(desk_config: Callable[..., Path],
                                         tmp_path: Path) -> None:
    cfg = desk_config(digest={"to": ["boss@desk.test"]})
    r = run_cli("report", config=cfg)
    assert r.returncode == 66 and r.stderr.startswith(b"maildesk: no desk at "), \
        "no desk yet: said, and none made"
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    for fmt in ("table", "json", "csv"):
        r = run_cli("report", "--format", fmt, config=cfg)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, (fmt, r.stderr)
    r = run_cli("report", "--format", "html", "--out", str(tmp_path / "r.html"), config=cfg)
    assert r.returncode == 0 and "<html" in (tmp_path / "r.html").read_text().lower()
    r = run_cli("jobs", "run", "digest", "--force", config=cfg)
    assert r.returncode == 0, r.stderr
    digest = mails(tmp_path / "data" / "outbox")
    assert [to(m) for m in digest] == ["boss@desk.test"]
    assert "0 new, 0 open" in digest[0]["Subject"]


def test_an_import_of_old_mail_then_live_mail(daemon: Callable[..., Daemon],
                                              tmp_path: Path) -> None:
    old = datetime(2024, 3, 4, 9, 0, tzinfo=timezone.utc)
    box = tmp_path / "old.mbox"
    box.write_bytes(b"".join(
        b"From ana@customer.test Mon Mar  4 09:00:00 2024\n"
        + a_mail(CUSTOMER, "support@localhost", f"old case {i}", "From last year.",
                 date=old.replace(day=4 + i)) + b"\n" for i in range(3)))
    d = daemon(desk={"agents": AGENTS})
    r = run_cli("ingest", "--history", str(box), config=d.config)
    assert r.returncode == 0, r.stderr
    desk = Desk(d)
    desk.send(CUSTOMER, "support@localhost", a_mail(CUSTOMER, "support@localhost",
                                                    "new case", "From today."))
    ack = desk.next_mail(CUSTOMER, "today's acknowledgement")
    assert "[MD-4]" in ack["Subject"]
    assert [to(m) for m in mails(desk.outbox)].count(CUSTOMER) == 1, "old mail: nothing sent"
    report = run_cli("report", "--from", "2024-03-01", "--to", "2024-03-31", "--format",
                     "json", config=d.config)
    assert report.returncode == 0 and '"created": 3' in report.stdout.decode().replace(
        "\n", " ").replace("  ", " ")
    assert d.stop() == 0
    assert yaml.safe_load(d.config.read_text())["desk"]["agents"] == AGENTS
