"""Raw bytes to an immutable ParsedMail, with mail-parser doing the MIME work.

Everything downstream reads ParsedMail, never the raw message, so that what a
hostile mail can smuggle in is decided here once: header values are one line,
addresses are lower-case addr-specs, attachment names are safe to show.
"""
from __future__ import annotations

import base64
import email
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import parsedate_to_datetime

import mailparser

from ..config.schema import Limits
from .bounce import Bounce, maybe_bounce, read_bounce
from .headers import one_line
from .html import html_to_text

logging.getLogger("mailparser").setLevel(logging.CRITICAL)

_MSGID = re.compile(r"<[^<>\s]{1,990}>")
_ADDR = re.compile(r"^[^@\s]{1,256}@[^@\s]{1,255}$")
DEFAULT_LIMITS = Limits()
_NEWLINES = re.compile(r"\r\n?")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069/\\:*?\"<>|]")


class Unparseable(Exception):
    """The bytes are not a mail we can read; the raw copy goes to quarantine."""


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


def decoded(value: str, limit: int = 998) -> str:
    """RFC 2047 words decoded (mail-parser leaves some encoded), then made one line."""
    if "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass
    return one_line(value, limit)


def _text(data: bytes) -> str:
    """Unlabelled 8-bit bytes: UTF-8 if they are, else Windows-1252 (what such mail nearly
    always is); never dropped."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _plain_text(msg: Message) -> str:
    """The text/plain parts decoded by their charset when Python knows it, else guessed."""
    out = []
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.get_filename():
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        try:
            out.append(data.decode(part.get_content_charset() or "ascii"))
        except (LookupError, UnicodeDecodeError):
            out.append(_text(data))
    return "\n".join(out).strip("\n")


def message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value or ""))


def clean_address(addr: str) -> str:
    addr = one_line(addr).strip().strip("<>").lower()
    return addr if _ADDR.match(addr) else ""


def base_address(address: str) -> str:
    """support+anything@d -> support@d: the address an extension hangs off."""
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def safe_filename(name: str, index: int, content_type: str) -> str:
    """A name that cannot traverse paths, hide its extension or break a listing."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" .")[:200]
    if not base:
        sub = content_type.split("/")[-1][:10] or "bin"
        base = f"attachment-{index}.{re.sub(r'[^a-z0-9]', '', sub) or 'bin'}"
    return base


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
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def _attachments(raw: list[dict[str, object]]) -> tuple[Attachment, ...]:
    out = []
    for i, a in enumerate(raw, 1):
        payload = a.get("payload") or ""
        if a.get("binary"):
            data = base64.b64decode(str(payload), validate=False)
        else:
            data = str(payload).encode(str(a.get("charset") or "utf-8"), "replace") \
                if isinstance(payload, str) else bytes(payload)  # type: ignore[arg-type]
        ctype = one_line(str(a.get("mail_content_type") or "application/octet-stream")).lower()
        out.append(Attachment(safe_filename(str(a.get("filename") or ""), i, ctype), ctype, data))
    return tuple(out)


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
            part.set_payload(payload[:keep])
            if f"more than {limits.max_parts} parts" not in cut:
                cut.append(f"more than {limits.max_parts} parts")
        for child in part.get_payload():
            visit(child, depth + 1)

    visit(msg, 0)
    return cut


def _replace(part: Message, why: str) -> None:
    part.set_payload(_NOTE.format(why=why))
    for name in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition"):
        del part[name]
    part["Content-Type"] = "text/plain; charset=us-ascii"


def _mail_parser(raw: bytes, limits: Limits) -> tuple[mailparser.MailParser, list[str]]:
    try:
        msg = email.message_from_bytes(raw)
        cut = _prune(msg, limits)
        return mailparser.MailParser(msg), cut
    except RecursionError:
        raise Unparseable("MIME structure nested too deeply to read "
                          "(raise no limit: this is an attack shape)") from None
    except Exception as e:  # mail-parser raises whatever the stdlib raised
        raise Unparseable(f"MIME structure unreadable: {type(e).__name__}: {e}") from e


def parse(raw: bytes, digest: str, envelope_from: str | None = None,
          limits: Limits = DEFAULT_LIMITS) -> ParsedMail:
    """Parse; raise Unparseable when there is no mail to speak of."""
    if len(raw) > limits.max_message_size:
        raise Unparseable(f"{len(raw)} bytes, over limits.max_message_size="
                          f"{limits.max_message_size}; raise it and run `maildesk quarantine "
                          f"retry`, or `quarantine release` to ticket it unread")
    head = raw[:65536].lstrip()
    if not head or not re.match(rb"^[!-9;-~]{1,200}:", head):
        raise Unparseable("no mail headers at the start of the message")
    mp, truncated = _mail_parser(raw, limits)
    msg = mp.message

    from_pairs = mp.from_ or []
    from_addr = _addresses(from_pairs)[:1]
    from_name = decoded(from_pairs[0][0]) if from_pairs else ""
    sender = from_addr[0] if from_addr else clean_address(envelope_from or "")

    mid_hdr = message_ids(msg.get("Message-ID", ""))
    message_id = mid_hdr[0] if mid_hdr else f"<generated.{digest[:40]}@maildesk.invalid>"

    text = "\n".join(mp.text_plain).strip("\n")
    if not text and mp.text_html:
        text = html_to_text("\n".join(mp.text_html))
    if "\ufffd" in text and mp.text_plain:  # undecodable bytes: try harder before replacing
        text = _plain_text(msg) or text
    if not text and not mp.attachments:     # broken boundaries: the body as it stands
        text = _text(raw.split(b"\n\n", 1)[-1][:limits.max_text * 2]).strip()
    text = _NEWLINES.sub("\n", text.replace("\x00", ""))
    if len(text) > limits.max_text:
        text = text[:limits.max_text]
        truncated.append(f"text after {limits.max_text} characters")
    subject = mp.subject or ""
    subject = str(subject[0] if isinstance(subject, list) else subject)  # duplicates: the first
    raw_subject = msg.get("Subject", "")
    if isinstance(raw_subject, Header):     # 8-bit bytes with no charset: keep them readable
        subject = "".join(_text(v) if isinstance(v, bytes) else v
                          for v, _charset in decode_header(raw_subject))
    subject = decoded(subject)
    date_hdr = one_line(str(msg.get("Date", "")))

    items = msg.items()
    if len(items) > limits.max_headers:
        truncated.append(f"header fields after the first {limits.max_headers}")
    headers = []
    for k, v in items[:limits.max_headers]:
        value = decoded(str(v), limits.max_header_length + 1)
        if len(value) > limits.max_header_length:
            value = value[:limits.max_header_length]
            truncated.append(f"{str(k)[:40]} after {limits.max_header_length} characters")
        headers.append((str(k).lower(), value))

    defects = tuple(sorted({d for d in (mp.defects_categories or ())}))
    if mid_hdr:
        basis = f"mid\0{message_id}\0{sender}\0{date_hdr}\0{subject}"
    else:
        body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[-1]
        basis = f"nomid\0{sender}\0{date_hdr}\0{subject}\0{hashlib.sha256(body).hexdigest()}"

    return ParsedMail(
        message_id=message_id,
        has_message_id=bool(mid_hdr),
        from_addr=sender,
        from_name=from_name,
        to=_addresses(mp.to),
        cc=_addresses(mp.cc),
        subject=subject,
        date=_date(date_hdr),
        text=text,
        in_reply_to=message_ids(str(msg.get("In-Reply-To", ""))),
        references=message_ids(str(msg.get("References", ""))),
        auto_submitted=one_line(str(msg.get("Auto-Submitted", ""))).lower(),
        attachments=_attachments(mp.attachments),
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
                limits: Limits = DEFAULT_LIMITS) -> list[ParsedMail | str]:
    """Parse many mails, a reason string for each one that cannot be; runs in a worker process."""
    out: list[ParsedMail | str] = []
    for raw, envelope_from in items:
        try:
            out.append(parse(raw, hashlib.sha256(raw).hexdigest(), envelope_from, limits))
        except Unparseable as e:
            out.append(str(e))
    return out
