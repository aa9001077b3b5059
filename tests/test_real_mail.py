"""The world's mail, not ours: `../shared/corpus` (about 870 messages from the test suites of
12 mail projects) through every intake path, and one bad mail among many at any position.

Every mail must end in a named state (a ticket, a follow-up, held with a verdict, a
duplicate, or quarantined with a reason), no command may print a traceback, and no mail
may be quarantined for having no sender or for a decoding error (issue 14).
"""
from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, run_cli, wait_for

from maildesk.app import App
from maildesk.intake import ahead
from maildesk.intake.inbound import Envelope
from maildesk.intake.sources import read
from maildesk.mail import parse as parse_module
from maildesk.mail.parse import Unread, parse_batch
from maildesk.pipeline.run import ingest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
STATES = {"ticketed", "duplicate", "refused", "spam", "quarantined", "auto-reply", "bulk",
          "loop", "bounce", "rating", "opted-out", "complaint"}
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(),
                                  reason=f"{CORPUS} not found (../shared beside the checkout)")


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.rglob("*") if p.is_file()
                  and p.name not in ("INDEX.tsv", "SOURCES.md"))


def corpus_mails() -> list[tuple[str, bytes]]:
    return [m for p in corpus_files() for m in read(p)]


def inbound_rows(cfg: Path) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(cfg.parent / "data" / "maildesk.db") as c:
        return c.execute("SELECT state, reason, origin FROM inbound ORDER BY id").fetchall()


def accounted_for(rows: list[tuple[str, str | None, str | None]], expected: int) -> None:
    assert len(rows) == expected, f"{len(rows)} mails stored of {expected} read"
    assert {state for state, _, _ in rows} <= STATES
    held = [(reason, origin) for state, reason, origin in rows if state == "quarantined"]
    assert all(reason for reason, _ in held)
    lost = [(r, o) for r, o in held if "no sender" in (r or "") or "decod" in (r or "").lower()
            or "Error" in (r or "")]
    assert not lost, lost[:5]


@needs_corpus
@pytest.mark.timeout(600)
def test_the_whole_corpus_as_one_import(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    files = [str(p) for p in corpus_files()]
    r = run_cli("ingest", "--format", "json", *files, config=cfg, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert b"Traceback" not in r.stderr
    said = json.loads(r.stdout)
    rows = inbound_rows(cfg)
    accounted_for(rows, len(corpus_mails()))
    assert sum(v for k, v in said.items() if k != "tickets") == len(rows)
    assert said["new_tickets"] > 500


@needs_corpus
@pytest.mark.timeout(900)
def test_the_corpus_file_by_file(desk_config: Callable[..., Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Each file its own `maildesk ingest` (in this process: 850 start-ups would take
    minutes), as an MTA's pipe would hand them over."""
    from maildesk.cli.main import cli
    cfg = desk_config()
    codes = []
    for path in corpus_files():
        try:
            cli.main(["--config", str(cfg), "ingest", "--no-progress", str(path)],
                     standalone_mode=False)
            codes.append(0)
        except SystemExit as e:
            codes.append(int(e.code or 0))
    out = capsys.readouterr()
    assert set(codes) == {0}
    assert "Traceback" not in out.err
    accounted_for(inbound_rows(cfg), len(corpus_mails()))


@needs_corpus
@pytest.mark.timeout(600)
def test_the_corpus_in_one_imap_folder(desk_config: Callable[..., Path]) -> None:
    from dovecot import Dovecot, available
    if not available():
        pytest.skip("dovecot not installed (apt-get install dovecot-imapd)")
    d = Dovecot().start()
    try:
        appended = 0
        with d.client() as c:
            for _origin, raw in corpus_mails():
                try:
                    c.append("INBOX", raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
                    appended += 1
                except Exception:  # noqa: BLE001 - what Dovecot refuses never reaches us
                    pass
        assert appended > 800
        cfg = desk_config(imap=[d.mailbox()])
        r = run_cli("fetch", "--format", "json", config=cfg, timeout=600)
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        assert b"Traceback" not in r.stderr
        accounted_for(inbound_rows(cfg), appended)
        with d.client() as c:
            c.select_folder("INBOX", readonly=True)
            assert c.search(["ALL"]) == [], "every mail was taken and moved"
    finally:
        d.cleanup()


# --- one bad mail among 600, at any position --------------------------------------------

def _mail(i: int) -> bytes:
    m = EmailMessage()
    m["From"] = f"user{i}@customer.test"
    m["To"] = "support@localhost"
    m["Subject"] = f"Request {i}"
    m["Message-ID"] = f"<r{i}@customer.test>"
    m.set_content(f"Please help with request {i}.\n")
    return m.as_bytes()


def _bad_padding(i: int) -> bytes:
    """base64 with its padding cut: the old parse-ahead path died on it (issue 14)."""
    return (f"From: pad{i}@customer.test\nTo: support@localhost\nSubject: Padding {i}\n"
            f"Message-ID: <pad{i}@customer.test>\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
            f"see the file\n--b\nContent-Type: application/pdf; name=x.pdf\n"
            f"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcfs\nj6IKMSAwIG9i\n"
            f"--b--\n").encode()


def _misspelt_charset(i: int) -> bytes:
    return (f"From: cs{i}@customer.test\nTo: support@localhost\nSubject: Charset {i}\n"
            f"Message-ID: <cs{i}@customer.test>\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; "
            f"charset=uft-8\n\nd\xc3\xa9j\xc3\xa0 vu\n--b\nContent-Type: text/plain; "
            f"charset=uft-8; name=notes.txt\nContent-Disposition: attachment\n\n"
            f"caf\xc3\xa9\n--b--\n").encode("latin-1")


POISON = b"\x00\x01\x02 this is no mail at all \xff\xfe\n" * 20   # no headers: unreadable
# a mail over limits.max_message_size (200KiB in these tests): held, and in an mbox it can be
# told apart (a mail without headers cannot: it reads as the previous mail's body)
BIG = b"From: big@customer.test\nSubject: big\n\n" + (b"x" * 76 + b"\n") * 4000


def six_hundred(position: int, poison: bytes = POISON) -> list[bytes]:
    """600 mails: the poison at `position` (1-based), mails that once crashed the import
    elsewhere, the rest plain."""
    mails = [_mail(i) for i in range(600)]
    mails[(position + 99) % 600] = _bad_padding(position)
    mails[(position + 299) % 600] = _misspelt_charset(position)
    mails[position - 1] = poison
    return mails


def as_mbox(mails: list[bytes]) -> bytes:
    return b"".join(b"From someone@example.test Mon Nov 23 10:00:00 2026\n" + m + b"\n"
                    for m in mails)


@pytest.mark.parametrize("position", [1, 201, 599])
def test_one_poison_mail_in_a_600_mail_mbox(desk_config: Callable[..., Path], tmp_path: Path,
                                            position: int) -> None:
    cfg = desk_config(limits={"max_message_size": "200KiB"})
    mbox = tmp_path / "600.mbox"
    mbox.write_bytes(as_mbox(six_hundred(position, BIG)))
    r = run_cli("ingest", "--format", "json", str(mbox), config=cfg, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    said = json.loads(r.stdout)
    assert (said["new_tickets"], said["quarantined"]) == (599, 1), said
    rows = inbound_rows(cfg)
    assert rows[position - 1][0] == "quarantined"
    assert rows[position - 1][2] == f"{mbox}#{position}"


@pytest.mark.parametrize("position", [1, 201, 599])
def test_one_poison_mail_in_a_600_mail_imap_folder_and_the_poller_goes_on(
        daemon: Callable[..., Daemon], position: int) -> None:
    from dovecot import Dovecot, available
    if not available():
        pytest.skip("dovecot not installed (apt-get install dovecot-imapd)")
    dv = Dovecot().start()
    try:
        dv.append(*six_hundred(position))
        d = daemon(imap=[dv.mailbox(poll_interval=1)])
        db = d.config.parent / "data" / "maildesk.db"

        def tickets() -> int:
            with sqlite3.connect(db) as c:
                return int(c.execute("SELECT count(*) FROM tickets").fetchone()[0])
        wait_for(lambda: tickets() == 599, 180, "599 tickets")
        dv.append(_mail(1000))
        try:
            wait_for(lambda: tickets() == 600, 60, "the mail after the poison")
        except AssertionError:
            raise AssertionError(d.log.read_text()[-3000:]) from None
        assert d.proc is not None and d.proc.poll() is None
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT count(*) FROM inbound WHERE state = 'quarantined'") \
                .fetchone()[0] == 1
        assert "Traceback" not in d.log.read_text()
        assert d.stop(signal.SIGTERM) == 0
    finally:
        dv.cleanup()


# --- a crash is the crashing mail's, on every path --------------------------------------

def test_a_crash_in_the_parse_worker_is_kept_with_its_mail(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = parse_module.parse

    def crashing(raw: bytes, *args: Any, **kw: Any) -> Any:
        if b"crash me" in raw:
            raise KeyError("a bug of ours")
        return real(raw, *args, **kw)
    monkeypatch.setattr(parse_module, "parse", crashing)
    out = parse_batch([(_mail(1), None), (b"Subject: crash me\n\nx", None), (_mail(2), None)])
    assert isinstance(out[1], Unread) and out[1].trace and "KeyError" in out[1].trace
    assert not isinstance(out[0], Unread) and not isinstance(out[2], Unread)


def test_a_crash_is_quarantined_with_its_traceback_and_shown(
        make_app: Callable[..., App], desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    import yaml
    app = make_app(**{k: v for k, v in yaml.safe_load(cfg.read_text()).items()
                      if k != "data_dir"})
    crash = Unread("KeyError: 'a bug of ours'", "Traceback (most recent call last):\n  ...\n"
                                                 "KeyError: 'a bug of ours'\n")
    env = Envelope("pipe", None, origin="crash.eml")
    s = ingest(app, [(_mail(1), env), (_mail(2), env)], parsed=[crash, parse_module.parse(
        _mail(2), "0" * 64)])
    assert (s.quarantined, s.new_tickets) == (1, 1)
    r = run_cli("quarantine", "show", "1", "--format", "json", config=cfg)
    shown = json.loads(r.stdout)
    assert "a bug of ours" in shown["reason"] and "Traceback" in shown["traceback"]
    text = run_cli("quarantine", "show", "1", config=cfg).stdout.decode()
    assert "traceback" in text and "please report it" in text


def test_a_dead_parse_worker_means_inline_parsing_not_a_lost_batch() -> None:
    future: Future[list[Any]] = Future()
    future.set_exception(BrokenProcessPool("the worker died"))
    batch, parsed = ahead._result(["batch"], future)
    assert (batch, parsed) == (["batch"], None)


@pytest.fixture
def refusing_database(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A database that refuses the values of one mail, returned, at the batch's write."""
    from maildesk.tickets import ledger
    real = ledger.Ledger.write

    def picky(self: ledger.Ledger) -> None:
        if any("refuse me" in str(m.values.get("subject", "")) for m in self.messages):
            raise ValueError("the database refuses this value")
        real(self)
    monkeypatch.setattr(ledger.Ledger, "write", picky)
    return _mail(7).replace(b"Subject: Request 7", b"Subject: refuse me")


def test_a_batch_the_database_refuses_is_taken_one_by_one(
        make_app: Callable[..., App], db_url: str, refusing_database: bytes) -> None:
    """One mail's values the database refuses (PostgreSQL and a lone surrogate, a field
    too long, a race on a unique key): that mail is quarantined, the batch is kept."""
    app = make_app(db_url)
    bad = refusing_database
    env = Envelope("pipe", None)
    s = ingest(app, [(_mail(1), env), (bad, env), (_mail(2), env)])
    assert (s.new_tickets, s.quarantined) == (2, 1)
    with app.engine.connect() as c:
        from sqlalchemy import text
        row = c.execute(text("SELECT reason, traceback FROM inbound WHERE state = "
                             "'quarantined'")).one()
    assert "refuses this value" in row[0] and "Traceback" in row[1]


def test_the_smtp_workers_batch_is_taken_one_by_one_too(
        make_app: Callable[..., App], db_url: str, refusing_database: bytes) -> None:
    """The worker that drains what the SMTP listener accepted: same isolation."""
    from sqlalchemy import text

    from maildesk.intake.inbound import accept
    from maildesk.pipeline.run import drain
    app = make_app(db_url)
    env = Envelope("smtp", "a@customer.test", ("support@localhost",))
    accept(app, [(raw, env) for raw in (_mail(1), refusing_database, _mail(2))])
    s = drain(app)
    assert (s.new_tickets, s.quarantined) == (2, 1)
    with app.engine.connect() as c:
        row = c.execute(text("SELECT id, reason, traceback FROM inbound WHERE state = "
                             "'quarantined'")).one()
        assert c.execute(text("SELECT count(*) FROM inbound WHERE state = 'queued'")) \
            .scalar() == 0
    assert row[0] == 2 and "refuses this value" in row[1] and "Traceback" in row[2]


def test_an_acknowledgement_that_cannot_be_composed_fails_and_the_ticket_stands(
        make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import select

    from maildesk.core import outbox
    from maildesk.store.models import Event, OutboxMail, Ticket

    def broken(_out: Any) -> bytes:
        raise UnicodeEncodeError("ascii", "ü", 0, 1, "a header the relay cannot take")
    monkeypatch.setattr(outbox, "compose", broken)
    app = make_app()
    s = ingest(app, [(_mail(1), Envelope("pipe", None))])
    assert (s.new_tickets, s.quarantined) == (1, 0)
    with app.sessions() as session:
        row = session.scalars(select(OutboxMail)).one()
        assert row.status == "failed" and "could not compose" in (row.last_error or "")
        assert session.scalars(select(Ticket)).one().ref == "MD-1"
        kinds = [e.kind for e in session.scalars(select(Event))]
    assert "notification.failed" in kinds


def test_a_nul_in_a_message_id_does_not_stall_intake(make_app: Callable[..., App],
                                                     db_url: str) -> None:
    """Issue 15 finding 4: PostgreSQL refuses NUL in text; that mail alone is held, the
    batch around it and the mail after it go on, on the pipe and on the SMTP worker."""
    from maildesk.intake.inbound import accept
    from maildesk.pipeline.run import drain
    app = make_app(db_url)
    nul = _mail(5).replace(b"<r5@customer.test>", b"<r5\x00x@customer.test>")
    s = ingest(app, [(_mail(1), Envelope("pipe", None)), (nul, Envelope("pipe", None)),
                     (_mail(2), Envelope("pipe", None))])
    assert s.new_tickets + s.quarantined == 3 and s.new_tickets >= 2
    env = Envelope("smtp", "a@customer.test", ("support@localhost",))
    accept(app, [(raw, env) for raw in (_mail(3), nul.replace(b"r5", b"r6"), _mail(4))])
    s = drain(app)
    assert s.new_tickets + s.quarantined == 3 and s.new_tickets >= 2
