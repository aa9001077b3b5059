"""`maildesk kb`: the knowledge base's articles, checked, listed, indexed and searched."""
from __future__ import annotations

import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import click

from ..kb.articles import AUDIENCES, Article, KbError
from ..kb.library import Library, read
from ..kb.render import summary
from ..kb.search import Hit, customer_words
from ..mail.parse import base_address
from .context import Obj
from .output import (
    EX_CONFIG,
    EX_NOINPUT,
    FORMAT,
    TEXT_FORMAT,
    emit_json,
    emit_table,
    fail,
    read_mail,
    safe,
)


@click.group()
def kb() -> None:
    """Knowledge-base articles: Markdown files with front matter in kb.folder."""


def _articles(obj: Obj) -> tuple[Article, ...]:
    """The articles, or one line per problem and exit 78; none without kb.folder."""
    return _library(obj).articles


@kb.command("check")
@click.pass_obj
def kb_check(obj: Obj) -> None:
    """Read every article and check its front matter and text; each problem as
    FILE:LINE:COL, as `rules check` does. Exit 0 when all are good, 78 when not (a gate for
    the articles' repository)."""
    articles = _articles(obj)
    if obj.settings.kb.folder is None:
        click.echo("no kb.folder set: no knowledge base to check")
        return
    published = sum(a.status == "published" for a in articles)
    click.echo(f"{obj.settings.kb.folder}: ok ({len(articles)} articles, {published} "
               "published)")


@kb.command("list")
@FORMAT
@click.pass_obj
def kb_list(obj: Obj, fmt: str) -> None:
    """Every article: slug, title, status, audience, language, queues and tags; review_by
    in the past is marked overdue."""
    today = date.today()
    rows = [a.as_dict() | {"review": "overdue" if a.review_by and a.review_by < today else ""}
            for a in _articles(obj)]
    if fmt == "json":
        emit_json(rows)
        return
    emit_table(rows, ["slug", "title", "status", "audience", "lang", "queues", "tags",
                      "review_by", "review"],
               empty="no articles (set kb.folder, and put Markdown files in it)")


@kb.command("show")
@click.argument("slug")
@TEXT_FORMAT
@click.pass_obj
def kb_show(obj: Obj, slug: str, fmt: str) -> None:
    """One article: its fields and its Markdown text. An unknown slug is exit 66."""
    found = next((a for a in _articles(obj) if a.slug == slug), None)
    if found is None:
        fail(f"no article {safe(slug)!r}", EX_NOINPUT)
    if fmt == "json":
        emit_json(found.as_dict() | {"body": found.body})
        return
    click.echo(f"{found.title}\n{found.slug} · {found.status} · {found.audience} · "
               f"{found.lang}\n\n{found.body}")


def _library(obj: Obj, embedded: bool = False) -> Library:
    """The knowledge base as the daemon holds it, or one line per problem and exit 78.
    embedded: with kb.rerank, its articles embedded as the daemon's are (the model loads:
    seconds), so that what is found is what an acknowledgement would offer."""
    from ..app import kb_embedder
    from ..desk import StartupError
    settings = obj.settings
    try:
        return read(settings.kb.folder, {q.name for q in settings.desk.queues},
                    kb_embedder(settings) if embedded else None)
    except StartupError as e:
        fail(str(e), EX_CONFIG)
    except KbError as e:
        for problem in e.problems:
            click.echo(safe(problem), err=True)
        fail(f"{len(e.problems)} problem(s) in the articles of {settings.kb.folder}", EX_CONFIG)


@kb.command("index")
@FORMAT
@click.pass_obj
def kb_index(obj: Obj, fmt: str) -> None:
    """Build the search index from kb.folder as the daemon does, and say what is in it:
    articles, published ones (only those are searched), languages, distinct words, and
    the time it took. Exit 78 when an article has a problem (`kb check` names them)."""
    start = time.perf_counter()
    library = _library(obj)
    took = time.perf_counter() - start
    index = library.index
    row = {"folder": str(library.folder) if library.folder else None,
           "articles": len(library.articles), "published": len(index),
           "languages": index.langs(), "terms": index.terms(), "seconds": round(took, 3),
           "own_words_median": _own_words(library), "threshold": obj.settings.kb.threshold}
    if fmt == "json":
        emit_json(row)
        return
    if library.folder is None:
        click.echo("no kb.folder set: no knowledge base to index")
        return
    click.echo(f"{library.folder}: {row['articles']} articles, {row['published']} published, "
               f"languages {', '.join(index.langs()) or 'none'}, {row['terms']} distinct "
               f"words, indexed in {took:.2f} s")
    if row["own_words_median"] is not None:
        click.echo("an article's title and first paragraph, searched, score "
                   f"{row['own_words_median']} (median); kb.threshold is "
                   f"{row['threshold']:g}: a mail an article answers scores less than its own "
                   "words, so a threshold far above this suggests nothing (README: How "
                   "suggestions are chosen)")


def _own_words(library: Library) -> float | None:
    """The median score of each published article for its own title and first paragraph:
    the scale of this knowledge base's scores (BM25 depends on the articles), to set
    kb.threshold against."""
    scores = [h.score for a in library.articles if a.status == "published"
              for h in library.index.search(f"{a.title}\n{summary(a.body)}", a.lang,
                                            audience=a.audience, limit=10)
              if h.article is a]
    return round(statistics.median(scores), 1) if scores else None


def _show(hits: list[Hit], threshold: float, fmt: str, similarity: float | None = None
          ) -> None:
    """Hits as a table or JSON; an empty result is said, and is no error (exit 0).
    similarity: kb.rerank's, which decides instead of the threshold."""
    rows: list[dict[str, Any]] = [
        {"slug": h.article.slug, "title": h.article.title, "score": h.score,
         "similarity": h.similarity, "lang": h.article.lang,
         "above_threshold": (h.similarity or 0.0) > similarity if similarity is not None
         else h.score > threshold} for h in hits]
    if fmt == "json":
        emit_json(rows)
        return
    if not any(r["above_threshold"] for r in rows):
        click.echo("no article above the threshold (" + (
            f"kb.similarity={similarity:g})" if similarity is not None
            else f"kb.threshold={threshold:g})"))
        if not rows:
            return
    for r in rows:
        r["below"] = "" if r["above_threshold"] else "below threshold"
    emit_table(rows, ["slug", "title", "score", *(["similarity"] if similarity is not None
                                                   else []), "lang", "below"])


LANG = click.option("--lang", metavar="CODE",
                    help="The requester's language (en, de); default: detected from the text.")
QUEUE = click.option("--queue", metavar="NAME",
                     help="Only articles for this queue (and those for every queue).")
LIMIT = click.option("--limit", type=click.IntRange(1, 100), default=None,
                     help="Hits at most; default: kb search kb.suggest, or 3 when that is 0; "
                          "kb suggest as many as the queue offers.")


@kb.command("search")
@click.argument("query", nargs=-1, required=True)
@LANG
@QUEUE
@LIMIT
@click.option("--audience", type=click.Choice(AUDIENCES), default="customers",
              show_default=True, help="Whose articles: the customers' or the agents' own.")
@click.option("--all", "show_all", is_flag=True,
              help="Show hits below kb.threshold too, marked, to see what it keeps out.")
@FORMAT
@click.pass_obj
def kb_search(obj: Obj, query: tuple[str, ...], lang: str | None, queue: str | None,
              limit: int | None, audience: str, show_all: bool, fmt: str) -> None:
    """The articles that answer QUERY, best first, with their scores: the search an
    acknowledgement makes. No hit is exit 0."""
    threshold = obj.settings.kb.threshold
    hits = _library(obj).index.search(
        " ".join(query), lang, queue=queue, audience=audience,
        limit=limit or obj.settings.kb.suggest or 3, threshold=0.0 if show_all else threshold)
    _show(hits, threshold, fmt)


@kb.command("suggest")
@click.argument("message", type=click.Path(path_type=Path))
@LANG
@QUEUE
@LIMIT
@FORMAT
@click.pass_obj
def kb_suggest(obj: Obj, message: Path, lang: str | None, queue: str | None,
               limit: int | None, fmt: str) -> None:
    """What an acknowledgement of MESSAGE (.eml) would suggest: the search on its subject
    and the customer's own words (quoted history and signature left out), in the queue its
    recipients name (or --queue), as many as that queue offers, at kb.threshold. A rule's
    suggest_articles is not applied here: `maildesk rules test MESSAGE` shows it. A file
    that cannot be read is exit 66; one that is no mail, 65."""
    mail = read_mail(message)
    settings = obj.settings
    queue = queue or settings.desk.queue_for({base_address(a) for a in (*mail.to, *mail.cc)})
    offered = limit or settings.articles_offered(queue)
    if not offered:
        if fmt == "json":
            emit_json([])
        else:
            click.echo(f"queue {queue} offers no articles (its suggest_articles, or "
                       "kb.suggest, is 0)")
        return
    hits = _library(obj, embedded=True).suggestions(
        settings.kb, customer_words(mail.subject, mail.text), lang, queue=queue, limit=offered)
    _show(hits, settings.kb.threshold, fmt,
          settings.kb.similarity if settings.kb.rerank else None)


COMMANDS = [kb]
