"""Held mail and the operator's hands on it; limits that cut what a hostile mail may cost."""
from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, run_cli
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import drain, ingest
from maildesk.store.models import Inbound
from maildesk.tickets.listing import list_tickets
from maildesk.tickets.views import show_ticket

SMTP = Envelope("smtp", "someone@customer.test", ("support@localhost",))


def held(cfg: Path, state: str = "all") -> list[dict[str, Any]]:
    r = run_cli("quarantine", "list", "--state", state, "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def tickets(app: App) -> list[dict[str, Any]]:
    with app.sessions() as s:
        return list_tickets(s.connection())[::-1]     # oldest first


def test_show_prints_no_control_character_an_envelope_carried(
        desk_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    """An envelope is hostile input too (an IMAP origin, a row stored before `ingest`
    refused controls): `show` neutralises it as `list` does, never an escape sequence or a
    line break of the sender's on the operator's terminal."""
    cfg, app = desk_config(), make_app()
    evil = Envelope("pipe", "evil\x1b[31m\r\nx@example.net", ("support@localhost\x1b[2J",),
                    origin="mbox\x07#1")
    ingest(app, [(b"\x00 not a mail\n", evil)])
    [row] = held(cfg)
    r = run_cli("quarantine", "show", str(row["id"]), config=cfg)
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout and b"\r" not in r.stdout and b"\x07" not in r.stdout
    assert "mail from: evil\ufffd[31m\ufffd\ufffdx@example.net\n" in r.stdout.decode()


def test_a_duplicate_is_listed_and_shown_but_never_made_a_ticket_again(
        desk_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    """Every mail accepted is accounted for: one that came again is kept without a ticket,
    and `list --state all` shows it beside the held; release does not take it (its first
    copy has the ticket)."""
    cfg, app = desk_config(), make_app()
    again = mail(message_id="<twice@customer.test>")
    ingest(app, [(again, SMTP)])
    ingest(app, [(again, SMTP)])
    [dup] = held(cfg)
    assert dup["state"] == "duplicate" and held(cfg, "duplicate") == [dup]
    assert held(cfg, "quarantined") == []
    r = run_cli("quarantine", "show", str(dup["id"]), config=cfg)
    assert r.returncode == 0 and b"state: duplicate" in r.stdout
    r = run_cli("quarantine", "release", str(dup["id"]), config=cfg)
    assert r.returncode == 66 and b"not held mail" in r.stderr
    assert len(tickets(app)) == 1


def test_show_release_and_delete_held_mail(desk_config: Callable[..., Path],
                                           make_app: Callable[..., App], db_url: str) -> None:
    desk = {"trust_spam_headers": True}
    cfg, app = desk_config(db_url, desk=desk), make_app(db_url, desk=desk)
    spam = mail(subject="Cheap watches", message_id="<spam@customer.test>",
                X_Spam_Flag="YES")
    garbage = b"\x00\x01 not a mail at all\n"
    ingest(app, [(spam, SMTP), (garbage, SMTP), (mail(message_id="<ok@customer.test>"), SMTP)])
    assert [h["state"] for h in held(cfg)] == ["spam", "quarantined"]
    assert [h["state"] for h in held(cfg, "quarantined")] == ["quarantined"]
    spam_id, bad_id = (h["id"] for h in held(cfg))

    r = run_cli("quarantine", "show", str(spam_id), config=cfg)
    assert r.returncode == 0 and b"X-Spam-Flag: YES" in r.stdout and b"upstream filter" in r.stdout
    info = json.loads(run_cli("quarantine", "show", str(spam_id), "--format", "json",
                              config=cfg).stdout)
    assert info["mail_from"] == "someone@customer.test" and ["Subject", "Cheap watches"] \
        in info["headers"]
    assert run_cli("quarantine", "show", str(bad_id), "--raw", config=cfg).stdout == garbage
    # never to a terminal: a hostile mail's escape sequences would run there
    import pty
    import subprocess
    import sys
    terminal, tty = pty.openpty()
    r = subprocess.run([sys.executable, "-m", "maildesk", "--config", str(cfg), "quarantine",
                        "show", str(bad_id), "--raw"], stdout=tty, stderr=subprocess.PIPE,
                       timeout=60)
    os.close(tty)
    os.close(terminal)
    assert r.returncode == 64 and b"--raw writes the mail's bytes as they are" in r.stderr
    missing = run_cli("quarantine", "show", "999", config=cfg)
    assert missing.returncode == 66
    assert b"no mail kept without a ticket with id 999" in missing.stderr

    # release: the spam and the unreadable mail become tickets; the unreadable one carries
    # the original as an attachment
    r = run_cli("quarantine", "release", str(spam_id), str(bad_id), config=cfg)
    assert r.returncode == 0 and r.stdout == b"released 2 of 2\n", r.stderr
    drain(app)
    subjects = [t["subject"] for t in tickets(app)]
    assert subjects == ["Printer on floor 2 is jammed", "Cheap watches", "(unreadable mail)"]
    with app.sessions() as s:
        t = show_ticket(s, "MD-3")
    assert t is not None and t["messages"][0]["attachments"][0]["filename"] == "original.eml"
    assert t["requester"] == "someone@customer.test"
    assert held(cfg) == []

    # delete: the bytes go, the row stays as the record
    ingest(app, [(b"\x00 more garbage\n", SMTP)])
    (h,) = held(cfg)
    with app.sessions() as s:
        digest = s.scalars(select(Inbound.digest).where(Inbound.id == h["id"])).one()
    r = run_cli("quarantine", "delete", str(h["id"]), config=cfg, input=b"")
    assert r.returncode == 64 and b"--yes" in r.stderr
    r = run_cli("quarantine", "delete", str(h["id"]), "--yes", config=cfg)
    assert r.returncode == 0 and r.stdout == b"deleted 1 of 1\n"
    assert held(cfg, "quarantined") == [] and [r["state"] for r in held(cfg)] == ["deleted"]
    with app.sessions() as s:
        row = s.get(Inbound, h["id"])
        assert row is not None and row.state == "deleted" and "deleted by" in (row.reason or "")
    with pytest.raises(FileNotFoundError):
        app.blobs.get(digest)
    r = run_cli("quarantine", "show", str(h["id"]), config=cfg)
    assert r.returncode == 0 and b"original removed" in r.stdout, "removed, not damaged"
    r = run_cli("quarantine", "retry", str(h["id"]), config=cfg)
    assert r.returncode == 66 and b"not held mail" in r.stderr


def _nested(depth: int) -> bytes:
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "deep@customer.test", "level 0"
    inner.set_content("the bottom of the well")
    for i in range(1, depth):
        outer = EmailMessage()
        outer["From"], outer["Subject"] = "deep@customer.test", f"level {i}"
        outer.set_content(f"wrapper {i}")
        outer.add_attachment(inner)
        inner = outer
    inner["To"], inner["Message-ID"] = "support@localhost", "<deep@customer.test>"
    return inner.as_bytes()


def _many_parts(n: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "parts@customer.test", "support@localhost", "many parts"
    m["Message-ID"] = "<parts@customer.test>"
    m.set_content("see the attachments")
    for i in range(n):
        m.add_attachment(f"part {i}".encode(), maintype="application", subtype="octet-stream",
                         filename=f"p{i}.bin")
    return m.as_bytes()


def _huge_header() -> bytes:
    return (b"From: hdr@customer.test\nTo: support@localhost\nSubject: long header\n"
            b"Message-ID: <hdr@customer.test>\nX-Junk: " + b"A" * 300_000 + b"\n"
            + b"".join(b"X-Many-%d: v\n" % i for i in range(2000)) + b"\nbody text\n")


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", b"\0" * 50 * 1024**2)
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "zip@customer.test", "support@localhost", "logs"
    m["Message-ID"] = "<zip@customer.test>"
    m.set_content("logs attached")
    m.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="logs.zip")
    return m.as_bytes()


def _big_attachment() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "big@customer.test", "support@localhost", "the dump"
    m["Message-ID"] = "<big@customer.test>"
    m.set_content("a 25 MiB memory dump")
    m.add_attachment(bytes(range(256)) * (25 * 4096), maintype="application",
                     subtype="octet-stream", filename="dump.bin")
    return m.as_bytes()


def test_limits_cut_hostile_shapes_and_say_so(make_app: Callable[..., App]) -> None:
    app = make_app(limits={"max_parts": 100, "max_depth": 5, "max_headers": 100,
                           "max_header_length": 1000})
    s = ingest(app, [(_nested(40), SMTP), (_many_parts(3000), SMTP), (_huge_header(), SMTP),
                     (_zip_bomb(), SMTP)])
    assert s.new_tickets == 4, s.as_dict()
    with app.sessions() as db:
        shown = [show_ticket(db, f"MD-{n}") for n in range(1, 5)]
    deep, parts, header, bomb = (t["messages"][0] for t in shown if t)
    assert any("nested deeper than 5" in d for d in deep["defects"])
    assert any("more than 100 parts" in d for d in parts["defects"])
    assert len(parts["attachments"]) < 100
    assert any("header fields after the first 100" in d for d in header["defects"])
    assert any("X-Junk after 1000 characters" in d for d in header["defects"])
    assert bomb["attachments"][0]["size"] < 1024**2, "stored as sent, never unpacked"


def test_a_25_mib_attachment_by_pipe_is_kept_and_one_over_the_limit_is_quarantined(
        make_app: Callable[..., App]) -> None:
    app = make_app(limits={"max_message_size": "40MiB"})
    big = _big_attachment()
    s = ingest(app, [(big, Envelope("pipe", None))])
    assert s.new_tickets == 1
    with app.sessions() as db:
        t = show_ticket(db, "MD-1")
    assert t is not None and t["messages"][0]["attachments"][0]["size"] == 25 * 1024**2
    small = make_app(limits={"max_message_size": "1MiB"})
    s = ingest(small, [(big, Envelope("pipe", None)), (mail(), Envelope("pipe", None))])
    assert (s.quarantined, s.new_tickets) == (1, 1)
    with small.sessions() as db:
        reason = db.scalars(select(Inbound.reason).where(Inbound.state == "quarantined")).one()
    assert "limits.max_message_size" in (reason or "") and "quarantine retry" in (reason or "")


def test_every_mail_without_a_ticket_is_listed_and_shown_deleted_and_settled_too(
        desk_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    """A trial found a deleted mail gone from every listing (the README says its row stays
    as the record) and ratings and status requests in none: `--state all` is every row that
    made no ticket, a state no option names included, and `show` shows each."""
    cfg, app = desk_config(), make_app()
    ingest(app, [(b"\x00 not a mail\n", SMTP), (mail(message_id="<a@customer.test>"), SMTP)])
    [bad] = held(cfg, "quarantined")
    r = run_cli("quarantine", "delete", str(bad["id"]), "--yes", config=cfg)
    assert r.returncode == 0, r.stderr
    with app.sessions.begin() as s:      # stored bytes: those of the ticketed mail
        ticketed = s.scalars(select(Inbound).where(Inbound.state == "ticketed")).one()
        for state in ("rating", "a-state-to-come"):
            s.add(Inbound(source="smtp", digest=ticketed.digest, size=ticketed.size,
                          state=state, reason=f"made {state}"))
    everything = held(cfg)
    assert [r["state"] for r in everything] == ["deleted", "rating", "a-state-to-come"]
    assert held(cfg, "deleted") == everything[:1] and held(cfg, "rating") == everything[1:2]
    for row in everything:
        r = run_cli("quarantine", "show", str(row["id"]), "--format", "json", config=cfg)
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == row["state"], r.stderr
    r = run_cli("quarantine", "show", str(ticketed.id), config=cfg)
    assert r.returncode == 66 and b"no mail kept without a ticket" in r.stderr
    r = run_cli("quarantine", "release", str(everything[1]["id"]), config=cfg)
    assert r.returncode == 66, "only held mail is released"
