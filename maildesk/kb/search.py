"""Finding the articles that answer a text: BM25 over stemmed words, in memory.

Articles are files every node reads (like the rules), so each node builds the
index from the same files when it loads them; it is the same on SQLite and on
PostgreSQL, and there is nothing to keep in step between the files and a table.
Words are lower-cased, split on non-word characters and stemmed with the
Snowball stemmer of the article's language (so "printers" finds "printing"); a
language Snowball does not know is searched unstemmed. The title counts
TITLE_WEIGHT times, like a column weight in FTS5's bm25().
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from .articles import Article

K1, B = 1.2, 0.75          # BM25's usual constants, as FTS5 and Lucene use them
TITLE_WEIGHT = 3           # a word of the title counts as three of the text
QUERY_CHARS = 20_000       # what of a mail is searched: its beginning says what it is about
_WORD = re.compile(r"[^\W_]{2,}")
# ISO 639-1 codes of the languages Snowball stems
_SNOWBALL = {"ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german",
             "el": "greek", "en": "english", "es": "spanish", "eu": "basque", "fi": "finnish",
             "fr": "french", "ga": "irish", "hi": "hindi", "hu": "hungarian",
             "hy": "armenian", "id": "indonesian", "it": "italian", "lt": "lithuanian",
             "nb": "norwegian", "ne": "nepali", "nl": "dutch", "nn": "norwegian",
             "no": "norwegian", "pl": "polish", "pt": "portuguese", "ro": "romanian",
             "ru": "russian", "sr": "serbian", "sv": "swedish", "ta": "tamil",
             "tr": "turkish", "yi": "yiddish"}


@lru_cache(maxsize=64)
def _stemmer(lang: str) -> snowballstemmer.Stemmer | None:
    name = _SNOWBALL.get(lang.split("-", 1)[0].lower())
    return snowballstemmer.stemmer(name) if name else None


def terms(text: str, lang: str) -> list[str]:
    """The words of text as the index keeps them: lower-case, stemmed in lang."""
    words = _WORD.findall(text.lower())
    stem = _stemmer(lang)
    return stem.stemWords(words) if stem is not None else words


@dataclass(frozen=True)
class Hit:
    article: Article
    score: float


class Index:
    """The published articles, by language, with an inverted index of their words, so a
    search reads only the postings of the words it has."""

    def __init__(self, articles: Iterable[Article]) -> None:
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

    def __len__(self) -> int:
        return sum(len(docs) for docs in self._docs.values())

    def langs(self) -> list[str]:
        return sorted(self._docs)

    def search(self, text: str, lang: str | None = None, *, queue: str | None = None,
               audience: str = "customers", limit: int = 3,
               threshold: float = 0.0) -> list[Hit]:
        """The best articles for text, best first, each scoring above threshold: in lang
        when the knowledge base has articles in it, else in every language it has. An
        article limited to queues is found only for one of them (queue None: any)."""
        langs = [lang] if lang in self._docs else list(self._docs)
        hits: list[Hit] = []
        for each in langs:
            hits += self._ranked(text[:QUERY_CHARS], each, queue, audience, threshold)
        hits.sort(key=lambda h: (-h.score, h.article.slug))
        return hits[:limit]

    def _ranked(self, text: str, lang: str, queue: str | None, audience: str,
                threshold: float) -> list[Hit]:
        docs, postings, avg = self._docs[lang], self._postings[lang], self._avg[lang]
        n = len(docs)
        scores: dict[int, float] = {}
        for t in set(terms(text, lang)):
            found = postings.get(t)
            if not found:
                continue
            idf = math.log(1 + (n - len(found) + 0.5) / (len(found) + 0.5))
            for i, tf in found:
                norm = K1 * (1 - B + B * docs[i][1] / avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        hits = []
        for i, score in scores.items():
            a = docs[i][0]
            if score > threshold and a.audience == audience and (
                    queue is None or not a.queues or queue in a.queues):
                hits.append(Hit(a, round(score, 4)))
        return hits
