"""Blobs as rows of blob_data in the desk's database (storage.backend: database).

Several `maildesk serve` on different hosts share one PostgreSQL database and no disk
(issue 18): what one node accepted, every other must read. So a blob is a row (digest,
size, data) written in the transaction that refers to it, or in one of its own, and
durable when that commits: no file to fsync, no pack to index.

Reads check the bytes against their name, as FileBlobs does. A digest with no row is
looked for in this node's own files, when it has any: a desk that switched backend
keeps reading what it stored before (`maildesk blobs copy-to-database` copies that
into blob_data, for the other nodes).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, Connection, Engine, Select, bindparam, or_, select

from ..config.schema import Settings
from .blobs import (
    LOOKUP_CHUNK,
    BlobBatch,
    BlobDamaged,
    BlobMissing,
    BlobStore,
    FileBlobs,
    digest_of,
    is_digest,
)
from .db import upsert
from .intake_tables import T_BLOB_DATA

WHERE = "database blob_data"
_READ = select(T_BLOB_DATA.c.data, T_BLOB_DATA.c.size) \
    .where(T_BLOB_DATA.c.digest == bindparam("digest"))
# a batch that uses a row it found holds it until commit, so gc cannot delete it in between
_READ_KEEP = _READ.with_for_update(read=True)
# which of many have a row, held as _READ_KEEP holds one: not their bytes, which a batch
# of large mails found again (a re-import) would hold in memory all at once
_HAS_MANY = select(T_BLOB_DATA.c.digest) \
    .where(T_BLOB_DATA.c.digest.in_(bindparam("digests", expanding=True))) \
    .with_for_update(read=True)
_HAS = select(T_BLOB_DATA.c.digest).where(T_BLOB_DATA.c.digest == bindparam("digest"))
# one INSERT of many rows, kept well under both databases' limit on bound parameters and
# a statement's size
CHUNK_ROWS, CHUNK_BYTES = 500, 32 * 1024**2


def open_blobs(settings: Settings, engine: Engine) -> BlobStore:
    """The store storage.backend names. A database store falls back to the files of
    <data_dir>/blobs when they are there, and makes no such folder when they are not."""
    files = None
    if settings.storage.backend == "filesystem" or settings.blob_dir.is_dir():
        files = FileBlobs(settings.blob_dir, engine, settings.storage.pack_size)
    if settings.storage.backend == "filesystem":
        assert files is not None
        return files
    return DatabaseBlobs(engine, files)


def row_problem(digest: str, data: bytes, size: int) -> str | None:
    """Why a blob_data row cannot be served, in a few words; None when it is intact."""
    if len(data) != size:
        return f"is {len(data)} bytes long, not the {size} that were stored"
    return None if digest_of(data) == digest else "holds other bytes"


def write_rows(conn: Connection, blobs: Mapping[str, bytes], replace: bool) -> None:
    """Insert blobs, many rows a statement. A digest that has a row already keeps it, or
    with replace gets these bytes where its row holds others (a damaged copy)."""
    items = list(blobs.items())
    while items:
        size, n = 0, 0
        while n < len(items) and n < CHUNK_ROWS and (n == 0 or size < CHUNK_BYTES):
            size += len(items[n][1])
            n += 1
        chunk, items = items[:n], items[n:]
        stmt = upsert(conn, T_BLOB_DATA).values(
            [{"digest": d, "size": len(data), "data": data} for d, data in chunk])
        if replace:
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["digest"],
                set_={"data": stmt.excluded.data, "size": stmt.excluded.size},
                where=or_(T_BLOB_DATA.c.data != stmt.excluded.data,
                          T_BLOB_DATA.c.size != stmt.excluded.size)))
        else:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["digest"]))


def in_database(conn: Connection, digests: Sequence[str]) -> set[str]:
    """Those of digests that have a blob_data row (asked for in chunks)."""
    found: set[str] = set()
    for k in range(0, len(digests), CHUNK_ROWS):
        found.update(conn.execute(select(T_BLOB_DATA.c.digest).where(
            T_BLOB_DATA.c.digest.in_(digests[k:k + CHUNK_ROWS]))).scalars())
    return found


def without_rows(query: Select[Any], digest: Column[Any]) -> Select[Any]:
    """query without the digests that have a blob_data row: what a database store serves
    from its rows, not from files."""
    return query.outerjoin(T_BLOB_DATA, T_BLOB_DATA.c.digest == digest) \
        .where(T_BLOB_DATA.c.digest.is_(None))


class DatabaseBlobs(BlobStore):
    """Blobs as blob_data rows; files: this node's FileBlobs, read for a digest that has no
    row (None: the node has none)."""

    def __init__(self, engine: Engine, files: FileBlobs | None) -> None:
        self.engine = engine
        self.files = files

    def put(self, data: bytes) -> str:
        with self.begin_with(data) as (_, digest):
            return digest

    @contextmanager
    def begin_with(self, data: bytes) -> Iterator[tuple[Connection, str]]:
        """One INSERT in the transaction. A row that holds other bytes (damaged) is
        replaced; an intact one is left as it is."""
        with self.engine.begin() as conn:
            digest = digest_of(data)
            write_rows(conn, {digest: data}, replace=True)
            yield conn, digest

    def _row(self, query: Select[Any], digest: str, conn: Connection | None) -> Any:
        if conn is not None:
            return conn.execute(query, {"digest": digest}).first()
        with self.engine.connect() as c:
            return c.execute(query, {"digest": digest}).first()

    def _read(self, digest: str, conn: Connection | None) -> tuple[bytes, str]:
        row = self._row(_READ, digest, conn)
        if row is None:
            if self.files is None:
                raise BlobMissing(digest, "is not in the database", "missing")
            try:
                return self.files._read(digest, conn)
            except BlobMissing:
                raise BlobMissing(digest, "is neither in the database nor in this node's "
                                          "files", "missing") from None
        data = bytes(row.data)
        if len(data) != row.size:
            raise BlobDamaged(digest, str(row_problem(digest, data, row.size)), WHERE)
        return data, WHERE

    def locate(self, digest: str, conn: Connection | None = None) -> str:
        """"database blob_data", or where this node's files have it."""
        if not is_digest(digest):
            return "removed"
        if self._row(_HAS, digest, conn) is not None:
            return WHERE
        return self.files.locate(digest, conn) if self.files is not None else "missing"

    def forget(self, digest: str, conn: Connection) -> None:
        """The row goes in conn's transaction (and any copy in this node's files)."""
        conn.execute(T_BLOB_DATA.delete().where(T_BLOB_DATA.c.digest == digest))
        if self.files is not None:
            self.files.forget(digest, conn)

    def batch(self, conn: Connection) -> DatabaseBatch:
        return DatabaseBatch(self, conn)

    def close(self) -> None:
        if self.files is not None:
            self.files.close()


class DatabaseBatch(BlobBatch):
    """Blobs held until finish() inserts them, in few statements, in the batch's own
    transaction. A row already there is read and checked at put(), as FileBatch checks a
    stored copy, and replaced at finish() when damaged."""

    def __init__(self, store: DatabaseBlobs, conn: Connection) -> None:
        self.store, self.conn = store, conn
        self._pending: dict[str, bytes] = {}
        self.mended: set[str] = set()          # their damaged row replaced at finish()
        self.unasked: set[str] = set()         # fresh: a row that holds other bytes replaced
        self._known: dict[str, bool] = {}      # digest -> whether it has a row (expect())
        self.repaired = 0

    @property
    def pending(self) -> Mapping[str, bytes]:
        return self._pending

    def expect(self, digests: Iterable[str]) -> None:
        wanted = [d for d in dict.fromkeys(digests) if d not in self._known]
        for k in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[k:k + LOOKUP_CHUNK]
            found = set(self.conn.execute(_HAS_MANY, {"digests": chunk}).scalars())
            self._known.update((d, d in found) for d in chunk)

    def put(self, data: bytes, fresh: bool = False) -> str:
        digest = digest_of(data)
        if digest in self._pending:
            return digest
        if fresh:
            self.unasked.add(digest)
            self._pending[digest] = data
            return digest
        row = None      # expect() found none: no row to read
        if self._known.get(digest, True):
            row = self.conn.execute(_READ_KEEP, {"digest": digest}).first()
        if row is not None:
            if row_problem(digest, bytes(row.data), row.size) is None:
                return digest
            self.repaired += 1
            self.mended.add(digest)
        self._pending[digest] = data
        return digest

    def finish(self) -> None:
        replaced = self.mended | self.unasked
        new = {d: b for d, b in self._pending.items() if d not in replaced}
        write_rows(self.conn, new, replace=False)
        write_rows(self.conn, {d: self._pending[d] for d in replaced}, replace=True)
        for d in self._pending:     # found by a lookup from now on
            self._known.pop(d, None)
        self._pending, self.mended, self.unasked = {}, set(), set()


def rows_of(conn: Connection, yield_per: int = 64) -> Iterator[tuple[str, int, bytes]]:
    """Every blob_data row (digest, size, data), streamed a few at a time (the table may
    hold more than memory)."""
    result = conn.execution_options(yield_per=yield_per).execute(
        select(T_BLOB_DATA.c.digest, T_BLOB_DATA.c.size, T_BLOB_DATA.c.data))
    for digest, size, data in result:
        yield digest, size, bytes(data)
