"""Ticket references (MD-12), their subject tag ([MD-12]) and reply addresses.

A token address `support+md-12-<day><token>@domain` carries the day it was
made and an HMAC of the ticket, the recipient, the purpose (reply or note) and
that day under the desk's secret: knowing a ticket number is not enough to
post to it, a token made for one person or ticket is worth nothing to another,
and a token is a bearer secret that expires (`desk.token_max_age`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

TOKEN_CHARS = 20  # base32 characters: 100 bits of HMAC
DAY_CHARS = 4     # the day a token was made, in base32 digits: days since EPOCH
EPOCH = date(2020, 1, 1)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def format_ref(prefix: str, number: int) -> str:
    return f"{prefix}-{number}"


def tagged_numbers(subject: str, prefix: str) -> list[int]:
    """Ticket numbers tagged in a subject, first one first."""
    return [int(n) for n in re.findall(rf"\[\s*{re.escape(prefix)}-(\d{{1,12}})\s*\]",
                                      subject, re.IGNORECASE)]


PURPOSES = ("reply", "note")


def token(secret: bytes, ref: str, recipient: str, purpose: str, day: str = "") -> str:
    """HMAC over the ticket, the person it was sent to, what it is for and (for reply
    addresses) the day it was made."""
    signed = f"{purpose}\0{ref.upper()}\0{recipient.lower()}" + (f"\0{day}" if day else "")
    mac = hmac.new(secret, signed.encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[:TOKEN_CHARS].lower()


def _day(issued: date) -> str:
    n, out = max((issued - EPOCH).days, 0), ""
    for _ in range(DAY_CHARS):
        n, digit = divmod(n, 32)
        out = _B32[digit] + out
    return out


def _issued(day: str) -> date:
    n = 0
    for c in day:
        n = n * 32 + _B32.index(c)
    return date.fromordinal(EPOCH.toordinal() + n)


def token_address(secret: bytes, support_address: str, ref: str, recipient: str,
                  purpose: str = "reply", issued: date | None = None) -> str:
    """`support+md-12-<day><token>@domain`: good for this ticket, this person, this
    purpose, for desk.token_max_age days after issued (default: today, UTC)."""
    local, domain = support_address.rsplit("@", 1)
    day = _day(issued or datetime.now(timezone.utc).date())
    return f"{local}+{ref.lower()}-{day}{token(secret, ref, recipient, purpose, day)}@{domain}"


# Any of our token addresses in a text, however it is quoted: `+md-12-<code>`, with the
# plus as it is in mailto links (%2B) or quoted-printable leftovers (=2B).
def _codes(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"(?i)(\+|%2b|=2b)((?:rate-|bounce-|solved-)?{re.escape(prefix)}-"
                      rf"\d{{1,12}}(?:-(?:\d{{1,2}}|optout))?|problem-\d{{1,12}})-[a-z2-7]{{8,}}")


def redact(text: str, prefix: str) -> str:
    """text without the codes of our reply, note, rate and bounce addresses: they are
    bearer secrets, and a reply relayed to a customer must not hand them over (an
    agent's bottom-posted reply quotes the notification that names the note address)."""
    return _codes(prefix).sub(r"\1\2-removed", text)


def plain(text: str, prefix: str) -> str:
    """text with each of our token addresses made the plain support address
    (`support+md-12-<code>@desk` is `support@desk`): an export hands over mail, never the
    bearer secrets that act as its requester or agent."""
    return _codes(prefix).sub("", text)


def carries_token(data: bytes, prefix: str) -> bool:
    """Whether bytes hold one of our codes: read as latin-1 (any ASCII-based charset) and,
    when they hold NUL bytes, as UTF-16 and UTF-32 from either end and offset too."""
    texts = [data.decode("latin-1")]
    if b"\x00" in data:
        texts += [data[start:].decode(enc, "ignore") for start in (0, 1, 2, 3)
                  for enc in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")]
    return any(_codes(prefix).search(t) is not None for t in texts)


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


def requester_token_ok(code: str, secrets: tuple[bytes, ...], ref: str, requester: str,
                       purpose: str) -> bool:
    """Whether code is the token of a rate or solved address of ticket ref, made for its
    requester under any live secret."""
    return any(hmac.compare_digest(code, token(secret, ref, requester, purpose))
               for secret in secrets)


def solved_address(secret: bytes, address: str, ref: str, requester: str, rank: int) -> str:
    """`support+solved-md-12-2-<token>@domain`: the requester says the article suggested
    at rank 2 in MD-12's acknowledgement solved it (the rank, not the slug: a local part
    holds 64 characters)."""
    local, domain = address.rsplit("@", 1)
    code = token(secret, ref, requester, "solved")
    return f"{local}+solved-{ref.lower()}-{rank}-{code}@{domain}"


def read_solved_address(address: str, prefix: str) -> tuple[str, int, str] | None:
    """(ref, rank, token) of a solved address; the caller checks the token."""
    m = re.fullmatch(rf"[^+@]+\+solved-({re.escape(prefix.lower())}-\d{{1,12}})-(\d{{1,2}})"
                     rf"-([a-z2-7]+)@.+", address.lower())
    return (m.group(1).upper(), int(m.group(2)), m.group(3)) if m else None


def proposal_address(secret: bytes, address: str, proposal: int, person: str) -> str:
    """`support+problem-7-<token>@domain`: the person the proposal of a problem (its id)
    was mailed to makes it a problem ticket by answering it (core/proposals.py)."""
    local, domain = address.rsplit("@", 1)
    return f"{local}+problem-{proposal}-{token(secret, f'P{proposal}', person, 'problem')}@{domain}"


def read_proposal_address(address: str) -> tuple[int, str] | None:
    """(proposal id, token) of a proposal address; the caller checks the token."""
    m = re.fullmatch(r"[^+@]+\+problem-(\d{1,12})-([a-z2-7]+)@.+", address.lower())
    return (int(m.group(1)), m.group(2)) if m else None


def proposal_token_ok(code: str, secrets: tuple[bytes, ...], proposal: int,
                      person: str) -> bool:
    """Whether code is the token of proposal's address, made for person (any live secret)."""
    return any(hmac.compare_digest(code, token(secret, f"P{proposal}", person, "problem"))
               for secret in secrets)


def read_bounce_address(address: str, prefix: str) -> str | None:
    """The ticket ref of a return path we made; the outbox row that used it is the proof."""
    m = re.fullmatch(rf"[^+@]+\+bounce-({re.escape(prefix.lower())}-\d{{1,12}})-[a-z2-7]+@.+",
                     address.lower())
    return m.group(1).upper() if m else None


@dataclass(frozen=True)
class Grant:
    """What a genuine token address lets its holder do: made for `person` (the sender,
    or the requester whose reply address a participant answered)."""

    ref: str
    purpose: str
    person: str
    expired: bool = False   # genuine, but older than max_age: it finds the ticket, no more
    via: str | None = None  # made for this merged ticket, whose survivor is `ref`


def read_token_ref(address: str, support_addresses: list[str], prefix: str
                   ) -> tuple[str, str] | None:
    """(ticket ref, code) of an address shaped like one of our token addresses."""
    m = re.fullmatch(rf"([^+@]+)\+({re.escape(prefix.lower())}-\d{{1,12}})-([a-z2-7]+)@(.+)",
                     address.lower())
    if not m or f"{m.group(1)}@{m.group(4)}" not in support_addresses:
        return None
    return m.group(2).upper(), m.group(3)


def token_grant(ref: str, code: str, person: str, secrets: tuple[bytes, ...], today: date,
                max_age: int) -> Grant | None:
    """The grant, if code is a token made for person on ticket ref (under any live
    secret); `expired` when that was more than max_age days ago. The token is bound to
    the person it was sent to: a forwarded notification, answered by someone else,
    grants nothing."""
    day, mac = code[:DAY_CHARS], code[DAY_CHARS:]
    if len(mac) != TOKEN_CHARS or not person:
        return None
    for secret in secrets:
        for purpose in PURPOSES:
            if hmac.compare_digest(mac, token(secret, ref, person, purpose, day)):
                return Grant(ref, purpose, person.lower(),
                             expired=(today - _issued(day)).days > max_age)
    return None
