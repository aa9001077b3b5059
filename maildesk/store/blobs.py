"""Content-addressed store for raw mail and attachments, beside the database.

Blobs are named by their sha256 and live in one of two forms, as in git:

- loose: one file `ab/cdef...`, written to a temporary name, fsynced, renamed
  and its directory fsynced. The SMTP listener stores each accepted mail so,
  before it may say 250.
- packed: appended to a pack file `packs/<name>.pack`, with a row in the
  `blob_index` table (digest -> pack, offset, size). A batch (the ingest
  worker, `maildesk ingest`) appends all its blobs, fsyncs the pack once,
  and inserts the index rows in the same transaction as the tickets that
  refer to them. Creating a file costs far more than appending to one on
  common disks, so this is most of what makes batch ingest fast.

A pack only grows; bytes appended by a batch that then rolled back are
unreferenced and harmless. Each thread of each process appends to its own
pack, so no two writers share a file.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select

from .models import BlobIndex

T_INDEX = BlobIndex.__table__
PACK_LIMIT = 64 * 1024**2
_LOOKUP = select(T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size) \
    .where(T_INDEX.c.digest == bindparam("digest"))


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Pack:
    """The pack file one thread appends to."""

    def __init__(self, folder: Path) -> None:
        self.name = f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.pack"
        self.fd = os.open(folder / self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = 0
        _fsync_dir(folder)

    def append(self, data: bytes) -> int:
        offset = self.size
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)
        return offset


class BlobStore:
    def __init__(self, root: Path, engine: Engine) -> None:
        self.root = root
        self.engine = engine
        self.packs = root / "packs"
        self.packs.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

    def loose_path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        """Store as a loose blob, durable when this returns."""
        digest = digest_of(data)
        final = self.loose_path(digest)
        if final.exists():
            return digest
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.root)
        tmp = folder / f".{digest[2:]}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(folder)
        return digest

    def locate(self, digest: str, conn: Connection | None = None) -> str:
        """Where a blob lives, for people: a path, or pack@offset+size."""
        loose = self.loose_path(digest)
        if loose.exists():
            return str(loose)
        row = self._lookup(digest, conn)
        return f"{self.packs / row[0]}@{row[1]}+{row[2]}" if row else "missing"

    def _lookup(self, digest: str, conn: Connection | None) -> Any:
        if conn is not None:
            return conn.execute(_LOOKUP, {"digest": digest}).first()
        with self.engine.connect() as c:
            return c.execute(_LOOKUP, {"digest": digest}).first()

    def get(self, digest: str, conn: Connection | None = None) -> bytes:
        try:
            return self.loose_path(digest).read_bytes()
        except FileNotFoundError:
            pass
        row = self._lookup(digest, conn)
        if row is None:
            raise FileNotFoundError(f"blob {digest} is neither loose nor in a pack")
        pack, offset, size = row
        with open(self.packs / pack, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"pack {pack} is shorter than its index says (blob {digest})")
        return data

    def forget(self, digest: str, conn: Connection) -> None:
        """Remove a blob nothing refers to any more: the loose file goes at once, a packed
        blob's index row goes (its bytes stay in the pack until packs are compacted)."""
        self.loose_path(digest).unlink(missing_ok=True)
        conn.execute(T_INDEX.delete().where(T_INDEX.c.digest == digest))

    def batch(self, conn: Connection) -> BlobBatch:
        """Blobs for the transaction on conn: indexed there, durable before it commits."""
        pack = getattr(self._local, "pack", None)
        if pack is None or pack.size >= PACK_LIMIT:
            if pack is not None:
                os.close(pack.fd)
            pack = self._local.pack = _Pack(self.packs)
        return BlobBatch(self, pack, conn)


class BlobBatch:
    """Blobs appended to this thread's pack; durable and indexed by finish()."""

    def __init__(self, store: BlobStore, pack: _Pack, conn: Connection) -> None:
        self.store = store
        self.pack = pack
        self.conn = conn
        self.pending: dict[str, tuple[int, int]] = {}   # digest -> (offset, size)

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        if digest in self.pending or self.store.loose_path(digest).exists() \
                or self.store._lookup(digest, self.conn) is not None:
            return digest                                 # stored once, whatever the route
        self.pending[digest] = (self.pack.append(data), len(data))
        return digest

    def finish(self) -> None:
        """fsync the pack and index its new blobs in the batch's transaction."""
        if not self.pending:
            return
        conn = self.conn
        os.fsync(self.pack.fd)
        rows = [{"digest": d, "pack": self.pack.name, "offset": o, "size": n}
                for d, (o, n) in self.pending.items()]
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        conn.execute(insert(T_INDEX).on_conflict_do_nothing(index_elements=["digest"]), rows)
        self.pending = {}
