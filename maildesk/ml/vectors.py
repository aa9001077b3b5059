"""TF-IDF vectors of texts, the plain numbers the triage models, the clustering of
incidents and the search for similar tickets compare texts by.

A Vocabulary is fitted on the texts of one desk (their terms as ml/words.py reads them)
and kept as two plain arrays, its terms and their IDF, so that a model made of it can be
stored without pickle and read back by any version of scikit-learn, or none. Rows are
sublinear TF times IDF, scaled to length 1: the dot product of two rows is their
cosine similarity, and a word said ten times weighs about three times one said once.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import sparse


class Vocabulary:
    """Terms and their inverse document frequency, smoothed as scikit-learn smooths it
    (ln((1 + n) / (1 + df)) + 1), so that a term in every text still counts a little."""

    def __init__(self, terms: Sequence[str], idf: Any) -> None:
        self.terms = list(terms)
        self.columns = {t: i for i, t in enumerate(self.terms)}
        self.idf = np.asarray(idf, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def fit(cls, docs: Iterable[Sequence[str]], min_df: int = 1,
            max_terms: int | None = None) -> Vocabulary:
        """The terms of docs found in at least min_df of them; of those, the max_terms
        found in most (ties: alphabetical, so that a fit is the same every time)."""
        df: Counter[str] = Counter()
        n = 0
        for doc in docs:
            df.update(set(doc))
            n += 1
        kept = sorted((t for t, k in df.items() if k >= min_df), key=lambda t: (-df[t], t))
        kept = sorted(kept[:max_terms] if max_terms is not None else kept)
        idf = [np.log((1 + n) / (1 + df[t])) + 1 for t in kept]
        return cls(kept, idf)

    def row(self, doc: Sequence[str]) -> tuple[list[int], np.ndarray]:
        """A doc's row as its known terms' columns, ascending, and their values: 1 + ln(tf)
        times IDF, of length 1. Without building a matrix, which costs more than the row
        for one doc (a prediction)."""
        counts = Counter(self.columns[t] for t in doc if t in self.columns)
        cols = sorted(counts)
        values = self._weights(cols, [counts[c] for c in cols])
        if cols:
            values /= np.linalg.norm(values)
        return cols, values

    def _weights(self, cols: Sequence[int], counts: Sequence[int]) -> np.ndarray:
        """1 + ln(tf) times IDF, of each (column, count), before scaling."""
        return ((1.0 + np.log(np.asarray(counts, dtype=np.float32)))
                * self.idf[np.asarray(cols, dtype=np.int32)]).astype(np.float32)

    def matrix(self, docs: Iterable[Sequence[str]]) -> sparse.csr_matrix:
        """One row per doc: 1 + ln(tf) times IDF, of length 1 (a doc with no known term
        is a row of zeros). Counted in Python, weighed and scaled in numpy at once."""
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        n = 0
        for n, doc in enumerate(docs, 1):
            found = Counter(self.columns[t] for t in doc if t in self.columns)
            rows.extend([n - 1] * len(found))
            cols.extend(found)
            counts.extend(found.values())
        m = sparse.csr_matrix((self._weights(cols, counts), (np.asarray(rows, dtype=np.int32),
                                                             np.asarray(cols, dtype=np.int32))),
                              shape=(n, len(self.terms)), dtype=np.float32)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1), dtype=np.float32).ravel())
        norms[norms == 0] = 1.0
        return sparse.csr_matrix(sparse.diags(1.0 / norms) @ m, dtype=np.float32)
