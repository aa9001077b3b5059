"""The knowledge base as a running desk holds it: the articles read from kb.folder, the
index of the published ones, and the files' stamp a daemon compares to see a change."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .articles import Article, load
from .search import Hit, Index

if TYPE_CHECKING:
    from ..config.schema import Kb
    from ..ml.embeddings import Embedder

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
    embedder: Embedder | None = None    # kb.rerank: what embedded the articles

    def article(self, slug: str) -> Article | None:
        return next((a for a in self.articles if a.slug == slug), None)

    def suggestions(self, kb: Kb, text: str, lang: str | None = None, *,
                    queue: str | None = None, limit: int = 3) -> list[Hit]:
        """The articles the desk suggests for text, as the settings say: BM25 above
        kb.threshold; with kb.rerank (an index that embedded its articles), BM25's best of
        any score re-ranked, those above kb.similarity."""
        if kb.rerank and self.index.reranks:
            return self.index.search(text, lang, queue=queue, limit=limit, threshold=0.0,
                                     similarity=kb.similarity)
        return self.index.search(text, lang, queue=queue, limit=limit,
                                 threshold=kb.threshold)


def read(folder: Path | None, queues: set[str], embedder: Embedder | None = None) -> Library:
    """The knowledge base in folder (None: none); KbError naming every problem.
    embedder (kb.rerank): the published articles are embedded too, once each as long as
    the same embedder reads their same text again."""
    if folder is None:
        return Library(embedder=embedder)
    before = stamp(folder)
    articles = tuple(load(folder, queues))
    return Library(folder, articles, Index(articles, embedder), before, embedder)
