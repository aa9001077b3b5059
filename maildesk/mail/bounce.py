"""Reading a bounce: which recipients failed, for good or for now, and why.

RFC 3464 delivery-status reports are read field by field; what is not a DSN
(qmail, old Exim, Yahoo, Exchange 2003 and other home-made formats) goes to
flufl.bounce, the detector set GNU Mailman has maintained for twenty years.
Either way the result is a plain value that crosses the parse-ahead process.

Only mail that could be a bounce is read: a report, a null envelope sender,
a mailer-daemon From, or a subject that sounds like one. A person's mail
never reaches the heuristics, so a vacation reply cannot become a bounce
because its text happens to contain an address and the word "failed". So flufl.bounce,
whose detectors compile some 300 regexes when imported (a fifth of a second of a pipe
delivery's start-up on a shared core), is imported by the first mail that could be one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_string
from email.message import Message

from .headers import one_line

DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|"
                    r"mail-delivery-subsystem|bounces?|mdaemon|mailer)@", re.IGNORECASE)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|has failed|notification|problem)|"
    r"failure notice|returned mail|mail delivery (?:failed|failure|system)|"
    r"non[- ]?deliver|could not be delivered|delivery failed|nicht zustellbar|"
    r"unzustellbar|non remis|no entregado|message not delivered|rejected:|"
    r"warning: could not send|mail system error", re.IGNORECASE)
_ADDR = re.compile(r"[^\s<>;\"']+@[^\s<>;\"']+")
_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_LINE = re.compile(r"^[^\n]*\b[45]\d\d[ -][^\n]{3,}$", re.MULTILINE)
_COPY = re.compile(r"^\s*(?:-{2,}|\*{2,}).*$|^(?:From|Return-Path|Received):",
                   re.MULTILINE | re.IGNORECASE)
MAX_FAILURES = 50


@dataclass(frozen=True)
class Failure:
    recipient: str
    permanent: bool            # failed (5.x.x) rather than delayed (4.x.x)
    status: str                # 5.1.1, or "" when the bounce does not say
    diagnostic: str            # the remote server's words, one line


@dataclass(frozen=True)
class Bounce:
    failures: tuple[Failure, ...]
    how: str                   # "rfc3464" or the heuristic "flufl.bounce"

    @property
    def permanent(self) -> bool:
        return any(f.permanent for f in self.failures)

    def summary(self) -> str:
        f = self.failures[0]
        more = f" and {len(self.failures) - 1} more" if len(self.failures) > 1 else ""
        words = " ".join(w for w in (f.status, f.diagnostic) if w)
        return f"{f.recipient}{more}" + (f": {words}" if words else "")


def maybe_bounce(msg: Message, from_addr: str, subject: str) -> bool:
    """Worth reading as a bounce at all (cheap; most mail is not). A null envelope sender
    alone is not enough: vacation responders use it too, and their text names addresses."""
    return (msg.get_content_type() == "multipart/report" or bool(DAEMON.match(from_addr))
            or bool(BOUNCE_SUBJECT.search(subject)))


def _address(value: str) -> str:
    """`rfc822; Ana <ana@x>` -> `ana@x`."""
    value = value.split(";", 1)[-1]
    m = _ADDR.search(value)
    return one_line(m.group(0)).strip(".,").lower() if m else ""


def _dsn_failures(msg: Message) -> list[Failure]:
    out: list[Failure] = []
    for part in msg.walk():
        if part.get_content_type() not in ("message/delivery-status",
                                           "message/global-delivery-status"):
            continue
        payload = part.get_payload()
        if isinstance(payload, str):      # an unparsed body: read the fields ourselves
            blocks = [message_from_string(b) for b in re.split(r"\n\s*\n", payload) if b.strip()]
        elif isinstance(payload, list):   # what the parser makes of a report: one per block
            blocks = [b for b in payload if isinstance(b, Message)]
        else:                             # no such report comes from the parser
            continue
        for block in blocks[1:] if len(blocks) > 1 else blocks:   # block 0: per-message
            recipient = _address(str(block.get("Final-Recipient")
                                     or block.get("Original-Recipient") or ""))
            action = str(block.get("Action", "")).strip().lower()
            if not recipient or action not in ("failed", "delayed"):
                continue
            status = _STATUS.search(str(block.get("Status", "")))
            code = status.group(1) if status else ""
            diagnostic = one_line(str(block.get("Diagnostic-Code", "")).split(";", 1)[-1], 300)
            out.append(Failure(recipient, action == "failed" and not code.startswith("4"),
                               code, diagnostic))
    return out


def _first_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload[:20000].decode(part.get_content_charset() or "latin-1", "replace")
    return ""


def _why(text: str, recipient: str) -> tuple[str, str]:
    """Status code and the SMTP server's line, found near the recipient in a free-text bounce."""
    at = text.lower().find(recipient)
    near = text[at:at + 1500] if at >= 0 else text
    status = _STATUS.search(near) or _STATUS.search(text)
    line = _SMTP_LINE.search(near) or _SMTP_LINE.search(text)
    return (status.group(1) if status else "", one_line(line.group(0), 300) if line else "")


def read_bounce(msg: Message) -> Bounce | None:
    """The failures a bounce reports, or None if it reports none we can read."""
    from flufl.bounce import all_failures
    try:
        failures = _dsn_failures(msg)
        if failures:
            return Bounce(tuple(failures[:MAX_FAILURES]), "rfc3464")
        temporary, permanent = all_failures(msg)
        text = _first_text(msg)
    except Exception:  # noqa: BLE001 - the detectors are heuristics over hostile input
        return None
    how = "flufl.bounce"
    candidates = [*((a.decode("utf-8", "replace"), True) for a in sorted(permanent)),
                  *((a.decode("utf-8", "replace"), False) for a in sorted(temporary - permanent))]
    if not candidates:
        how = "report text"
        candidates = [(a, True) for a in _named_in_report(text, msg)]
    found = []
    for address, is_permanent in candidates:
        recipient = _address(address)
        if recipient:
            status, line = _why(text, recipient)
            found.append(Failure(recipient, is_permanent and not status.startswith("4"),
                                 status, line))
    return Bounce(tuple(found[:MAX_FAILURES]), how) if found else None


def _named_in_report(text: str, msg: Message) -> list[str]:
    """Addresses a free-text report names before the returned copy begins, other than the
    report's own sender and recipient: what is left is who the mail failed for."""
    own = {_address(str(msg.get(h, ""))) for h in ("From", "To", "Sender", "Reply-To")}
    report = _COPY.split(text, maxsplit=1)[0]
    found = dict.fromkeys(a for a in (_address(m) for m in _ADDR.findall(report))
                          if a and a not in own)
    return list(found)[:MAX_FAILURES]
