"""Articles that may answer a new ticket, put in its acknowledgement before any agent reads
it; and the requester's answer that one solved it.

How many: a rule's `suggest_articles`, else the queue's, else kb.suggest. Which:
the knowledge base's search (kb/search.py) on the customer's own words, the
subject and the text without quotes, above kb.threshold (or with kb.rerank,
re-ranked by meaning, above kb.similarity), in their language where an article
exists. Each suggestion, and a search that found none, is a row of
kb_suggestions: what the deflection report counts.
"""
from __future__ import annotations

from typing import Any

from ..kb.render import html, summary
from ..kb.search import customer_words
from ..store.rows import TicketRow
from ..tickets.refs import solved_address
from .context import Context
from .happening import Mail
from .outbox import desk_address


def suggest(ctx: Context, ticket: TicketRow, mail: Mail) -> list[dict[str, Any]]:
    """The articles for a new ticket's acknowledgement, as its templates show them, and
    recorded; [] when the desk has none to offer or none is good enough."""
    n = ctx.settings.articles_offered(ticket.queue) if mail.suggest is None else mail.suggest
    if n == 0 or ctx.history or not len(ctx.kb.index):
        return []
    hits = ctx.kb.suggestions(ctx.settings.kb,
                              customer_words(mail.parsed.subject, mail.parsed.text),
                              queue=ticket.queue, limit=n)
    if not hits:
        ctx.ledger.add_suggestion(ticket, None, 0, None, ctx.now)
        return []
    out = []
    for rank, hit in enumerate(hits, 1):
        a = hit.article
        ctx.ledger.add_suggestion(ticket, a.slug, rank, hit.score, ctx.now)
        out.append({"rank": rank, "slug": a.slug, "title": a.title, "score": hit.score,
                    "summary": summary(a.body), "text": a.body, "html": html(a.body),
                    "solved_address": solved_address(ctx.secrets[0], desk_address(ctx, ticket),
                                                     ticket.ref, ticket.requester, rank)})
    return out
