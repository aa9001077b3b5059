"""Mail from files for `maildesk ingest`: .eml files, mbox files, maildir folders, stdin.

Each source yields (origin, raw bytes) so that a message quarantined later
can be traced back to the file (and mbox position) it came from.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_FROM_QUOTED = re.compile(rb"(?m)^>(>*From )")


class SourceError(Exception):
    """A path that is not mail we can read; one line for the operator."""


def is_mbox(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(5) == b"From "


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def count(path: Path) -> int:
    """How many messages a path holds, for the progress bar (cheap: no parsing)."""
    if str(path) == "-":
        return 1
    if is_maildir(path):
        return sum(1 for sub in ("new", "cur") for p in (path / sub).iterdir() if p.is_file())
    if path.is_file() and is_mbox(path):
        n = 0
        with path.open("rb") as f:
            prev_blank = True
            for line in f:
                if prev_blank and line.startswith(b"From "):
                    n += 1
                prev_blank = line in (b"\n", b"\r\n")
        return n
    return 1


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    """Messages of an mbox, streamed: each starts at a "From " line after an empty line."""
    def message(lines: list[bytes]) -> bytes:
        if lines and lines[-1] in (b"\n", b"\r\n"):
            lines.pop()                              # the separating empty line
        # mboxrd/mboxo quote body lines that start with "From ": undo one level
        return _FROM_QUOTED.sub(rb"\1", b"".join(lines))

    n, lines, blank = 0, None, True
    with path.open("rb") as f:
        for line in f:
            if blank and line.startswith(b"From "):
                if lines is not None:
                    n += 1
                    yield f"{path}#{n}", message(lines)
                lines = []
            elif lines is not None:
                lines.append(line)
            blank = line in (b"\n", b"\r\n")
    if lines is not None:
        yield f"{path}#{n + 1}", message(lines)


def _maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    files = sorted(p for sub in ("new", "cur") for p in (path / sub).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    # maildir names start with the delivery time: sorted is arrival order
    for f in sorted(files, key=lambda p: p.name):
        yield str(f), f.read_bytes()


def read(path: Path, stdin: BinaryIO | None = None) -> Iterator[tuple[str, bytes]]:
    if str(path) == "-":
        data = (stdin or sys.stdin.buffer).read()
        if not data.strip():
            raise SourceError("no message on standard input")
        yield "stdin", data
        return
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_maildir(path):
            raise SourceError(f"{path}: a folder, but not a maildir (no cur/ and new/ inside)")
        yield from _maildir(path)
        return
    try:
        if is_mbox(path):
            yield from _mbox(path)
        else:
            yield str(path), path.read_bytes()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror}") from None
