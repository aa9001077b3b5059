"""A customer's rating: read from a rate address, a reply's words, or a web form, and
recorded once per ticket, with `survey.answered` for the rules.

The token in a rate address is an HMAC of the ticket and its requester, so a
rating cannot be made for another ticket, and the survey row is updated only
while unanswered, so a token cannot be used twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.context import Context
from ..core.fire import fire
from ..store.rows import TicketRow

SCALES: dict[str, list[tuple[int, str]]] = {
    "1-5": [(5, "Very satisfied"), (4, "Satisfied"), (3, "Neither"), (2, "Unsatisfied"),
            (1, "Very unsatisfied")],
    "good-bad": [(5, "Good"), (1, "Bad")],
}
_WORDS = [(5, r"excellent|very good|very satisfied|great|perfect|super|sehr gut|excellent"),
          (1, r"terrible|awful|very bad|very unsatisfied|useless|schlecht"),
          (4, r"good|satisfied|happy|fine|gut|bien|bueno|thanks?\b|thank you"),
          (2, r"bad|poor|unsatisfied|unhappy|disappointed|mauvais|malo"),
          (3, r"ok|okay|neutral|average|so-so")]


@dataclass(frozen=True)
class Rating:
    score: int
    comment: str


def parse_rating(text: str, scale: str) -> Rating | None:
    """The rating in a reply's first lines (a number or a word), and the rest as comment."""
    lines = [line.strip() for line in text.strip().splitlines()]
    for i, line in enumerate(lines[:3]):
        if not line:
            continue
        low = line.lower()
        score = None
        m = re.match(r"^\D{0,12}?\b([1-5])\b(?:\s*/\s*5)?", low)
        if m:
            score = int(m.group(1))
        else:
            for value, words in _WORDS:
                if re.search(rf"\b(?:{words})", low):
                    score = value
                    break
        if score is not None:
            if scale == "good-bad":
                score = 5 if score >= 3 else 1
            if m:       # "4 - it took a week": the rest of the line is the comment
                first = re.sub(r"^\D{0,12}?\b[1-5]\b(\s*/\s*5)?\W*", "", line)
            else:       # "Good" alone is the answer; a sentence is its own comment
                first = line if len(line.split()) > 3 else ""
            rest = [first, *lines[i + 1:]]
            return Rating(score, "\n".join(x for x in rest if x).strip()[:2000])
    return None


def record(ctx: Context, ticket: TicketRow, rating: Rating, via: str) -> bool:
    """Keep the answer (through the ledger: a mail that fails later undoes it) and fire
    survey.answered; False if this ticket has no open survey (never sent, or answered)."""
    if not ctx.ledger.survey_open(ticket):
        return False
    satisfied = rating.score >= 4
    ctx.ledger.answer_survey(ticket, answered_at=ctx.now, score=rating.score,
                             satisfied=satisfied, comment=rating.comment or None)
    fire(ctx, ticket, "survey.answered", actor=ticket.requester, via=via,
         comment=rating.comment[:500], rating=rating.score, satisfied=satisfied)
    return True
