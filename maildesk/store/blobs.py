"""Content-addressed store for raw mail and attachments, beside the database.

A blob is written to a temporary file and renamed to its sha256, so a name
never holds half a blob. It must be on disk before any committed row refers
to it. BlobStore.put() makes it so at once (fsync of file and directory):
that is what the SMTP listener does before saying 250. A batch (the ingest
worker, `maildesk ingest`) writes many blobs and makes them durable together
with one syncfs() before its commit: one journal flush instead of three
fsyncs a blob, which is most of the cost of storing mail on common disks.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:]

    def get(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def _write(self, data: bytes, digest: str, sync: bool) -> Path | None:
        """Write unless present; returns the new file's path (None if it existed)."""
        final = self.path(digest)
        if final.exists():
            return None
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            if sync:
                _fsync_dir(self.root)
        tmp = folder / f".{digest[2:]}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        if sync:
            _fsync_dir(folder)
        return final

    def put(self, data: bytes) -> str:
        """Store and make durable now."""
        digest = digest_of(data)
        self._write(data, digest, sync=True)
        return digest

    def batch(self) -> "BlobBatch":
        return BlobBatch(self)


class BlobBatch:
    """Blobs written now and made durable together by sync(), before the commit."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.written: list[Path] = []

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self.store._write(data, digest, sync=False)
        if path is not None:
            self.written.append(path)
        return digest

    def get(self, digest: str) -> bytes:
        return self.store.get(digest)

    def sync(self) -> None:
        if not self.written:
            return
        if _syncfs is not None:
            fd = os.open(self.store.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                if _syncfs(fd) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"syncfs failed: {os.strerror(err)}")
            finally:
                os.close(fd)
        else:
            for path in self.written:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for folder in {p.parent for p in self.written} | {self.store.root}:
                _fsync_dir(folder)
        self.written.clear()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
