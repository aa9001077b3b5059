"""An article's text for mail: the Markdown itself for the text part (Markdown was made to
read as plain text), and HTML for the HTML part, made safe.

Articles come from a folder admins keep, not from mail, but an article may be
drafted from a ticket (`#kb new`), so its HTML is treated as untrusted all the
same: markdown-it-py renders CommonMark with raw HTML turned off, and nh3
(Ammonia) keeps only the tags and link schemes a mail needs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import nh3

if TYPE_CHECKING:   # imported when an article is first rendered, not by every pipe delivery
    from markdown_it import MarkdownIt

TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre",
        "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"}
SCHEMES = {"http", "https", "mailto"}


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def html(markdown: str) -> str:
    """Safe HTML of an article's Markdown: no script, style, image or event handler, and
    links only to http, https and mailto (each opened with rel=noopener noreferrer). A
    relative link, which means nothing in a mail, loses its href and keeps its words."""
    return nh3.clean(_markdown().render(markdown), tags=TAGS, url_schemes=SCHEMES,
                     attributes={"a": {"href", "title"}}, link_rel="noopener noreferrer",
                     attribute_filter=_absolute)


def _absolute(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href" and value.split(":", 1)[0].lower() not in SCHEMES:
        return None
    return value


def summary(markdown: str, chars: int = 300) -> str:
    """The article's first paragraph, as plain text cut at a word: what a mail shows of
    each suggestion before the customer opens it."""
    first = next((p for p in markdown.strip().split("\n\n") if p.strip()
                  and not p.lstrip().startswith("#")), markdown.strip())
    text = " ".join(first.split())
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."
