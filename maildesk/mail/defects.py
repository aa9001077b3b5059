"""What is wrong with a mail, by mail-parser's defect names, without mail-parser's whole pass.

`MailParser(msg).defects_categories` parses the mail a second time over: it extracts every
attachment (base64 again), decodes every header twice for its `mail` dicts, and reads each
address header with its character-by-character scanner, to give a handful of names. Its
names come from six places (mail-parser 4.8.0, core.py `_reset` and `parse`):

- the standard library's defects of each part of the tree (its class name);
- AddressHeaderDefect: `utils.get_addresses` on each From, To, Cc, Bcc, Reply-To and
  Delivered-To field;
- DateHeaderDefect: `dates.parse_mail_date` on each Date and Resent-Date field, and the
  dates of the Received fields (`utils.receiveds_parsing`);
- ReceivedHeaderDefect: `utils.receiveds_parsing` on the Received fields;
- MimeHeaderDefect: `utils.mime_header_view` and `utils.decode_header_part` on each part's
  Content-* fields and file name;
- CharsetDecodeDefect: a part it reads as body text whose bytes its charset cannot decode.

Here the first five are computed with mail-parser's own helpers, and the sixth is ruled out
cheaply: a part whose payload decodes by its charset cannot have it. Where a defect of the
body walk may be there (a part that does not decode and that mail-parser might read as
text, which its attachment rules decide; an epilogue it re-parses after a
StartBoundaryNotFoundDefect), mail-parser's whole pass decides, as before. So the names are
mail-parser's on every mail; tests/test_defects.py holds them equal over the real corpus.
"""
from __future__ import annotations

import logging
import re
from email.message import Message

import mailparser
from mailparser.const import ADDRESSES_HEADERS, EPILOGUE_DEFECTS
from mailparser.dates import parse_mail_date
from mailparser.utils import decode_header_part, get_addresses, mime_header_view, receiveds_parsing

logging.getLogger("mailparser").setLevel(logging.CRITICAL)

# Address fields that get_addresses reads without a diagnostic, as a grammar small enough to
# check by eye: addr-specs of plain dot-atoms, each bare or after a display name of plain
# words or one quoted string (no encoded word, comment, group, route or escape; ASCII). Such
# a field costs one regex match instead of mail-parser's scanner; anything else goes to it.
_ATOM = r"[A-Za-z0-9_+=-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*"
_WSP = r"(?:[ \t]|\r?\n[ \t])"
_WORD = r"[A-Za-z0-9_'-]+"
_PHRASE = rf"(?:{_WORD}(?:{_WSP}+{_WORD})*|\"[ !#-\[\]-~]*\")"
_MAILBOX = rf"{_WSP}*(?:{_ADDR}|{_PHRASE}{_WSP}*<{_ADDR}>){_WSP}*"
_PLAIN_ADDRESSES = re.compile(rf"{_MAILBOX}(?:,{_MAILBOX})*")


def defect_names(msg: Message) -> tuple[str, ...]:
    """mail-parser's defect names of msg, sorted; the standard library's where mail-parser
    gives up on the mail (it does on some that every mail client reads)."""
    try:
        names = _names(msg)
    except Exception:  # noqa: BLE001 - mail-parser's whole pass decides, and may give up
        names = None
    return _full_pass(msg) if names is None else tuple(sorted(names))


def _full_pass(msg: Message) -> tuple[str, ...]:
    """What the desk did for every mail before: mail-parser's whole pass."""
    try:
        return tuple(sorted(set(mailparser.MailParser(msg).defects_categories or ())))
    except Exception:  # noqa: BLE001 - a bug of mail-parser's is no reason to lose the mail
        return tuple(sorted({type(d).__name__ for p in msg.walk() for d in p.defects}))


def _names(msg: Message) -> set[str] | None:
    """The names, or None when mail-parser's body walk must decide them."""
    parts = list(msg.walk())
    names = {type(d).__name__ for p in parts for d in p.defects}
    if names & EPILOGUE_DEFECTS:
        return None
    names |= _header_names(msg)
    for part in parts:
        view, problems = mime_header_view(part)
        filename = ""
        if any("name" in str(v).lower() for v in view.values()):
            filename = decode_header_part(view.get_filename(), defects=problems)
        if problems:
            names.add("MimeHeaderDefect")
        if not part.is_multipart() and _may_fail_to_decode(part, view, filename):
            return None
    return names


def _header_names(msg: Message) -> set[str]:
    """AddressHeaderDefect, DateHeaderDefect, ReceivedHeaderDefect, as mail-parser finds
    them: every occurrence of each field, through its own helpers."""
    names = set()
    for name, value in msg.items():
        if name.lower() not in ADDRESSES_HEADERS:
            continue
        if isinstance(value, str) and _PLAIN_ADDRESSES.fullmatch(value):
            continue
        problems: list[dict[str, object]] = []
        get_addresses(value, defects=problems, decode_names=True)
        if problems:
            names.add("AddressHeaderDefect")
            break
    raw = list(msg.raw_items())
    if any(parse_mail_date(value).reasons for name, value in raw
           if name.lower() in ("date", "resent-date")):
        names.add("DateHeaderDefect")
    received: list[dict[str, object]] = []
    dates: list[dict[str, object]] = []
    receiveds_parsing([value for name, value in raw if name.lower() == "received"],
                      defects=received, date_defects=dates)
    if received:
        names.add("ReceivedHeaderDefect")
    if dates:
        names.add("DateHeaderDefect")
    return names


def _may_fail_to_decode(part: Message, view: Message, filename: str) -> bool:
    """Whether this leaf part could give mail-parser a CharsetDecodeDefect: it decodes the
    payload by the charset of its Content-Type (utf-8 when none) unless it takes the part
    for an attachment that is not inline text: one with a file name, a Content-ID (not
    text/plain or text/html) or disposition attachment are, among its rules. A payload that
    decodes cannot; one that does not, might. The part's defects stay as the parser left
    them: decoding adds any its transfer encoding has, which mail-parser does not count (it
    reads the defects before it decodes)."""
    disposition = str(view.get_content_disposition() or "").lower()
    subtype = view.get_content_subtype()
    attachment = bool(filename) or disposition == "attachment" \
        or bool(view.get("content-id")) and subtype not in ("html", "plain")
    if attachment and not (disposition == "inline"
                           and part.get_content_type() in ("text/plain", "text/html")):
        return False
    parsed = list(part.defects)
    payload = part.get_payload(decode=True)
    part.defects[:] = parsed
    if not isinstance(payload, bytes) or not payload:
        return False
    try:
        payload.decode(view.get_content_charset("utf-8")).encode("utf-8")
    except (LookupError, UnicodeError):
        return True
    return False
