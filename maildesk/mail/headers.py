"""Header values that are safe to store, show and send again.

A customer's subject or name ends up in our outgoing headers; CR, LF, NUL and
the Unicode line separators are what header injection is made of, so every
value taken from a mail passes through one_line() first.
"""
from __future__ import annotations

import base64
import quopri
import re
from email.errors import MessageError
from email.header import Header, decode_header

from .charsets import codec, decode, undeclared

# C0 but tab, DEL, C1 (U+0080-U+009F: U+009B is an 8-bit CSI to a terminal, U+0085 a line
# break to some readers) and the Unicode line and paragraph separators: none belongs in a
# header value we store, show or send
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# in a body, where tab and newline belong
TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]+")
_SURROGATES = re.compile(r"[\udc80-\udcff]")
MAX_HEADER = 998


def one_line(value: str, limit: int = MAX_HEADER) -> str:
    """value with line breaks and control characters folded to single spaces."""
    value = CONTROL.sub(" ", value.replace("\t", " "))
    return re.sub(r" {2,}", " ", value).strip()[:limit]


def raw_text(value: str | Header, hints: tuple[str, ...] = ()) -> str:
    """A header value with its 8-bit bytes read as text (the parser keeps them as
    surrogates, or as a Header), encoded words left as they are. Addresses are parsed
    from this: an encoded word may make a display name, never an address
    (`=?utf-8?q?ceo=40bank.example?= <eve@evil.example>` is eve's mail)."""
    if not isinstance(value, str):                 # an email.header.Header of 8-bit bytes
        try:
            parts = decode_header(value)
        except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
            return raw_text(str(value), hints)
        return "".join(decode(v, c, hints) if isinstance(v, bytes) else v for v, c in parts)
    if _SURROGATES.search(value):
        return undeclared(value.encode("ascii", "surrogateescape"), hints)
    return value


def text_of(value: str | Header, hints: tuple[str, ...] = ()) -> str:
    """A header value as text: raw_text, then encoded words decoded (leniently where the
    standard library gives up)."""
    value = raw_text(value, hints)
    if "=?" in value:
        try:
            return "".join(decode(v, c, hints) if isinstance(v, bytes) else v
                           for v, c in decode_header(value))
        except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
            return _WORD.sub(lambda m: _word(m, hints), _BETWEEN_WORDS.sub("", value))
    return value


# RFC 2047 encoded words, for the lenient second try: bad padding, junk inside
_WORD = re.compile(r"=\?([^?\s]{1,40})\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t]+(?==\?)")


def _word(m: re.Match[str], hints: tuple[str, ...]) -> str:
    charset, kind, text = m.group(1).split("*")[0], m.group(2).lower(), m.group(3)
    if kind == "b":
        clean = re.sub(r"[^A-Za-z0-9+/]", "", text)
        clean = clean[:len(clean) - 1] if len(clean) % 4 == 1 else clean
        try:
            data = base64.b64decode(clean + "=" * (-len(clean) % 4))
        except ValueError:
            return m.group()
    else:       # raw 8-bit letters inside a Q word: their bytes in the word's charset
        data = quopri.decodestring(text.replace("_", " ").encode(
            codec(charset) or "utf-8", "replace"), header=True)
    return decode(data, charset, hints)
