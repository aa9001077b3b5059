"""Mail from files for `maildesk ingest`: .eml files, mbox files, maildir folders, stdin.

Each source yields (origin, raw bytes) so that a message quarantined later
can be traced back to the file (and mbox position) it came from.
"""
from __future__ import annotations

import mmap
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import MaildeskError

_FROM_QUOTED = re.compile(rb"(?m)^>(>*From )")


class SourceError(MaildeskError):
    """A path that is not mail we can read; one line for the operator."""


def is_mbox(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(8).removeprefix(b"\xef\xbb\xbf").startswith(b"From ")


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def one_message(path: Path) -> bool:
    """A file named as one message (.eml) is one, even when it starts with a From_ line."""
    return path.suffix.lower() in (".eml", ".msg")


def count(path: Path) -> int:
    """How many messages a path holds, for the progress bar (no MIME parsing)."""
    if str(path) == "-":
        return 1
    if is_maildir(path):
        return sum(1 for sub in ("new", "cur") for p in (path / sub).iterdir() if p.is_file())
    if path.is_file() and is_mbox(path) and not one_message(path):
        return sum(1 for _ in _mbox(path))
    return 1


# A From_ line: "From " sender date, at the top or after an empty line. git format-patch
# writes "From <sha> Mon Sep 17 00:00:00 2001" above each patch, and such a patch pasted
# into a mail must not split it.
# "From sender date" (a time in the date), or "From sender" alone (Thunderbird writes
# "From -"); "From Russia with love" in a body is neither
_FROM_LINE = re.compile(rb"From \S+(?:[ \t]*|[ \t][^\n]*\b\d{1,2}:\d\d[^\n]*)\r?\n")
_TOP_LINE = re.compile(rb"From [^\n]*(?:\n|\Z)")
_STRICT_FROM = re.compile(
    rb"From (?:-[ \t]*|\S+[ \t]+(?:-[ \t]+)?(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[ \t]+"
    rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+\d{1,2}[ \t]+"
    rb"\d{1,2}:\d\d(?::\d\d)?[^\n]*)\r?\n")
_PATCH = re.compile(rb"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001\r?\n")
_HEADER = re.compile(rb"[!-9;-~]{1,200}:")
_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d{1,12})[ \t]*\r?$")
_HEAD_END = re.compile(rb"\n\r?\n")


def _from_lines(data: mmap.mmap) -> Iterator[tuple[int, int]]:
    """(start, end) of each From_ line that starts a message, with a header line after it:
    after an empty line, "From sender" with a time, or "From -"; with no empty line before
    it (some writers leave none), only a full asctime From_ line. "From " in a body line
    that an mboxo writer did not quote does not start one, nor a patch pasted into a mail,
    unless the file is a patch series (`git format-patch --stdout`)."""
    top = 3 if data[:3] == b"\xef\xbb\xbf" else 0      # a byte-order mark before it
    first = _TOP_LINE.match(data, top)                  # the top always starts a message:
    if first is None:                                   # nothing before a split is lost
        return
    yield first.start(), first.end()
    patches = _PATCH.match(first.group()) is not None
    at = data.find(b"\nFrom ", top)
    while at >= 0:
        blank = data[at - 1] == 10 or data[max(0, at - 2):at] == b"\n\r"
        m = (_FROM_LINE if blank else _STRICT_FROM).match(data, at + 1)
        if m is not None and (patches or not _PATCH.match(m.group())) \
                and _HEADER.match(data, m.end()):
            yield m.start(), m.end()
        at = data.find(b"\nFrom ", at + 1)


class _Behind:
    """The pages of a mapped mbox that are read and done with, let go of as reading goes
    on: a mapped file's pages count in the process's memory (RSS) once touched, and a
    100,000-mail import read through a 1 GiB mbox peaked at 1.1 GiB (issue 22). The kernel
    keeps them in its cache all the same; only the mapping lets go (MADV_DONTNEED)."""

    STEP = 4 << 20      # let go every 4 MiB read: 256 madvise calls a GiB, none a cost

    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.dropped = data, 0

    def done_up_to(self, offset: int, again: bool = False) -> None:
        """Everything before offset is read; again: start over (a second pass)."""
        if again:
            self._drop(len(self.data))
            self.dropped = 0
            return
        if offset - self.dropped >= self.STEP:
            self._drop(offset)

    def _drop(self, offset: int) -> None:
        upto = offset - offset % mmap.PAGESIZE
        if upto > self.dropped and hasattr(mmap, "MADV_DONTNEED"):
            self.data.madvise(mmap.MADV_DONTNEED, 0, upto)
            self.dropped = upto


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    """Messages of an mbox (mboxo, mboxrd, mboxcl, mboxcl2), mapped rather than read.

    mboxrd/mboxo quote body lines that start with "From ": one level is undone. mboxcl2
    does not quote, and says each body's length in Content-Length: a length that ends
    exactly at the next From_ line (or the end) is taken as it stands."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            behind = _Behind(data)
            starts = []
            for start in _from_lines(data):
                starts.append(start)
                behind.done_up_to(start[0])
            behind.done_up_to(0, again=True)
            n, k = 0, 0
            while k < len(starts):
                begin = starts[k][1]                      # after the From_ line
                behind.done_up_to(starts[k][0])
                end = starts[k + 1][0] if k + 1 < len(starts) else len(data)
                exact = _exact_length(data, begin, starts, k)
                if exact is not None:
                    stop, k = exact
                    n += 1
                    yield f"{path}#{n}", bytes(data[begin:stop])
                    continue
                k += 1
                n += 1
                body = bytes(data[begin:end])
                if body.endswith(b"\n\n"):              # the separating empty line
                    body = body[:-1]
                elif body.endswith(b"\r\n\r\n"):
                    body = body[:-2]
                yield f"{path}#{n}", _FROM_QUOTED.sub(rb"\1", body) if b">From " in body \
                    else body


def _exact_length(data: mmap.mmap, begin: int, starts: list[tuple[int, int]], k: int
                  ) -> tuple[int, int] | None:
    """mboxcl2: where a message ends by its Content-Length, and the index of the From_ line
    after it, when that length ends exactly at one (or at the end of the file)."""
    head_end = _HEAD_END.search(data, begin)
    if head_end is None:
        return None
    length = _LENGTH.search(data, begin, head_end.start() + 1)
    if length is None:
        return None
    stop = head_end.end() + int(length.group(1))
    if stop >= len(data) - 2 and data[stop:].strip() == b"":
        return stop, len(starts)
    for j in range(k + 1, len(starts)):
        at = starts[j][0]
        if at > stop + 2:
            return None
        if abs(at - stop) <= 2 and data[min(at, stop):max(at, stop)].strip(b"\r\n") == b"":
            return min(at, stop), j     # a writer that counted a line end more or less
    return None


def _maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    files = sorted(p for sub in ("new", "cur") for p in (path / sub).iterdir()
                   if p.is_file() and not p.name.startswith("."))
    # maildir names start with the delivery time: sorted is arrival order
    for f in sorted(files, key=lambda p: p.name):
        yield str(f), f.read_bytes()


def check(path: Path) -> None:
    """Raise SourceError for a path that cannot be mail: `ingest` checks every path it is
    given before it takes the first mail, so that a mistyped name stops it with nothing
    done, rather than after the paths before it."""
    if str(path) == "-":
        return
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    if path.is_dir():
        if not is_maildir(path):
            raise SourceError(f"{path}: a folder, but not a maildir (no cur/ and new/ inside)")
        return
    try:
        path.open("rb").close()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror}") from None


def read(path: Path, stdin: BinaryIO | None = None) -> Iterator[tuple[str, bytes]]:
    if str(path) == "-":
        data = (stdin or sys.stdin.buffer).read()
        if not data.strip():
            raise SourceError("no message on standard input")
        yield "stdin", data
        return
    check(path)
    if path.is_dir():
        yield from _maildir(path)
        return
    try:
        if is_mbox(path) and not one_message(path):
            yield from _mbox(path)
        elif is_mbox(path):
            yield str(path), path.read_bytes().split(b"\n", 1)[-1]   # its From_ line dropped
        else:
            yield str(path), path.read_bytes()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror}") from None
