"""Mail as other software writes it, read the way lenient mail clients read it (issue 14):
charsets that lie or are missing, senders in odd places, mbox files that are not what
they seem, internationalised addresses. The corpus has some of these shapes (used where
it has them); the rest are written here, modelled on the clients that send them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import free_port
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.intake.sources import read
from maildesk.mail.parse import ParsedMail, parse
from maildesk.notify.delivery import SmtpTransport, deliver_due
from maildesk.pipeline.run import ingest
from maildesk.store.models import OutboxMail, Ticket

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def parsed(raw: bytes, envelope_from: str | None = None) -> ParsedMail:
    return parse(raw, hashlib.sha256(raw).hexdigest(), envelope_from)


def headers(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8")


# --- charsets -----------------------------------------------------------------------------

@pytest.mark.parametrize("codec,text", [
    ("gb2312", "打印机坏了"), ("shift_jis", "プリンターが壊れました"),
    ("big5", "印表機壞了"), ("euc-kr", "프린터가 고장났어요")])
def test_raw_8bit_cjk_subjects_and_names_are_read_as_cjk(codec: str, text: str) -> None:
    raw = (b"From: " + text[:2].encode(codec) + b" <a@customer.test>\nTo: s@localhost\n"
           b"Subject: " + text.encode(codec) + b"\nMIME-Version: 1.0\n"
           b"Content-Type: text/plain; charset=" + codec.encode() + b"\n\n"
           + text.encode(codec) + b"\n")
    m = parsed(raw)
    assert m.subject == text and m.text == text and m.from_name == text[:2]


def test_raw_8bit_header_without_any_charset_in_the_mail() -> None:
    raw = "From: a@customer.test\nSubject: 打印机坏了，请帮忙\n\nhello\n".encode("gb18030")
    assert parsed(raw).subject == "打印机坏了，请帮忙"


def test_iso_2022_jp_and_utf7_bodies_and_utf7_words() -> None:
    jp = "日本語のメールです"
    raw = (b"From: a@customer.test\nSubject: =?unicode-1-1-utf-7?Q?Caf+AOk-?=\n"
           b"MIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-2022-JP\n\n"
           + jp.encode("iso2022_jp") + b"\n")
    m = parsed(raw)
    assert m.text == jp and m.subject == "Café"
    raw7 = (b"From: a@customer.test\nSubject: x\nContent-Type: text/plain; charset=utf-7\n\n"
            + "Grüße aus Köln".encode("utf-7") + b"\n")
    assert parsed(raw7).text == "Grüße aus Köln"


def test_a_bad_byte_in_quoted_printable_utf8_costs_one_character_not_the_text() -> None:
    raw = (b"From: a@customer.test\nSubject: x\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: quoted-printable\n\n"
           b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln =FF und Z=C3=BCrich\n")
    text = parsed(raw).text
    assert text.startswith("Grüße aus Köln") and text.endswith("und Zürich")
    assert text.count("\ufffd") == 1


def test_misspelt_and_microsoft_charset_names() -> None:
    for name, data, expect in (("uft-8", "déjà vu".encode(), "déjà vu"),
                               ("ks_c_5601-1987", "안녕하세요".encode("cp949"), "안녕하세요"),
                               ("x-unknown", "naïve".encode(), "naïve")):
        raw = (f"From: a@customer.test\nSubject: x\nContent-Type: text/plain; charset={name}"
               f"\n\n").encode() + data + b"\n"
        assert parsed(raw).text == expect, name


def test_base64_without_its_padding_is_read() -> None:
    raw = (b"From: a@customer.test\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
           b"see file\n--b\nContent-Type: application/pdf; name=x.pdf\n"
           b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\nJcfsj6I\n--b--\n")
    m = parsed(raw)
    assert m.attachments[0].filename == "x.pdf" and m.attachments[0].data.startswith(b"%PDF")


def test_an_encoded_word_with_bad_base64_is_read_leniently() -> None:
    raw = b"From: a@customer.test\nSubject: =?utf-8?B?SGVsbG8gV29ybGQgw6Q?=\n\nx\n"
    assert parsed(raw).subject == "Hello World ä"


# --- parts ------------------------------------------------------------------------------

def test_attached_mail_is_named_by_its_subject_and_kept_whole() -> None:
    inner = b"From: b@x.test\nSubject: Quarterly numbers\n\nthe numbers\n"
    raw = (b"From: a@customer.test\nSubject: fw\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
           b"see below\n--b\nContent-Type: message/rfc822\n\n" + inner + b"--b--\n")
    m = parsed(raw)
    assert [a.filename for a in m.attachments] == ["Quarterly numbers.eml"]
    assert b"the numbers" in m.attachments[0].data and "the numbers" not in m.text


def test_a_nameless_inline_image_is_named_by_its_kind_not_its_content_id() -> None:
    raw = (b"From: a@customer.test\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/related; boundary=b\n\n--b\nContent-Type: text/html\n\n"
           b"<p>look <img src=cid:abc123></p>\n--b\nContent-Type: image/png\n"
           b"Content-ID: <abc123@x>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--b--\n")
    m = parsed(raw)
    assert [a.filename for a in m.attachments] == ["image-1.png"]
    assert "look" in m.text


def test_a_second_html_part_of_a_mixed_mail_is_not_dropped() -> None:
    raw = (b"From: a@customer.test\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=b\n\n"
           b"--b\nContent-Type: multipart/alternative; boundary=c\n\n"
           b"--c\nContent-Type: text/plain\n\nfirst part\n--c\nContent-Type: text/html\n\n"
           b"<p>first part</p>\n--c--\n"
           b"--b\nContent-Type: text/html\n\n<p>second part, after the photo</p>\n--b--\n")
    text = parsed(raw).text
    assert "first part" in text and "second part, after the photo" in text
    assert text.count("first part") == 1


# --- senders ------------------------------------------------------------------------------

@pytest.mark.parametrize("head,expect", [
    ("From: <ana@customer.test.>", "ana@customer.test"),
    ("From: Ana Lima ana@customer.test", "ana@customer.test"),
    ("From: ana@customer.test\nFrom: other@customer.test", "ana@customer.test"),
    ("From: undisclosed\nSender: ana@customer.test", "ana@customer.test"),
    ("Reply-To: Ana <ana@customer.test>", "ana@customer.test"),
    ("Return-Path: <ana@customer.test>", "ana@customer.test"),
    ("Subject: x\nthis line breaks the header block\nFrom: ana@customer.test", "ana@customer.test"),
])
def test_the_sender_is_found_wherever_a_client_or_mta_put_it(head: str, expect: str) -> None:
    raw = f"{head}\nTo: support@localhost\n\nhello\n".encode()
    assert parsed(raw).from_addr == expect


def test_the_envelope_names_the_sender_last() -> None:
    assert parsed(b"Subject: x\n\nhello\n", "ana@customer.test").from_addr == "ana@customer.test"


def test_mail_with_no_sender_anywhere_is_a_ticket_never_answered(
        make_app: Callable[..., App]) -> None:
    app = make_app()
    s = ingest(app, [(b"Subject: a monitoring alert\n\ndisk full\n", Envelope("pipe", None))])
    assert (s.new_tickets, s.quarantined) == (1, 0)
    with app.sessions() as session:
        t = session.scalars(select(Ticket)).one()
        assert t.requester == "unknown-sender@maildesk.invalid"
        assert session.scalars(select(OutboxMail)).all() == []


# --- mbox -------------------------------------------------------------------------------

def test_a_format_patch_inside_a_mail_does_not_split_it(tmp_path: Path) -> None:
    body = ("From: dev@customer.test\nTo: support@localhost\nSubject: a patch\n\n"
            "Here is the fix:\n\n"
            "From 5a3f2b0c1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a Mon Sep 17 00:00:00 2001\n"
            "From: Dev <dev@customer.test>\nSubject: [PATCH] fix it\n\n---\n a | 1 +\n")
    box = tmp_path / "one.mbox"
    box.write_text("From dev@customer.test Mon Nov 23 10:00:00 2026\n" + body)
    mails = list(read(box))
    assert len(mails) == 1 and b"[PATCH] fix it" in mails[0][1]


def test_a_body_line_starting_with_from_does_not_split(tmp_path: Path) -> None:
    box = tmp_path / "two.mbox"
    box.write_bytes(b"From a@x Mon Nov 23 10:00:00 2026\nFrom: a@x\nSubject: one\n\n"
                    b"hello\n\nFrom there we went home.\nbye\n\n"
                    b"From b@x Mon Nov 23 10:01:00 2026\nFrom: b@x\nSubject: two\n\nhi\n")
    mails = [m for _, m in read(box)]
    assert len(mails) == 2 and b"From there we went home." in mails[0]


def test_an_eml_file_that_starts_with_a_from_line_is_one_message(tmp_path: Path) -> None:
    eml = tmp_path / "saved.eml"
    eml.write_bytes(b"From a@x Mon Nov 23 10:00:00 2026\nFrom: a@x\nSubject: one\n\n"
                    b"text\n\nFrom b@x Mon Nov 23 10:01:00 2026\nFrom: b@x\nSubject: quoted\n")
    mails = [m for _, m in read(eml)]
    assert len(mails) == 1 and mails[0].startswith(b"From: a@x")


def test_mboxcl2_bodies_are_taken_by_their_length(tmp_path: Path) -> None:
    body1 = b"line one\n\nFrom the start, unquoted (mboxcl2 does not quote)\n"
    box = tmp_path / "cl2.mbox"
    box.write_bytes(b"From a@x Mon Nov 23 10:00:00 2026\nFrom: a@x\nSubject: one\n"
                    b"Content-Length: %d\n\n" % len(body1) + body1 +
                    b"\nFrom b@x Mon Nov 23 10:01:00 2026\nFrom: b@x\nSubject: two\n"
                    b"Content-Length: 3\n\nhi\n")
    mails = [m for _, m in read(box)]
    assert len(mails) == 2 and mails[0].endswith(body1) and mails[1].endswith(b"hi\n")


def test_mboxrd_quoting_is_undone_one_level(tmp_path: Path) -> None:
    box = tmp_path / "rd.mbox"
    box.write_bytes(b"From a@x Mon Nov 23 10:00:00 2026\nFrom: a@x\nSubject: one\n\n"
                    b">From here\n>>From there\n")
    assert [m for _, m in read(box)][0].endswith(b"\nFrom here\n>From there\n")


def test_an_mbox_read_while_its_pages_are_let_go_reads_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large mbox's pages are let go of behind the reading (issue 22: a 1 GiB mbox held
    1.1 GiB of RSS); with a step of one page, every mail still reads as it was written,
    and the process's RSS does not grow by the file's size."""
    import mmap
    import resource

    from maildesk.intake import sources
    monkeypatch.setattr(sources._Behind, "STEP", mmap.PAGESIZE)
    mails = [b"From: u%d@x\nSubject: mail %d\n\n" % (i, i) + b"%d " % i * (i % 700)
             + b"\n" for i in range(3000)]
    box = tmp_path / "big.mbox"
    with box.open("wb") as f:
        for m in mails:
            f.write(b"From u@x Mon Nov 23 10:00:00 2026\n" + m + b"\n")
    assert [m for _, m in read(box)] == mails

    monkeypatch.setattr(sources._Behind, "STEP", 1 << 20)
    big = tmp_path / "bigger.mbox"
    chunk = b"From u@x Mon Nov 23 10:00:00 2026\nFrom: u@x\nSubject: s\n\n" + \
        b"x" * 60 + b"\n" * 1 + (b"y" * 79 + b"\n") * 2000 + b"\n"
    with big.open("wb") as f:
        for _ in range(1600):               # 256 MB
            f.write(chunk)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert sum(1 for _ in read(big)) == 1600
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew < 100, f"peak RSS grew {grew:.0f} MiB reading a 256 MiB mbox"


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
def test_the_corpus_mbox_files_split_where_their_projects_say() -> None:
    """mime4j's rlug mbox (its test expects this count) and mimekit's unmunged mbox, which
    starts with a byte-order mark."""
    rlug = CORPUS / "mime4j" / "mbox" / "src" / "test" / "resources" / "test-1" / "mbox.rlug"
    if rlug.exists():
        assert len(list(read(rlug))) == 5
    unmunged = CORPUS / "mimekit" / "UnitTests" / "TestData" / "mbox" / "unmunged.mbox.txt"
    if unmunged.exists():
        mails = list(read(unmunged))
        assert mails and all(parsed(m).from_addr for _, m in mails)


# --- internationalised addresses ------------------------------------------------------------

class Utf8Relay:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 Ok"


@pytest.fixture(params=[True, False], ids=["smtputf8", "ascii-only"])
def utf8_relay(request: pytest.FixtureRequest) -> Iterator[tuple[Utf8Relay, int, bool]]:
    handler, port = Utf8Relay(), free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port,
                     enable_SMTPUTF8=request.param)
    ctl.start()
    yield handler, port, request.param
    ctl.stop()


def test_a_utf8_sender_gets_a_ticket_and_an_acknowledgement_by_smtputf8(
        make_app: Callable[..., App], utf8_relay: tuple[Utf8Relay, int, bool]) -> None:
    handler, port, offered = utf8_relay
    app = make_app(outbox={"transport": "smtp", "relay": {"host": "127.0.0.1", "port": port,
                                                          "starttls": False}})
    raw = "From: Jürgen <jürgen@bücher.example>\nTo: support@localhost\nSubject: Hallo\n" \
          "Message-ID: <u1@bücher.example>\n\nDrucker kaputt\n".encode()
    s = ingest(app, [(raw, Envelope("pipe", None))])
    assert s.new_tickets == 1
    result = deliver_due(app, SmtpTransport(app.settings.outbox.relay))
    with app.sessions() as session:
        row = session.scalars(select(OutboxMail)).one()
    if offered:
        assert result.sent == 1 and handler.received[0][1] == ["jürgen@xn--bcher-kva.example"]
        assert "jürgen@xn--bcher-kva.example".encode() in handler.received[0][2]
    else:
        assert result.failed == 1 and row.status == "failed"
        assert "SMTPUTF8" in (row.last_error or "") and "jürgen" in (row.last_error or "")


def test_an_encoded_word_never_makes_an_address() -> None:
    """`=?utf-8?q?ceo=40bank.example?= <eve@evil.example>` is eve's mail: decoding the
    display name before parsing would make it the CEO's, and send our answers there."""
    m = parsed(b"From: =?utf-8?q?ceo=40bank.example?= <eve@evil.example>\n"
               b"To: support@localhost\nCc: =?utf-8?q?victim=40x.example?= <eve2@evil.example>\n"
               b"Subject: x\n\nhi\n")
    assert (m.from_addr, m.from_name, m.cc) == ("eve@evil.example", "ceo@bank.example",
                                                ("eve2@evil.example",))
    assert parsed(b"From: =?utf-8?q?ceo=40bank.example?=\nSubject: x\n\nhi\n").from_addr == ""


@pytest.mark.parametrize("codec,text", [
    ("cp1252", "Grüße aus dem Büro, Jürgen"), ("cp1252", "Ça marche très bien"),
    ("cp1251", "Принтер не работает"), ("koi8_r", "Принтер сломан"),
    ("euc_jp", "日本語メールテスト"), ("big5", "請幫忙修理印表機")])
def test_undeclared_8bit_subjects_of_other_scripts(codec: str, text: str) -> None:
    """Western text must not come out as Chinese (GB18030 accepts nearly any byte pair)."""
    raw = b"From: a@customer.test\nSubject: " + text.encode(codec) + b"\n\nhello\n"
    assert parsed(raw).subject == text


def test_raw_8bit_letters_inside_an_encoded_word() -> None:
    raw = b"From: a@x.test\nSubject: =?iso-8859-1?Q?Die_Hasen_und_die_Fr\xf6sche?=\n\nx\n"
    assert parsed(raw).subject == "Die Hasen und die Frösche"


def test_from_lines_with_no_empty_line_before_them(tmp_path: Path) -> None:
    """Thunderbird and others leave no empty line: only a full From_ line splits there."""
    box = tmp_path / "tb.mbox"
    box.write_bytes(b"From - \nFrom: a@x\nSubject: one\n\nbody\n"
                    b"From - Mon Jun  3 12:50:27 1996\nFrom: b@x\nSubject: two\n\nbody\n"
                    b"From b@x Tue Nov 24 10:00:00 2026\nFrom: c@x\nSubject: three\n\nx\n"
                    b"From Russia with love\nYear: 1963\n")
    mails = [m for _, m in read(box)]
    assert len(mails) == 3 and mails[2].endswith(b"From Russia with love\nYear: 1963\n")


def test_mboxcl2_lengths_a_line_end_off_still_hold(tmp_path: Path) -> None:
    inner = b"From spoof@example.com Mon Nov 23 10:00:00 2026\nFrom: spoof@example.com\n\nx\n"
    body1 = b"quoted mail follows\n\n" + inner
    box = tmp_path / "cl2.mbox"
    box.write_bytes(b"From a@x Mon Nov 23 10:00:00 2026\nFrom: a@x\nSubject: one\n"
                    b"Content-Length: %d\n\n" % (len(body1) + 1) + body1 +
                    b"\nFrom b@x Mon Nov 23 10:01:00 2026\nFrom: b@x\nSubject: two\n"
                    b"Content-Length: 3\n\nhi\n"
                    b"\nFrom c@x Mon Nov 23 10:02:00 2026\nFrom: c@x\nSubject: three\n\nyo\n")
    mails = [m for _, m in read(box)]
    assert len(mails) == 3, [m[:40] for m in mails]
    assert b"spoof@example.com" in mails[0] and mails[2].endswith(b"yo\n")


def test_a_git_format_patch_series_is_one_mail_a_patch(tmp_path: Path) -> None:
    def patch(n: int) -> bytes:
        return (b"From %040x Mon Sep 17 00:00:00 2001\nFrom: Dev <dev@x.test>\n"
                b"Subject: [PATCH %d/3] fix %d\n\n---\n a | 1 +\n-- \n2.43.0\n\n" % (n, n, n))
    box = tmp_path / "series.mbox"
    box.write_bytes(patch(1) + patch(2) + patch(3))
    assert len(list(read(box))) == 3


def test_broken_base64_text_is_decoded_as_far_as_it_goes() -> None:
    raw = (b"From: a@x.test\nSubject: x\nContent-Type: text/plain; charset=utf-8\n"
           b"Content-Transfer-Encoding: base64\n\n"
           b"SGVsbG8gd29ybGQsIHRoaXMgaXMgYnJva2Vu!!!IGJhc2U2NA\n$$$\nSGk\n")
    assert parsed(raw).text.startswith("Hello world, this is broken base64")


def test_bad_patterns_and_foot_guns_in_the_settings_are_config_errors(
        tmp_path: Path) -> None:
    from conftest import run_cli
    for desk in ("spam_headers: {X-Spam-Flag: '(['}", "alerts: {senders: ['*']}",
                 "alerts: {addresses: [alerts@localhost]}"):
        cfg = tmp_path / "maildesk.yaml"
        cfg.write_text(f"data_dir: data\ndesk:\n  {desk}\n")
        r = run_cli("config", "check", config=cfg)
        assert r.returncode == 78 and b"Traceback" not in r.stderr, (desk, r.stderr)
        assert b"maildesk.yaml:" in r.stderr
