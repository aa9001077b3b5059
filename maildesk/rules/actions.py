"""Actions: what a rule does, checked at load and carried out through Effects.

Effects is the one door to the world: in the pipeline it changes the ticket
through the ledger (each change an event that names the rule) and queues
mail; in `maildesk rules test` it only records what would happen.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config.schema import Desk
from .problems import Problems

TYPES = ("incident", "request", "problem")
STATUSES = ("new", "open", "pending", "resolved", "closed")
LEVELS = ("high", "medium", "low")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
Args = dict[str, Any]
SETTABLE = ("type", "category", "queue", "impact", "urgency", "priority", "assignee", "status")


class Effects(Protocol):
    def change(self, rule: str, **values: Any) -> None: ...
    def tags(self, rule: str, add: list[str], remove: list[str]) -> None: ...
    def notify(self, rule: str, template: str, to: list[str]) -> None: ...
    def acknowledge(self, rule: str, template: str | None) -> None: ...
    def suggest(self, rule: str, articles: int) -> None: ...
    def escalate(self, rule: str, level: int, queue: str | None, group: str | None) -> None: ...
    def link_problem(self, rule: str, ref: str) -> None: ...
    def drop(self, rule: str, reason: str) -> None: ...


@dataclass(frozen=True)
class Action:
    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def run(self, rule: str, fx: Effects) -> None:
        ACTIONS[self.kind].run(fx, rule, self.args)

    def __str__(self) -> str:
        return f"{self.kind} {self.args}" if self.args else self.kind


class ActionChecker:
    """Turns the `then` list into Actions, reporting every problem with its place."""

    def __init__(self, desk: Desk, templates: set[str], p: Problems) -> None:
        self.desk, self.templates, self.p = desk, templates, p
        self.queues = {q.name for q in desk.queues}
        self.groups = {g.name for g in desk.groups}
        self.agents = {a.name for a in desk.agents} | {a.address for a in desk.agents}

    def check_list(self, spec: Any, node: Any, key: Any, events: list[str]) -> list[Action]:
        if spec is None:
            return []
        if not isinstance(spec, list):
            self.p.add(node, key, "`then` takes a list of actions", "- set: {queue: it}")
            return []
        out = []
        for i, item in enumerate(spec):
            if isinstance(item, str) and item in ("close",):
                out.append(Action("close"))
                continue
            if not isinstance(item, dict) or len(item) != 1:
                self.p.add(spec, i, "each action is a mapping with one key", ", ".join(ACTIONS))
                continue
            (kind, args), = item.items()
            checked = self._one(str(kind), args, item, kind, events)
            if checked is not None:
                out.append(checked)
        return out

    def _one(self, kind: str, args: Any, node: Any, key: Any, events: list[str]
             ) -> Action | None:
        if kind not in ACTIONS:
            self.p.add(node, key, f"unknown action {kind!r}", ", ".join(ACTIONS))
            return None
        checked = ACTIONS[kind].check(self, args, node, key, events)
        return None if checked is None else Action(kind, checked)

    def _set(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if not isinstance(args, dict) or not args:
            self.p.add(node, key, "`set` takes a mapping of fields", ", ".join(SETTABLE))
            return None
        values = {}
        for name, value in args.items():
            checked = self._field(str(name), value, args, name)
            if checked is not None:
                values[str(name)] = checked
        return values if len(values) == len(args) else None

    def _tags(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if not isinstance(args, dict) or not set(args) <= {"add", "remove"} or not args:
            self.p.add(node, key, "`tags` takes add and/or remove lists", "{add: [vip]}")
            return None
        lists = {}
        for k, v in args.items():
            items = v if isinstance(v, list) else [v]
            if not all(isinstance(t, str) and t.strip() for t in items):
                self.p.add(args, k, "tags are non-empty words", "[vip, outage]")
                return None
            lists[str(k)] = [t.strip().lower() for t in items]
        return lists

    def _notify(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if not isinstance(args, dict) or "template" not in args or "to" not in args:
            self.p.add(node, key, "`notify` takes a template and a recipient",
                       "{template: NAME, to: requester|assignee|agents|GROUP|ADDRESS}")
            return None
        template = self._template(args.get("template"), args, "template")
        to = args["to"] if isinstance(args["to"], list) else [args["to"]]
        bad = [t for t in to if not self._recipient(t)]
        if bad:
            self.p.add(args, "to", f"unknown recipient {bad[0]!r}",
                       "requester, assignee, agents, a group name or an address")
        return {"template": template, "to": [str(t) for t in to]} \
            if template and not bad else None

    def _acknowledge(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if args is False:
            return {"template": None}
        template = self._template(args, node, key)
        return {"template": template} if template else None

    def _suggest_articles(self, args: Any, node: Any, key: Any, events: list[str]
                          ) -> Args | None:
        if args is False:
            return {"articles": 0}
        if isinstance(args, bool) or not isinstance(args, int) or not 0 <= args <= 10:
            self.p.add(node, key, f"`suggest_articles` takes false or a number of articles "
                                  f"from 0 to 10, not {args!r}", "suggest_articles: 2")
            return None
        if set(events) - {"ticket.created"}:
            self.p.add(node, key, "articles are suggested only in a new ticket's "
                                  "acknowledgement", "on: ticket.created alone")
            return None
        return {"articles": args}

    def _escalate(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        p = self.p
        if not isinstance(args, dict) or not ({"queue", "group"} & set(args)):
            p.add(node, key, "`escalate` takes a queue and/or a group, and a level",
                  "{group: it-leads, level: 2}")
            return None
        level = args.get("level", 1)
        ok = True
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 3:
            p.add(args, "level" if "level" in args else next(iter(args)),
                  f"escalation level {level!r} out of range", "1, 2 or 3")
            ok = False
        if "queue" in args and args["queue"] not in self.queues:
            p.add(args, "queue", f"unknown queue {args['queue']!r}",
                  ", ".join(sorted(self.queues)))
            ok = False
        if "group" in args and args["group"] not in self.groups:
            p.add(args, "group", f"unknown group {args['group']!r}",
                  ", ".join(sorted(self.groups)) or "a group defined under desk.groups")
            ok = False
        return {"level": level, "queue": args.get("queue"), "group": args.get("group")} \
            if ok else None

    def _link_problem(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if not isinstance(args, str) or "-" not in args:
            self.p.add(node, key, f"{args!r} is not a ticket reference", "e.g. MD-12")
            return None
        return {"ref": args.upper()}

    def _close(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if args is not True:
            self.p.add(node, key, "`close` takes true", "close: true")
            return None
        return {}

    def _drop(self, args: Any, node: Any, key: Any, events: list[str]) -> Args | None:
        if args != "spam":
            self.p.add(node, key, f"`drop` takes spam, not {args!r}", "drop: spam")
            return None
        if set(events) - {"ticket.created"}:
            self.p.add(node, key, "only a new mail can be dropped", "on: ticket.created alone")
            return None
        return {"reason": "spam"}

    def _field(self, name: str, value: Any, node: Any, key: Any) -> Any | None:
        allowed = {"type": TYPES, "impact": LEVELS, "urgency": LEVELS, "priority": PRIORITIES,
                   "status": STATUSES, "queue": tuple(sorted(self.queues))}.get(name)
        if name not in SETTABLE:
            self.p.add(node, key, f"cannot set {name!r}", ", ".join(SETTABLE))
            return None
        if name == "assignee":
            if value is None or value in self.agents:
                return value
            self.p.add(node, key, f"unknown agent {value!r}",
                       "an agent's name or address from desk.agents, or null")
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            self.p.add(node, key, f"{name} takes one word, not {value!r}")
            return None
        text = str(value)
        if name == "priority":
            text = text.upper()
        elif allowed is not None:
            text = text.lower() if name != "queue" else text
        if allowed is not None and text not in allowed:
            self.p.add(node, key, f"{text!r} is not a valid {name}", ", ".join(allowed))
            return None
        return text

    def _template(self, name: Any, node: Any, key: Any) -> str | None:
        if not isinstance(name, str) or name not in self.templates:
            self.p.add(node, key, f"unknown template {name!r}",
                       ", ".join(sorted(self.templates)))
            return None
        return name

    def _recipient(self, to: Any) -> bool:
        return isinstance(to, str) and (to in ("requester", "assignee", "agents")
                                        or to in self.groups or "@" in to)


@dataclass(frozen=True)
class ActionKind:
    """An action a rule may take: how its arguments are checked at load, and what it does."""

    check: Callable[[ActionChecker, Any, Any, Any, list[str]], Args | None]
    run: Callable[[Effects, str, Args], None]


ACTIONS: dict[str, ActionKind] = {
    "set": ActionKind(ActionChecker._set, lambda fx, rule, a: fx.change(rule, **a)),
    "tags": ActionKind(ActionChecker._tags,
                       lambda fx, rule, a: fx.tags(rule, a.get("add", []), a.get("remove", []))),
    "notify": ActionKind(ActionChecker._notify,
                         lambda fx, rule, a: fx.notify(rule, a["template"], a["to"])),
    "acknowledge": ActionKind(ActionChecker._acknowledge,
                              lambda fx, rule, a: fx.acknowledge(rule, a["template"])),
    "suggest_articles": ActionKind(ActionChecker._suggest_articles,
                                   lambda fx, rule, a: fx.suggest(rule, a["articles"])),
    "escalate": ActionKind(ActionChecker._escalate, lambda fx, rule, a: fx.escalate(
        rule, a["level"], a.get("queue"), a.get("group"))),
    "link_problem": ActionKind(ActionChecker._link_problem,
                               lambda fx, rule, a: fx.link_problem(rule, a["ref"])),
    "close": ActionKind(ActionChecker._close,
                        lambda fx, rule, a: fx.change(rule, status="closed")),
    "drop": ActionKind(ActionChecker._drop, lambda fx, rule, a: fx.drop(rule, a["reason"])),
}
