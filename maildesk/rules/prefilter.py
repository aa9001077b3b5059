"""Which rules could match an event: each rule's gate, and one index per event to find them.

A rule's gate is a necessary condition, read at load from its condition: one of its
top-level tests (or, under `any`, a test in every branch), of a kind an index answers
without testing rules one by one:

- exact: `is`/`in` on a field of one value (`queue: it`, `from: [a@x.test, b@y.test]`):
  a hash lookup of the field's lower-case value;
- domain: `domain` (`from: {domain: [x.test]}`): a lookup of each suffix of the
  address's domain (`a.x.test`, `x.test`, `test`);
- word: `contains`, `is` and `in` on text (a value equal to the word holds it too), and
  a word every match of a `matches` regex holds (read from the parsed regex): one
  Aho-Corasick automaton per field finds them all in one pass over the field's
  lower-case text (`str.lower()`, as the tests compare);
- pattern: a regex without such a word (`\\d{5,}`): the field's regexes of this kind
  joined in one alternation, searched once: only when it matches are they tested.

An event then tests the rules whose gate found its key, plus those without a gate, in
file order. A gate only narrows: each candidate is still tested whole, so what matches
is what matched before (tests/test_prefilter.py compares both on the corpus).
"""
from __future__ import annotations

import importlib
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ahocorasick

from .conditions import All, Any_, Node, Test
from .vocabulary import Facts, field_kind

_parser: Any = importlib.import_module("re._parser")     # sre_parse, without its warning
_C: Any = importlib.import_module("re._constants")

MIN_WORD = 3            # shorter words hit nearly every mail: their rules are tested anyway
SELECTIVE = {"from", "sender_domain", "requester"}   # exact keys that name one sender
TEXT_KINDS = {"text", "texts", "headers", "address", "addresses"}
# Characters that a case-insensitive regex matches to an ASCII letter but that str.lower()
# does not turn into that letter: İ, ı and ſ (tests/test_prefilter.py checks that there
# are no others, over all of Unicode). After lower(), ı and ſ are still there and İ is
# i + U+0307: a text holding one of these is given to every regex rule of its field.
UNFOLDED = frozenset("\u0131\u017f\u0307")

Key = tuple[str, str, str]      # (kind: exact, domain, word or regex; field; value)
R = TypeVar("R")


@dataclass(frozen=True)
class Gate:
    """Keys of which at least one must be found for the rule to match, and how good."""

    keys: frozenset[Key]
    cost: int          # lower is more selective: the gate a rule is indexed by


def gate(cond: Node) -> Gate | None:
    """The most selective gate of a condition, or None: the rule is tested on every event."""
    if isinstance(cond, Test):
        return _test_gate(cond)
    if isinstance(cond, All):
        gates = [g for g in map(gate, cond.parts) if g is not None]
        return min(gates, key=lambda g: g.cost) if gates else None
    if isinstance(cond, Any_) and cond.parts:
        branches = [gate(p) for p in cond.parts]
        if all(b is not None for b in branches):
            found = [b for b in branches if b is not None]
            return Gate(frozenset().union(*(b.keys for b in found)),
                        max(b.cost for b in found))
    return None     # Not, or an `any` with a branch no index answers


def _test_gate(t: Test) -> Gate | None:
    kind = field_kind(t.field)
    if kind not in TEXT_KINDS:
        return None
    if t.op == "domain":
        return Gate(frozenset(("domain", t.field, d) for d in t.value), 1)
    if t.op in ("is", "in") and kind in ("text", "address"):
        values = [t.value] if t.op == "is" else sorted(t.value)
        return Gate(frozenset(("exact", t.field, v) for v in values),
                    0 if t.field in SELECTIVE else 3)
    if t.op == "matches":
        words, kind_of = required_words(t.value.pattern, t.value.flags), "regex"
    elif t.op in ("is", "in", "contains"):
        words, kind_of = ({t.value} if t.op != "in" else set(t.value)), "word"
    else:
        return None
    if words and min(map(len, words)) >= MIN_WORD:
        return Gate(frozenset((kind_of, t.field, w) for w in words),
                    2 if min(map(len, words)) >= 4 else 4)
    if kind_of == "regex" and joinable(t.value):
        return Gate(frozenset([("pattern", t.field, t.value.pattern)]), 5)
    return None


def required_words(pattern: str, flags: int) -> set[str] | None:
    """Lower-case ASCII words one of which every match of the regex holds, or None.

    Read from the parsed regex: a run of literal characters in sequence is such a word;
    an alternation needs one from each branch. Anything else (classes, repeats that may
    be absent, non-ASCII letters) ends a run: reading less only narrows less."""
    try:
        parsed = _parser.parse(pattern, flags)
    except Exception:       # compiled at load already: never, but a gate is only a help
        return None
    return _sequence(list(parsed))


def joinable(regex: re.Pattern[str]) -> bool:
    """Whether the regex means the same as one branch of an alternation: no flags of its
    own for the whole pattern (they must come first), no group referred to by number or
    name (the numbers shift, names could clash)."""
    if regex.flags != re.IGNORECASE | re.UNICODE or regex.groupindex:
        return False
    try:
        return not _refers(_parser.parse(regex.pattern, regex.flags))
    except Exception:
        return False


def _refers(node: Any) -> bool:
    """Whether a parsed regex (or a part of one) refers to a group."""
    if isinstance(node, _parser.SubPattern):
        return any(op in (_C.GROUPREF, _C.GROUPREF_EXISTS) or _refers(arg)
                   for op, arg in node.data)
    return isinstance(node, (list, tuple)) and any(map(_refers, node))


def _sequence(items: list[Any]) -> set[str] | None:
    best: set[str] | None = None
    run: list[str] = []

    def consider(words: set[str] | None) -> None:
        nonlocal best
        if words and (best is None or min(map(len, words)) > min(map(len, best))):
            best = words

    for op, arg in items:
        if op is _C.LITERAL and arg < 128:
            run.append(chr(arg).lower())
            continue
        consider({"".join(run)} if run else None)
        run = []
        if op is _C.SUBPATTERN:
            consider(_sequence(list(arg[-1])))
        elif op is _C.BRANCH:
            branches = [_sequence(list(b)) for b in arg[1]]
            if all(branches):
                consider(set().union(*(b for b in branches if b)))
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT) and arg[0] >= 1:
            consider(_sequence(list(arg[2])))
        elif op is _C.ATOMIC_GROUP:
            consider(_sequence(list(arg)))
    consider({"".join(run)} if run else None)
    return best


def haystack(value: Any) -> str | None:
    """A field's value as the word keys are looked for: lower case, a list's values apart."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return "\x00".join(str(v).lower() for v in value)
    return str(value).lower()


def _domains(value: Any) -> Iterator[str]:
    """Each address's domain and its parents: those a `domain` test of it may name."""
    for a in value if isinstance(value, (list, tuple)) else [value]:
        dom = str(a).rpartition("@")[2].lower()
        yield dom
        yield from (dom[i + 1:] for i, ch in enumerate(dom) if ch == ".")


class Index(Generic[R]):
    """The rules of one event, by their gates: candidates(facts) in file order."""

    def __init__(self, rules: Iterable[tuple[int, R, Gate | None]]) -> None:
        """rules: (order, rule, gate) in file order."""
        self._always: list[tuple[int, R]] = []
        self._lookup: dict[tuple[str, str], dict[str, list[tuple[int, R]]]] = \
            defaultdict(lambda: defaultdict(list))     # (kind, field) -> value -> rules
        self._regex: dict[str, dict[int, R]] = defaultdict(dict)    # field -> its regex rules
        words: dict[str, dict[str, list[tuple[int, R]]]] = defaultdict(lambda: defaultdict(list))
        for order, rule, g in rules:
            if g is None:
                self._always.append((order, rule))
                continue
            for kind, fld, value in g.keys:
                if kind in ("word", "regex"):
                    words[fld][value].append((order, rule))
                    if kind == "regex":
                        self._regex[fld][order] = rule
                else:
                    self._lookup[kind, fld][value].append((order, rule))
        self._joined: dict[str, tuple[re.Pattern[str], list[tuple[int, R]]]] = {}
        for kind, fld in [k for k in self._lookup if k[0] == "pattern"]:
            by_pattern = self._lookup.pop((kind, fld))
            self._joined[fld] = (re.compile("|".join(f"(?:{x})" for x in by_pattern),
                                            re.IGNORECASE),
                                 [r for x in by_pattern.values() for r in x])
        self._automata: dict[str, Any] = {}
        for fld, by_word in words.items():
            automaton = ahocorasick.Automaton()
            for word, found in by_word.items():
                automaton.add_word(word, found)
            automaton.make_automaton()
            self._automata[fld] = automaton

    def candidates(self, facts: Facts) -> list[R]:
        found: dict[int, R] = dict(self._always)
        for (kind, fld), by_value in self._lookup.items():
            value = facts.get(fld)
            if value is None:
                continue
            for key in (_domains(value) if kind == "domain" else [str(value).lower()]):
                found.update(by_value.get(key, ()))
        for fld, automaton in self._automata.items():
            text = haystack(facts.get(fld))
            if not text:
                continue
            for _end, rules in automaton.iter(text):
                found.update(rules)
            if fld in self._regex and not text.isascii() and not UNFOLDED.isdisjoint(text):
                found.update(self._regex[fld])
        for fld, (joined, rules) in self._joined.items():
            value = facts.get(fld)
            values = value if isinstance(value, (list, tuple)) else [value]
            if value is not None and any(joined.search(str(v)) for v in values):
                found.update(rules)
        return [found[k] for k in sorted(found)]
