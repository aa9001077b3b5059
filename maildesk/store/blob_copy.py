"""`maildesk blobs copy-to-database`: this node's files copied into blob_data.

What makes a desk of one node one of several (issue 18): once its loose files and
packs are rows, every node reads them. Each blob is read and checked first (damaged
bytes are reported, with what uses them, not copied), and written in transactions of a
few MiB, so a copy that stops half way keeps what it did, and running it again copies
only what has no row yet. The files stay: `storage.backend: database` still reads them
on this node for a digest without a row.

Reads and writes take turns in short transactions (a page of the index, then its
rows): on SQLite every transaction holds the write lock (store/db.py), so a cursor
held open while writing would wait on itself.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select, tuple_

from .blob_rows import CHUNK_BYTES, CHUNK_ROWS, in_database, without_rows, write_rows
from .blobs import T_INDEX, BlobError, FileBlobs, digest_of, read_file
from .references import referrers
from .verify import Bad

PAGE = 2000        # index rows read at a time


@dataclass
class Copied:
    copied: int = 0        # blobs that got a row
    present: int = 0       # copies (loose or packed) whose digest had a row already
    bytes: int = 0
    seconds: float = 0.0
    bad: list[Bad] = field(default_factory=list)      # damaged files: not copied

    @property
    def used(self) -> list[Bad]:
        """The damaged blobs something refers to: what makes the copy fail."""
        return [b for b in self.bad if b.uses]

    def as_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "already_there": self.present, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "not_copied": len(self.bad),
                "bad": [{"digest": b.digest, "problem": b.problem, "where": b.where,
                         "used_by": b.uses} for b in self.bad]}


class _Writer:
    """Blobs gathered and written a few MiB a transaction."""

    def __init__(self, engine: Engine, out: Copied) -> None:
        self.engine, self.out = engine, out
        self.held: dict[str, bytes] = {}
        self.size = 0

    def add(self, digest: str, data: bytes) -> None:
        self.held[digest] = data
        self.size += len(data)
        if len(self.held) >= CHUNK_ROWS or self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.held:
            with self.engine.begin() as conn:
                write_rows(conn, self.held, replace=False)
            self.out.copied += len(self.held)
            self.held, self.size = {}, 0


def to_copy(files: FileBlobs, engine: Engine) -> int:
    """Bytes copy_to_database() will read, for a progress bar."""
    with engine.connect() as conn:
        packed = conn.execute(without_rows(select(func.coalesce(func.sum(T_INDEX.c.size), 0))
                                           .select_from(T_INDEX), T_INDEX.c.digest)).scalar_one()
        loose = list(files.loose_files())
        there = in_database(conn, [d for d, _ in loose])
    return int(packed) + sum(f.lstat().st_size for d, f in loose if d not in there)


def copy_to_database(files: FileBlobs, engine: Engine,
                     advance: Callable[[int], None] = lambda n: None) -> Copied:
    """Every intact blob of files that has no blob_data row gets one; advance(n) after n
    bytes read."""
    started = time.perf_counter()
    out = Copied()
    writer = _Writer(engine, out)

    def take(digest: str, data: bytes | memoryview, where: str) -> None:
        out.bytes += len(data)
        advance(len(data))
        if digest_of(data) == digest:
            writer.add(digest, bytes(data))
        else:
            out.bad.append(Bad(digest, "damaged: holds other bytes", where))

    loose = list(files.loose_files())
    with engine.connect() as conn:
        there = in_database(conn, [d for d, _ in loose])
        out.present = len(there) + conn.execute(
            select(func.count()).select_from(T_INDEX)).scalar_one() - conn.execute(
            without_rows(select(func.count()).select_from(T_INDEX), T_INDEX.c.digest)
        ).scalar_one()
    for digest, path in loose:
        if digest not in there:
            try:
                take(digest, read_file(path), str(path))
            except BlobError as e:
                out.bad.append(Bad(digest, f"damaged: {e.problem}", str(path)))
    writer.flush()          # a digest both loose and packed now has its row

    query = without_rows(select(T_INDEX.c.digest, T_INDEX.c.pack, T_INDEX.c.offset,
                                T_INDEX.c.size).select_from(T_INDEX), T_INDEX.c.digest) \
        .order_by(T_INDEX.c.pack, T_INDEX.c.offset).limit(PAGE)
    after: tuple[str, int] | None = None
    while True:
        with engine.connect() as conn:
            page = conn.execute(query if after is None else query.where(
                tuple_(T_INDEX.c.pack, T_INDEX.c.offset) > tuple_(*after))).all()
        if not page:
            break
        after = (page[-1].pack, page[-1].offset)
        for digest, where, data, problem in files.packed(tuple(r) for r in page):
            if data is None:
                out.bad.append(Bad(digest, f"damaged: {problem}", where))
            else:
                take(digest, data, where)
        writer.flush()      # before the next page's query, which leaves out what has a row

    with engine.connect() as conn:
        uses = referrers(conn, [b.digest for b in out.bad])
    for b in out.bad:
        b.uses = uses.get(b.digest, [])
    out.seconds = time.perf_counter() - started
    return out
