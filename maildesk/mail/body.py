"""A mail's text and attachments, read from its MIME tree the way a mail client shows them.

- In a multipart/alternative, one version is read: the plain text when there is one,
  else the HTML (as text). Everywhere else every text part counts, in order, so a second
  HTML part of a multipart/mixed is not lost.
- A part with a file name, or marked as an attachment, is an attachment; so is any part
  that is not text. An attached mail is `<its subject>.eml`, whole, and its own parts are
  not read as ours. A part without a name is named by its kind (`image-2.png`), never by
  its Content-ID.
- A multipart whose boundary never comes is read as text, as it stands.
- Payloads are decoded by the standard library, which forgives base64 without padding;
  text by charsets.decode, which forgives wrong and missing charset names.
"""
from __future__ import annotations

import base64
import mimetypes
import quopri
import re
from email import message_from_bytes
from email.errors import InvalidBase64LengthDefect
from email.message import Message

from .charsets import decode, undeclared
from .headers import one_line, text_of
from .html import html_to_text

_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e"
                          r"\u2066-\u2069/\\:*?\"<>|]")
_EXTENSIONS = {"text/plain": ".txt", "message/rfc822": ".eml", "image/jpeg": ".jpg",
               "application/octet-stream": ".bin", "message/delivery-status": ".txt",
               "text/rfc822-headers": ".txt", "message/disposition-notification": ".txt"}


def safe_filename(name: str, index: int, content_type: str) -> str:
    """A name that cannot traverse paths, hide its extension or break a listing; a part
    without one is named by its kind and number."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("_", base).strip(" .")[:200]
    if not base:
        kind = re.sub(r"[^a-z0-9-]", "", content_type.split("/")[0]) or "attachment"
        ext = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
        base = f"{'attachment' if kind == 'application' else kind}-{index}{ext}"
    return base


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def payload(part: Message) -> bytes | None:
    """The part's decoded bytes. Base64 that even the standard library gives up on (a
    length one past a multiple of four, after junk is dropped) is decoded as far as it
    goes, rather than kept as base64 text."""
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64" \
            and any(isinstance(d, InvalidBase64LengthDefect) for d in part.defects):
        return _decode(str(part.get_payload()).encode("ascii", "ignore"), "base64") or data
    return data


def _decode(data: bytes, encoding: str) -> bytes | None:
    """data in base64 or quoted-printable, decoded; None when it is not."""
    if encoding == "quoted-printable":
        return quopri.decodestring(data)
    clean = _NOT_BASE64.sub(b"", data)
    try:
        return base64.b64decode(clean[:len(clean) - len(clean) % 4]) or None
    except ValueError:
        return None


class _Reader:
    def __init__(self, hints: tuple[str, ...]) -> None:
        self.hints = hints
        self.texts: list[str] = []
        self.attachments: list[tuple[str, str, bytes]] = []   # (name, content type, data)

    def visit(self, part: Message) -> None:
        ctype = part.get_content_type()
        if ctype.startswith("message/") and part.is_multipart():
            self._message(part, ctype)
            return
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if ctype == "multipart/alternative" and children:
                self.visit(_preferred(children))
                return
            for child in children:
                self.visit(child)
            return
        if ctype.startswith("multipart/"):        # its boundary never came: the body as is
            data = payload(part)
            if data is not None:
                self.texts.append(undeclared(data, self.hints).strip())
            return
        name = self._filename(part)
        if ctype in ("text/plain", "text/html") and not name \
                and part.get_content_disposition() != "attachment":
            text = self._decoded(part)
            self.texts.append(html_to_text(text) if ctype == "text/html" else text)
            return
        data = payload(part)
        if data is None:
            data = str(part.get_payload()).encode("utf-8", "surrogateescape")
        self.attachments.append((name, ctype, data))

    def _message(self, part: Message, ctype: str) -> None:
        """An attached mail (or a report's parts): one attachment, its bytes as they are.
        Some clients encode an attached mail in base64 or quoted-printable, which RFC 2046
        forbids: the parser then reads the encoded text as a mail without headers, so
        such a mail is decoded and read again."""
        inner = [c for c in part.get_payload() if isinstance(c, Message)]
        chunks = []
        for m in inner:
            try:
                chunks.append(m.as_bytes())
            except (UnicodeError, LookupError, ValueError, TypeError):
                chunks.append(m.as_string().encode("utf-8", "surrogateescape"))
        data = b"\n".join(chunks)
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoding in ("base64", "quoted-printable") and inner:
            decoded = _decode(data, encoding)
            if decoded is not None:
                data, inner = decoded, [message_from_bytes(decoded)]
        name = self._filename(part)
        if not name and ctype in ("message/rfc822", "message/global") and inner:
            subject = one_line(text_of(inner[0].get("Subject", ""), self.hints), 80)
            name = f"{subject}.eml" if subject.strip(" .") else ""
        self.attachments.append((name, ctype, data))

    def _filename(self, part: Message) -> str:
        try:
            name = part.get_filename()
        except (ValueError, LookupError, UnicodeError, AssertionError):
            name = None
        if name is None:
            return ""
        return one_line(text_of(name, self.hints), 250)

    def _decoded(self, part: Message) -> str:
        data = payload(part)
        if data is None:
            return ""
        return decode(data, part.get_param("charset") and part.get_content_charset(),
                      self.hints)


def _preferred(children: list[Message]) -> Message:
    """The version of a multipart/alternative to read: plain text, else the last (richest)
    that holds text."""
    for c in children:
        if c.get_content_type() == "text/plain" and c.get_content_disposition() != "attachment":
            return c
    for c in reversed(children):
        if c.get_content_type() == "text/html" or c.is_multipart():
            return c
    return children[-1]


def read(msg: Message, hints: tuple[str, ...]) -> tuple[str, list[tuple[str, str, bytes]]]:
    """The text a person reads, and the attachments as (safe name, content type, bytes)."""
    reader = _Reader(hints)
    reader.visit(msg)
    text = "\n".join(t.strip("\n") for t in reader.texts if t.strip())
    return text, [(safe_filename(n, i, ct), ct, d)
                  for i, (n, ct, d) in enumerate(reader.attachments, 1)]
