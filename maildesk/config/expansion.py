"""How big a YAML document is once its aliases are expanded.

YAML's anchors and aliases (`&a [...]`, `*a`) let a few lines stand for billions of
values (the "billion laughs"): the loader shares them, but whatever walks the document
after (our pydantic validation, the rule compiler) meets each as often as it is named,
and a ten-line file held a command for minutes and gigabytes. The settings, rules and
article front matter are each checked here after loading, before anything walks them.
"""
from __future__ import annotations

from typing import Any

LIMIT = 100_000     # values, aliases expanded: a desk's largest real file has a few thousand


def too_large(doc: Any, limit: int = LIMIT) -> str | None:
    """Why doc is refused (a sentence to follow the file's name), or None. The count visits
    each shared container once (memoised by identity), so it is linear in the file however
    large the expansion; a container that contains itself is refused too."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:        # `&a [*a]`: a value that holds itself has no end
            raise _Cycle
        open_.add(key)
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for item in items:
            total = min(total + size(item), limit + 1)     # capped: no huge integers
        open_.discard(key)
        sizes[key] = total
        return total
    try:
        n = size(doc)
    except _Cycle:
        return "a value contains itself through an alias (*name): write it out"
    except RecursionError:
        return "nested too deep"
    if n > limit:
        return (f"its aliases (*name) expand to over {limit:,} values: write the values "
                "out, or name fewer")
    return None


class _Cycle(Exception):
    """A container reached again from inside itself."""
