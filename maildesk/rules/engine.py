"""Evaluating rules: which match an event, in file order, until one says stop.

Rules are indexed at load by event kind, and by a test every match must pass
(prefilter.py: `queue: it`, `sender_domain: [a.com, b.com]`, `from: {domain:
x.com}`, a word in the subject or the body, a word every match of a regex
holds), so an event looks only at the rules that could match it: the rules
without such a test, plus those whose key the facts hold. Time per mail grows
with the rules that could apply, not with the size of the file.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .actions import Action
from .conditions import Node
from .prefilter import Gate, Index, gate
from .vocabulary import Facts

EVENTS = ("ticket.created", "customer.replied", "agent.replied", "ticket.updated",
          "sla.warning", "sla.breached", "ticket.resolved", "survey.answered")


@dataclass
class Rule:
    name: str
    events: tuple[str, ...]
    condition: Node
    actions: list[Action]
    stop: bool = False
    description: str = ""
    order: int = 0
    origin: str = ""       # file:line, for messages


@dataclass
class Explained:
    """One rule's answer to one event, for `maildesk rules test --explain`."""

    rule: Rule
    matched: bool
    why_not: str | None = None


@dataclass
class Decision:
    """What the rules decided for one event: the actions, in order, with their rules."""

    actions: list[tuple[Rule, Action]] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)       # the rules that matched
    misses: list[str] = field(default_factory=list)     # tested and not matched
    explained: list[Explained] = field(default_factory=list)   # filled when explaining
    stopped_by: str | None = None


class RuleSet:
    def __init__(self, rules: list[Rule], sources: list[str] | None = None) -> None:
        self.rules = rules
        self.sources = sources or []
        by_event: dict[str, list[tuple[int, Rule, Gate | None]]] = defaultdict(list)
        for i, rule in enumerate(rules):
            g = gate(rule.condition)
            for event in rule.events:
                by_event[event].append((i, rule, g))
        self._index = {event: Index(found) for event, found in by_event.items()}

    def __len__(self) -> int:
        return len(self.rules)

    def watches(self, event: str) -> bool:
        """Whether any rule is on this event: most events have none, and cost nothing."""
        return event in self._index

    def candidates(self, event: str, facts: Facts) -> list[Rule]:
        """The rules that could match, in file order: the others' gates found nothing."""
        index = self._index.get(event)
        return index.candidates(facts) if index is not None else []

    def evaluate(self, event: str, facts: Facts, explain: bool = False) -> Decision:
        decision = Decision()
        pool = [r for r in self.rules if event in r.events] if explain \
            else self.candidates(event, facts)
        for rule in pool:
            if explain:
                reason = rule.condition.why_not(facts)
                decision.explained.append(Explained(rule, reason is None, reason))
                if reason is not None:
                    decision.misses.append(rule.name)
                    continue
            elif not rule.condition.test(facts):
                decision.misses.append(rule.name)
                continue
            decision.hits.append(rule.name)
            decision.actions.extend((rule, a) for a in rule.actions)
            if rule.stop:
                decision.stopped_by = rule.name
                break
        return decision


EMPTY = RuleSet([])
