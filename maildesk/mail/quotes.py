"""Separating what a reply says from the history it quotes and its signature.

The new text ends where the quoted history begins: an attribution line
("On ... wrote:", in several languages), an Outlook header block or
separator, a forwarded-message marker, or a run of `>` lines after which
nothing new follows; a signature starts at `-- ` or a mobile "Sent from my".
The full text is always kept beside the new text.
"""
from __future__ import annotations

import re

_VERBS = (r"\bwrote|\bschrieb|\ba écrit|\bescribió|\bha scritto|\bschreef|\bescreveu|"
          r"\bnapisał(?:\(a\))?|\bskrev|\bkirjoitti|написал(?:\(а\))?")
_ATTRIBUTION = re.compile(
    r"^\s*(?:"
    r"on\b.{0,200}\bwrote:?"                        # Gmail, Apple Mail, Thunderbird (en)
    r"|am\b.{0,200}\bschrieb\b.*:?"                  # de
    r"|le\b.{0,200}\ba écrit\s*:?"                   # fr
    r"|el\b.{0,200}\bescribió\s*:?"                  # es
    r"|il giorno\b.{0,200}\bha scritto\s*:?"         # it
    r"|op\b.{0,200}\bschreef\b.*:?"                  # nl
    r"|em\b.{0,200}\bescreveu\s*:?"                  # pt
    r"|.{0,200}(?:" + _VERBS + r")\s*:\s*"
    r")$", re.IGNORECASE)
_OPENING = re.compile(r"^\s*(?:on|am|le|el|il giorno|op|em|den)\b", re.IGNORECASE)
_CLOSING = re.compile(r"(?:" + _VERBS + r")\s*:\s*$", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^\s*(?:-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|forwarded message|weitergeleitete nachricht)\s*-{2,}|_{20,})\s*$",
    re.IGNORECASE)
_OUTLOOK = re.compile(r"^\s*\*?(?:from|von|de|da|van)\s*:\*?\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*\*?(?:sent|gesendet|envoyé|enviado|inviato|date|datum|to|an|"
                           r"à|para|a|subject|betreff|objet|asunto|oggetto)\s*:", re.IGNORECASE)
_SIGNATURE = re.compile(r"^(?:-- ?|sent from my .*|von meinem .* gesendet|"
                        r"envoyé de mon .*|enviado desde mi .*|get outlook for .*)$",
                        re.IGNORECASE)


def _quoted_from(lines: list[str], start: int) -> bool:
    """Only `>` lines (and blank ones) from start on, at least one of them."""
    rest = [x for x in lines[start:] if x.strip()]
    return bool(rest) and all(x.startswith(">") for x in rest)


def split_reply(text: str) -> tuple[str, str]:
    """(what is new, the rest: quoted history and signature)."""
    lines = text.splitlines()
    cut = len(lines)
    for i, line in enumerate(lines):
        if _ATTRIBUTION.match(line) or _SEPARATOR.match(line) or _SIGNATURE.match(line.rstrip()):
            cut = i
            break
        if _OUTLOOK.match(line) and any(_OUTLOOK_NEXT.match(x) for x in lines[i + 1:i + 4]):
            cut = i
            break
        if _OPENING.match(line) and i + 1 < len(lines) and _CLOSING.search(lines[i + 1]):
            cut = i      # an attribution wrapped over two lines
            break
        if line.rstrip().endswith(":") and _quoted_from(lines, i + 1):
            cut = i      # "2026-11-03 9:12 Desk <x>:" and then only quotes
            break
        if line.startswith(">") and _quoted_from(lines, i):
            cut = i
            break
    new = "\n".join(lines[:cut]).strip()
    rest = "\n".join(lines[cut:]).strip()
    if not new:      # a reply that is all quote: keep it whole rather than empty
        return text.strip(), ""
    return new, rest
