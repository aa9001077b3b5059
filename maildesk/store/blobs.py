"""Content-addressed store for raw mail and attachments.

Blobs are named by their sha256. BlobStore is what the rest of the desk uses:
put() and get(), and batch() for the blobs of one transaction. It has two
backends (`storage.backend`): FileBlobs here, files beside the database for a
desk on one host, and DatabaseBlobs (blob_rows.py), rows of blob_data that
every node of a desk on one PostgreSQL reads (issue 18).

FileBlobs keeps a blob in one of two forms, as in git:

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
unreferenced and harmless until `maildesk blobs gc` (gc.py) compacts them out.
Each thread of each process appends to its own pack, so no two writers share a
file, and it holds an flock on the pack for as long as it may append: gc skips a
pack it cannot lock (a process id in the name says nothing once the process is
gone and the id reused). gc may move a packed blob to another pack, or take a
loose file away for a moment, between a reader's lookup and its read: a read that
finds nothing there looks once more, with a fresh connection (_read). A writer
that finds its blob stored already freshens it (the loose file's mtime, or a
shared lock on its index row until commit, taken when a batch looks its blobs up
ahead, expect()), which is what gc's grace period and locks look for; gc.py says why
that is enough. A blob just composed (put(fresh=True): an outgoing mail) is not looked
up: its own copy is written and its index row upserted at finish(), which locks it.

The address is checked on every read: bytes whose sha256 is not their name
are never returned (BlobDamaged names the blob, where it lives and what refers
to it). A pack is a file object owned by the Pack, and a batch holds the
Pack it appends to: a new pack replaces a full one only for batches begun
after, and the old file closes when its last batch lets go of it, so no batch
can write through a closed or reused descriptor (issue 13: a second batch in the
same transaction rolled the pack over and closed the first batch's fd).
"""
from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import stat
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select

from ..errors import MaildeskError
from .db import upsert
from .intake_tables import T_INDEX

PACK_LIMIT = 64 * 1024**2
_LOOKUP = select(T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size) \
    .where(T_INDEX.c.digest == bindparam("digest"))
# a writer that uses a packed blob it found holds its row until commit (PostgreSQL; SQLite's
# BEGIN IMMEDIATE holds the whole database), so gc cannot drop it in between
_LOOKUP_KEEP = _LOOKUP.with_for_update(read=True)
# the same for many blobs at once: a batch asks once for what its puts will ask one by one
_LOOKUP_MANY = select(T_INDEX.c.digest, T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size) \
    .where(T_INDEX.c.digest.in_(bindparam("digests", expanding=True))).with_for_update(read=True)
LOOKUP_CHUNK = 500     # digests a statement
NOT_LOOKED_UP = object()        # a digest expect() was not told of: put() looks it up itself
HELD_PAUSE, HELD_TRIES = 0.05, 40     # a read waits up to 2 s while gc holds a loose file
HEX = frozenset("0123456789abcdef")
# the digest of a row whose blob was removed on purpose (store/shred.py): no sha256, so
# nothing looks for it, and reading it is BlobRemoved
NO_BLOB = ""
# who removes blobs on purpose
REMOVED_BY = "retention, a requester's erasure or `maildesk quarantine delete`"


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def is_digest(name: str) -> bool:
    return len(name) == 64 and HEX.issuperset(name)


def fsync_dir(path: Path) -> None:
    """A directory's entries (a new or renamed file) on disk, not only in its cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobError(OSError, MaildeskError):
    """A blob that cannot be served as the bytes that arrived."""

    def __init__(self, digest: str, problem: str, where: str) -> None:
        super().__init__(f"blob {digest} {problem} ({where})")
        self.digest, self.problem, self.where = digest, problem, where


class BlobMissing(BlobError, FileNotFoundError):
    """Nothing was stored under this name (no loose file, index row or blob_data row)."""


class BlobRemoved(BlobMissing):
    """The row's blob was removed on purpose (its digest is NO_BLOB): no damage, nothing
    to repair; a reader says so and goes on."""

    def __init__(self) -> None:
        super().__init__(NO_BLOB, f"was removed ({REMOVED_BY})", "removed")

    def __str__(self) -> str:
        return f"its stored copy was removed ({REMOVED_BY})"


class BlobDamaged(BlobError):
    """Stored, but what is there is not what was stored."""


def read_file(path: Path, offset: int = 0, size: int = -1) -> bytes:
    """A regular file's bytes (or a slice of them). Anything else at the path (a folder, a
    pipe that would block, a dangling link, no permission) is a BlobError, not a hang or a
    traceback."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise BlobError("", "is gone", str(path)) from None
    except OSError as e:
        raise BlobError("", f"cannot be read ({e.strerror or e})", str(path)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BlobError("", "is not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            f.seek(offset)
            return f.read(size)
    except OSError as e:
        if isinstance(e, BlobError):
            raise
        raise BlobError("", f"cannot be read ({e.strerror or e})", str(path)) from None
    finally:
        os.close(fd)


class BlobStore(ABC):
    """Blobs by their sha256, whatever keeps them. Every read is checked against the name:
    get() never returns other bytes, and its BlobError names the blob, where it is and the
    tickets that use it."""

    engine: Engine

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store data, durable when this returns. A copy already there that is not these
        bytes is replaced."""

    @abstractmethod
    def begin_with(self, data: bytes) -> AbstractContextManager[tuple[Connection, str]]:
        """A transaction (engine.begin()) with data stored for it: (conn, digest). The
        bytes are durable once it commits, so that one commit makes a mail and its row
        safe (the SMTP listener's 250 comes after it)."""

    @abstractmethod
    def batch(self, conn: Connection) -> BlobBatch:
        """Blobs for the transaction on conn: durable and findable once it commits."""

    @abstractmethod
    def locate(self, digest: str, conn: Connection | None = None) -> str:
        """Where a blob lives, for people ("missing" when nowhere)."""

    @abstractmethod
    def forget(self, digest: str, conn: Connection) -> None:
        """Remove a blob nothing refers to any more."""

    @abstractmethod
    def _read(self, digest: str, conn: Connection | None) -> tuple[bytes, str]:
        """The stored bytes and where they are, for people; unchecked, but never short.
        BlobMissing when nothing is stored under digest, BlobDamaged when what is stored
        cannot be read whole."""

    @abstractmethod
    def close(self) -> None:
        """Let go of open files (when the desk shuts down)."""

    def get(self, digest: str, conn: Connection | None = None) -> bytes:
        """The bytes stored under digest, checked against it; BlobError names the blob,
        where it is and the tickets that refer to it; BlobRemoved for NO_BLOB."""
        if digest == NO_BLOB:
            raise BlobRemoved()
        try:
            data, where = self._read(digest, conn)
            if digest_of(data) != digest:
                raise BlobDamaged(digest, "holds other bytes than were stored", where)
        except BlobError as e:
            raise type(e)(digest, e.problem + self._used_by(digest, conn), e.where) from None
        return data

    def _used_by(self, digest: str, conn: Connection | None) -> str:
        if conn is None:
            with self.engine.connect() as c:
                return self._used_by(digest, c)
        from .references import describe, referrers  # the ORM's tables: for an error
        uses = referrers(conn, [digest]).get(digest, [])
        return f"; used by {describe(uses)}" if uses else ""

    def problem(self, digest: str, conn: Connection | None = None) -> str | None:
        """Why a blob cannot be served, in a few words; None when it is intact."""
        if not is_digest(digest):
            return "removed"
        try:
            data, _ = self._read(digest, conn)
        except BlobMissing:
            return "missing"
        except BlobError as e:
            return f"damaged: {e.problem}"
        return None if digest_of(data) == digest else "damaged: holds other bytes"


class BlobBatch(ABC):
    """The blobs of one transaction (conn). A blob already stored is read and checked before
    it is trusted, and stored again when its copy is damaged: so taking the same mail again
    mends what was lost (`maildesk ingest --repair` does that on purpose, for the mail a
    desk already has)."""

    store: BlobStore
    conn: Connection
    repaired: int                  # copies found damaged and replaced

    def get(self, digest: str) -> bytes:
        """A blob stored before this batch, read in its transaction (BlobError as get())."""
        return self.store.get(digest, self.conn)

    @property
    @abstractmethod
    def pending(self) -> Mapping[str, object]:
        """The digests put() will store at finish(): neither intact nor stored before."""

    @abstractmethod
    def put(self, data: bytes, fresh: bool = False) -> str:
        """Store data with the transaction; its digest. fresh: bytes just composed (an
        outgoing mail, its Message-ID new), all but never stored before: not looked up, and
        a stored copy found at finish() is replaced by this one, which holds it against gc
        as a lookup would (a round trip saved a mail on PostgreSQL)."""

    @abstractmethod
    def expect(self, digests: Iterable[str]) -> None:
        """Look up now, in one statement per few hundred, the digests put() will be asked
        to store (a batch's raw mails and attachments), each held against gc from here
        until commit as put()'s own lookup would hold it: on PostgreSQL each lookup is a
        round trip to the server, and a batch made one or two a mail."""

    @abstractmethod
    def finish(self) -> None:
        """Make the pending blobs durable and findable in the batch's transaction: before
        it commits."""


class Pack:
    """The pack file one thread appends to; its offsets are right by construction: the file
    is new (O_EXCL), only this object writes it, and a failed write re-reads the end. It is
    locked (flock) from before it has its name until it closes, so gc never sees it
    unlocked while it may grow."""

    def __init__(self, folder: Path) -> None:
        self.name = f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.pack"
        new = folder / f".{self.name}.new"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(new, folder / self.name)
        except BaseException:
            os.close(fd)
            new.unlink(missing_ok=True)
            raise
        self.file = os.fdopen(fd, "ab", buffering=0)
        self.size = 0
        self.users = 0          # BlobBatches that may still append to it
        self.retired = False    # full: no new batch gets it; closed when its last one goes
        fsync_dir(folder)

    def append(self, data: bytes) -> int:
        offset = self.size
        view = memoryview(data)
        try:
            while view:
                view = view[self.file.write(view):]
        except BaseException:
            # a short write (a full disk) leaves junk nothing indexes; the next blob
            # starts at the real end
            self.size = os.fstat(self.file.fileno()).st_size
            raise
        self.size += len(data)
        return offset

    def sync(self) -> None:
        os.fsync(self.file.fileno())


class _Moved(Exception):
    """A blob not where its lookup said, perhaps moved by gc: error, unless another look
    finds it; held: gc has its loose file in hand (wait a moment), else its pack is gone
    (look up again at once)."""

    def __init__(self, error: BlobError, held: bool) -> None:
        super().__init__(str(error))
        self.error, self.held = error, held


def held_path(loose: Path) -> Path:
    """Where gc keeps a loose file for the moment it checks it once more (gc.py)."""
    return loose.with_name(f".{loose.name}.gc")


class FileBlobs(BlobStore):
    """Blobs as loose files and packs under root (storage.backend: filesystem)."""

    def __init__(self, root: Path, engine: Engine, pack_limit: int = PACK_LIMIT) -> None:
        self.root = root
        self.engine = engine
        self.pack_limit = pack_limit
        self.packs = root / "packs"
        self.packs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._local = threading.local()
        self._open: list[Pack] = []      # every thread's pack, for close()
        self._lock = threading.RLock()     # a batch freed by GC may release inside batch()

    def loose_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        """Store as a loose blob, durable when this returns. A copy already there is read
        and checked first, and replaced when it is not these bytes."""
        digest = digest_of(data)
        final = self.loose_path(digest)
        if self.freshen(final) and self._loose_problem(final, digest) is None:
            return digest
        self._write_loose(final, data)
        return digest

    @contextmanager
    def begin_with(self, data: bytes) -> Iterator[tuple[Connection, str]]:
        """The file first: written and fsynced before the transaction takes the database's
        write lock (SQLite's BEGIN IMMEDIATE), not while it holds it."""
        digest = self.put(data)
        with self.engine.begin() as conn:
            yield conn, digest

    @staticmethod
    def freshen(path: Path) -> bool:
        """Set a loose file's mtime to now, before a new reference to it commits: gc leaves a
        file younger than its grace period. False when nothing is there (gc took it, or it
        never was): then it is written again."""
        try:
            os.utime(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:
            return os.path.lexists(path)    # not ours to touch: its check says what it is
        return True

    def _loose_problem(self, path: Path, digest: str) -> str | None:
        """Why the loose file for digest cannot be served; None when it is intact."""
        try:
            data = read_file(path)
        except BlobError as e:
            return e.problem
        return None if digest_of(data) == digest else "holds other bytes"

    def _write_loose(self, final: Path, data: bytes) -> None:
        """Write (or replace) a loose blob; whatever was at its name that is not a file (a
        folder, a link) is moved aside, not deleted: it may be someone's."""
        if os.path.lexists(final) and (final.is_symlink() or not final.is_file()):
            os.replace(final, final.with_name(f"{final.name}.damaged-{time.time_ns()}"))
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.root)
        tmp = folder / f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(folder)

    def _lookup(self, digest: str, conn: Connection | None, query: Any = _LOOKUP) -> Any:
        if conn is not None:
            return conn.execute(query, {"digest": digest}).first()
        with self.engine.connect() as c:
            return c.execute(query, {"digest": digest}).first()

    def _read(self, digest: str, conn: Connection | None) -> tuple[bytes, str]:
        """The stored bytes and where they are, for people; unchecked, but never short.
        gc may move a blob between a lookup and a read: a pack it compacted is gone (the
        blob's row points elsewhere once it is), a loose file is in its hands for a moment
        (renamed to held_path). Such a read looks again, with a fresh connection (conn's
        snapshot may predate the move), and waits while gc holds the file."""
        fresh: Connection | None = conn
        for _ in range(HELD_TRIES):
            try:
                return self._read_once(digest, fresh)
            except _Moved as e:
                if not e.held:
                    try:
                        return self._read_once(digest, None)
                    except _Moved as again:
                        raise again.error from None
                error = e.error
            fresh = None
            time.sleep(HELD_PAUSE)
        raise error

    def _read_once(self, digest: str, conn: Connection | None) -> tuple[bytes, str]:
        loose = self.loose_path(digest)
        if os.path.lexists(loose):
            try:
                return read_file(loose), str(loose)
            except BlobError as e:
                raise BlobDamaged(digest, e.problem, str(loose)) from None
        row = self._lookup(digest, conn)
        if row is None:
            missing = BlobMissing(digest, "is neither loose nor in a pack", "missing")
            if os.path.lexists(held_path(loose)) or os.path.lexists(loose):
                raise _Moved(missing, held=True)
            raise missing
        pack, offset, size = row
        where = f"{self.packs / pack}@{offset}+{size}"
        if offset < 0 or size < 0:
            raise BlobDamaged(digest, "has an index row that makes no sense", where)
        try:
            data = read_file(self.packs / pack, offset, size)
        except BlobError as e:
            error = BlobDamaged(digest, f"is in a pack that {e.problem}", where)
            if not os.path.lexists(self.packs / pack):
                raise _Moved(error, held=False) from None
            raise error from None
        if len(data) != size:
            raise BlobDamaged(digest, f"is cut short: the pack ends {size - len(data)} bytes "
                                      "before the blob does", where)
        return data, where

    def locate(self, digest: str, conn: Connection | None = None) -> str:
        """A path, or pack@offset+size; "removed" for NO_BLOB."""
        if not is_digest(digest):
            return "removed"
        loose = self.loose_path(digest)
        if loose.exists():
            return str(loose)
        row = self._lookup(digest, conn)
        return f"{self.packs / row[0]}@{row[1]}+{row[2]}" if row else "missing"

    def loose_files(self) -> Iterator[tuple[str, Path]]:
        """Everything named like a loose blob, file or not (a folder there is damage too)."""
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) == 2 and folder.is_dir() and not folder.is_symlink():
                for f in folder.iterdir():
                    digest = folder.name + f.name
                    if is_digest(digest):
                        yield digest, f

    def packed(self, rows: Iterable[tuple[str, str, int, int]]
               ) -> Iterator[tuple[str, str, memoryview | None, str | None]]:
        """Index rows (digest, pack, offset, size), ordered by pack and offset, read with
        each pack mapped once: (digest, where, bytes, None), or (digest, where, None, why
        it cannot be read). The bytes are unchecked, and valid until the next item."""
        name: str | None = None
        view: memoryview | None = None
        mapped: mmap.mmap | None = None
        gone = False
        try:
            for digest, pack, offset, size in rows:
                if pack != name:
                    if mapped is not None and view is not None:
                        view.release()
                        mapped.close()
                    name, view, mapped, gone = pack, None, None, False
                    try:
                        with open(self.packs / pack, "rb") as f:
                            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                                raise IsADirectoryError(pack)
                            if os.fstat(f.fileno()).st_size:
                                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                                view = memoryview(mapped)
                    except OSError:
                        gone = True
                where = f"{self.packs / pack}@{offset}+{size}"
                end = len(view) if view is not None else 0
                if gone:
                    yield digest, where, None, "its pack is gone or cannot be read"
                elif offset < 0 or size < 0:
                    yield digest, where, None, "its index row makes no sense"
                elif offset + size > end:
                    yield digest, where, None, (f"the pack ends {offset + size - end} bytes "
                                                "before the blob does")
                else:
                    part = view[offset:offset + size] if view is not None else memoryview(b"")
                    try:
                        yield digest, where, part, None
                    finally:
                        part.release()      # else the pack's map cannot close
        finally:
            if mapped is not None and view is not None:
                view.release()
                mapped.close()

    def forget(self, digest: str, conn: Connection) -> None:
        """Remove a blob nothing refers to any more: the loose file goes at once, a packed
        blob's index row goes (its bytes stay in the pack until packs are compacted)."""
        self.loose_path(digest).unlink(missing_ok=True)
        conn.execute(T_INDEX.delete().where(T_INDEX.c.digest == digest))

    def batch(self, conn: Connection) -> FileBatch:
        """Blobs appended to this thread's pack, indexed in conn's transaction."""
        pack = getattr(self._local, "pack", None)
        if pack is None or pack.size >= self.pack_limit:
            new = self._local.pack = Pack(self.packs)
            with self._lock:
                self._open.append(new)
                if pack is not None:    # full: closed once no batch of this thread uses it
                    pack.retired = True
                    self._close_if_unused(pack)
            pack = new
        batch = FileBatch(self, pack, conn)
        with self._lock:
            pack.users += 1
        weakref.finalize(batch, self._release, pack)
        return batch

    def _release(self, pack: Pack) -> None:
        """A batch is gone: its pack closes if it is full and nobody else appends to it."""
        with self._lock:
            pack.users -= 1
            self._close_if_unused(pack)

    def _close_if_unused(self, pack: Pack) -> None:
        if pack.retired and pack.users <= 0 and pack in self._open:
            pack.file.close()
            self._open.remove(pack)

    def close(self) -> None:
        """Close the pack files (when the desk shuts down; a batch after this opens one)."""
        with self._lock:
            for pack in self._open:
                pack.file.close()
            self._open.clear()
        self._local = threading.local()


class FileBatch(BlobBatch):
    """Blobs appended to one pack; durable and indexed by finish()."""

    store: FileBlobs

    def __init__(self, store: FileBlobs, pack: Pack, conn: Connection) -> None:
        self.store = store
        self.pack = pack
        self.conn = conn
        self._pending: dict[str, tuple[int, int]] = {}  # digest -> (offset, size)
        self.mended: set[str] = set()                   # stored again: their index row replaced
        self.unasked: set[str] = set()                  # fresh: their row, if any, replaced
        self._known: dict[str, Any] = {}                # digest -> its index row, or None
        self.repaired = 0

    @property
    def pending(self) -> Mapping[str, tuple[int, int]]:
        return self._pending

    def expect(self, digests: Iterable[str]) -> None:
        wanted = [d for d in dict.fromkeys(digests) if d not in self._known]
        for k in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[k:k + LOOKUP_CHUNK]
            found = {r.digest: r for r in self.conn.execute(_LOOKUP_MANY, {"digests": chunk})}
            self._known.update((d, found.get(d)) for d in chunk)

    def put(self, data: bytes, fresh: bool = False) -> str:
        digest = digest_of(data)
        if digest in self._pending:
            return digest
        loose = self.store.loose_path(digest)
        if self.store.freshen(loose):
            if self.store._loose_problem(loose, digest) is None:
                return digest                             # stored once, whatever the route
            self.repaired += 1
            self.store._write_loose(loose, data)
            return digest
        if fresh:
            self.unasked.add(digest)
        elif self._row(digest) is not None:
            if self.store.problem(digest, self.conn) is None:
                return digest
            self.repaired += 1
            self.mended.add(digest)
        self._pending[digest] = (self.pack.append(data), len(data))
        return digest

    def _row(self, digest: str) -> Any:
        """digest's index row (held till commit), as expect() found it or asked now."""
        row = self._known.get(digest, NOT_LOOKED_UP)
        return self.store._lookup(digest, self.conn, _LOOKUP_KEEP) if row is NOT_LOOKED_UP else row

    def finish(self) -> None:
        """fsync the pack and index its new blobs in the batch's transaction."""
        if not self._pending:
            return
        conn = self.conn
        self.pack.sync()
        rows = [{"digest": d, "pack": self.pack.name, "offset": o, "size": n}
                for d, (o, n) in self._pending.items()]
        replaced = self.mended | self.unasked
        new = [r for r in rows if r["digest"] not in replaced]
        if new:
            conn.execute(upsert(conn, T_INDEX).on_conflict_do_nothing(index_elements=["digest"]),
                         new)
        mended = [r for r in rows if r["digest"] in replaced]
        if mended:
            stmt = upsert(conn, T_INDEX)
            conn.execute(stmt.on_conflict_do_update(index_elements=["digest"], set_={
                "pack": stmt.excluded.pack, "offset": stmt.excluded.offset,
                "size": stmt.excluded.size}), mended)
        for d in self._pending:     # found by a lookup from now on
            self._known.pop(d, None)
        self._pending, self.mended, self.unasked = {}, set(), set()

