"""`maildesk blobs gc`: free the bytes of blobs nothing refers to, while daemons run.

Garbage is a blob no row refers to (references.referenced: inbound mail not deleted,
messages, attachments, outgoing mail): its loose file, its blob_index row, its
blob_data row; and bytes in a pack that no index row points at (a batch that rolled
back, a row dropped here). A pack is compacted (its live blobs copied to a new pack,
the old one removed) when under half of it is live, or with `every` when any of it
is garbage.

A writer stores a blob BEFORE it commits the row naming it (blobs.py), so "nothing
refers to it" may mean "about to be referred to". The invariant: no blob is removed
that a committed row names, nor one whose writer commits a row naming it later. Why it
holds, by kind:

1. Loose files. A writer either writes the file (mtime now) or finds it there and
   freshens it (utime, mtime now) before it commits. gc considers a file only when its
   mtime is older than min-age, and takes it in two steps: it renames the file away
   (atomic: a writer after that finds nothing and writes a copy of its own), then reads
   the renamed file's mtime and the references again. A writer that freshened the file
   did so before the rename, so gc sees the new mtime and puts the file back. What is
   left is a writer that stored (or freshened) the file more than min-age before it
   commits; min-age (default 1 h) bounds that: a store-then-commit takes seconds (the
   SQLite busy timeout, one SMTP transaction). A reader that looks while the file is
   renamed away looks again a moment later (blobs._read).
2. Index rows and blob_data rows commit in the same transaction as the rows that refer
   to them, so one that nothing refers to is not in flight, unless a writer found it and
   is about to use it: that writer holds the row until it commits (FOR SHARE on
   PostgreSQL, from its lookup on, which a batch makes for all its mails' blobs at once
   before it uses any; SQLite's BEGIN IMMEDIATE holds the whole database). A writer that
   does not look (a blob it just composed) stores its own copy and upserts the row at
   finish(): gc took the row before (the writer inserts it again) or finds it locked
   after. gc locks the rows it
   would delete (FOR UPDATE SKIP LOCKED: a row a writer holds is in use, left for the
   next run) and only then, in a new statement that sees what committed before, reads
   the references: a writer committed before (its row is seen) or, after gc, finds no
   row and stores the blob again. No grace period is needed.
3. Packs. A process holds an flock on each pack it may append to, from before the pack
   has its name until it closes it (blobs.Pack; a pid in the name is no proof: pids are
   reused). gc takes the lock without waiting; a pack it cannot lock is live and is
   skipped. Holding it, gc copies the blobs index rows point at (each checked against its
   name: a pack with a damaged one is left as it is, for `blobs verify` to report) into a
   pack of its own, fsyncs it and its folder, moves the rows in one transaction (each only
   if it still points where it did), and removes the old pack once no row points into
   it. A reader that looked up the old place just before finds the pack gone and looks
   up again with a fresh connection (blobs._read). Packs younger than min-age are left
   alone too: a process of an older maildesk, which did not lock its packs, may still
   append to one.

One gc at a time works on a node's files (an flock on blobs/gc.lock). purge() is for
erasing: the bytes of given blobs gone now, whatever their age, once nothing refers to
them (a blob_data row deleted on PostgreSQL keeps its bytes in the table's pages until
VACUUM).
"""
from __future__ import annotations

import fcntl
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, bindparam, func, select, update

from ..errors import MaildeskError
from .blobs import T_INDEX, BlobStore, FileBlobs, Pack, digest_of, fsync_dir, held_path
from .references import chunks, referenced
from .tables import T_BLOB_DATA
from .verify import sources

MIN_AGE = 3600.0      # seconds
THRESHOLD = 0.5       # a pack less live than this is compacted
CHUNK = 500           # digests a statement; loose files held at once
LOCK = "gc.lock"


class GcBusy(MaildeskError):
    """Another gc works on these files."""


@dataclass
class Freed:
    dry_run: bool = False
    loose: int = 0            # loose files removed
    loose_bytes: int = 0
    rows: int = 0             # blob_index and blob_data rows of blobs nothing refers to
    row_bytes: int = 0        # of blob_data rows (an index row's bytes go with its pack)
    packs_compacted: int = 0
    packs_removed: int = 0    # with nothing live in them
    pack_bytes: int = 0       # freed in packs: their size less what was copied
    live: int = 0             # packs skipped: a process appends to them
    young: int = 0            # loose files and packs spared: younger than min-age
    damaged: list[str] = field(default_factory=list)   # packs left: a blob in them is bad
    left: list[str] = field(default_factory=list)      # purge: digests whose bytes remain
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return self.loose_bytes + self.row_bytes + self.pack_bytes

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "loose": self.loose, "rows": self.rows,
                "packs_compacted": self.packs_compacted, "packs_removed": self.packs_removed,
                "bytes": self.bytes, "live_packs": self.live, "young": self.young,
                "damaged_packs": self.damaged, "seconds": round(self.seconds, 3)}


def to_scan(store: BlobStore) -> int:
    """Bytes collect() reads or weighs (loose files and packs), for a progress bar."""
    files, _ = sources(store)
    if files is None:
        return 0
    total = sum(_size(p) for p in files.packs.glob("*.pack"))
    return total + sum(_size(p) for _, p in files.loose_files())


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def collect(store: BlobStore, engine: Engine, min_age: float = MIN_AGE, dry_run: bool = False,
            every: bool = False, advance: Callable[[int], None] = lambda n: None) -> Freed:
    """Free what nothing refers to and is older than min_age seconds (module docstring);
    with dry_run, only count it."""
    started = time.time()
    out = Freed(dry_run)
    cutoff = started - min_age
    files, rows = sources(store)
    if rows:
        _drop_rows(engine, T_BLOB_DATA, _all_digests(engine, T_BLOB_DATA), dry_run, out)
    if files is not None:
        with _gc_lock(files, wait=False, dry_run=dry_run):
            if not dry_run:
                _put_back_leftovers(files)
            _loose(files, engine, _old_loose(files, cutoff, out, advance), cutoff, dry_run, out)
            dropped = _drop_rows(engine, T_INDEX, _all_digests(engine, T_INDEX), dry_run, out)
            _packs(files, engine, cutoff, every, dry_run, out, dropped, advance)
    out.seconds = time.time() - started
    return out


def purge(store: BlobStore, engine: Engine, digests: Iterable[str]) -> Freed:
    """The bytes of digests gone now, whatever their age, for those nothing refers to any
    more (an erase deletes its rows first): blob_data rows, loose files, index rows, and
    the packs holding them compacted at once. Freed.left lists the digests whose bytes
    remain: still referred to, or in a pack a process still appends to (purge again when
    it has closed it: a pack fills and closes, and a daemon closes its packs on stop)."""
    started = time.time()
    wanted = sorted(set(digests))
    out = Freed()
    files, rows = sources(store)
    if rows:
        _drop_rows(engine, T_BLOB_DATA, chunks(wanted, CHUNK), False, out)
    held: dict[str, list[str]] = {}          # pack -> the digests of wanted in it
    if files is not None:
        with _gc_lock(files, wait=True, dry_run=False):
            with engine.connect() as conn:
                for chunk in chunks(wanted, CHUNK):
                    for d, p in conn.execute(select(T_INDEX.c.digest, T_INDEX.c.pack)
                                             .where(T_INDEX.c.digest.in_(chunk))):
                        held.setdefault(p, []).append(d)
            _drop_rows(engine, T_INDEX, chunks(wanted, CHUNK), False, out)
            present = [(d, files.loose_path(d)) for d in wanted
                       if os.path.lexists(files.loose_path(d))]
            _loose(files, engine, [(d, p, _size(p)) for d, p in present], started, False, out)
            freed = _packs(files, engine, float("inf"), True, False, out, set(), lambda n: None,
                           only=set(held))
    left: set[str] = set()
    with engine.connect() as conn:
        left |= referenced(conn, wanted)
        for table in (T_INDEX, T_BLOB_DATA):
            for chunk in chunks(wanted, CHUNK):
                left.update(conn.execute(select(table.c.digest)
                                         .where(table.c.digest.in_(chunk))).scalars())
    if files is not None:
        left.update(d for d in wanted if os.path.lexists(files.loose_path(d)))
        left.update(d for p, ds in held.items() if p not in freed
                    and (files.packs / p).exists() for d in ds)
    out.left = sorted(left)
    out.seconds = time.time() - started
    return out


def _all_digests(engine: Engine, table: Table) -> Iterator[list[str]]:
    """Every digest of table, CHUNK at a time, each chunk its own short read."""
    last = ""
    while True:
        with engine.connect() as conn:
            chunk = list(conn.execute(select(table.c.digest).where(table.c.digest > last)
                                      .order_by(table.c.digest).limit(CHUNK)).scalars())
        if not chunk:
            return
        yield chunk
        last = chunk[-1]


@contextmanager
def _gc_lock(files: FileBlobs, wait: bool, dry_run: bool) -> Iterator[None]:
    """The node's files to ourselves; a dry run, which moves nothing, needs no lock (and
    makes no lock file)."""
    if dry_run:
        yield
        return
    with _flocked(files.root, fcntl.LOCK_EX, wait):
        yield


@contextmanager
def kept_from_gc(root: Path) -> Iterator[None]:
    """No gc moves a blob under root until the block ends (a shared flock on gc.lock; gc
    takes it exclusively): for a backup, which must find every blob where its snapshot of
    the database placed it, and would not if a pack were compacted in between. A gc at
    work is waited for."""
    with _flocked(root, fcntl.LOCK_SH, wait=True):
        yield


@contextmanager
def rewriting(root: Path) -> Iterator[None]:
    """No gc and no backup at work on root's files until the block ends (gc.lock taken
    exclusively, waiting for them): for an erasure zeroing a blob's bytes inside a pack,
    which a backup whose snapshot still used the blob would copy as damaged."""
    with _flocked(root, fcntl.LOCK_EX, wait=True):
        yield


@contextmanager
def _flocked(root: Path, mode: int, wait: bool) -> Iterator[None]:
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise GcBusy(f"another `maildesk blobs gc`, or a `maildesk backup`, works on "
                         f"{root}; run it again when that one is done") from None
        yield
    finally:
        os.close(fd)


def _drop_rows(engine: Engine, table: Table, chunks: Iterable[list[str]], dry_run: bool,
               out: Freed) -> set[str]:
    """Delete the rows of table (blob_index, blob_data) whose digest nothing refers to;
    the digests dropped (or, dry, that would be)."""
    dropped: set[str] = set()
    counts_bytes = table is T_BLOB_DATA
    for chunk in chunks:
        with engine.connect() as conn:
            free = sorted(set(chunk) - referenced(conn, chunk))
        if not free:
            continue
        with engine.begin() as conn:
            # locked first, then read: a writer holding a row is using it (module docstring)
            rows = conn.execute(select(table.c.digest, table.c.size)
                                .where(table.c.digest.in_(free))
                                .with_for_update(skip_locked=True)).all()
            used = referenced(conn, [d for d, _ in rows])
            gone = [(d, n) for d, n in rows if d not in used]
            if gone and not dry_run:
                conn.execute(table.delete().where(table.c.digest.in_([d for d, _ in gone])))
        dropped.update(d for d, _ in gone)
        out.rows += len(gone)
        if counts_bytes:
            out.row_bytes += sum(int(n) for _, n in gone)
    return dropped


def _old_loose(files: FileBlobs, cutoff: float, out: Freed,
               advance: Callable[[int], None]) -> Iterator[tuple[str, Path, int]]:
    """Loose files older than cutoff: (digest, path, size). Anything else there (a folder,
    a link) is damage for `blobs verify` to report, not for gc to remove."""
    for digest, path in files.loose_files():
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        advance(st.st_size)
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_mtime >= cutoff:
            out.young += 1
            continue
        yield digest, path, st.st_size


def _loose(files: FileBlobs, engine: Engine, found: Iterable[tuple[str, Path, int]],
           fresh: float, dry_run: bool, out: Freed) -> None:
    """Remove the loose files of found that nothing refers to: renamed away, then checked
    again (references, and an mtime of fresh or later: a writer freshened it), then put
    back or unlinked."""
    batch: list[tuple[str, Path, int]] = []
    for item in found:
        batch.append(item)
        if len(batch) >= CHUNK:
            _loose_batch(engine, batch, fresh, dry_run, out)
            batch = []
    if batch:
        _loose_batch(engine, batch, fresh, dry_run, out)


def _loose_batch(engine: Engine, batch: list[tuple[str, Path, int]], fresh: float,
                 dry_run: bool, out: Freed) -> None:
    with engine.connect() as conn:
        used = referenced(conn, [d for d, _, _ in batch])
    free = [b for b in batch if b[0] not in used]
    if dry_run:
        out.loose += len(free)
        out.loose_bytes += sum(n for _, _, n in free)
        return
    held: list[tuple[str, Path, Path, int]] = []
    for digest, path, size in free:
        trash = held_path(path)
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            continue
        held.append((digest, path, trash, size))
    if not held:
        return
    with engine.connect() as conn:
        used = referenced(conn, [d for d, _, _, _ in held])
    for digest, path, trash, size in held:
        if digest in used or trash.lstat().st_mtime >= fresh:
            _put_back(trash, path)
        else:
            trash.unlink()
            out.loose += 1
            out.loose_bytes += size
    for folder in {p.parent for _, p, _, _ in held}:
        fsync_dir(folder)


def _put_back(trash: Path, path: Path) -> None:
    """A held loose file back at its name, unless a writer has stored a copy there since."""
    try:
        os.link(trash, path)
    except FileExistsError:
        pass
    trash.unlink()


def _put_back_leftovers(files: FileBlobs) -> None:
    """Loose files a gc that stopped half-way (killed) still held: back at their names, to
    be judged again."""
    for folder in files.root.iterdir():
        if len(folder.name) == 2 and folder.is_dir() and not folder.is_symlink():
            for f in folder.glob(".*.gc"):
                _put_back(f, folder / f.name[1:-len(".gc")])


def _packs(files: FileBlobs, engine: Engine, cutoff: float, every: bool, dry_run: bool,
           out: Freed, dropped: set[str], advance: Callable[[int], None],
           only: set[str] | None = None) -> set[str]:
    """Remove or compact the packs no process appends to; the names of those freed."""
    freed: set[str] = set()
    copy = _Output(files)
    try:
        for path in sorted(files.packs.glob("*.pack")):
            if only is not None and path.name not in only:
                continue
            with _locked(path) as fd:
                if fd is None:
                    out.live += 1
                    continue
                size, mtime = os.fstat(fd).st_size, os.fstat(fd).st_mtime
                advance(size)
                if mtime >= cutoff:
                    out.young += 1
                    continue
                if _pack(files, engine, path, fd, size, every, dry_run, out, dropped, copy):
                    freed.add(path.name)
    finally:
        copy.close()
    return freed


@contextmanager
def _locked(path: Path) -> Iterator[int | None]:
    """The pack open and flocked by us (its fd), or None: a process appends to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield None       # gone, or no file: nothing for gc
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


def _pack(files: FileBlobs, engine: Engine, path: Path, fd: int, size: int, every: bool,
          dry_run: bool, out: Freed, dropped: set[str], copy: _Output) -> bool:
    """One locked pack: removed when nothing in it is live, compacted when enough of it is
    garbage. Whether it went."""
    name = path.name
    with engine.connect() as conn:
        rows = [(d, int(o), int(n)) for d, o, n in conn.execute(
            select(T_INDEX.c.digest, T_INDEX.c.offset, T_INDEX.c.size)
            .where(T_INDEX.c.pack == name).order_by(T_INDEX.c.offset))
            if d not in dropped]
    kept = sum(n for _, _, n in rows)
    if rows and (kept >= size or not (every or kept < THRESHOLD * size)):
        return False
    if rows:
        moved = _copy(fd, size, rows, copy, dry_run)
        if moved is None:
            out.damaged.append(name)
            return False
        if moved:
            with engine.begin() as conn:
                # rows a writer holds (it is reusing the blob) stay, and so does the pack,
                # till the next run: waiting for them could deadlock with that writer
                free = set(conn.execute(select(T_INDEX.c.digest).where(T_INDEX.c.pack == name)
                                        .with_for_update(skip_locked=True)).scalars())
                moved = [m for m in moved if m["b_digest"] in free]
                if moved:
                    conn.execute(update(T_INDEX).where(
                        T_INDEX.c.digest == bindparam("b_digest"), T_INDEX.c.pack == name,
                        T_INDEX.c.offset == bindparam("b_old"))
                        .values(pack=bindparam("b_pack"), offset=bindparam("b_new")), moved)
    if not dry_run:
        with engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(T_INDEX)
                            .where(T_INDEX.c.pack == name)).scalar_one():
                return False      # a row held by a writer: its bytes stay here for now
        path.unlink()
        fsync_dir(files.packs)
    if rows:
        out.packs_compacted += 1
    else:
        out.packs_removed += 1
    out.pack_bytes += size - kept
    return True


def _copy(fd: int, size: int, rows: list[tuple[str, int, int]], copy: _Output,
          dry_run: bool) -> list[dict[str, Any]] | None:
    """The rows' blobs checked, then appended to gc's pack (fsynced): the index rows' new
    places. None when one is damaged or cut short (nothing copied)."""
    if size == 0:
        return None
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        try:
            for digest, offset, n in rows:
                if offset < 0 or offset + n > size or digest_of(view[offset:offset + n]) != digest:
                    return None
            if dry_run:
                return []
            moved = []
            for digest, offset, n in rows:
                pack, new = copy.append(view[offset:offset + n])
                moved.append({"b_digest": digest, "b_old": offset, "b_pack": pack,
                              "b_new": new})
            copy.sync()
            return moved
        finally:
            view.release()


class _Output:
    """The packs gc copies live blobs into: locked like any writer's, a new one when full,
    each fsynced before it closes."""

    def __init__(self, files: FileBlobs) -> None:
        self.files = files
        self.pack: Pack | None = None

    def append(self, data: memoryview) -> tuple[str, int]:
        if self.pack is None or self.pack.size >= self.files.pack_limit:
            self.close()
            self.pack = Pack(self.files.packs)
        return self.pack.name, self.pack.append(bytes(data))

    def sync(self) -> None:
        if self.pack is not None:
            self.pack.sync()

    def close(self) -> None:
        if self.pack is not None:
            self.pack.sync()
            self.pack.file.close()
            self.pack = None
