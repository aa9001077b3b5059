"""What the triage model predicts for a new ticket's mail, as the `ticket.created` event
records it and rules read it (rules/vocabulary.py: predicted.category, predicted.confidence,
predicted.queue, predicted.queue_confidence, predicted.type, predicted.type_confidence).

The model reads the customer's own words, as the knowledge base's suggestions do (the
subject and the text without what it quotes): what it learnt from too
(scheduler/triage.py). The prediction only records; a rule decides whether to act on it,
and the record lets a report count later how often the desk kept what was predicted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..kb.search import customer_words

if TYPE_CHECKING:
    from ..ml.triage import Model


def predicted(model: Model, subject: str, text: str) -> dict[str, Any] | None:
    """The model's label and confidence for each field it predicts, and which model; None
    when it knows no word of the mail."""
    guesses = model.predict(customer_words(subject, text))
    if not guesses:
        return None
    out: dict[str, Any] = {"model": model.id}
    for target, g in guesses.items():
        out[target] = g.label
        out[confidence_key(target)] = g.confidence
    return out


def as_facts(guess: dict[str, Any]) -> dict[str, Any]:
    """A prediction as the rules' facts name it (predicted.category, predicted.confidence,
    ...), in the order rules/vocabulary.py declares them: what people and scripts are
    shown, so one name means one thing everywhere. The record keeps the short keys."""
    from ..rules.vocabulary import PREDICTED
    return {name: guess[key] for name in PREDICTED if (key := name.partition(".")[2]) in guess}


def confidence_key(target: str) -> str:
    """Where a field's confidence is kept: `confidence` is the category's (the fact rules
    use most, predicted.confidence), the others are named after their field."""
    return "confidence" if target == "category" else f"{target}_confidence"
