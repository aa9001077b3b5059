"""Loading rules files: every problem found at once, each at its line and column.

A file is a list of rules, or a mapping with `include` (files evaluated
before this file's rules, relative to it) and `rules`. Nothing partial ever
goes live: load() returns a complete RuleSet or raises RulesError.

A file is parsed with the fast (C) loader first; only when it has problems
is it parsed again with the round-trip loader, which keeps the line and
column of every node, to say where they are. A desk with ten thousand rules
loads in seconds instead of half a minute.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError

from ..config.expansion import too_large
from ..config.schema import Desk
from .actions import ActionChecker
from .conditions import All, compile_condition
from .engine import EVENTS, Rule, RuleSet
from .problems import Problems, RulesError, position

RULE_KEYS = ("name", "description", "enabled", "on", "if", "then", "stop")


def load(paths: list[Path], desk: Desk, templates: set[str]) -> RuleSet:
    rules: list[Rule] = []
    problems: list[str] = []
    seen_files: list[Path] = []
    names: dict[str, str] = {}    # across files too
    for path in paths:
        _load_file(path, desk, templates, rules, problems, seen_files, (), names)
    _unreachable(rules, problems)
    if problems:
        raise RulesError(problems)
    for i, r in enumerate(rules):
        r.order = i
    return RuleSet(rules, [str(p) for p in seen_files])


def _load_file(path: Path, desk: Desk, templates: set[str], rules: list[Rule],
               problems: list[str], seen: list[Path], chain: tuple[Path, ...],
               names: dict[str, str]) -> None:
    path = path.resolve()
    if path in chain:
        problems.append(f"{path}:1:1: include loop: "
                        + " -> ".join(str(p) for p in (*chain, path)))
        return
    seen.append(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        problems.append(f"{path}: cannot read the rules: {e.strerror}")
        return
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
        return
    start = (len(rules), len(problems), len(seen), dict(names))
    for loader in (_FAST, _LOCATING):
        try:
            doc = loader().load(text)
        except MarkedYAMLError as e:
            mark = e.problem_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problems.append(f"{where}: YAML syntax error: {e.problem}")
            return
        if (why := too_large(doc)) is not None:
            problems.append(f"{path}: {why}")
            return
        _compile_file(doc, path, desk, templates, rules, problems, seen, chain, names)
        if len(problems) == start[1]:
            return
        if loader is _FAST:    # again, with positions
            del rules[start[0]:], problems[start[1]:], seen[start[2]:]
            names.clear()
            names.update(start[3])
            seen.append(path)


class Located(dict[Any, Any]):
    """A mapping from the fast loader, with the line and column (1-based) where it starts:
    a rule's place, for `rules test` and the messages, without the round-trip loader."""

    at: tuple[int, int] = (1, 1)


class _LocatingConstructor(SafeConstructor):
    def construct_yaml_map(self, node: Any) -> Any:
        data = Located()
        data.at = (node.start_mark.line + 1, node.start_mark.column + 1)
        yield data
        data.update(self.construct_mapping(node))


_LocatingConstructor.add_constructor("tag:yaml.org,2002:map",
                                     _LocatingConstructor.construct_yaml_map)


def _FAST() -> YAML:  # noqa: N802
    yaml = YAML(typ="safe", pure=False)
    yaml.Constructor = _LocatingConstructor
    return yaml


def _LOCATING() -> YAML:  # noqa: N802
    return YAML(typ="rt")


def _compile_file(doc: Any, path: Path, desk: Desk, templates: set[str], rules: list[Rule],
                  problems: list[str], seen: list[Path], chain: tuple[Path, ...],
                  names: dict[str, str]) -> None:
    p = Problems(path)
    items: Any = doc
    if doc is None:
        items = []
    elif isinstance(doc, dict):
        for key in doc:
            if key not in ("include", "rules"):
                p.add(doc, key, f"unknown key {key!r}", "include, rules")
        includes = doc.get("include") or []
        for i, inc in enumerate(includes if isinstance(includes, list) else [includes]):
            if not isinstance(inc, str):
                p.add(doc, "include", "include takes file names", "[other-rules.yaml]")
                continue
            target = path.parent / inc
            if not target.exists():
                p.add(includes if isinstance(includes, list) else doc,
                      i if isinstance(includes, list) else "include",
                      f"included file {inc!r} not found")
                continue
            _load_file(target, desk, templates, rules, problems, seen, (*chain, path), names)
        items = doc.get("rules") or []
    if not isinstance(items, list):
        p.add(doc, "rules" if isinstance(doc, dict) else None,
              "rules must be a list", "- name: ...")
        items = []
    checker = ActionChecker(desk, templates, p)
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str):
            if name in names:
                p.add(item, "name", f"duplicate rule name {name!r}",
                      f"a name not used before; first at {names[name]}")
            else:
                line, col = position(item, "name")
                names[name] = f"{path}:{line}:{col}"
        rule = _rule(item, items, i, path, p, checker)
        if rule is not None:
            rules.append(rule)
    problems.extend(p.items)


def _rule(item: Any, parent: Any, index: int, path: Path, p: Problems,
          checker: ActionChecker) -> Rule | None:
    line, col = position(parent, index)
    origin = f"{path}:{line}:{col}"
    if not isinstance(item, dict):
        p.add(parent, index, "a rule is a mapping", "name, on, if, then, stop")
        return None
    before = len(p.items)
    for key in item:
        if key not in RULE_KEYS:
            p.add(item, key, f"unknown rule key {key!r}", ", ".join(RULE_KEYS))
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        p.add(parent, index, "a rule needs a name", "name: a short unique text")
        name = f"#{index + 1}"
    if not isinstance(item.get("enabled", True), bool):
        p.add(item, "enabled", "enabled takes true or false")
    if not isinstance(item.get("stop", False), bool):
        p.add(item, "stop", "stop takes true or false")
    on = item.get("on")
    events = on if isinstance(on, list) else [on] if on is not None else []
    if not events:
        p.add(item if "on" in item else parent, "on" if "on" in item else index,
              "a rule needs `on`: the events it reacts to", ", ".join(EVENTS))
    for i, e in enumerate(events):
        if e not in EVENTS:
            p.add(on if isinstance(on, list) else item, i if isinstance(on, list) else "on",
                  f"unknown event {e!r}", ", ".join(EVENTS))
    condition = compile_condition(item.get("if"), item, "if", p,
                                  tuple(str(e) for e in events if e in EVENTS))
    if "then" not in item:
        p.add(parent, index, "a rule needs `then`: what it does", "- set: {queue: it}")
    actions = checker.check_list(item.get("then"), item, "then", [str(e) for e in events])
    if len(p.items) > before or condition is None:
        return None
    if item.get("enabled", True) is False:
        return None
    return Rule(name=str(name), events=tuple(str(e) for e in events), condition=condition,
                actions=actions, stop=bool(item.get("stop", False)),
                description=str(item.get("description") or ""), origin=origin)


def _unreachable(rules: list[Rule], problems: list[str]) -> None:
    """A rule after one that matches everything and stops, on all its events, never runs."""
    stopped: dict[str, Rule] = {}
    for r in rules:
        blockers = [stopped[e] for e in r.events if e in stopped]
        if blockers and len(blockers) == len(r.events):
            b = blockers[0]
            problems.append(f"{r.origin}: rule {r.name!r} can never run: rule {b.name!r} "
                            f"({b.origin}) matches every {', '.join(r.events)} and stops "
                            "(move it up, or give that rule a condition)")
        if r.stop and isinstance(r.condition, All) and not r.condition.parts:
            for e in r.events:
                stopped.setdefault(e, r)


__all__ = ["load", "RulesError"]
