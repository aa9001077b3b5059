"""Building the mail we send; header values only through Header and formataddr.

Values that came from a customer's mail (their name, their subject) pass
through one_line() before they reach a header, and addresses are checked,
so no CR/LF can add a header of its own. Every mail we generate says so
(Auto-Submitted) and carries X-Loop, so that other robots leave it alone.
"""
from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.quoprimime import body_encode
from email.utils import encode_rfc2231, format_datetime, formataddr

from .headers import CONTROL, one_line
from .parse import clean_address

_PLAIN_VALUE = re.compile(r"[!-~]+(?: [!-~]+)*")


@dataclass(frozen=True)
class Outgoing:
    from_name: str
    from_addr: str
    to: tuple[tuple[str, str], ...]          # (display name, address)
    subject: str
    text: str
    html: str | None
    message_id: str
    date: datetime
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    reply_to: str | None = None
    auto_submitted: str = "auto-replied"
    x_loop: str = ""
    ticket_ref: str | None = None
    cc: tuple[tuple[str, str], ...] = ()
    attachments: tuple[tuple[str, str, bytes], ...] = ()   # (filename, content type, data)


def new_message_id(domain: str, ref: str | None = None) -> str:
    tag = f"{ref.lower()}." if ref else ""
    return f"<{tag}{secrets.token_hex(10)}@{domain}>"


def _header(value: str, name: str) -> str:
    """One header value, RFC 2047-encoded when not ASCII, folded by the email package. A
    short value of printable ASCII words is its own encoding (Header leaves it as it is),
    and is not put through Header, which cost a mail a fifth of its composing."""
    if CONTROL.search(value):
        raise ValueError(f"header value with a line break or control character: {value!r}")
    if len(name) + 2 + len(value) <= 76 and _PLAIN_VALUE.fullmatch(value):
        return value
    return Header(value, "us-ascii" if value.isascii() else "utf-8",
                  maxlinelen=76, header_name=name).encode()


def ascii_address(addr: str) -> str:
    """The address with an internationalised domain in its ASCII form (IDNA), so that only
    a UTF-8 local part needs SMTPUTF8 (RFC 6531) on the way out."""
    local, _, domain = addr.rpartition("@")
    if domain.isascii():
        return addr
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return addr


def _address(name: str, addr: str) -> str:
    clean = clean_address(addr)
    if not clean:
        raise ValueError(f"refusing to send to a malformed address: {addr!r}")
    clean = ascii_address(clean)
    if clean.isascii():
        return formataddr((one_line(name, 200), clean), charset="utf-8")
    # RFC 6532: the address itself in UTF-8; the name still as an encoded word
    shown = one_line(name, 200)
    return f"{_header(shown, 'To')} <{clean}>" if shown else clean


def _part(subtype: str, text: str) -> str:
    text = text if text.endswith("\n") else text + "\n"
    body = body_encode(text.encode("utf-8").decode("latin-1"))  # quoprimime works on bytes-as-str
    return (f"Content-Type: text/{subtype}; charset=\"utf-8\"\n"
            f"Content-Transfer-Encoding: quoted-printable\n\n{body}\n")


def compose(m: Outgoing) -> bytes:
    """The mail as bytes (LF line ends; SMTP delivery turns them into CRLF)."""
    headers = [
        ("From", _address(m.from_name, m.from_addr)),
        ("To", ", ".join(_address(n, a) for n, a in m.to)),
        *([("Cc", ", ".join(_address(n, a) for n, a in m.cc))] if m.cc else []),
        ("Subject", _header(one_line(m.subject), "Subject")),
        ("Date", format_datetime(m.date)),
        ("Message-ID", _header(m.message_id, "Message-ID")),
    ]
    if m.in_reply_to:
        headers.append(("In-Reply-To", _header(m.in_reply_to, "In-Reply-To")))
    if m.references:
        headers.append(("References", _header(" ".join(m.references[-20:]), "References")))
    if m.reply_to:
        headers.append(("Reply-To", _address(m.from_name, m.reply_to)))
    headers += [("Auto-Submitted", _header(m.auto_submitted, "Auto-Submitted")),
                ("X-Auto-Response-Suppress", "All")]
    if m.x_loop:
        headers.append(("X-Loop", clean_address(m.x_loop)))
    if m.ticket_ref:
        headers.append(("X-Maildesk-Ticket", _header(m.ticket_ref, "X-Maildesk-Ticket")))
    headers.append(("MIME-Version", "1.0"))
    head = "".join(f"{k}: {v}\n" for k, v in headers)
    if m.html is None:
        body = _part("plain", m.text)
    else:
        boundary = f"=_md_{secrets.token_hex(12)}"
        body = (f"Content-Type: multipart/alternative; boundary=\"{boundary}\"\n\n"
                f"--{boundary}\n{_part('plain', m.text)}"
                f"--{boundary}\n{_part('html', m.html)}"
                f"--{boundary}--\n")
    if m.attachments:
        boundary = f"=_md_{secrets.token_hex(12)}"
        files = "".join(f"--{boundary}\n{_attachment(*a)}" for a in m.attachments)
        body = (f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n"
                f"--{boundary}\n{body}{files}--{boundary}--\n")
    return (head + body).encode("utf-8")   # ASCII unless an address needs RFC 6532


def _attachment(filename: str, content_type: str, data: bytes) -> str:
    ctype = content_type if re.fullmatch(r"[\w.+-]+/[\w.+-]+", content_type) \
        else "application/octet-stream"
    name = one_line(filename, 200).replace("\\", "_").replace('"', "_")
    param = f'filename="{name}"' if name.isascii() else \
        f"filename*={encode_rfc2231(name, 'utf-8')}"
    if ctype.lower() == "message/rfc822":
        # RFC 2046 5.2.1: an attached mail is never base64; one that is not 7-bit text
        # goes as a file (.eml), which every client still opens
        text = data.replace(b"\r\n", b"\n").decode("latin-1")
        if data.isascii() and max(map(len, text.split("\n")), default=0) <= 998:
            return (f"Content-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n"
                    f"Content-Disposition: attachment; {param}\n\n{text.rstrip(chr(10))}\n")
        ctype = "application/octet-stream"
    encoded = base64.encodebytes(data).decode("ascii")
    return (f"Content-Type: {ctype}\nContent-Transfer-Encoding: base64\n"
            f"Content-Disposition: attachment; {param}\n\n{encoded}\n")
