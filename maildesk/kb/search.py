"""Finding the articles that answer a text: BM25 over stemmed words, in memory.

Articles are files every node reads (like the rules), so each node builds the
index from the same files when it loads them; it is the same on SQLite and on
PostgreSQL, and there is nothing to keep in step between the files and a table.
Words are read as ml/words.py reads them: lower-cased, split on non-word characters
and stemmed with the Snowball stemmer of the article's language (so "printer" finds
"printers", "printing" finds "prints"; Snowball keeps "printer" and "print" apart, as it
does "user" and "use"); a language Snowball does not know is searched unstemmed. The title counts
TITLE_WEIGHT times, like a column weight in FTS5's bm25().

A score is plain BM25 of the mail's words less its language's commonest ones. Dividing
it by the query's best achievable score or by its number of words, so that a long mail
does not score higher for saying more, was measured and chose worse: at the same rate
of suggestions to mail no article answers, both found fewer right articles than the
plain score (BENCHMARKS.md, "Knowledge base"), because the words that make a mail long
(greetings, context) are common and weigh little anyway once the stopwords are gone.

Re-ranking (kb.rerank, the extra maildesk[ml]): an index built with an Embedder holds
each published article's sentence embedding (title and text); a search given a
similarity takes BM25's RERANK_POOL best of the requester's language, embeds the mail
(only then: a mail no article shares a word with costs nothing), and keeps those whose
cosine similarity to it is above similarity, most similar first. Measured on the
evaluation set at the same 5 % of suggestions to mail no article answers, this finds
the right article for 86 % of the mails against BM25's 25 %, since the mail and the
article need no longer share rare words, only meaning (BENCHMARKS.md).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..mail.quotes import split_reply
from ..ml.words import detect, query_terms, terms
from .articles import Article

if TYPE_CHECKING:
    from ..ml.embeddings import Embedder

K1, B = 1.2, 0.75          # BM25's usual constants, as FTS5 and Lucene use them
TITLE_WEIGHT = 3           # a word of the title counts as three of the text
QUERY_CHARS = 20_000       # what of a mail is searched: its beginning says what it is about
RERANK_POOL = 10           # BM25's best that re-ranking looks at (bench/kb_search.py chose it)


def customer_words(subject: str, text: str) -> str:
    """What of a customer's mail is searched: its subject and their own words, not the
    history it quotes nor the signature, which would match what was said before."""
    return f"{subject}\n{split_reply(text)[0]}"


def embedded(article: Article) -> str:
    """What of an article its embedding is made of: the title, then the text (the model
    reads its first 256 word pieces)."""
    return f"{article.title}\n{article.body}"


@dataclass(frozen=True)
class Hit:
    article: Article
    score: float                        # BM25
    similarity: float | None = None     # cosine to the mail, when re-ranked


class Index:
    """The published articles, by language, with an inverted index of their words, so a
    search reads only the postings of the words it has."""

    def __init__(self, articles: Iterable[Article], embedder: Embedder | None = None) -> None:
        """embedder: also embed each published article, for search(similarity=...)."""
        self._docs: dict[str, list[tuple[Article, int]]] = {}       # lang: (article, length)
        self._postings: dict[str, dict[str, list[tuple[int, int]]]] = {}  # lang: term: (doc, tf)
        for a in articles:
            if a.status != "published":
                continue
            tf = Counter(terms(a.body, a.lang))
            for t in terms(a.title, a.lang):
                tf[t] += TITLE_WEIGHT
            docs = self._docs.setdefault(a.lang, [])
            postings = self._postings.setdefault(a.lang, {})
            for t, count in tf.items():
                postings.setdefault(t, []).append((len(docs), count))
            docs.append((a, sum(tf.values())))
        self._avg = {lang: sum(n for _a, n in docs) / len(docs)
                     for lang, docs in self._docs.items()}
        self._embedder = embedder
        self._vectors: Any = None                   # one row per article of _rows
        self._rows: dict[int, int] = {}             # id(article): its row
        if embedder is not None:
            every = [a for docs in self._docs.values() for a, _n in docs]
            self._vectors = embedder.encode_kept([embedded(a) for a in every])
            self._rows = {id(a): row for row, a in enumerate(every)}

    def __len__(self) -> int:
        return sum(len(docs) for docs in self._docs.values())

    def langs(self) -> list[str]:
        return sorted(self._docs)

    @property
    def reranks(self) -> bool:
        """Whether the articles are embedded, so search(similarity=...) re-ranks."""
        return self._embedder is not None

    def terms(self) -> int:
        """Distinct words over all languages, what the index's size grows with."""
        return sum(len(p) for p in self._postings.values())

    def search(self, text: str, lang: str | None = None, *, queue: str | None = None,
               audience: str = "customers", limit: int = 3,
               threshold: float = 0.0, similarity: float | None = None) -> list[Hit]:
        """The best articles for text, best first, each scoring above threshold.

        In the requester's language where an article answers: lang, or when lang is None
        (or one the knowledge base has no articles in) the language text is detected in;
        only when none of that language scores, the other languages' articles. Text in no
        language we can tell is searched in every language. An article limited to queues
        is found only for one of them (queue None: any).

        similarity, on an index built with an embedder: BM25's RERANK_POOL best (above
        threshold, in the language chosen as above) re-ranked by their cosine similarity
        to text, those above similarity kept, most similar first."""
        text = text[:QUERY_CHARS]
        if lang not in self._docs:
            lang = detect(text, self._docs)
        order = [[lang], [other for other in self._docs if other != lang]] if lang \
            else [list(self._docs)]
        for langs in order:
            hits = [h for each in langs
                    for h in self._ranked(text, each, queue, audience, threshold)]
            if hits:
                hits.sort(key=lambda h: (-h.score, h.article.slug))
                if similarity is not None and self._embedder is not None:
                    return self._reranked(text, hits[:RERANK_POOL], similarity)[:limit]
                return hits[:limit]
        return []

    def _reranked(self, text: str, hits: list[Hit], similarity: float) -> list[Hit]:
        assert self._embedder is not None
        mail = self._embedder.encode([text])[0]
        rows = self._vectors[[self._rows[id(h.article)] for h in hits]]
        cosines = [round(float(c), 4) for c in rows @ mail]
        out = [Hit(h.article, h.score, c) for h, c in zip(hits, cosines) if c > similarity]
        out.sort(key=lambda h: (-(h.similarity or 0.0), -h.score, h.article.slug))
        return out

    def scores(self, text: str, lang: str) -> dict[int, float]:
        """BM25 of every article of lang that has a word of text, by its position."""
        docs, postings, avg = self._docs[lang], self._postings[lang], self._avg[lang]
        n = len(docs)
        scores: dict[int, float] = {}
        for t in query_terms(text, lang):
            found = postings.get(t)
            if not found:
                continue
            idf = math.log(1 + (n - len(found) + 0.5) / (len(found) + 0.5))
            for i, tf in found:
                norm = K1 * (1 - B + B * docs[i][1] / avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        return scores

    def article(self, lang: str, i: int) -> Article:
        """The article at position i of lang, as scores() names it."""
        return self._docs[lang][i][0]

    def _ranked(self, text: str, lang: str, queue: str | None, audience: str,
                threshold: float) -> list[Hit]:
        hits = []
        for i, raw in self.scores(text, lang).items():
            a, score = self._docs[lang][i][0], round(raw, 4)   # the threshold sees what is shown
            if score > threshold and a.audience == audience and (
                    queue is None or not a.queues or queue in a.queues):
                hits.append(Hit(a, score))
        return hits
