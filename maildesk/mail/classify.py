"""What kind of mail this is, before any rule runs: a person's, or a machine's.

The verdict decides whether a mail may open a ticket and whether it may be
answered automatically (RFC 3834: never answer auto-submitted mail, lists
or bulk mail, or ourselves). It is stored on the mail and its events.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .bounce import BOUNCE_SUBJECT, DAEMON
from .parse import ParsedMail, base_address

PERSON, AUTO_REPLY, BULK, LOOP, SPAM, BOUNCE, COMPLAINT, ALERT = (
    "person", "auto-reply", "bulk", "loop", "spam", "bounce", "complaint", "alert")
# a machine answering mail: noted on a ticket, it changes nothing, runs nothing, tells nobody
MACHINES = (AUTO_REPLY, LOOP, BOUNCE, COMPLAINT)

# what a subject starts with once tags and reply prefixes are gone: "[Ticket #123] Re:
# AutoReply: ..." is a tracker's automatic reply all the same
_PREFIXES = re.compile(r"^(?:\s*(?:\[[^\]]{0,60}\]|\([^)]{0,60}\)|(?:re|aw|sv|vs|fw|fwd|wg|"
                       r"tr|antw|odp|ynt|ha)\s*(?:\[\d+\])?\s*:))+\s*", re.IGNORECASE)
# "automatic reply", "out of office" and "away" in the languages vacation responders
# write (Outlook, Exchange, Gmail, Zimbra, Lotus Notes, Sieve, trackers)
_MARK = (
    r"(?:auto(?:matic)?[ -]?(?:reply|response|responder|antwort|mated reply)|"
    r"automatische antwort|auto|out of (?:the )?office|ooo|"
    r".{0,60}\bis out of (?:the )?office|(?:i am|i'm|i will be) (?:currently )?out of "
    r"(?:the )?office|ich bin (?:nicht im büro|abwesend)|abwesenheit(?:snotiz)?|abwesend|"
    r"vacation|on leave|"
    r"absence|absent|away from (?:the )?office|réponse automatique|respuesta automática|"
    r"fuera de la oficina|risposta automatica|fuori (?:sede|ufficio)|afwezig|"
    r"automatisch antwoord|autosvar|frånvaro|fravær|nieobecn\w*|"
    r"odpowied[źz] automatyczna|automatyczna odpowied[źz]|poza biurem|"
    r"automatická odpově[ďd]|automatická odpove[ďd]|mimo kancelář|resposta automática|"
    r"fora do escritório|ausente|automaattinen vastaus|poissa|automatikus válasz|"
    r"házon kívül|otomatik yanıt|ofis dışında|răspuns automat|automatski odgovor|"
    r"samodejni odgovor|автоматический ответ|автоответ|нет на месте|автовідповідь|"
    r"αυτόματη απάντηση|自动回复|自動回覆|自動応答|自動返信|不在|자동 ?회신|자동 ?응답|부재)")
# the marker is the whole subject, or a prefix (": original subject"), or says until when:
# "Out of office not working" and "Vacation request for December" are people's requests
_VACATION = re.compile(
    r"^\s*" + _MARK + r"\s*(?:$|[.!]\s*$|[:：\-–—(\[]|\b(?:until|till|through|bis|jusqu|"
    r"hasta|fino|tot|do|до|från|fra|från och med|från den|ab|from|du|dal|del|desde|od)\b|"
    r"\d)", re.IGNORECASE)
# challenge-response filters (TMDA, BoxTrapper, SpamArrest, Mailblocks, ChoiceMail):
# they ask the sender to prove they are human; answering one confirms us to a machine
_CHALLENGE = re.compile(
    r"(?:please )?(?:confirm|verify) (?:that )?(?:you are|you're) (?:a )?human|"
    r"(?:requires|awaiting|pending) (?:your )?verification|verify your (?:e-?mail|message)|"
    r"confirm your (?:e-?mail|message) (?:to|was)|your (?:e-?mail|message) (?:is|was) "
    r"(?:being )?held|verify#|please confirm your message|sender verification",
    re.IGNORECASE)
_CHALLENGE_HEADERS = ("x-tmda-confirm", "x-boxtrapper", "x-spamarrest", "x-challenge",
                      "x-mailblocks", "x-choicemail")


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
    if _VACATION.match(_PREFIXES.sub("", mail.subject)):
        suppress = h.get("x-auto-response-suppress", "").lower()
        if any(w in suppress for w in ("all", "oof", "autoreply")):
            return Verdict(AUTO_REPLY, "an Outlook automatic reply")
        return Verdict(AUTO_REPLY, f"vacation subject {mail.subject[:60]!r}")
    return None


def _spam(mail: ParsedMail, rules: dict[str, str]) -> Verdict | None:
    """The upstream filter's verdict: the topmost of each configured header (our own MTA's
    filter adds its header above whatever the sender wrote)."""
    top: dict[str, str] = {}
    for k, v in mail.headers:
        top.setdefault(k, v)
    for name, pattern in rules.items():
        value = top.get(name.lower())
        if value is not None and re.search(pattern, value, re.IGNORECASE):
            return Verdict(SPAM, f"{name}: {value[:60]} from the upstream filter")
    return None


def classify(mail: ParsedMail, envelope_from: str | None, our_addresses: list[str],
             our_domain: str, spam_headers: dict[str, str]) -> Verdict:
    """What kind of mail this is. spam_headers: header name -> pattern of a spam verdict
    (empty: none trusted)."""
    h = {k: v for k, v in mail.headers}
    loop = [v for v in _header(mail, "x-loop") if v.strip().lower() in our_addresses]
    if loop:
        return Verdict(LOOP, f"X-Loop: {loop[0]}")
    if base_address(mail.from_addr) in our_addresses:
        return Verdict(LOOP, f"sent from our own address {mail.from_addr}")
    if mail.has_message_id and mail.message_id.rstrip(">").endswith("@" + our_domain) \
            and h.get("auto-submitted", "no").lower() != "no":
        return Verdict(LOOP, f"our own Message-ID {mail.message_id}")
    spam = _spam(mail, spam_headers)
    if spam is not None:
        return spam
    report = h.get("content-type", "").lower()
    if "multipart/report" in report and "feedback-report" in report:
        return Verdict(COMPLAINT, "a spam complaint report (ARF, RFC 5965)")
    challenge = next((n for n in _CHALLENGE_HEADERS if n in h), None)
    if challenge or _CHALLENGE.search(mail.subject):
        return Verdict(AUTO_REPLY, f"a challenge-response request "
                                   f"({challenge or repr(mail.subject[:60])})")
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
    if DAEMON.match(mail.from_addr) and (not mail.from_addr.startswith("postmaster@")
                                         or BOUNCE_SUBJECT.search(mail.subject)):
        return Verdict(BOUNCE, f"sent by {mail.from_addr}")   # postmaster@ is a person too
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
