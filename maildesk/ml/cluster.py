"""Recurring incidents: groups of tickets that say the same thing at about the same time.

An outage is reported by several people, in their own words, within hours; a
password forgotten is reported by several people too, but spread over days, each
for their own reason. So two tickets are neighbours when their texts are similar
(the cosine of their TF-IDF vectors, ml/vectors.py, at least `similarity`) AND they
arrived within `span` of each other. Groups are then found as DBSCAN finds them: a
ticket with at least min_size - 1 neighbours is a core; cores that are neighbours
are one group, with the tickets that neighbour one of its cores. Single linkage (any
chain of alike pairs is one group) finds about as much, but puts more tickets of no
outage into the groups (bench/problems.py: 92 % of pairs right against 99 %); since
each group is a mail to a person, the denser groups are worth the few reports they
miss. The IDF is the window's own, so words every ticket of this week says ("error",
"since") weigh little, and an outage's own words weigh much.

Tickets are compared in blocks of BLOCK, each only with those within span of it, so
the work and memory grow with the tickets times those arriving within span, not with
their square.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .vectors import Vocabulary

BLOCK = 512
WORDS = 5          # the words that name a group: its centroid's heaviest


@dataclass(frozen=True)
class Doc:
    key: int               # the caller's (a ticket's id)
    at: float              # when it arrived, in seconds (any epoch, the same for all)
    terms: Sequence[str]   # ml/words.py ticket_terms


@dataclass(frozen=True)
class Group:
    keys: tuple[int, ...]  # by arrival
    words: tuple[str, ...]


def groups(docs: Sequence[Doc], *, similarity: float, span: float, min_size: int,
           meaning: Any = None) -> list[Group]:
    """The groups of at least min_size docs, largest first. meaning: the docs' sentence
    embeddings (one row each, of length 1, in the order of docs), compared instead of
    their words; the words still name the groups."""
    if len(docs) < max(min_size, 2):
        return []
    order = sorted(range(len(docs)), key=lambda i: (docs[i].at, docs[i].key))
    docs = [docs[i] for i in order]
    vocabulary = Vocabulary.fit((d.terms for d in docs), min_df=2)
    if not len(vocabulary):
        return []
    x = vocabulary.matrix(d.terms for d in docs)
    near = _neighbours(x if meaning is None else np.asarray(meaning)[order],
                       np.array([d.at for d in docs]), similarity, span)
    core = np.asarray(near.getnnz(axis=1)) >= min_size - 1
    n_core = int(core.sum())
    if not n_core:
        return []
    cores = np.flatnonzero(core)
    _n, label_of_core = connected_components(near[cores][:, cores], directed=False)
    label = np.full(len(docs), -1)
    label[cores] = label_of_core
    for i in np.flatnonzero(~core):        # a border ticket joins its most similar core
        row = near.getrow(i)
        linked = [(v, j) for j, v in zip(row.indices, row.data) if core[j]]
        if linked:
            label[i] = label[max(linked)[1]]
    out = []
    for g in np.unique(label[label >= 0]):
        members = np.flatnonzero(label == g)
        if len(members) < min_size:
            continue
        centroid = np.asarray(x[members].sum(axis=0)).ravel()
        top = [vocabulary.terms[j] for j in np.argsort(-centroid, kind="stable")[:WORDS]
               if centroid[j] > 0]
        out.append(Group(tuple(docs[i].key for i in members), tuple(top)))
    out.sort(key=lambda g: (-len(g.keys), g.keys))
    return out


def _neighbours(x: Any, at: np.ndarray, similarity: float, span: float
                ) -> sparse.csr_matrix:
    """A symmetric matrix, one entry per pair of docs (not a doc and itself) at least
    similarity alike and within span of each other in time: their cosine. Docs are in
    the order of `at`."""
    rows, cols, vals = [], [], []
    n = x.shape[0]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        # the docs within span of this block: after it only, each pair is seen once
        hi = int(np.searchsorted(at, at[stop - 1] + span, side="right"))
        sims = sparse.coo_matrix(x[start:stop] @ x[start:hi].T)
        i, j = sims.row + start, sims.col + start
        keep = (j > i) & (sims.data >= similarity) & (np.abs(at[j] - at[i]) <= span)
        rows.append(i[keep])
        cols.append(j[keep])
        vals.append(sims.data[keep])
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    upper = sparse.csr_matrix((v, (r, c)), shape=(n, n))
    return (upper + upper.T).tocsr()
