"""Evaluating rules: which match an event, in file order, until one says stop.

Rules are indexed at load by event kind, and by the exact-match tests every
match must pass (`queue: it`, `sender_domain: [a.com, b.com]`), so an event
looks only at the rules that could match it: the rules without such a test,
plus those whose key the facts hold. Time per mail grows with the rules that
could apply, not with the size of the file.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from .actions import Action
from .conditions import Node, index_keys
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
        # event -> always-candidates (ordered) and index: (field, value) -> rules
        self._plain: dict[str, list[Rule]] = defaultdict(list)
        self._keyed: dict[str, dict[str, dict[str, list[Rule]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        for rule in rules:
            keys = index_keys(rule.condition)
            for event in rule.events:
                if keys:
                    fld, values = keys[0]
                    for v in values:
                        self._keyed[event][fld][v].append(rule)
                else:
                    self._plain[event].append(rule)

    def __len__(self) -> int:
        return len(self.rules)

    def watches(self, event: str) -> bool:
        """Whether any rule is on this event: most events have none, and cost nothing."""
        return event in self._plain or event in self._keyed

    def candidates(self, event: str, facts: Facts) -> list[Rule]:
        found = list(self._plain.get(event, ()))
        for fld, by_value in self._keyed.get(event, {}).items():
            value = facts.get(fld)
            if value is not None:
                found.extend(by_value.get(str(value).lower(), ()))
        found.sort(key=lambda r: r.order)
        return found

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
