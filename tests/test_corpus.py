"""The folder of problem mails (tests/mails): each one ends the way MANIFEST.yaml says.

Bounces from many MTAs fail the mail they answer, found by our return path or by
our Message-ID; vacation replies and list mail never count as bounces; broken
mail becomes a ticket with its best readable text, or is quarantined.
"""
from __future__ import annotations

import email
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import mail
from flufl.bounce import all_failures
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.models import DeliveryAttempt, Inbound, OutboxMail
from maildesk.tickets.views import show_ticket

CORPUS = Path(__file__).parent / "mails"
MANIFEST: dict[str, dict[str, Any]] = yaml.safe_load((CORPUS / "MANIFEST.yaml").read_text())
BOUNCES = sorted(p.name for p in (CORPUS / "bounce").glob("*.eml"))
AUTO_REPLIES = sorted(p.name for p in (CORPUS / "auto-reply").glob("*.eml"))
BULK = sorted(p.name for p in (CORPUS / "bulk").glob("*.eml"))
BROKEN = sorted(p.name for p in (CORPUS / "broken").glob("*.eml"))
DESK = "support@localhost"


def fill(path: Path, message_id: str, return_path: str) -> bytes:
    return path.read_bytes().replace(b"@@DESK@@", DESK.encode()) \
        .replace(b"@@MESSAGE_ID@@", message_id.encode()) \
        .replace(b"@@RETURN_PATH@@", return_path.encode())


def acknowledged(app: App, customer: str = "Ana Lopez <ana.lopez@customer.test>") -> OutboxMail:
    """A customer's ticket MD-1 and the acknowledgement we sent for it."""
    ingest(app, [(mail(sender=customer, subject="Printer on floor 3 is jammed"),
                  Envelope("pipe", None))])
    with app.sessions() as s:
        ack = s.scalars(select(OutboxMail)).one()
        s.expunge(ack)
    return ack


def show(app: App, ref: str = "MD-1") -> dict[str, Any]:
    with app.sessions() as s:
        t = show_ticket(s, ref)
    assert t is not None
    return t


def inbound(app: App) -> list[Inbound]:
    with app.sessions() as s:
        rows = list(s.scalars(select(Inbound).order_by(Inbound.id)))
        s.expunge_all()
    return rows


def test_the_manifest_names_every_mail_in_the_folder() -> None:
    on_disk = {f"{p.parent.name}/{p.name}" for p in CORPUS.glob("*/*.eml")}
    named = set(MANIFEST)
    assert named <= on_disk, named - on_disk
    assert {n for n in on_disk if n.startswith(("bounce/", "broken/"))} <= named


@pytest.mark.parametrize("name", BOUNCES)
def test_a_bounce_by_the_return_path_fails_the_mail_it_answers(
        make_app: Callable[..., App], db_url: str, name: str) -> None:
    app = make_app(db_url)
    ack = acknowledged(app)
    assert ack.envelope_from.startswith("support+bounce-md-1-"), "VERP return path"
    raw = fill(CORPUS / "bounce" / name, ack.message_id, ack.envelope_from)
    s = ingest(app, [(raw, Envelope("smtp", "", (ack.envelope_from,)))])
    assert (s.new_tickets, s.classified) == (0, 1), s.as_dict()
    assert inbound(app)[-1].state == "bounce"
    expect = MANIFEST[f"bounce/{name}"]
    kind = "delivery.delayed" if expect.get("delayed") else "delivery.failed"
    events = [e for e in show(app)["events"] if e["kind"] == kind]
    assert len(events) == 1, show(app)["events"]
    data = events[0]["data"]
    assert data["message_id"] == ack.message_id and data["found_by"] == "return path"
    failed = {f["recipient"]: f for f in data["failures"]}
    assert expect["recipient"] in failed, data
    if "status" in expect:
        assert failed[expect["recipient"]]["status"] == expect["status"]
    with app.sessions() as db:
        row = db.get(OutboxMail, ack.id)
        assert row is not None
        attempts = db.scalars(select(DeliveryAttempt.result)
                              .where(DeliveryAttempt.outbox_id == ack.id)).all()
    if expect.get("delayed"):
        assert row.status == "queued" and "bounced" not in attempts
    else:
        assert row.status == "failed" and expect["recipient"] in (row.last_error or "")
        assert list(attempts).count("bounced") == 1


@pytest.mark.parametrize("name", [n for n in BOUNCES
                                  if b"@@MESSAGE_ID@@" in (CORPUS / "bounce" / n).read_bytes()])
def test_a_bounce_to_the_plain_address_is_matched_by_our_message_id(
        make_app: Callable[..., App], name: str) -> None:
    app = make_app()
    ack = acknowledged(app)
    raw = fill(CORPUS / "bounce" / name, ack.message_id, DESK)
    s = ingest(app, [(raw, Envelope("smtp", "", (DESK,)))])
    assert s.classified == 1 and s.new_tickets == 0
    kinds = {e["kind"]: e["data"] for e in show(app)["events"]}
    data = kinds.get("delivery.failed") or kinds.get("delivery.delayed")
    assert data is not None and data["found_by"] == "message-id", kinds


def test_recognition_rate_of_the_bounce_corpus_and_what_flufl_alone_finds() -> None:
    """Each bounce must name its failed recipient; flufl.bounce alone is the baseline."""
    from maildesk.mail.parse import parse
    ours = flufl = 0
    for name in BOUNCES:
        raw = fill(CORPUS / "bounce" / name, "<md-1.x@localhost>", DESK)
        want = MANIFEST[f"bounce/{name}"]["recipient"].encode()
        temporary, permanent = all_failures(email.message_from_bytes(raw))
        flufl += want in temporary | permanent
        parsed = parse(raw, "0" * 64, "")
        ours += parsed.bounce is not None and \
            want.decode() in [f.recipient for f in parsed.bounce.failures]
    print(f"\nbounces recognised: maildesk {ours}/{len(BOUNCES)}, "
          f"flufl.bounce alone {flufl}/{len(BOUNCES)}")
    assert ours / len(BOUNCES) >= 0.95
    assert ours > flufl


@pytest.mark.parametrize("name", AUTO_REPLIES)
def test_vacation_replies_are_never_bounces_and_never_answered(
        make_app: Callable[..., App], name: str) -> None:
    app = make_app()
    ack = acknowledged(app)
    raw = fill(CORPUS / "auto-reply" / name, ack.message_id, ack.envelope_from)
    null_sender = b"Return-Path: <>" in raw or b"Return-path: <>" in raw
    ingest(app, [(raw, Envelope("smtp", "" if null_sender else None, (DESK,)))])
    t = show(app)
    last = inbound(app)[-1]
    assert last.state == "auto-reply" or t["messages"][-1]["verdict"] == "auto-reply", \
        (last.state, last.reason)
    assert not [e for e in t["events"] if e["kind"].startswith("delivery.")]
    with app.sessions() as s:
        assert len(s.scalars(select(OutboxMail.id)).all()) == 1, "nothing sent to a machine"


@pytest.mark.parametrize("name", BULK)
def test_list_mail_is_bulk_and_gets_no_acknowledgement(make_app: Callable[..., App],
                                                       name: str) -> None:
    app = make_app(desk={"bulk_mail": "ticket_no_ack"})
    ingest(app, [(fill(CORPUS / "bulk" / name, "<x@localhost>", DESK),
                  Envelope("smtp", "list-bounces@lists.test", (DESK,)))])
    t = show(app)
    assert t["messages"][0]["verdict"] == "bulk"
    with app.sessions() as s:
        assert s.scalars(select(OutboxMail.id)).all() == []


@pytest.mark.parametrize("name", BROKEN)
def test_broken_mail_is_a_ticket_with_readable_text_or_quarantined(
        make_app: Callable[..., App], db_url: str, name: str) -> None:
    app = make_app(db_url)
    expect = MANIFEST[f"broken/{name}"]
    raw = fill(CORPUS / "broken" / name, "<x@localhost>", DESK)
    after = mail(subject="The mail behind it", message_id="<behind@customer.test>")
    s = ingest(app, [(raw, Envelope("smtp", "someone@customer.test", (DESK,))),
                     (after, Envelope("smtp", "ana@customer.test", (DESK,)))])
    rows = inbound(app)
    if expect["outcome"] == "quarantined":
        assert rows[0].state == "quarantined" and rows[0].reason
        assert show(app)["subject"] == "The mail behind it"
        return
    assert s.new_tickets == 2, (rows[0].state, rows[0].reason)
    t = show(app)
    text = t["messages"][0]["text"]
    assert expect["text"] in text, text
    assert "\x00" not in text and "<script" not in text and "alert(" not in text
    if "subject" in expect:
        assert t["subject"] == expect["subject"]
    assert "\n" not in t["subject"] and "\r" not in t["subject"]
    for a in t["messages"][0]["attachments"]:
        assert "/" not in a["filename"] and "\\" not in a["filename"] \
            and "\u202e" not in a["filename"] and not a["filename"].startswith(".")
