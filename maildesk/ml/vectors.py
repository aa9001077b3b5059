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

    def matrix(self, docs: Iterable[Sequence[str]]) -> sparse.csr_matrix:
        """One row per doc: 1 + ln(tf) times IDF, of length 1 (a doc with no known term
        is a row of zeros)."""
        indptr, indices, values = [0], [], []
        for doc in docs:
            counts = Counter(self.columns[t] for t in doc if t in self.columns)
            cols = sorted(counts)
            row = np.array([1.0 + np.log(counts[c]) for c in cols], dtype=np.float32)
            if cols:
                row *= self.idf[cols]
                row /= np.linalg.norm(row)
            indices.extend(cols)
            values.extend(row.tolist())
            indptr.append(len(indices))
        return sparse.csr_matrix((np.asarray(values, dtype=np.float32),
                                  np.asarray(indices, dtype=np.int32),
                                  np.asarray(indptr, dtype=np.int64)),
                                 shape=(len(indptr) - 1, len(self.terms)))
