"""`maildesk blobs verify`: read every stored blob and check it against its name.

Like `git fsck`: a content address means nothing unless it is checked. What is
read is what the store serves from: blob_data rows first on a database desk,
streamed a few at a time; then files, where the node has them (a database desk
reads them for digests without a row). Loose files are hashed one by one;
packs are mapped and hashed in offset order, so a desk's blobs are read once,
front to back. Digests that rows refer to but no blob holds are missing. Each
bad blob is reported with what refers to it.
"""
from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Select, func, select

from .blob_rows import WHERE, DatabaseBlobs, in_database, row_problem, rows_of, without_rows
from .blobs import T_INDEX, BlobError, BlobStore, FileBlobs, digest_of, is_digest, read_file
from .references import Use, digest_columns, referrers
from .tables import T_BLOB_DATA


@dataclass
class Bad:
    digest: str
    problem: str          # "missing", or "damaged: why"
    where: str            # a path, pack@offset+size, or "missing"
    uses: list[Use] = field(default_factory=list)


@dataclass
class Verified:
    database: int = 0     # blob_data rows
    loose: int = 0
    packed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    bad: list[Bad] = field(default_factory=list)

    @property
    def tickets(self) -> list[str]:
        refs = {u["ticket"] for b in self.bad for u in b.uses if u["ticket"]}
        return sorted(refs, key=lambda r: (len(r), r))

    @property
    def used(self) -> list[Bad]:
        """The bad blobs something refers to: what makes verify fail. One that nothing uses
        is harmless (the next copy of those bytes to arrive replaces it)."""
        return [b for b in self.bad if b.uses]

    def as_dict(self) -> dict[str, Any]:
        return {"checked": {"database": self.database, "loose": self.loose,
                            "packed": self.packed, "bytes": self.bytes},
                "seconds": round(self.seconds, 3), "damaged": self.count("damaged"),
                "missing": self.count("missing"),
                "unreferenced": len(self.bad) - len(self.used), "tickets": self.tickets,
                "bad": [{"digest": b.digest, "problem": b.problem, "where": b.where,
                         "used_by": b.uses} for b in self.bad]}

    def count(self, kind: str) -> int:
        """Bad blobs that something uses, of one kind (damaged, missing)."""
        return sum(1 for b in self.used if b.problem.startswith(kind))


def sources(store: BlobStore) -> tuple[FileBlobs | None, bool]:
    """What store serves from: files (None: none), and whether blob_data rows, which come
    first."""
    if isinstance(store, DatabaseBlobs):
        return store.files, True
    assert isinstance(store, FileBlobs)
    return store, False


def loose_served(files: FileBlobs, conn: Connection, rows: bool
                 ) -> Iterator[tuple[str, Path]]:
    """The loose files served from: all of them, or those whose digest has no row."""
    if not rows:
        yield from files.loose_files()
        return
    loose = list(files.loose_files())
    shadowed = in_database(conn, [d for d, _ in loose])
    yield from ((d, f) for d, f in loose if d not in shadowed)


def _index(rows: bool, *columns: ColumnElement[Any]) -> Select[Any]:
    """SELECT columns of blob_index, without the digests that have a row when rows."""
    query = select(*columns)
    return without_rows(query.select_from(T_INDEX), T_INDEX.c.digest) if rows else query


def total_bytes(store: BlobStore, conn: Connection) -> int:
    """What verify() will read, for a progress bar."""
    files, rows = sources(store)
    total = 0
    if rows:
        total += conn.execute(select(func.coalesce(func.sum(T_BLOB_DATA.c.size), 0))).scalar_one()
    if files is not None:
        total += conn.execute(_index(rows, func.coalesce(func.sum(T_INDEX.c.size), 0))) \
            .scalar_one()
        total += sum(f.lstat().st_size for _, f in loose_served(files, conn, rows))
    return int(total)


def verify(store: BlobStore, conn: Connection,
           advance: Callable[[int], None] = lambda n: None) -> Verified:
    """Every blob the store serves from, read and hashed; advance(n) after n bytes."""
    started = time.perf_counter()
    out = Verified()
    files, rows = sources(store)
    if rows:
        out.bad.extend(_rows(conn, out, advance))
    loose_ok: set[str] = set()
    if files is not None:
        for digest, path in loose_served(files, conn, rows):
            out.loose += 1
            try:
                data = read_file(path)
            except BlobError as e:
                out.bad.append(Bad(digest, f"damaged: {e.problem}", str(path)))
                continue
            out.bytes += len(data)
            advance(len(data))
            if digest_of(data) == digest:
                loose_ok.add(digest)
            else:
                out.bad.append(Bad(digest, "damaged: holds other bytes", str(path)))
        out.bad.extend(_packs(files, conn, rows, loose_ok, out, advance))
    out.bad.extend(_missing(files, conn, rows, loose_ok))
    uses = referrers(conn, [b.digest for b in out.bad])
    for b in out.bad:
        b.uses = uses.get(b.digest, [])
    out.seconds = time.perf_counter() - started
    return out


def _rows(conn: Connection, out: Verified, advance: Callable[[int], None]) -> Iterator[Bad]:
    for digest, size, data in rows_of(conn):
        out.database += 1
        out.bytes += len(data)
        advance(len(data))
        problem = row_problem(digest, data, size)
        if problem is not None:
            yield Bad(digest, f"damaged: {problem}", WHERE)


def _packs(files: FileBlobs, conn: Connection, rows: bool, loose_ok: set[str], out: Verified,
           advance: Callable[[int], None]) -> Iterator[Bad]:
    """Each pack mapped once and its blobs hashed in offset order. A blob whose loose copy
    is intact is served from that copy, so its packed one is not held against it."""
    found = conn.execution_options(yield_per=5000).execute(
        _index(rows, T_INDEX.c.digest, T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size)
        .order_by(T_INDEX.c.pack, T_INDEX.c.offset))
    for digest, where, data, problem in files.packed(found):
        out.packed += 1
        if digest in loose_ok:
            continue
        if data is None:
            yield Bad(digest, f"damaged: {problem}", where)
            continue
        out.bytes += len(data)
        advance(len(data))
        if digest_of(data) != digest:
            yield Bad(digest, "damaged: holds other bytes", where)


def _missing(files: FileBlobs | None, conn: Connection, rows: bool, loose_ok: set[str]
             ) -> Iterator[Bad]:
    """Digests that rows name but no blob_data row, index row or loose file holds."""
    seen: set[str] = set()
    for kind, column in digest_columns().items():
        query = select(column).distinct()
        if files is not None:
            query = query.outerjoin(T_INDEX, T_INDEX.c.digest == column) \
                .where(T_INDEX.c.digest.is_(None))
        if rows:
            query = without_rows(query, column)
        if kind == "inbound":
            query = query.where(column.table.c.state != "deleted")
        for (digest,) in conn.execute(query):
            if digest in seen or digest in loose_ok or not is_digest(digest):
                continue
            seen.add(digest)
            if files is None or not os.path.lexists(files.loose_path(digest)):
                yield Bad(digest, "missing", "missing")     # (a damaged loose one: above)


def _some(conn: Connection, column: Column[Any], start: str, n: int) -> list[str]:
    """About n digests of column from start on, wrapping around to the first."""
    query = select(column).order_by(column).limit(n)
    digests = list(conn.execute(query.where(column >= start)).scalars())
    return digests + list(conn.execute(query.where(column < start)
                                       .limit(n - len(digests))).scalars())


def sample(store: BlobStore, conn: Connection, n: int) -> tuple[int, list[Bad]]:
    """About n blobs from a random place in blob_data or the index, and n loose ones from a
    random folder, read and checked: what the hourly blob_sample job looks at. Returns
    (checked, bad)."""
    files, rows = sources(store)
    start = secrets.token_hex(32)
    digests = _some(conn, T_BLOB_DATA.c.digest, start, n) if rows else []
    if files is not None:
        digests += _some(conn, T_INDEX.c.digest, start, n)
        folder = files.root / start[:2]
        if folder.is_dir():
            digests += [folder.name + f.name for f in itertools.islice(folder.iterdir(), n)
                        if is_digest(folder.name + f.name)]
    bad = []
    for digest in dict.fromkeys(digests):
        problem = store.problem(digest, conn)
        if problem is not None:
            bad.append(Bad(digest, problem, store.locate(digest, conn)))
    uses = referrers(conn, [b.digest for b in bad])
    for b in bad:
        b.uses = uses.get(b.digest, [])
    return len(digests), bad
