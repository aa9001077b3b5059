"""Triage: the category, queue and type a new ticket's text most likely gets, learnt from
the tickets the desk settled (issue 20). One multinomial logistic regression per target
on the TF-IDF rows of ml/vectors.py, over the words ml/words.py reads.

scikit-learn fits it; what is kept is plain arrays, an npz archive with a JSON header
(loading runs no code, unlike a pickle, and any numpy reads it whatever scikit-learn is
installed), and a prediction is the row's few weights summed and a softmax in numpy: no
scikit-learn import at start, a fraction of a millisecond a mail.

    train(texts, labels) -> Model     texts oldest first; labels: target -> label or None
    Model.predict(text) -> {target: Guess}      ({} when it knows no word of the text)
    Model.to_bytes() / Model.from_bytes(data)
"""
from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from ..errors import MaildeskError
from .vectors import Vocabulary
from .words import ticket_terms

TARGETS = ("category", "queue", "type")
FORMAT = 1
# Chosen on bench/triage.py's labelled set (BENCHMARKS.md, "Triage"): C, the inverse of
# the regularisation, at 1 rather than 3 or 10 (as accurate on the held-back mail, better
# on phrasings it never saw: 87 % against 84 % and 72 %); classes weighed by their rarity,
# so a rare category is not drowned by the common ones (88 % against 85 % on new
# phrasings). The vocabulary keeps the words of at least MIN_DF tickets, at most
# MAX_TERMS of them, which bounds a model's size (classes x terms x 4 bytes per target).
C = 1.0
CLASS_WEIGHT: str | None = "balanced"
MIN_DF = 2
MAX_TERMS = 20_000
HELD_BACK = 0.2
# the confidences `triage show` reports accuracy and coverage at, for an admin to choose
# a rule's threshold by
LEVELS = (0.5, 0.8, 0.9)


class TriageError(MaildeskError):
    """A stored model that cannot be read (damaged, or of another format)."""


@dataclass(frozen=True)
class Guess:
    label: str
    confidence: float       # the model's probability of label, 0 to 1


@dataclass(frozen=True)
class Head:
    """One target's regression: a row of weights per class. A two-class fit has one row w
    (the odds of the second class); it is kept as -w/2 and w/2, whose softmax is the same
    sigmoid, so that every head predicts the same way."""

    classes: tuple[str, ...]
    coef: np.ndarray            # float32, classes x terms
    intercept: np.ndarray       # float32, classes

    def guess(self, cols: Sequence[int], values: np.ndarray) -> Guess:
        z = self.coef[:, cols] @ values + self.intercept
        p = np.exp(z - z.max())
        p /= p.sum()
        best = int(p.argmax())
        return Guess(self.classes[best], round(float(p[best]), 4))


@dataclass
class Model:
    vocabulary: Vocabulary
    heads: dict[str, Head]
    summary: dict[str, Any] = field(default_factory=dict)   # what training measured
    id: int | None = None       # its row in triage_models, once stored

    def predict(self, text: str) -> dict[str, Guess]:
        """Each trained target's most likely label for text. Nothing for a text with no word
        the model knows: its guess would be the commonest label at that label's share,
        which a rule could take for confidence."""
        cols, values = self.vocabulary.row(ticket_terms(text))
        if not cols:
            return {}
        return {t: h.guess(cols, values) for t, h in self.heads.items()}

    def to_bytes(self) -> bytes:
        header = {"format": FORMAT, "terms": self.vocabulary.terms, "summary": self.summary,
                  "targets": {t: list(h.classes) for t, h in self.heads.items()}}
        arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                  "idf": self.vocabulary.idf}
        for t, h in self.heads.items():
            arrays[f"{t}.coef"], arrays[f"{t}.intercept"] = h.coef, h.intercept
        out = io.BytesIO()
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        """The model in data; TriageError when it is not one this maildesk can read."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes())
                if header.get("format") != FORMAT:
                    raise TriageError(f"a triage model of format {header.get('format')!r}, "
                                      f"not {FORMAT}: train a new one")
                vocabulary = Vocabulary(header["terms"], npz["idf"])
                heads = {t: Head(tuple(classes), npz[f"{t}.coef"], npz[f"{t}.intercept"])
                         for t, classes in header["targets"].items()}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise TriageError(f"a damaged triage model: {e}") from None
        for t, h in heads.items():
            if h.coef.shape != (len(h.classes), len(vocabulary)) or \
                    h.intercept.shape != (len(h.classes),):
                raise TriageError(f"a damaged triage model: {t}'s weights do not fit its "
                                  "classes and words")
        return cls(vocabulary, heads, header.get("summary", {}))


def train(texts: Sequence[str], labels: Mapping[str, Sequence[str | None]],
          min_tickets: int = 50) -> Model:
    """A model of texts (oldest first) and their labels, one list per target (None: that
    ticket has no label for it). A target with fewer than min_tickets labelled texts, or
    one label only, is left out: it predicts nothing. The summary says how many of the
    newest texts were held back (HELD_BACK), and per target the labels it learnt, how the
    same training did on the held-back texts when fitted on the rest (accuracy, against
    always guessing the commonest label) and why a target was left out."""
    docs = [ticket_terms(t) for t in texts]
    ys = {t: list(labels.get(t, [None] * len(docs))) for t in TARGETS}
    cut = len(docs) - round(len(docs) * HELD_BACK)
    older = Vocabulary.fit(docs[:cut], MIN_DF, MAX_TERMS)
    x_older, x_newer = older.matrix(docs[:cut]), older.matrix(docs[cut:])
    vocabulary = Vocabulary.fit(docs, MIN_DF, MAX_TERMS)
    x = vocabulary.matrix(docs)
    heads: dict[str, Head] = {}
    measured: dict[str, dict[str, Any]] = {}
    for target, y in ys.items():
        measured[target] = {"labelled": sum(v is not None for v in y),
                            "classes": len({v for v in y if v is not None})}
        why = _unfit(y, min_tickets)
        if why is not None:
            measured[target] |= {"trained": False, "why": why}
            continue
        heads[target] = _head(x, y)
        measured[target] |= {"trained": True, "labels": list(heads[target].classes)} | \
            _measure(x_older, y[:cut], x_newer, y[cut:])
    return Model(vocabulary, heads, {"tickets": len(docs), "held_back": len(docs) - cut,
                                     "terms": len(vocabulary), "targets": measured})


def _head(x: sparse.csr_matrix, ys: Sequence[str | None]) -> Head:
    """The regression of the labelled rows of x on their labels."""
    from sklearn.linear_model import LogisticRegression
    rows = [i for i, y in enumerate(ys) if y is not None]
    fitted = LogisticRegression(C=C, class_weight=CLASS_WEIGHT, max_iter=1000).fit(
        x[rows], [ys[i] for i in rows])
    coef = fitted.coef_.astype(np.float32)
    intercept = fitted.intercept_.astype(np.float32)
    if len(fitted.classes_) == 2:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.hstack([-intercept / 2,
                                                                       intercept / 2])
    return Head(tuple(str(c) for c in fitted.classes_), coef, intercept)


def _unfit(ys: Sequence[str | None], min_tickets: int) -> str | None:
    """Why a target cannot be learnt from these labels, or None."""
    counts = Counter(y for y in ys if y is not None)
    if sum(counts.values()) < min_tickets:
        return f"{sum(counts.values())} labelled tickets, fewer than triage.min_tickets " \
               f"({min_tickets})"
    if len(counts) < 2:
        return f"one label only ({next(iter(counts), '-')})"
    return None


def _measure(x_older: sparse.csr_matrix, older: Sequence[str | None],
             x_newer: sparse.csr_matrix, newer: Sequence[str | None]) -> dict[str, Any]:
    """How a head fitted on the older rows predicts the labelled newer ones: accuracy (a
    text with no known word counts as wrong), the commonest older label's, and both at
    each of LEVELS."""
    tested = [i for i, y in enumerate(newer) if y is not None]
    if not tested or _unfit(older, 1) is not None:     # the older part has one label
        return {"tested": 0}
    head = _head(x_older, older)
    commonest = Counter(y for y in older if y is not None).most_common(1)[0][0]
    right, confident = [], []
    for i in tested:
        row = x_newer.getrow(i)
        g = head.guess(row.indices, row.data) if row.nnz else None
        right.append(g is not None and g.label == newer[i])
        confident.append(g.confidence if g is not None else 0.0)
    at = []
    for level in LEVELS:
        kept = [r for r, c in zip(right, confident) if c > level]
        at.append({"confidence": level, "share": round(len(kept) / len(tested), 4),
                   "accuracy": round(sum(kept) / len(kept), 4) if kept else None})
    return {"tested": len(tested), "accuracy": round(sum(right) / len(tested), 4),
            "baseline": round(sum(newer[i] == commonest for i in tested) / len(tested), 4),
            "at": at}
