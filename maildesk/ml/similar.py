"""The texts nearest a new one: TF-IDF rows (ml/vectors.py) and their cosines to it.

Fitted on the texts it searches, so a word all of them say weighs little; a new text's
words that none of them has count for nothing, which is right, since nothing shares
them. Saved as an npz archive of plain arrays (no pickle), so that the next process
on the same desk (a mail piped in by an MTA is a process of its own) reads it in
milliseconds instead of building it again.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from .vectors import Vocabulary


class Nearest:
    def __init__(self, keys: Sequence[int], docs: Sequence[Sequence[str]],
                 labels: Sequence[tuple[str, str]] = (), meaning: Any = None) -> None:
        """keys: the caller's (ticket ids); docs: their terms (ml/words.py ticket_terms);
        labels: two strings each that go with them (a ticket's ref and subject); meaning:
        their sentence embeddings (a row each, of length 1), compared instead of words."""
        self.keys = list(keys)
        self.labels = list(labels)
        self._rows: dict[int, int] = {}
        self.vocabulary = Vocabulary.fit(docs)
        self.matrix = self.vocabulary.matrix(docs)
        self.meaning = None if meaning is None else np.asarray(meaning, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, key: int) -> tuple[str, str]:
        """The labels that go with key (its row found once per index, not per search)."""
        if len(self._rows) != len(self.keys):
            self._rows = {k: n for n, k in enumerate(self.keys)}
        return self.labels[self._rows[key]]

    def nearest(self, terms: Sequence[str], limit: int, similarity: float,
                besides: frozenset[int] = frozenset(), meaning: Any = None
                ) -> list[tuple[int, float]]:
        """The keys of the texts at least similarity alike to terms (or, given an index
        with meaning, to the embedding `meaning`), most alike first (at most limit), with
        their cosine; besides: keys not to name."""
        if not self.keys:
            return []
        if self.meaning is not None and meaning is not None:
            cosines = self.meaning @ np.asarray(meaning, dtype=np.float32)
        elif terms:
            cosines = (self.matrix @ self.vocabulary.matrix([terms]).T).toarray().ravel()
        else:
            return []
        order = np.argsort(-cosines, kind="stable")
        out = []
        for i in order[:limit + len(besides)]:
            if cosines[i] < similarity:
                break
            if self.keys[i] not in besides:
                out.append((self.keys[i], round(float(cosines[i]), 3)))
        return out[:limit]

    def save(self, path: Path, stamp: float) -> None:
        """Into path, whole or not at all (written aside, then renamed), with stamp (when
        it was built, in seconds)."""
        part = path.with_name(f".{path.name}.{os.getpid()}")
        m = self.matrix
        with part.open("wb") as f:
            np.savez(f, stamp=np.float64(stamp), keys=np.asarray(self.keys, dtype=np.int64),
                     labels=np.asarray(self.labels or np.empty((0, 2)), dtype=str),
                     terms=np.asarray(self.vocabulary.terms, dtype=str),
                     idf=self.vocabulary.idf, data=m.data, indices=m.indices,
                     indptr=m.indptr, shape=np.asarray(m.shape),
                     meaning=self.meaning if self.meaning is not None
                     else np.zeros((0, 0), dtype=np.float32))
        part.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple[Nearest, float]:
        """What save() wrote, and its stamp; OSError or ValueError when it cannot be read."""
        with np.load(path, allow_pickle=False) as z:
            out = cls.__new__(cls)
            out.keys = [int(k) for k in z["keys"]]
            out._rows = {}
            out.labels = [(str(a), str(b)) for a, b in z["labels"]]
            out.vocabulary = Vocabulary([str(t) for t in z["terms"]], z["idf"])
            out.matrix = sparse.csr_matrix((z["data"], z["indices"], z["indptr"]),
                                           shape=tuple(int(n) for n in z["shape"]))
            meaning = z["meaning"]
            out.meaning = meaning if meaning.shape[0] == len(out.keys) and len(out.keys) \
                else None
            return out, float(z["stamp"])
