"""Ticket references (MD-12), their subject tag ([MD-12]) and reply addresses.

The reply address `support+MD-12.<token>@domain` carries an HMAC of the
ticket reference under the desk's secret: knowing a ticket number is not
enough to post to it, so a stranger cannot join a ticket by guessing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_CHARS = 20  # base32 characters: 100 bits of HMAC


def format_ref(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def subject_tag(ref: str) -> str:
    return f"[{ref}]"


def tagged_numbers(subject: str, prefix: str) -> list[int]:
    """Ticket numbers tagged in a subject, first one first."""
    return [int(n) for n in re.findall(rf"\[\s*{re.escape(prefix)}-(\d{{1,12}})\s*\]",
                                      subject, re.IGNORECASE)]


def token(secret: bytes, ref: str, purpose: str = "reply") -> str:
    mac = hmac.new(secret, f"{purpose}\0{ref}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[:TOKEN_CHARS].lower()


def reply_address(secret: bytes, support_address: str, ref: str) -> str:
    local, domain = support_address.rsplit("@", 1)
    return f"{local}+{ref.lower()}.{token(secret, ref)}@{domain}"


def ref_from_reply_address(address: str, secret: bytes, support_addresses: list[str],
                           prefix: str) -> str | None:
    """The ticket reference an address names, if its token is genuine."""
    m = re.fullmatch(rf"([^+@]+)\+({re.escape(prefix.lower())}-\d{{1,12}})\.([a-z2-7]+)@(.+)",
                     address.lower())
    if not m or f"{m.group(1)}@{m.group(4)}" not in support_addresses:
        return None
    ref = m.group(2).upper()
    return ref if hmac.compare_digest(m.group(3), token(secret, ref)) else None


def base_address(address: str) -> str:
    """support+anything@d -> support@d: the address an extension hangs off."""
    local, _, domain = address.partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"
