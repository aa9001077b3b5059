"""What kind of mail this is, before any rule runs: a person's, or a machine's.

The verdict decides whether a mail may open a ticket and whether it may be
answered automatically (RFC 3834: never answer auto-submitted mail, lists
or bulk mail, or ourselves). It is stored on the mail and its events.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .bounce import DAEMON
from .parse import ParsedMail, base_address

PERSON, AUTO_REPLY, BULK, LOOP, SPAM, BOUNCE = (
    "person", "auto-reply", "bulk", "loop", "spam", "bounce")

_VACATION = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|automatische antwort|auto:|"
    r"out of (?:the )?office|.{0,60}\bis out of (?:the )?office|"
    r"abwesenheit|abwesend|vacation|on leave|absence|absent|réponse automatique|"
    r"respuesta automática|fuera de la oficina|risposta automatica|fuori sede|"
    r"afwezig|automatisch antwoord|autosvar|frånvaro|nieobecn)", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    kind: str
    reason: str


def _header(mail: ParsedMail, name: str) -> list[str]:
    return [v for k, v in mail.headers if k == name]


def _auto_reply(mail: ParsedMail, h: dict[str, str]) -> Verdict | None:
    """The signs vacation responders give besides Auto-Submitted (which bounces share)."""
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if name in h:
            return Verdict(AUTO_REPLY, f"{name} header")
    if "vacation" in mail.auto_submitted:
        return Verdict(AUTO_REPLY, f"Auto-Submitted: {mail.auto_submitted}")
    if h.get("precedence", "").strip().lower() == "auto_reply":
        return Verdict(AUTO_REPLY, "Precedence: auto_reply")
    if _VACATION.match(mail.subject):
        suppress = h.get("x-auto-response-suppress", "").lower()
        if any(w in suppress for w in ("all", "oof", "autoreply")):
            return Verdict(AUTO_REPLY, "an Outlook automatic reply")
        return Verdict(AUTO_REPLY, f"vacation subject {mail.subject[:60]!r}")
    return None


def classify(mail: ParsedMail, envelope_from: str | None, our_addresses: list[str],
             our_domain: str, trust_spam_headers: bool) -> Verdict:
    h = {k: v for k, v in mail.headers}
    loop = [v for v in _header(mail, "x-loop") if v.strip().lower() in our_addresses]
    if loop:
        return Verdict(LOOP, f"X-Loop: {loop[0]}")
    if base_address(mail.from_addr) in our_addresses:
        return Verdict(LOOP, f"sent from our own address {mail.from_addr}")
    if mail.has_message_id and mail.message_id.rstrip(">").endswith("@" + our_domain) \
            and h.get("auto-submitted", "no").lower() != "no":
        return Verdict(LOOP, f"our own Message-ID {mail.message_id}")
    if trust_spam_headers and h.get("x-spam-flag", "").strip().lower() == "yes":
        return Verdict(SPAM, "X-Spam-Flag: YES from the upstream filter")
    report = h.get("content-type", "").lower()
    bounce = mail.bounce
    if bounce is not None and bounce.how == "rfc3464":
        return Verdict(BOUNCE, f"a delivery status notification: {bounce.summary()}")
    if "multipart/report" in report and "delivery-status" in report:
        return Verdict(BOUNCE, "a delivery status notification (RFC 3464)")
    if "multipart/report" in report and "disposition-notification" in report:
        return Verdict(AUTO_REPLY, "a read receipt (RFC 8098)")
    # a vacation reply may come from a null sender and talk like a bounce: signs first
    auto_reply = _auto_reply(mail, h)
    if auto_reply is not None:
        return auto_reply
    if bounce is not None:
        return Verdict(BOUNCE, f"a bounce ({bounce.how}): {bounce.summary()}")
    if DAEMON.match(mail.from_addr):
        return Verdict(BOUNCE, f"sent by {mail.from_addr}")
    if envelope_from == "" and mail.auto_submitted in ("", "no"):
        return Verdict(BOUNCE, "null envelope sender")
    if mail.auto_submitted not in ("", "no"):
        return Verdict(AUTO_REPLY, f"Auto-Submitted: {mail.auto_submitted}")
    precedence = h.get("precedence", "").strip().lower()
    if precedence in ("bulk", "list", "junk"):
        return Verdict(BULK, f"Precedence: {precedence}")
    if "list-id" in h or "list-unsubscribe" in h:
        return Verdict(BULK, "List-Id" if "list-id" in h else "List-Unsubscribe")
    return Verdict(PERSON, "")
