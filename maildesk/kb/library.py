"""The knowledge base as a running desk holds it: the articles read from kb.folder, the
index of the published ones, and the files' stamp a daemon compares to see a change."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .articles import Article, load
from .search import Index

Stamp = tuple[tuple[str, int, int], ...]    # (path, mtime_ns, size) of every article file


def stamp(folder: Path | None) -> Stamp:
    """What changes when an article is added, edited, moved or removed."""
    if folder is None:
        return ()
    out = []
    for path in sorted(folder.rglob("*.md")):
        try:
            st = os.stat(path)
        except OSError:      # removed while we looked: the next look sees it gone
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


@dataclass(frozen=True)
class Library:
    folder: Path | None = None
    articles: tuple[Article, ...] = ()
    index: Index = field(default_factory=lambda: Index(()))
    stamp: Stamp = ()

    def article(self, slug: str) -> Article | None:
        return next((a for a in self.articles if a.slug == slug), None)


def read(folder: Path | None, queues: set[str]) -> Library:
    """The knowledge base in folder (None: none); KbError naming every problem."""
    if folder is None:
        return Library()
    before = stamp(folder)
    articles = tuple(load(folder, queues))
    return Library(folder, articles, Index(articles), before)
