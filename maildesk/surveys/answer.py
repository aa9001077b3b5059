"""A customer's rating: read from a rate address, a reply's words, or a web form, and
recorded once per ticket, with `survey.answered` for the rules.

The token in a rate address is an HMAC of the ticket and its requester, so a
rating cannot be made for another ticket, and the survey row is updated only
while unanswered, so a token cannot be used twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update

from ..pipeline.work import Context
from ..rules.effects import LedgerEffects, apply_decision
from ..rules.vocabulary import facts_for
from ..store.models import Survey
from ..tickets.ledger import TicketRow

T_SURVEYS = Survey.__table__
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
    """Store the answer; False if this ticket has no open survey (never sent, or answered)."""
    assert ticket.id is not None
    satisfied = rating.score >= 4
    done = ctx.ledger.conn.execute(
        update(T_SURVEYS).where(T_SURVEYS.c.ticket_id == ticket.id,
                                T_SURVEYS.c.answered_at.is_(None))
        .values(answered_at=ctx.now, score=rating.score, satisfied=satisfied,
                comment=rating.comment or None)).rowcount
    if done != 1:
        return False
    answer: dict[str, Any] = {"rating": rating.score, "satisfied": satisfied}
    ctx.ledger.add_event(ticket, "survey.answered", ctx.now, actor=ticket.requester, via=via,
                         comment=rating.comment[:500], **answer)
    decision = ctx.rules.evaluate("survey.answered", facts_for(
        ctx.settings.desk, ticket, None, ctx.now, answer=answer))
    if decision.actions:
        apply_decision(decision, LedgerEffects(ctx, ticket), ctx.settings.desk)
    return True
