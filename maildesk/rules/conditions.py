"""Conditions: compiled once at load into small trees of nodes.

`if` is a mapping (every entry must hold) or a list of mappings (each must
hold); `all`, `any` and `not` combine. A field takes a scalar (`is`), a list
(`in`), or a mapping of operators: `subject: {contains: vpn}`. Text compares
ignore case; regexes are compiled with re.IGNORECASE unless they say (?-i).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config.durations import parse_duration
from .problems import Problems
from .vocabulary import (
    ALL_OPERATORS,
    BOUNDS,
    ONLY_ON,
    OPERATORS,
    PREDICTED,
    Facts,
    field_kind,
)

LIST_KINDS = {"texts", "addresses", "headers"}
MEMBERSHIP = {"texts", "addresses"}     # `contains` asks for an element, not a substring


class Node:
    def test(self, f: Facts) -> bool:
        raise NotImplementedError

    def why_not(self, f: Facts) -> str | None:
        """The first condition that fails, for `rules test`; None if this holds."""
        return None if self.test(f) else str(self)


@dataclass
class All(Node):
    parts: list[Node]

    def test(self, f: Facts) -> bool:
        return all(p.test(f) for p in self.parts)

    def why_not(self, f: Facts) -> str | None:
        for p in self.parts:
            reason = p.why_not(f)
            if reason:
                return reason
        return None

    def __str__(self) -> str:
        return " and ".join(map(str, self.parts)) or "always"


@dataclass
class Any_(Node):
    parts: list[Node]

    def test(self, f: Facts) -> bool:
        return any(p.test(f) for p in self.parts)

    def __str__(self) -> str:
        return "any of (" + "; ".join(map(str, self.parts)) + ")"


@dataclass
class Not(Node):
    part: Node

    def test(self, f: Facts) -> bool:
        return not self.part.test(f)

    def __str__(self) -> str:
        return f"not ({self.part})"


@dataclass
class Test(Node):
    field: str
    op: str
    value: Any             # normalised at load: lower-case text, a set, a regex, seconds
    shown: Any             # as the admin wrote it, for messages
    many: bool             # the field holds a list
    membership: bool = False

    def test(self, f: Facts) -> bool:
        actual = f.get(self.field)
        if actual is None:
            return False
        if self.many:
            if self.membership and self.op == "contains":
                return self.value in {str(a).lower() for a in actual}
            return any(self._one(a) for a in actual)
        return self._one(actual)

    def _one(self, a: Any) -> bool:
        op, v = self.op, self.value
        if op == "is":
            return a is v if isinstance(v, bool) else \
                (a == v if isinstance(v, float) else str(a).lower() == v)
        if op == "in":
            return str(a).lower() in v
        if op == "contains":
            return v in str(a).lower()
        if op == "matches":
            return v.search(str(a)) is not None
        if op == "domain":
            dom = str(a).rpartition("@")[2].lower()
            return any(dom == d or dom.endswith("." + d) for d in v)
        if op == "gt":
            return float(a) > v
        return float(a) < v     # lt

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.shown!r}"


def _value(kind: str, op: str, raw: Any, where: tuple[Any, Any], p: Problems) -> Any | None:
    """The operand, normalised for fast tests; None (and a problem) when it does not fit."""
    node, key = where
    if op in ("in", "domain"):
        items = raw if isinstance(raw, list) else [raw]
        if not items or not all(isinstance(i, (str, int, float)) and not isinstance(i, bool)
                                for i in items):
            p.add(node, key, f"`{op}` takes a list of values", "e.g. [a, b]")
            return None
        return frozenset(str(i).lower().lstrip("@") for i in items)
    if op == "matches":
        if not isinstance(raw, str):
            p.add(node, key, "`matches` takes a regular expression", "a quoted string")
            return None
        try:
            return re.compile(raw, re.IGNORECASE)
        except re.error as e:
            p.add(node, key, f"bad regular expression {raw!r}: {e}", "Python re syntax")
            return None
    if kind == "bool":
        if not isinstance(raw, bool):
            p.add(node, key, f"{raw!r} is not true or false", "true or false")
            return None
        return raw
    if kind in ("number", "duration"):
        try:
            return parse_duration(raw) if kind == "duration" else float(_number(raw))
        except (TypeError, ValueError):
            p.add(node, key, f"{raw!r} is not a {kind}",
                  "e.g. 4h, 30m, 2d" if kind == "duration" else "a number")
            return None
    if isinstance(raw, (list, dict)) or raw is None:
        p.add(node, key, f"`{op}` takes one value", "a string or number")
        return None
    return str(raw).lower()


def _number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError
    return float(raw)


def compile_field(name: str, spec: Any, node: Any, key: Any, p: Problems,
                  events: tuple[str, ...]) -> Node | None:
    """events: those of the rule, for the facts only one of them has (vocabulary.ONLY_ON)."""
    kind = field_kind(name)
    if kind is None:
        p.add(node, key, f"unknown field {name!r}",
              "a mail field (from, subject, body, header.NAME, ...), a ticket field "
              "(queue, status, priority, tags, age, ...), the triage model's prediction ("
              + ", ".join(PREDICTED) + "), or all/any/not")
        return None
    if name in ONLY_ON and (others := [e for e in events if e != ONLY_ON[name]]):
        p.add(node, key, f"{name} has a value on {ONLY_ON[name]} alone, never on "
                         f"{', '.join(others)}: a condition on it cannot hold there",
              f"a rule of its own with on: {ONLY_ON[name]}")
        return None
    if isinstance(spec, dict):
        ops = list(spec.items())
        holder = spec
    else:
        ops = [("in" if isinstance(spec, list) else "is", spec)]
        holder = None
    tests: list[Node] = []
    for op, raw in ops:
        where: tuple[Any, Any] = (holder, op) if holder is not None else (node, key)
        if op not in OPERATORS[kind]:
            what = f"operator {op!r} does not apply to" if op in ALL_OPERATORS \
                else f"unknown operator {op!r} for"
            p.add(*where, f"{what} {kind} field {name!r}", ", ".join(OPERATORS[kind]))
            continue
        value = _value(kind, op, raw, where, p)
        if value is not None and name in BOUNDS:
            low, high, why = BOUNDS[name]
            if not low <= value <= high:
                always = (op == "gt" and value < low) or (op == "lt" and value > high)
                p.add(*where, f"{name} {op} {raw} {'always' if always else 'never'} holds: "
                              f"{why}")
                continue
        if value is not None:
            tests.append(Test(name, op, value, raw, kind in LIST_KINDS, kind in MEMBERSHIP))
    if not tests:
        return None
    return tests[0] if len(tests) == 1 else All(tests)


def compile_condition(spec: Any, node: Any, key: Any, p: Problems,
                      events: tuple[str, ...]) -> Node | None:
    """spec is what stands under `if` (or under all/any/not); events: the rule's."""
    if spec is None:
        return All([])
    if isinstance(spec, list):
        items = [compile_condition(item, spec, i, p, events) for i, item in enumerate(spec)]
        return All([x for x in items if x is not None])
    if not isinstance(spec, dict):
        p.add(node, key, "a condition must be a mapping of fields, or all/any/not",
              "e.g. subject: {contains: vpn}")
        return None
    parts: list[Node] = []
    for name, sub in spec.items():
        if name in ("all", "any"):
            if not isinstance(sub, list):
                p.add(spec, name, f"`{name}` takes a list of conditions", "- field: value")
                continue
            kids = [compile_condition(item, sub, i, p, events) for i, item in enumerate(sub)]
            kids_ok = [k for k in kids if k is not None]
            parts.append(All(kids_ok) if name == "all" else Any_(kids_ok))
        elif name == "not":
            kid = compile_condition(sub, spec, name, p, events)
            if kid is not None:
                parts.append(Not(kid))
        else:
            compiled = compile_field(str(name), sub, spec, name, p, events)
            if compiled is not None:
                parts.append(compiled)
    return parts[0] if len(parts) == 1 else All(parts)

