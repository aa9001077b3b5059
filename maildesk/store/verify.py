"""`maildesk blobs verify`: read every stored blob and check it against its name.

Like `git fsck`: a content address means nothing unless it is checked. Loose
files are hashed one by one; packs are mapped and hashed in offset order, so a
desk's blobs are read once, front to back. Digests that rows refer to but no
blob holds are missing. Each bad blob is reported with what refers to it.
"""
from __future__ import annotations

import itertools
import mmap
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from .blobs import T_INDEX, BlobError, BlobStore, digest_of, is_digest, read_file
from .references import Use, digest_columns, referrers


@dataclass
class Bad:
    digest: str
    problem: str          # "missing", or "damaged: why"
    where: str            # a path, pack@offset+size, or "missing"
    uses: list[Use] = field(default_factory=list)


@dataclass
class Verified:
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
        return {"checked": {"loose": self.loose, "packed": self.packed, "bytes": self.bytes},
                "seconds": round(self.seconds, 3), "damaged": self.count("damaged"),
                "missing": self.count("missing"),
                "unreferenced": len(self.bad) - len(self.used), "tickets": self.tickets,
                "bad": [{"digest": b.digest, "problem": b.problem, "where": b.where,
                         "used_by": b.uses} for b in self.bad]}

    def count(self, kind: str) -> int:
        """Bad blobs that something uses, of one kind (damaged, missing)."""
        return sum(1 for b in self.used if b.problem.startswith(kind))


def _loose_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Everything named like a loose blob, file or not (a folder there is damage too)."""
    for folder in sorted(root.iterdir()):
        if len(folder.name) == 2 and folder.is_dir() and not folder.is_symlink():
            for f in folder.iterdir():
                digest = folder.name + f.name
                if is_digest(digest):
                    yield digest, f


def total_bytes(store: BlobStore, conn: Connection) -> int:
    """What verify() will read, for a progress bar."""
    packed = conn.execute(select(func.coalesce(func.sum(T_INDEX.c.size), 0))).scalar_one()
    loose = sum(f.lstat().st_size for _, f in _loose_files(store.root))
    return int(packed) + loose


def verify(store: BlobStore, conn: Connection,
           advance: Callable[[int], None] = lambda n: None) -> Verified:
    """Every blob, loose and packed, read and hashed; advance(n) after n bytes."""
    started = time.perf_counter()
    out = Verified()
    loose_ok: set[str] = set()
    for digest, path in _loose_files(store.root):
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
    out.bad.extend(_packs(store, conn, loose_ok, out, advance))
    out.bad.extend(_missing(store, conn, loose_ok))
    uses = referrers(conn, [b.digest for b in out.bad])
    for b in out.bad:
        b.uses = uses.get(b.digest, [])
    out.seconds = time.perf_counter() - started
    return out


def _packs(store: BlobStore, conn: Connection, loose_ok: set[str], out: Verified,
           advance: Callable[[int], None]) -> Iterator[Bad]:
    """Each pack mapped once and its blobs hashed in offset order. A blob whose loose copy
    is intact is served from that copy, so its packed one is not held against it."""
    rows = conn.execution_options(yield_per=5000).execute(
        select(T_INDEX.c.digest, T_INDEX.c.pack, T_INDEX.c.offset, T_INDEX.c.size)
        .order_by(T_INDEX.c.pack, T_INDEX.c.offset))
    name: str | None = None
    present = False
    view: memoryview | None = None
    mapped: mmap.mmap | None = None
    try:
        for digest, pack, offset, size in rows:
            if pack != name:
                if mapped is not None:
                    assert view is not None
                    view.release()
                    mapped.close()
                name, view, mapped, present = pack, None, None, True
                try:
                    with open(store.packs / pack, "rb") as f:
                        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                            raise IsADirectoryError(pack)
                        if os.fstat(f.fileno()).st_size:
                            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                            view = memoryview(mapped)
                except OSError:
                    present = False
            out.packed += 1
            where = f"{store.packs / pack}@{offset}+{size}"
            if digest in loose_ok:
                continue
            if not present:
                yield Bad(digest, "damaged: its pack is gone or cannot be read", where)
                continue
            if offset < 0 or size < 0:
                yield Bad(digest, "damaged: its index row makes no sense", where)
                continue
            end = len(view) if view is not None else 0
            if offset + size > end:
                yield Bad(digest, f"damaged: the pack ends {offset + size - end} bytes "
                                  "before the blob does", where)
                continue
            out.bytes += size
            advance(size)
            if digest_of(view[offset:offset + size] if view is not None else b"") != digest:
                yield Bad(digest, "damaged: holds other bytes", where)
    finally:
        if mapped is not None:
            assert view is not None
            view.release()
            mapped.close()


def _missing(store: BlobStore, conn: Connection, loose_ok: set[str]) -> Iterator[Bad]:
    """Digests that rows name but neither the index nor a loose file holds."""
    seen: set[str] = set()
    for kind, column in digest_columns().items():
        table = column.table
        query = select(column).distinct().select_from(
            table.outerjoin(T_INDEX, T_INDEX.c.digest == column)).where(T_INDEX.c.digest.is_(None))
        if kind == "inbound":
            query = query.where(table.c.state != "deleted")
        for (digest,) in conn.execute(query):
            if digest in seen or digest in loose_ok or not is_digest(digest):
                continue
            seen.add(digest)
            if not os.path.lexists(store.loose_path(digest)):   # damaged loose: above
                yield Bad(digest, "missing", "missing")


def sample(store: BlobStore, conn: Connection, n: int) -> tuple[int, list[Bad]]:
    """About n blobs from a random place in the index and n loose ones from a random folder,
    read and checked: what the hourly blob_sample job looks at. Returns (checked, bad)."""
    start = secrets.token_hex(32)
    query = select(T_INDEX.c.digest).order_by(T_INDEX.c.digest).limit(n)
    digests = list(conn.execute(query.where(T_INDEX.c.digest >= start)).scalars())
    digests += conn.execute(query.where(T_INDEX.c.digest < start)
                            .limit(n - len(digests))).scalars().all()
    folder = store.root / start[:2]
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
