"""A mail's defect names without mail-parser's whole pass (issue 22): the same names as
`MailParser(msg).defects_categories` on the world's mail (../shared/corpus), mail-parser's
whole pass run only where its body walk must decide."""
from __future__ import annotations

from pathlib import Path

import mailparser
import pytest
from conftest import mail
from hypothesis import given, settings
from hypothesis import strategies as st
from mailparser.utils import get_addresses

from maildesk.intake.sources import read
from maildesk.mail import defects
from maildesk.mail.parse import DEFAULT_LIMITS, Unparseable, _message, parse

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def corpus_mails() -> list[tuple[str, bytes]]:
    return [m for p in sorted(CORPUS.rglob("*")) if p.is_file()
            and p.name not in ("INDEX.tsv", "SOURCES.md") for m in read(p)]


def tree(raw: bytes):  # type: ignore[no-untyped-def]
    """The tree parse() reads, cut to the limits; None for what parse() refuses."""
    try:
        return _message(raw, DEFAULT_LIMITS)[0]
    except Unparseable:
        return None


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
@pytest.mark.timeout(600)
def test_the_corpus_has_mail_parsers_defect_names() -> None:
    """Every mail of the corpus: the names computed here equal mail-parser's, both where
    they are computed without it and where its whole pass decides. Where mail-parser
    crashes (7 mails: StartBoundaryNotFoundDefect with no epilogue, find_between(None)),
    the desk kept the standard library's names, and still does."""
    decided = crashed = 0
    mails = corpus_mails()
    for origin, raw in mails:
        msg = tree(raw)
        if msg is None:
            continue
        ours, cheap = defects.defect_names(msg), defects._names(msg)
        try:
            theirs = tuple(sorted(mailparser.MailParser(tree(raw)).defects_categories))
        except Exception:  # noqa: BLE001 - mail-parser's bug: the standard library's names
            crashed += 1
            assert cheap is None, origin
            theirs = tuple(sorted({type(d).__name__ for p in msg.walk() for d in p.defects}))
        assert ours == theirs, origin
        if cheap is not None:
            decided += 1
            assert tuple(sorted(cheap)) == theirs, origin
    assert crashed == 7
    assert len(mails) > 850 and decided > 0.8 * len(mails), (decided, len(mails))


def test_a_plain_mail_is_not_parsed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean mail's names come without mail-parser's whole pass (17 % of the ingest
    worker's time, when it ran for every mail)."""
    def whole_pass(*_args: object) -> None:
        raise AssertionError("mail-parser's whole pass ran")
    monkeypatch.setattr(mailparser, "MailParser", whole_pass)
    raw = mail(sender='"Lima, Ana" <ana.lima@customer.test>', Cc="bo@x.test, Cy <cy@x.test>")
    assert parse(raw, "0" * 64).defects == ()
    broken = (b"From: Ana <ana@customer.test\nTo: support@localhost\nSubject: jammed\n"
              b"Date: Mon, 31 Feb 2026 10:00:00 +0000\n\nIt blinks red.\n")
    assert parse(broken, "1" * 64).defects == ("AddressHeaderDefect", "DateHeaderDefect")


def test_an_undecodable_body_part_is_left_to_mail_parser() -> None:
    """A text part its charset cannot decode: whether that is a CharsetDecodeDefect is
    mail-parser's attachment rules' to say, so its whole pass decides (and it says so)."""
    raw = (b"From: a@b.test\nTo: c@d.test\nSubject: x\nMIME-Version: 1.0\n"
           b"Content-Type: text/plain; charset=x-nonesuch\n"
           b"Content-Transfer-Encoding: base64\n\naGVsbG8K\n")
    msg = tree(raw)
    assert defects._names(msg) is None
    assert defects.defect_names(msg) == ("CharsetDecodeDefect",)


_ATOM = st.text("abcXYZ09_+=-", min_size=1, max_size=8)
_ADDR = st.builds(lambda loc, dom: f"{'.'.join(loc)}@{'.'.join(dom)}",
                  st.lists(_ATOM, min_size=1, max_size=3), st.lists(_ATOM, min_size=1, max_size=3))
_WSP = st.sampled_from(["", " ", "\t", "\n ", "\r\n\t", "  "])
_PHRASE = st.one_of(
    st.lists(st.text("abcXYZ09_'-", min_size=1, max_size=8), min_size=1, max_size=4)
    .map(" ".join),
    st.text(st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'),
            max_size=20).map(lambda s: f'"{s}"'))
_MAILBOX = st.one_of(
    st.builds(lambda a, w1, w2: f"{w1}{a}{w2}", _ADDR, _WSP, _WSP),
    st.builds(lambda p, a, w1, w2, w3: f"{w1}{p}{w2}<{a}>{w3}", _PHRASE, _ADDR, _WSP, _WSP,
              _WSP))


@settings(max_examples=3000, deadline=None)
@given(st.lists(_MAILBOX, min_size=1, max_size=4).map(",".join))
def test_what_the_address_shortcut_takes_mail_parser_finds_no_defect_in(value: str) -> None:
    """The fields read by a regular expression instead of mail-parser's scanner are ones
    its scanner finds nothing wrong with."""
    assert defects._PLAIN_ADDRESSES.fullmatch(value)
    problems: list[object] = []
    get_addresses(value, defects=problems, decode_names=True)
    assert problems == []


@pytest.mark.parametrize("value", [
    "=?utf-8?q?Ana?= <ana@x.test>", "Ana <ana@x.test", "a..b@x.test", "team: a@x.test;",
    "Ana (home) <ana@x.test>", "Ana L. <ana@x.test>", "<a@x.test> <b@x.test>", "a@x.test,",
    '"A\\"na" <ana@x.test>', "Ana Lima", "ana@[10.0.0.1]"])
def test_anything_else_goes_to_mail_parser(value: str) -> None:
    assert not defects._PLAIN_ADDRESSES.fullmatch(value)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
@pytest.mark.timeout(600)
def test_the_corpus_parses_as_it_did_with_mail_parsers_whole_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ParsedMail of the corpus, field by field, as when mail-parser's whole pass ran
    first on the tree (it decodes payloads and writes attachments out, which touches the
    tree that the body is then read from)."""
    from maildesk.mail import parse as parse_module

    def parsed(raw: bytes) -> object:
        try:
            got = parse(raw, "0" * 64)
        except Unparseable as e:
            return str(e)
        return got, got.dedupe_key

    mails = corpus_mails()
    now = [parsed(raw) for _origin, raw in mails]
    monkeypatch.setattr(parse_module, "defect_names", defects._full_pass)
    before = [parsed(raw) for _origin, raw in mails]
    assert [o for (o, _r), a, b in zip(mails, now, before) if a != b] == []
