"""Resolved incidents like a new ticket, for its agents' notification: what was done the
last times, before anyone starts from nothing.

The vectors of the last `similar.among` resolved incidents' opening mails
(tickets/openings.py, ml/similar.py) are built on first use and again when older than
REFRESH, and kept in the process and in the data directory (similar.npz), so a desk
pays for them once in ten minutes, not once per ticket, nor once per process when its
MTA pipes each mail into a `maildesk ingest` of its own; a ticket resolved since is
found from the next build on. A new ticket's words are compared with them all (a
sparse product, milliseconds for 5,000), and the most alike above
`similar.similarity` are named with the first lines of the agent's last answer on them.
With `similar.embeddings` (the extra maildesk[ml]) their meaning is compared instead:
each resolved incident's sentence embedding is computed once and kept
(data_dir/embeddings/resolved.npz), a new ticket's when it arrives.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..config.schema import Similar
from ..ml.words import ticket_terms
from ..store.tables import T_TICKETS
from .openings import answers, not_merged, openings

if TYPE_CHECKING:
    from ..ml.embeddings import Embedder
    from ..ml.similar import Nearest

REFRESH = timedelta(minutes=10)
log = logging.getLogger("maildesk.similar")


class SimilarTickets:
    """A desk's vectors of resolved incidents, shared by a process's batches and, through
    the file `cache`, by the processes on its data directory."""

    def __init__(self, cache: Path | None = None, embedder: Embedder | None = None) -> None:
        """embedder: similar.embeddings' (compare meaning), None: compare words."""
        self.cache, self.embedder = cache, embedder
        self._lock = threading.Lock()
        self._index: Nearest | None = None
        self._built: float | None = None      # when, in seconds since the epoch

    def find(self, conn: Connection, settings: Similar, agents: Iterable[str], now: datetime,
             text: str, besides: int | None = None) -> list[dict[str, Any]]:
        """The resolved incidents most like text (ref, subject, similarity, answer), most
        alike first; besides: a ticket not to name (the new one itself)."""
        if settings.show == 0:
            return []
        with self._lock:
            index = self._current(conn, settings, now.timestamp())
        by_meaning = self.embedder is not None and index.meaning is not None
        hits = index.nearest(
            ticket_terms(text), settings.show,
            settings.embedding_similarity if by_meaning else settings.similarity,
            frozenset({besides} if besides is not None else ()),
            self.embedder.encode([text])[0] if self.embedder is not None and by_meaning
            else None)
        said = answers(conn, [i for i, _c in hits], agents)
        return [{"ref": index.label(i)[0], "subject": index.label(i)[1], "similarity": c,
                 "answer": said.get(i, "")} for i, c in hits]

    def _fresh(self, built: float | None, now: float) -> bool:
        return built is not None and 0 <= now - built <= REFRESH.total_seconds()

    def _current(self, conn: Connection, settings: Similar, now: float) -> Nearest:
        from ..ml.similar import Nearest  # numpy and scipy: only for a new ticket
        if self._index is not None and self._fresh(self._built, now):
            return self._index
        if self.cache is not None and self.cache.exists():
            try:
                index, built = Nearest.load(self.cache)
            except (OSError, ValueError, KeyError) as e:
                log.warning("%s: unreadable (%s); building it again", self.cache, e)
            else:
                if self._fresh(built, now) and (index.meaning is not None) == \
                        (self.embedder is not None):
                    self._index, self._built = index, built
                    return index
        t = T_TICKETS.c
        found = openings(conn, t.type == "incident", t.status.in_(("resolved", "closed")),
                         not_merged(), newest=settings.among)
        texts = [f"{o.subject}\n{o.text}" for o in found]
        meaning = None
        if self.embedder is not None and self.cache is not None:
            from ..ml.kept import kept_rows
            meaning = kept_rows(self.cache.parent / "embeddings" / "resolved.npz",
                                [o.id for o in found], texts, self.embedder)
        index = Nearest([o.id for o in found], [ticket_terms(t) for t in texts],
                        [(o.ref, o.subject) for o in found], meaning)
        self._index, self._built = index, now
        if self.cache is not None:
            try:
                index.save(self.cache, now)
            except OSError as e:
                log.warning("%s: cannot keep the similar tickets' vectors (%s)", self.cache, e)
        return index
