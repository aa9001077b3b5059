"""Draft articles from tickets (`#kb new`): an agent's answer, written for review as
`<kb.folder>/drafts/<slug>.md` with `status: draft` and the ticket as its `source`.

Everything that names the file or fills its front matter comes from mail, so it
is hostile input: the slug keeps only lower-case ASCII letters, digits and '-'
(never a '/', a '..' or a leading dot), the title one line without control or
format characters. The file is whole or absent: written under a temporary name
that no article reader looks at (not `*.md`), fsynced, then linked to its name,
which fails rather than replaces when the name is taken, so no file is ever
overwritten. It is written inside a transaction that may roll back and run again:
the same ticket and mail make the same bytes, and a name that already holds
exactly those bytes is the draft's own, not a reason to take `-2`.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from ruamel.yaml import YAML

from ..store.blobs import fsync_dir
from .articles import SLUG

FOLDER = "drafts"         # under kb.folder
SLUG_CHARS = 60
TITLE_CHARS = 200
MODE = 0o640              # the admins' group reviews it


def slug_of(text: str) -> str:
    """A slug made of text ("Drucker: Fach 2 klemmt!" -> drucker-fach-2-klemmt); "" when
    text has no letter or digit that ASCII can hold."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:SLUG_CHARS].rstrip("-")


def title_of(text: str) -> str:
    """text as one line of a title: no control or format characters (a bidi override, a
    zero-width space), runs of white space one space, at most TITLE_CHARS."""
    kept = "".join(" " if c.isspace() else c for c in text
                   if c.isspace() or unicodedata.category(c)[0] != "C")
    return " ".join(kept.split())[:TITLE_CHARS].strip()


def text_of(*, title: str, owner: str, queue: str, source: str, body: str) -> str:
    """The draft's file: front matter that `maildesk kb check` accepts, then body. Its
    lang is the articles' default, en: the desk detects no language yet (the reviewer
    corrects it)."""
    meta = {"title": title, "status": "draft", "audience": "customers", "owner": owner,
            "lang": "en", "queues": [queue], "source": source}
    yaml = YAML(typ="rt")
    yaml.default_flow_style = None
    yaml.width = 4096           # a long title stays on its line
    out = io.StringIO()
    yaml.dump(meta, out)
    return f"---\n{out.getvalue()}---\n{body.strip()}\n"


def write(folder: Path, slug: str, text: str) -> Path:
    """The draft's path under folder/drafts: slug.md, else slug-2.md, -3 ..., the first
    name no article of the folder has, or the one that already holds text (a retry)."""
    if not SLUG.match(slug) or len(slug) > SLUG_CHARS:
        raise ValueError(f"not a slug: {slug!r}")     # slug_of() makes one
    drafts = folder / FOLDER
    drafts.mkdir(mode=0o750, exist_ok=True)
    data = text.encode("utf-8")
    taken = {p.stem for p in folder.rglob("*.md")}
    n = 1
    while True:
        name = slug if n == 1 else f"{slug}-{n}"
        path = drafts / f"{name}.md"
        if path.is_file() and path.read_bytes() == data:
            return path
        if name not in taken and _create(path, data):
            return path
        n += 1


def _create(path: Path, data: bytes) -> bool:
    """Whether path was made, whole, with data; False when the name was taken meanwhile."""
    fd, tmp = tempfile.mkstemp(prefix=".draft-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)
