"""Collecting every problem in a rules file at once, each with its line and column."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MaildeskError


class RulesError(MaildeskError):
    """Rules that must not go live; str() is one located line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, node: Any, key: Any, what: str, expected: str | None = None) -> None:
        line, col = position(node, key)
        self.items.append(f"{self.path}:{line}:{col}: {what}"
                          + (f" (expected {expected})" if expected else ""))

    def check(self) -> None:
        if self.items:
            raise RulesError(self.items)


def position(node: Any, key: Any) -> tuple[int, int]:
    """1-based line and column of key in a ruamel node (its value's position for lists), or
    of a list's mapping from the fast loader."""
    lc = getattr(node, "lc", None)
    try:
        if lc is not None and isinstance(node, dict) and key in node:
            line, col = lc.key(key)
            return line + 1, col + 1
        if lc is not None and isinstance(node, list) and isinstance(key, int):
            line, col = lc.item(key)
            return line + 1, col + 1
        if lc is not None:
            return lc.line + 1, lc.col + 1
        if isinstance(node, list) and isinstance(key, int):    # the fast loader's: load.Located
            at: tuple[int, int] = getattr(node[key], "at", (1, 1))
            return at
    except (KeyError, IndexError, TypeError):
        pass
    return 1, 1
