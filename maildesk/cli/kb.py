"""`maildesk kb`: the knowledge base's articles, checked and listed."""
from __future__ import annotations

from datetime import date

import click

from ..kb.articles import Article, KbError, load
from .context import Obj
from .output import (
    EX_CONFIG,
    EX_NOINPUT,
    FORMAT,
    TEXT_FORMAT,
    emit_json,
    emit_table,
    fail,
    safe,
)


@click.group()
def kb() -> None:
    """Knowledge-base articles: Markdown files with front matter in kb.folder."""


def _articles(obj: Obj) -> list[Article]:
    """The articles, or one line per problem and exit 78; none without kb.folder."""
    settings = obj.settings
    if settings.kb.folder is None:
        return []
    try:
        return load(settings.kb.folder, {q.name for q in settings.desk.queues})
    except KbError as e:
        for problem in e.problems:
            click.echo(safe(problem), err=True)
        fail(f"{len(e.problems)} problem(s) in the articles of {settings.kb.folder}", EX_CONFIG)


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


COMMANDS = [kb]
