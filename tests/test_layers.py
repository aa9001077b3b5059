"""The layering rules, read from the source: who may import whom.

Layers import downwards only. A short AST reading of every module's imports
(TYPE_CHECKING imports included: a cycle held apart by one is still a cycle)
checks the rules the architecture rests on; each failure names the import
that breaks it.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "maildesk"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """module -> the maildesk modules it imports (a `from pkg import mod` names mod)."""
    modules = {_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                    if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges[name].add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names)
    return {m: {t for t in ts if t in modules} for m, ts in edges.items()} | \
        {m: set() for m in modules if m not in edges}


GRAPH = _graph()


def _reach(start: str) -> dict[str, str]:
    """Every module start imports, directly or not, with the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        m = todo.pop()
        for t in GRAPH.get(m, ()):
            if t not in seen:
                seen[t] = m
                todo.append(t)
    return seen


def _path(start: str, end: str, via: dict[str, str]) -> str:
    chain = [end]
    while chain[-1] != start and chain[-1] in via:
        chain.append(via[chain[-1]])
    return " -> ".join(reversed(chain))


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _breaks(start_prefix: str, forbidden: tuple[str, ...], transitive: bool = True
            ) -> list[str]:
    found = []
    for m in sorted(GRAPH):
        if m != start_prefix and not m.startswith(start_prefix + "."):
            continue
        reached = _reach(m) if transitive else {t: m for t in GRAPH[m]}
        for t in reached:
            if any(t == f or t.startswith(f + ".") for f in forbidden):
                found.append(_path(m, t, reached))
    return found


def test_the_graph_is_read() -> None:
    """A reading that found nothing would pass every rule below."""
    assert "maildesk.core.fire" in GRAPH["maildesk.pipeline.stages.customer"]
    assert "maildesk.store.rows" in GRAPH["maildesk.tickets.ledger"]


def test_no_package_imports_another_that_imports_it_back() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for m, ts in GRAPH.items():
        packages[_package(m)].update(_package(t) for t in ts if _package(t) != _package(m))

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for q in packages[todo.pop()]:
                if q == b:
                    return True
                if q not in seen:
                    seen.add(q)
                    todo.append(q)
        return False
    cycles = sorted(p for p in packages if reaches(p, p))
    assert not cycles, f"packages in an import cycle: {cycles}"


@pytest.mark.parametrize("layer, forbidden", [
    # the listener and the poller store and queue; they decide nothing about tickets
    ("maildesk.intake", ("maildesk.tickets", "maildesk.rules", "maildesk.notify",
                         "maildesk.core", "maildesk.pipeline", "maildesk.surveys",
                         "maildesk.sla", "maildesk.scheduler", "maildesk.app")),
    # the rules are pure: they neither take mail in nor send it
    ("maildesk.rules", ("maildesk.intake", "maildesk.notify.delivery", "maildesk.cli",
                        "maildesk.core", "maildesk.pipeline")),
    # the store keeps bytes and rows; it does not read mail
    ("maildesk.store", ("maildesk.mail",)),
    # the seam is below everything that calls it
    ("maildesk.core", ("maildesk.pipeline", "maildesk.intake", "maildesk.surveys",
                       "maildesk.scheduler", "maildesk.cli", "maildesk.app")),
    # the knowledge base is files and their search: it knows no tickets, rules or notices
    ("maildesk.kb", ("maildesk.core", "maildesk.pipeline", "maildesk.tickets",
                     "maildesk.notify", "maildesk.rules", "maildesk.app", "maildesk.cli")),
    # local models know settings and errors only: the knowledge base (and the triage to
    # come) call them, never the other way
    ("maildesk.ml", ("maildesk.kb", "maildesk.core", "maildesk.pipeline", "maildesk.tickets",
                     "maildesk.notify", "maildesk.rules", "maildesk.store", "maildesk.mail",
                     "maildesk.intake", "maildesk.sla", "maildesk.surveys",
                     "maildesk.scheduler", "maildesk.reports", "maildesk.app",
                     "maildesk.cli", "maildesk.daemon")),
    # sending mail needs no ticket logic
    ("maildesk.notify", ("maildesk.core", "maildesk.pipeline", "maildesk.rules",
                         "maildesk.app")),
])
def test_a_layer_imports_nothing_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    assert _breaks(layer, forbidden) == []


def test_nothing_imports_the_cli() -> None:
    """Only `python -m maildesk` (maildesk/__main__.py) starts it."""
    outside = [f"{m} -> {t}" for m, ts in GRAPH.items()
               if not m.startswith("maildesk.cli") and m != "maildesk.__main__"
               for t in ts if t.startswith("maildesk.cli")]
    assert outside == []


def test_stages_do_not_import_each_other() -> None:
    stages = "maildesk.pipeline.stages."
    crossed = [f"{m} -> {t}" for m, ts in GRAPH.items() if m.startswith(stages)
               for t in ts if t.startswith(stages) and t != m]
    assert crossed == []


# what only the seam (maildesk/core) may call, and the few others that may, with why
SEAM_ONLY = {
    "add_event": ("maildesk.tickets.ledger",),                    # where it writes
    "evaluate": ("maildesk.cli.rules",),                          # the dry run touches nothing
    "notice": (),
    "relay": ("maildesk.pipeline.stages.agent",),                 # the agent's own reply
}


def test_only_the_seam_records_events_runs_rules_and_queues_mail() -> None:
    """Everything that happens to a ticket goes through fire(): nobody else records an
    event, evaluates the rules or queues a notice."""
    found = []
    for path in ROOT.rglob("*.py"):
        module = _name(path)
        if module.startswith("maildesk.core."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", "")
            if name in SEAM_ONLY and module not in SEAM_ONLY[name]:
                found.append(f"{module}:{node.lineno} calls {name}()")
    assert found == []
