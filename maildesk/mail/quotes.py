"""Separating what a reply says from the history it quotes and its signature.

By shape rather than by a list of clients:

- history that is not quoted with `>` starts at an **Outlook-style header
  block** (two or more `Label: value` lines in any language, one of them
  with an address), a **separator line** (`-----Original Message-----`,
  `____`, `---- On ... wrote ----`) that history follows, or an
  **attribution** followed by history: one to four lines ending in a colon
  (or followed by quotes) that name an address or a date, or say "wrote" in
  one of a dozen languages;
- a **signature** starts at `-- ` or a short "Sent from ..." line;
- in `>`-quoted history, what a person wrote is every unquoted block: above
  the quote (top-posting), under it (bottom-posting), or between quoted
  parts (inline answers, kept with the quotes they answer, since an agent's
  inline reply relayed without them would make no sense).

The full text is always kept beside the new text.
"""
from __future__ import annotations

import re

_VERBS = (r"\bwrote|\bschrieb|\ba écrit|\bescribió|\bha scritto|\bschreef|\bescreveu|"
          r"\bnapisał(?:\(a\))?|\bskrev|\bkirjoitti|\bnapsal(?:\(a\))?|\bírta|\byazdı|"
          r"написал(?:\(а\))?|писал(?:\(а\))?|寫道|写道|のメッセージ|님이 작성")
_SAYS = re.compile(r"(?:" + _VERBS + r")\s*(?::|-{2,})?\s*$", re.IGNORECASE)
# starts only after a delimiter: each run of characters is scanned once, not once a start
_EMAIL = re.compile(r"(?<![^\s<>()\[\]:;,\"'])[^\s<>()\[\]:;,\"'@]+@[^\s<>()\[\]:;,\"']+")
_DATE = re.compile(r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b|\b\d{1,2}[:.]\d{2}\b|\b(?:19|20)\d\d\b")
# "From: x", "*Sent:* y", "Från: z", "От: w": a short label of letters, a colon, a value
_LABEL = re.compile(r"^\s*\*?[^\W\d_][^\W\d_ .'-]{0,18}\*?\s*:\*?\s+\S")
_RULE = re.compile(r"^\s*(?:[-_=*]{5,}|-{2,}\s*\S.{0,200}\S\s*-{2,})\s*$")
_SIGNATURE = re.compile(
    r"^(?:-- ?|—|"
    r"(?:sent|envoyé|enviado|inviato|verzonden|skickat|sendt|lähetetty|wysłane|odesláno|"
    r"отправлено)\s+(?:from|de|depuis|desde|da|dal|vanaf|met|från|fra|z|ze|с|iphone)\b[^:]{0,50}|"
    r"von meinem [^:]{1,40} gesendet|get outlook for \w+(?: \w+)?)$", re.IGNORECASE)


def _quote(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next(lines: list[str], i: int) -> int:
    """The index of the first non-blank line at or after i (len(lines) if none)."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _attribution(lines: list[str], i: int) -> int:
    """How many lines (1-4) an attribution starting at i spans, or 0."""
    if _quote(lines[i]) or not lines[i].strip():
        return 0
    for k in range(1, 5):
        window = lines[i:i + k]
        if len(window) < k or not window[-1].strip() or _quote(window[-1]):
            return 0
        after = _next(lines, i + k)
        quoted = after < len(lines) and _quote(lines[after])
        if not quoted and not window[-1].rstrip().endswith((":", "-")):
            continue            # most lines: no regex at all
        text = " ".join(x.strip() for x in window)
        if len(text) > 400:
            return 0
        names = bool(_EMAIL.search(text) or _DATE.search(text))
        if _SAYS.search(text) and (quoted or names):
            return k
        if quoted and names and text.rstrip(" -").endswith(":"):
            return k
        if quoted and k == 1 and _EMAIL.search(text) and _DATE.match(text):
            return k        # "2013/7/20 IT Desk <x@y>", no colon; not "Room 2.14."
    return 0


def _labels(lines: list[str], i: int) -> list[str]:
    """The label lines ("From: x", "*Sent:* y", "Från: z", "От: w") from i on, up to 6."""
    block = []
    for x in lines[i:i + 6]:
        if not _LABEL.match(x):
            break
        block.append(x)
    return block


def _header_block(lines: list[str], i: int) -> bool:
    """Two or more label lines from i on, with an address and a date among them (From,
    Sent; Von, Gesendet; Från, Skickat; От, Отправлено ...). A form in a customer's own
    text (Name:, Email:, Phone:) has no date."""
    text = " ".join(block := _labels(lines, i))
    return len(block) >= 2 and bool(_EMAIL.search(text) or "mailto:" in text) \
        and bool(_DATE.search(text))


def _history(lines: list[str], i: int, attributions: list[int]) -> bool:
    """Unquoted history starts at line i (a header block, a separator before history, an
    attribution followed by the old text) or a signature does. attributions: the span of
    the attribution starting at each line (0: none)."""
    line = lines[i]
    if _quote(line):
        return False
    if _SIGNATURE.match(line.strip()):
        return True
    if _header_block(lines, i):
        return True
    if _RULE.match(line):       # a separator: history when words or headers follow
        after = _next(lines, i + 1)
        return re.search(r"[^\W\d_]", line) is not None and len(line.strip(" -_=*")) > 3 \
            or after < len(lines) and (len(_labels(lines, after)) >= 2 or _quote(lines[after])
                                       or attributions[after] > 0)
    k = attributions[i]
    return k > 0 and _SAYS.search(" ".join(x.strip() for x in lines[i:i + k])) is not None \
        and not _quote(lines[_next(lines, i + k)] if _next(lines, i + k) < len(lines) else "")


def split_reply(text: str) -> tuple[str, str]:
    """(what is new, the rest: quoted history and signature)."""
    lines = text.splitlines()
    attributions = [_attribution(lines, i) for i in range(len(lines))]
    end = next((i for i in range(len(lines)) if _history(lines, i, attributions)), len(lines))
    kinds = []                  # per line before end: "q" quoted or attribution, "t" text, ""
    i = 0
    while i < end:
        k = attributions[i]
        if k:
            kinds += ["q"] * k
            i += k
            continue
        line = lines[i]
        kinds.append("" if not line.strip() else "q" if _quote(line) else "t")
        i += 1
    texts = [i for i, kind in enumerate(kinds) if kind == "t"]
    if not texts:               # all quote: keep it whole rather than empty
        return text.strip(), ""
    first, last = texts[0], texts[-1]
    between = [i for i in range(first, last) if kinds[i] == "q"]
    if between:                 # inline answers: from the first quote they answer
        start = next((i for i in range(first) if kinds[i] == "q" and _quote(lines[i])), first)
        first = start
    new = "\n".join(lines[first:last + 1]).strip()
    rest = "\n".join([*lines[:first], *lines[last + 1:]]).strip()
    return new, rest
