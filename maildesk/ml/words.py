"""Words as every text search and model here reads them: lower-cased, split on non-word
characters, stemmed with the Snowball stemmer of their language, less that language's
commonest words; and which of a desk's languages a text is written in.

The knowledge base's search (kb/search.py), the triage model (ml/triage.py) and the
clustering of incidents (ml/cluster.py) read words the same way, so that "printers" and
"printing" are one word to all of them, and a mail the search understands the model
understands too.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # imported with the first stemmer: every language's module comes with it
    import snowballstemmer

DETECT_CHARS = 20_000      # what of a text detect() reads: its beginning tells its language
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
# The commonest short words of each language a desk's articles are likely written in:
# a text's language is the one whose words it has most of. Words two languages share
# ("in", "die", "de") count for both and so decide nothing; that is fine.
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in {
    "en": "the and is are was were to of in on for with not this that it my me you your "
          "have has had can could would please thanks since when what how there do does "
          "from but we our an be at",
    "de": "der die das und ist sind nicht ein eine einen mit auf für ich mein meine "
          "sie ihr wir uns bitte danke seit wenn wie was kann können habe hat "
          "von zu im den dem des auch noch nur aber oder es",
    "fr": "le la les et est sont pas un une avec sur pour je mon ma mes vous votre nous "
          "merci depuis quand comment que qui peux pouvez ai du des au ne ce il elle",
    "es": "el la los las y es son no un una con en por para yo mi mis usted su nosotros "
          "gracias desde cuando como que puedo pueden he del al se lo pero",
    "it": "il lo la gli le e sono non un una con su per io mio mia voi vostro noi grazie "
          "da quando come che posso potete ho del della al si ma",
    "nl": "de het een en is zijn niet met op voor ik mijn u uw wij ons alstublieft "
          "bedankt sinds wanneer hoe wat kan kunnen heb van te ook maar",
    "pt": "o a os as e é são não um uma com em por para eu meu minha você seu nós "
          "obrigado desde quando como que posso podem tenho do da ao mas",
}.items()}
_ANY_STOPWORD = frozenset().union(*_STOPWORDS.values())


@lru_cache(maxsize=64)
def _stemmer(lang: str) -> snowballstemmer.Stemmer | None:
    import snowballstemmer
    name = _SNOWBALL.get(lang.split("-", 1)[0].lower())
    return snowballstemmer.stemmer(name) if name else None


@lru_cache(maxsize=200_000)
def _stem(lang: str, word: str) -> str:
    """A word's stem, remembered: Snowball in Python costs ~20 µs a word, and a
    knowledge base repeats its words (indexing 10,000 articles went from 58 s to 3 s)."""
    stem = _stemmer(lang)
    return stem.stemWord(word) if stem is not None else word


def terms(text: str, lang: str) -> list[str]:
    """The words of text as the index keeps them: lower-case, stemmed in lang."""
    return [_stem(lang, w) for w in _WORD.findall(text.lower())]


def content_terms(text: str, lang: str) -> list[str]:
    """The words of text that say what it is about, stemmed in lang: all but lang's
    commonest words (lang "": unstemmed, less the commonest words of every language)."""
    stop = _STOPWORDS.get(lang.split("-", 1)[0].lower(), _ANY_STOPWORD if not lang else
                          frozenset())
    return [_stem(lang, w) for w in _WORD.findall(text.lower()) if w not in stop]


def query_terms(text: str, lang: str) -> set[str]:
    """The words a search looks up: the commonest words of lang say nothing of the
    subject and only cost postings to read."""
    return set(content_terms(text, lang))


def ticket_terms(text: str) -> list[str]:
    """What a ticket's text is about, as the models read it: content_terms in the
    language it is written in, among those whose commonest words we know (a desk
    declares no languages; its mail says which), unstemmed when that is not clear."""
    return content_terms(text, detect(text, _STOPWORDS) or "")




def detect(text: str, langs: Iterable[str]) -> str | None:
    """Which of langs text is written in, by counting each one's commonest words; None
    when none of them has a word in it, or two tie (a guess would be a coin toss)."""
    words = Counter(_WORD.findall(text[:DETECT_CHARS].lower()))
    counts = sorted(((sum(n for w, n in words.items() if w in stop), lang)
                     for lang in langs
                     if (stop := _STOPWORDS.get(lang.split("-", 1)[0].lower()))),
                    reverse=True)
    if not counts or counts[0][0] == 0 or (len(counts) > 1 and counts[0][0] == counts[1][0]):
        return None
    return counts[0][1]
