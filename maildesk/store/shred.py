"""Blobs removed for good, with the rows that named them: a requester's erasure and the
retention policy (tickets/privacy.py, tickets/retention.py).

Removing is two steps around the transaction that changes the rows. In it, drop() points
every row that names a digest at nothing (NO_BLOB) and deletes the blob's blob_index and
blob_data rows: a rollback keeps the blob whole and in use. After the commit, wipe() takes
the bytes off the disk: a loose file is deleted, and the blob's bytes inside a pack are
overwritten with zeros where they lie. Nothing reads them there any more (their index row
is gone, and `blobs verify` reads only what is indexed); `maildesk blobs gc` compacts the
packs to give the space back. A database desk's bytes go with their blob_data row (a
PostgreSQL table keeps dead rows until VACUUM; SQLite is told secure_delete, which zeroes
what a transaction deletes).

A row whose blob was removed keeps its other columns: a message keeps its text, an
inbound row remains the record that the mail was accepted.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, select, update

from .blob_rows import DatabaseBlobs, rows_of
from .blobs import NO_BLOB, T_INDEX, BlobError, BlobStore, FileBlobs, read_file
from .gc import rewriting
from .references import chunks, digest_columns
from .tables import T_BLOB_DATA
from .verify import sources

__all__ = ["NO_BLOB", "Dropped", "drop", "holding"]


def every_blob(store: BlobStore, conn: Connection) -> Iterator[tuple[str, bytes]]:
    """Every stored blob, as it is stored (unchecked: damaged bytes are bytes too): the
    blob_data rows, the loose files and the packed blobs. A blob that cannot be read at
    all is skipped: there is nothing in it to find."""
    if isinstance(store, DatabaseBlobs):
        for digest, _size, data in rows_of(conn):
            yield digest, data
    files, _rows = sources(store)
    if files is None:
        return
    for digest, path in files.loose_files():
        try:
            yield digest, read_file(path)
        except BlobError:
            continue
    found = conn.execute(select(T_INDEX.c.digest, T_INDEX.c.pack, T_INDEX.c.offset,
                                T_INDEX.c.size).order_by(T_INDEX.c.pack, T_INDEX.c.offset))
    for digest, _where, view, _problem in files.packed(found):
        if view is not None:
            yield digest, bytes(view)


def holding(store: BlobStore, conn: Connection, needles: Iterable[str],
            words: Iterable[str] = (),
            advance: Callable[[int], None] = lambda n: None) -> set[str]:
    """The digests of the blobs that hold any of needles anywhere, or any of words whole
    (not inside a longer word: a name "Ana" is not in "banana"), in any case, as written
    in a header or a text part (an encoded word or base64 hides one: the rows that name
    the same mail are found by address). advance: told each blob's size, for a progress
    bar."""
    forms = [re.escape(n.encode()) for n in needles if n]
    forms += [rb"(?<!\w)" + re.escape(w.encode()) + rb"(?!\w)" for w in words if w]
    if not forms:
        return set()
    wanted = re.compile(b"|".join(forms), re.IGNORECASE)
    found = set()
    for digest, data in every_blob(store, conn):
        advance(len(data))
        if wanted.search(data):
            found.add(digest)
    return found


@dataclass
class Dropped:
    """Blobs whose rows are gone, in a transaction not yet committed: what wipe() removes
    from the disk once it has."""

    files: FileBlobs | None
    digests: set[str] = field(default_factory=set)
    spots: list[tuple[str, int, int]] = field(default_factory=list)   # pack, offset, size

    def wipe(self) -> int:
        """The bytes off the disk: loose files deleted, packed bytes zeroed where they lie;
        how many blobs. Run after the commit (before it, a rollback would find them gone)."""
        if self.files is None:
            return len(self.digests)
        with rewriting(self.files.root):
            self._wipe_files(self.files)
        return len(self.digests)

    def _wipe_files(self, files: FileBlobs) -> None:
        for digest in self.digests:
            files.loose_path(digest).unlink(missing_ok=True)
        for pack, offset, size in self.spots:
            try:
                fd = os.open(files.packs / pack, os.O_WRONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue            # compacted away meanwhile
            try:
                os.pwrite(fd, bytes(size), offset)
                os.fsync(fd)
            finally:
                os.close(fd)


def drop(store: BlobStore, conn: Connection, digests: Iterable[str]) -> Dropped:
    """In conn's transaction: every row naming one of digests (inbound, message, attachment,
    outbox) points at nothing, and the blobs' index and blob_data rows are deleted. The
    caller wipes the result after the commit."""
    wanted = sorted({d for d in digests if d and d != NO_BLOB})
    out = Dropped(sources(store)[0], set(wanted))
    for chunk in chunks(wanted):
        for column in digest_columns().values():
            conn.execute(update(column.table).where(column.in_(chunk)).values(
                {column.name: NO_BLOB}))
        out.spots += [(p, o, s) for p, o, s in conn.execute(
            select(T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size)
            .where(T_INDEX.c.digest.in_(chunk)))]
        conn.execute(T_INDEX.delete().where(T_INDEX.c.digest.in_(chunk)))
        conn.execute(T_BLOB_DATA.delete().where(T_BLOB_DATA.c.digest.in_(chunk)))
    return out
