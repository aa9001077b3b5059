"""Raw bytes to an immutable ParsedMail, with mail-parser doing the MIME work.

Everything downstream reads ParsedMail, never the raw message, so that what a
hostile mail can smuggle in is decided here once: header values are one line,
addresses are lower-case addr-specs, attachment names are safe to show.
"""
from __future__ import annotations

import email
import hashlib
import re
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from ..config.schema import Limits
from ..errors import MaildeskError
from .body import read as read_body
from .bounce import Bounce, maybe_bounce, read_bounce
from .defects import defect_names
from .headers import TEXT_CONTROL, one_line, raw_text, text_of

_MSGID = re.compile(r"<[^<>\s]{1,990}>")
_ADDR = re.compile(r"^[^@\s]{1,256}@[^@\s]{1,255}$")
DEFAULT_LIMITS = Limits()
_NEWLINES = re.compile(r"\r\n?")
_BOM = b"\xef\xbb\xbf"
# a header line; RFC 5322's obsolete syntax allows blanks before the colon
_HEAD_START = re.compile(rb"[!-9;-~]{1,200}[ \t]*:")


class Unparseable(MaildeskError):
    """The bytes are not a mail we can read; the raw copy goes to quarantine."""


@dataclass(frozen=True)
class Unread:
    """Why a mail parsed in a worker process could not be: a reason, and the traceback when
    the parser crashed (a bug of ours or a library's, for whoever fixes it)."""

    reason: str
    trace: str | None = None


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedMail:
    message_id: str               # ours if the mail had none
    has_message_id: bool
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: datetime | None
    text: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    auto_submitted: str
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()      # (lower-case name, one-line value)
    truncated: tuple[str, ...] = ()                # what a limit left out, said to the reader
    bounce: Bounce | None = None                   # the failures a bounce reports
    dedupe_key: str = field(default="", compare=False)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, nearest first."""
        return tuple(dict.fromkeys((*self.in_reply_to, *reversed(self.references))))


def message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def clean_address(addr: str) -> str:
    """A lower-case addr-spec, or "" when addr is none. Forgives a trailing dot on the
    domain (`a@b.com.`, a fully qualified name that some MTAs write)."""
    addr = one_line(addr).strip().strip("<>").rstrip(".").lower()
    return addr if _ADDR.match(addr) else ""


_ADDR_IN_TEXT = re.compile(r"[^\s<>\"(),;:@\[\]]{1,256}@[^\s<>\"(),;:@\[\]]{1,255}")
_RAW_FROM = re.compile(rb"(?im)^from:[ \t]*([^\r\n]{1,2000})")


def _first_address(values: list[str], hints: tuple[str, ...] = ()) -> tuple[str, str]:
    """(address, name) of the first usable address in raw header values (raw_text: encoded
    words not yet decoded, so that none can make an address): getaddresses first, then an
    addr-spec anywhere in the value (`Name a@b.com` without brackets). Only the name is
    decoded."""
    for value in values:
        for name, addr in _pairs([value]):
            clean = clean_address(addr)
            if clean:
                return clean, one_line(text_of(name, hints))
        m = _ADDR_IN_TEXT.search(value)
        if m and clean_address(m.group()):
            name = value.replace(m.group(), "").strip(" <>\"'")
            return clean_address(m.group()), one_line(text_of(name, hints))
    return "", ""


def _all_addresses(values: list[str]) -> tuple[str, ...]:
    """Every address in raw header values (To, Cc), in order, once."""
    return _addresses(_pairs(values))


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    """getaddresses, or the addr-specs alone where it gives up (a header built to exhaust
    its recursion, as MimeKit's stack-overflow test mail is)."""
    try:
        return getaddresses(values)
    except (RecursionError, ValueError, IndexError):
        return [("", a) for v in values for a in _ADDR_IN_TEXT.findall(v)[:1000]]


def sender_of(msg: Message, raw: bytes, envelope_from: str | None,
              hints: tuple[str, ...]) -> tuple[str, str]:
    """Who wrote the mail, (address, display name): the From header (every one of them);
    a From line the parser missed because the header block broke before it; then Sender,
    Reply-To and Return-Path; then the envelope. "" when nothing names anyone."""
    values = [raw_text(v, hints) for v in msg.get_all("From", [])]
    found = _first_address(values, hints)
    if found[0]:
        return found
    head = re.split(rb"\r?\n\r?\n", raw[:65536], maxsplit=1)[0]
    found = _first_address([raw_text(m.group(1).decode("ascii", "surrogateescape"), hints)
                            for m in _RAW_FROM.finditer(head)], hints)
    if found[0]:
        return found
    for header in ("Sender", "Reply-To", "Return-Path"):
        found = _first_address([raw_text(v, hints) for v in msg.get_all(header, [])], hints)
        if found[0]:
            return found
    return clean_address(envelope_from or ""), ""


def base_address(address: str) -> str:
    """support+anything@d -> support@d: the address an extension hangs off."""
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def _addresses(pairs: list[tuple[str, str]] | None) -> tuple[str, ...]:
    out = []
    for _name, addr in pairs or []:
        a = clean_address(addr)
        if a and a not in out:
            out.append(a)
    return tuple(out)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        d = parsedate_to_datetime(value)
        if d is None:
            return None
        return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):    # 9999-12-31 -0100: past 9999
        return None


OLDEST = datetime(1990, 1, 1, tzinfo=timezone.utc)   # before it, a date is a broken clock's


def written_at(mail: ParsedMail, now: datetime) -> datetime:
    """When a mail was written, for an import of old mail: its Date, else the newest date
    of its Received fields (what our side's servers saw), else now. A date after now or
    before 1990 is a wrong clock's or a forger's: it counts as none."""
    if mail.date is not None and OLDEST <= mail.date <= now:
        return mail.date
    received = [d for name, value in mail.headers if name == "received"
                for d in (_date(value.rpartition(";")[2]),)
                if d is not None and OLDEST <= d <= now]
    return max(received, default=now)


_NOTE = "(maildesk: not read, {why}; the original is kept whole)"


def _prune(msg: Message, limits: Limits) -> list[str]:
    """Cut the MIME tree to the limits before anything reads it; say what was cut."""
    cut: list[str] = []
    seen = 0

    def visit(part: Message, depth: int) -> None:
        nonlocal seen
        seen += 1
        payload = part.get_payload()
        if not isinstance(payload, list):
            return
        if depth >= limits.max_depth:
            _replace(part, f"nested deeper than limits.max_depth={limits.max_depth}")
            cut.append(f"parts nested deeper than {limits.max_depth} levels")
            return
        keep = max(0, limits.max_parts - seen)
        if len(payload) > keep:
            payload = payload[:keep]
            part.set_payload(payload)
            if f"more than {limits.max_parts} parts" not in cut:
                cut.append(f"more than {limits.max_parts} parts")
        for child in payload:
            if isinstance(child, Message):   # always, from the parser; typeshed allows a str
                visit(child, depth + 1)

    visit(msg, 0)
    return cut


def _replace(part: Message, why: str) -> None:
    part.set_payload(_NOTE.format(why=why))
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
        del part[name]
    part["Content-Type"] = "text/plain; charset=us-ascii"


def _message(raw: bytes, limits: Limits) -> tuple[Message, list[str]]:
    """The stdlib's MIME tree, cut to the limits, and what was cut."""
    try:
        msg = email.message_from_bytes(raw)
        return msg, _prune(msg, limits)
    except RecursionError:
        raise Unparseable("MIME structure nested too deeply to read "
                          "(raise no limit: this is an attack shape)") from None
    except Exception as e:  # noqa: BLE001 - the stdlib raises whatever it meets
        raise Unparseable(f"MIME structure unreadable: {type(e).__name__}: {e}") from e


def parse(raw: bytes, digest: str, envelope_from: str | None = None,
          limits: Limits = DEFAULT_LIMITS) -> ParsedMail:
    """Parse; raise Unparseable when there is no mail to speak of."""
    if len(raw) > limits.max_message_size:
        raise Unparseable(f"{len(raw)} bytes, over limits.max_message_size="
                          f"{limits.max_message_size}; raise it and run `maildesk quarantine "
                          f"retry`, or `quarantine release` to ticket it unread")
    raw = raw[3:] if raw.startswith(_BOM) else raw
    if raw.startswith(b"From "):    # an mbox separator (Postfix pipe flags=F, procmail, a
        raw = raw.partition(b"\n")[2]  # single-message mbox): no header, and not the mail
    head = raw[:65536].lstrip()
    if not head or not _HEAD_START.match(head):
        raise Unparseable("no mail headers at the start of the message")
    msg, truncated = _message(raw, limits)
    hints = tuple(dict.fromkeys(c for c in msg.get_charsets() if c))

    def header(name: str) -> str:
        return one_line(text_of(msg.get(name, ""), hints))

    sender, from_name = sender_of(msg, raw, envelope_from, hints)
    to = _all_addresses([raw_text(v, hints) for v in msg.get_all("To", [])])
    cc = _all_addresses([raw_text(v, hints) for v in msg.get_all("Cc", [])])
    defects = defect_names(msg)
    mid_hdr = message_ids(header("Message-ID"))
    message_id = mid_hdr[0] if mid_hdr else f"<generated.{digest[:40]}@maildesk.invalid>"

    text, files = read_body(msg, hints)
    # no control character but tab and newline: the text is quoted in our own mail and
    # shown to agents, and an ESC or a C1 CSI is a terminal's instruction, not the customer's
    text = TEXT_CONTROL.sub("", _NEWLINES.sub("\n", text))
    if len(text) > limits.max_text:
        text = text[:limits.max_text]
        truncated.append(f"text after {limits.max_text} characters")
    subject = header("Subject")                         # duplicates: the first
    date_hdr = header("Date")

    items = msg.items()
    if len(items) > limits.max_headers:
        truncated.append(f"header fields after the first {limits.max_headers}")
    headers = []
    for k, v in items[:limits.max_headers]:
        value = one_line(text_of(v, hints), limits.max_header_length + 1)
        if len(value) > limits.max_header_length:
            value = value[:limits.max_header_length]
            truncated.append(f"{str(k)[:40]} after {limits.max_header_length} characters")
        headers.append((str(k).lower(), value))

    if mid_hdr:
        basis = f"mid\0{message_id}\0{sender}\0{date_hdr}\0{subject}"
    else:
        rest = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[-1]
        basis = f"nomid\0{sender}\0{date_hdr}\0{subject}\0{hashlib.sha256(rest).hexdigest()}"

    return ParsedMail(
        message_id=message_id,
        has_message_id=bool(mid_hdr),
        from_addr=sender,
        from_name=from_name,
        to=to,
        cc=cc,
        subject=subject,
        date=_date(date_hdr),
        text=text,
        in_reply_to=message_ids(header("In-Reply-To")),
        references=message_ids(header("References")),
        auto_submitted=header("Auto-Submitted").lower(),
        attachments=tuple(Attachment(n, ct, d) for n, ct, d in files),
        defects=defects,
        headers=tuple(headers),
        truncated=tuple(dict.fromkeys(truncated)),
        bounce=read_bounce(msg) if maybe_bounce(msg, sender, subject) else None,
        dedupe_key=hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest(),
    )


UNKNOWN_SENDER = "unknown-sender@maildesk.invalid"


def unreadable(raw: bytes, digest: str, envelope_from: str | None, why: str) -> ParsedMail:
    """A mail nobody can read, as a ticket can hold it: what we know, and the original."""
    sender = clean_address(envelope_from or "") or UNKNOWN_SENDER
    return ParsedMail(
        message_id=f"<unreadable.{digest[:40]}@maildesk.invalid>", has_message_id=False,
        from_addr=sender, from_name="", to=(), cc=(), subject="(unreadable mail)", date=None,
        text=f"maildesk could not read this mail ({why}); the original is attached as it "
             f"arrived.", in_reply_to=(), references=(), auto_submitted="",
        attachments=(Attachment("original.eml", "message/rfc822", raw),),
        dedupe_key=hashlib.sha256(f"unreadable\0{digest}".encode()).hexdigest())


def parse_batch(items: list[tuple[bytes, str | None]],
                limits: Limits = DEFAULT_LIMITS) -> list[ParsedMail | Unread]:
    """Parse many mails, an Unread for each one that cannot be; runs in a worker process.
    Nothing one mail does escapes it: the others of the batch are parsed all the same."""
    out: list[ParsedMail | Unread] = []
    for raw, envelope_from in items:
        try:
            out.append(parse(raw, hashlib.sha256(raw).hexdigest(), envelope_from, limits))
        except Unparseable as e:
            out.append(Unread(str(e)))
        except Exception as e:  # noqa: BLE001 - a crash is this mail's, kept with it
            out.append(Unread(f"{type(e).__name__}: {e}"[:2000], traceback.format_exc()))
    return out
