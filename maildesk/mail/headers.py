"""Header values that are safe to store, show and send again.

A customer's subject or name ends up in our outgoing headers; CR, LF, NUL and
the Unicode line separators are what header injection is made of, so every
value taken from a mail passes through one_line() first.
"""
from __future__ import annotations

import re

_BREAKS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0085\u2028\u2029]+")
MAX_HEADER = 998


def one_line(value: str, limit: int = MAX_HEADER) -> str:
    """value with line breaks and control characters folded to single spaces."""
    value = _BREAKS.sub(" ", value.replace("\t", " "))
    return re.sub(r" {2,}", " ", value).strip()[:limit]
