"""Full-text search over the mail people wrote: each inbound message's subject and text.

One table, `message_search`, keyed by the message's id, on either engine: an FTS5
virtual table on SQLite (its rowid), a tsvector column under a GIN index on
PostgreSQL. The ledger adds a message's row in the batch that stores the message
(index_messages), so a ticket is searchable from the commit that makes it; migration
0012 made the rows of the mail stored before. Our own outgoing mail is not indexed:
its templates would match every ticket, and what it quotes is indexed as it came in.
Messages that move to another ticket (a merge) keep their rows: a search finds the
ticket through the message.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import Connection, Select, column, false, func, select, table, text

from .lean import MESSAGES

# what a message gives the index: a text longer than this is rare and is still found
# by its beginning; PostgreSQL refuses a tsvector over 1 MB
SEARCHED_CHARS = 100_000
_WORD = re.compile(r"\w+")
_FTS = table("message_search", column("rowid"), column("body"))
_TSV = table("message_search", column("message_id"), column("body"))


def document(subject: str | None, body: str | None) -> str:
    """What is indexed for a message: its subject, then its text."""
    return f"{subject or ''}\n{body or ''}"[:SEARCHED_CHARS]


def words(query: str) -> list[str]:
    """The words of what an operator typed: each must be in the message (no operators,
    so no text can be a syntax error of either engine's query language)."""
    return _WORD.findall(query.lower())


def index_messages(conn: Connection,
                   rows: Iterable[tuple[int | None, str | None, str | None]]
                   ) -> None:
    """Index messages just inserted: (id, subject, text) each."""
    params = [{"id": i, "body": document(s, t)} for i, s, t in rows]
    if not params:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("INSERT INTO message_search (message_id, body) "
                          "VALUES (:id, to_tsvector('simple', :body))"), params)
    else:
        conn.execute(text("INSERT INTO message_search (rowid, body) VALUES (:id, :body)"),
                     params)


def matching_tickets(dialect: str, query: str) -> Select[tuple[int]]:
    """The ids of tickets with a message holding every word of query (no word: none)."""
    found = words(query)
    if dialect == "postgresql":
        src, key = _TSV, _TSV.c.message_id
        cond = _TSV.c.body.op("@@")(func.plainto_tsquery("simple", " ".join(found)))
    else:
        src, key = _FTS, _FTS.c.rowid
        cond = _FTS.c.body.op("MATCH")(" ".join(f'"{w}"' for w in found))
    q = select(MESSAGES.c.ticket_id).join(src, key == MESSAGES.c.id)
    return q.where(cond if found else false())


def unindex_messages(conn: Connection, ids: list[int]) -> None:
    """Take messages out of the index (before they are deleted, or indexed again as they
    are now)."""
    key = "message_id" if conn.dialect.name == "postgresql" else "rowid"
    for k in range(0, len(ids), 500):
        conn.execute(text(f"DELETE FROM message_search WHERE {key} IN "
                          f"({', '.join(str(int(i)) for i in ids[k:k + 500])})"))


def compact(conn: Connection) -> None:
    """Rewrite SQLite's index without what was taken out of it: FTS5 keeps a deleted
    message's words in its segments, as markers of their removal, until they merge.
    PostgreSQL's rows are gone from every query at once (and from the disk at VACUUM)."""
    if conn.dialect.name == "sqlite":
        conn.execute(text("INSERT INTO message_search (message_search) VALUES ('optimize')"))
