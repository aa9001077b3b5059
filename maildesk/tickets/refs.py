"""Ticket references (MD-12), their subject tag ([MD-12]) and reply addresses.

A token address `support+md-12-<token>@domain` carries an HMAC of the
ticket, the recipient and the purpose (reply or note) under the desk's
secret: knowing a ticket number is not enough to post to it, and a token
made for one person or ticket is worth nothing to another.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

TOKEN_CHARS = 20  # base32 characters: 100 bits of HMAC


def format_ref(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def tagged_numbers(subject: str, prefix: str) -> list[int]:
    """Ticket numbers tagged in a subject, first one first."""
    return [int(n) for n in re.findall(rf"\[\s*{re.escape(prefix)}-(\d{{1,12}})\s*\]",
                                      subject, re.IGNORECASE)]


PURPOSES = ("reply", "note")


def token(secret: bytes, ref: str, recipient: str, purpose: str) -> str:
    """HMAC over the ticket, the person it was sent to and what it is for."""
    mac = hmac.new(secret, f"{purpose}\0{ref.upper()}\0{recipient.lower()}".encode(),
                   hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[:TOKEN_CHARS].lower()


def token_address(secret: bytes, support_address: str, ref: str, recipient: str,
                  purpose: str = "reply") -> str:
    """`support+md-12-<token>@domain`: good for this ticket, this person, this purpose."""
    local, domain = support_address.rsplit("@", 1)
    return f"{local}+{ref.lower()}-{token(secret, ref, recipient, purpose)}@{domain}"


def bounce_address(secret: bytes, address: str, ref: str, message_id: str) -> str:
    """`support+bounce-md-12-<code>@domain` (VERP): a bounce sent here names our mail itself."""
    local, domain = address.rsplit("@", 1)
    code = token(secret, ref, message_id, "bounce")
    return f"{local}+bounce-{ref.lower()}-{code}@{domain}"


def rate_address(secret: bytes, address: str, ref: str, requester: str,
                 choice: str | None = None) -> str:
    """`support+rate-md-12-4-<token>@domain`: a rating of 4 for MD-12 by its requester;
    without a choice (a reply to the survey, rated in its text), or `optout`."""
    local, domain = address.rsplit("@", 1)
    middle = f"-{choice}" if choice else ""
    return f"{local}+rate-{ref.lower()}{middle}-{token(secret, ref, requester, 'rate')}@{domain}"


def read_rate_address(address: str, prefix: str) -> tuple[str, str | None, str] | None:
    """(ref, choice or None, token) of a rate address; the caller checks the token."""
    m = re.fullmatch(rf"[^+@]+\+rate-({re.escape(prefix.lower())}-\d{{1,12}})"
                     rf"(?:-([1-5]|optout))?-([a-z2-7]+)@.+", address.lower())
    return (m.group(1).upper(), m.group(2), m.group(3)) if m else None


def rate_token_ok(code: str, secrets: tuple[bytes, ...], ref: str, requester: str) -> bool:
    return _purpose(code, secrets, ref, requester, ("rate",)) is not None


def read_bounce_address(address: str, prefix: str) -> str | None:
    """The ticket ref of a return path we made; the outbox row that used it is the proof."""
    m = re.fullmatch(rf"[^+@]+\+bounce-({re.escape(prefix.lower())}-\d{{1,12}})-[a-z2-7]+@.+",
                     address.lower())
    return m.group(1).upper() if m else None


@dataclass(frozen=True)
class Grant:
    """What a genuine token address lets its sender do."""

    ref: str
    purpose: str
    sender: str


def read_token_address(address: str, sender: str, secrets: tuple[bytes, ...],
                       support_addresses: list[str], prefix: str) -> Grant | None:
    """The grant, if address carries a token made for this sender (under any live secret).

    The token is bound to the person it was sent to: a forwarded notification,
    answered by someone else, grants nothing.
    """
    m = re.fullmatch(rf"([^+@]+)\+({re.escape(prefix.lower())}-\d{{1,12}})-([a-z2-7]+)@(.+)",
                     address.lower())
    if not m or f"{m.group(1)}@{m.group(4)}" not in support_addresses or not sender:
        return None
    ref = m.group(2).upper()
    purpose = _purpose(m.group(3), secrets, ref, sender, PURPOSES)
    return Grant(ref, purpose, sender.lower()) if purpose else None


def _purpose(code: str, secrets: tuple[bytes, ...], ref: str, person: str,
             purposes: tuple[str, ...]) -> str | None:
    """Which of purposes the token code was made for (under any live secret), if any."""
    for secret in secrets:
        for purpose in purposes:
            if hmac.compare_digest(code, token(secret, ref, person, purpose)):
                return purpose
    return None


