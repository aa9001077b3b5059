"""Articles: Markdown files with YAML front matter, in a folder admins keep in git.

    ---
    title: Reset your VPN password
    tags: [vpn, password]
    queues: [network]
    audience: customers        # customers | agents
    lang: en
    status: published          # draft | published
    owner: bob
    review_by: 2027-06-01
    source: MD-12              # the ticket a `#kb new` drafted it from
    ---
    Open https://vpn.example.org/reset and ...

An article's slug is its file name without `.md` (`reset-vpn-password.md`),
unique across the folder and its subfolders. load() reads every file and
reports every problem at once, each as FILE:LINE:COL like the rules, so that
`maildesk kb check` can gate a commit; nothing partial is ever used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from ..config.expansion import too_large
from ..errors import MaildeskError

FENCE = "---"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
AUDIENCES = ("customers", "agents")
STATUSES = ("draft", "published")
MAX_BYTES = 100 * 1024      # an article is mailed whole, up to three in an acknowledgement
KEYS = ("title", "tags", "queues", "audience", "lang", "status", "owner", "review_by",
        "source")


class KbError(MaildeskError):
    """Articles that must not be used; str() is one located line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Article:
    slug: str
    path: Path
    title: str
    body: str                                   # Markdown, after the front matter
    tags: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()                # none: every queue
    audience: str = "customers"
    lang: str = "en"
    status: str = "draft"
    owner: str | None = None
    review_by: date | None = None
    source: str | None = None                   # the ticket it was drafted from (#kb new)

    def as_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "title": self.title, "status": self.status,
                "audience": self.audience, "lang": self.lang, "queues": list(self.queues),
                "tags": list(self.tags), "owner": self.owner,
                "review_by": self.review_by.isoformat() if self.review_by else None,
                "source": self.source, "path": str(self.path)}


@dataclass
class _Problems:
    path: Path
    items: list[str] = field(default_factory=list)

    def add(self, line: int, col: int, what: str) -> None:
        self.items.append(f"{self.path}:{line}:{col}: {what}")


def load(folder: Path, queues: set[str]) -> list[Article]:
    """Every article under folder, by slug; KbError listing every problem at its place.
    queues: the desk's queue names, which an article's `queues` must be among."""
    if not folder.is_dir():
        raise KbError([f"{folder}: no such folder (kb.folder)"])
    articles: list[Article] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.md")):
        p = _Problems(path)
        if path.stem in seen:
            p.add(1, 1, f"slug {path.stem!r} is also {seen[path.stem]}: file names must be "
                        "unique across the folder")
        seen.setdefault(path.stem, path)
        article = _article(path, queues, p)
        if article is not None and not p.items:
            articles.append(article)
        problems += p.items
    if problems:
        raise KbError(problems)
    return articles


def _article(path: Path, queues: set[str], p: _Problems) -> Article | None:
    slug = path.stem
    if not SLUG.match(slug):
        p.add(1, 1, f"file name {path.name!r}: an article's slug is its name, in lower-case "
                    "letters, digits and '-' (e.g. reset-vpn-password.md)")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            p.add(1, 1, f"{size} bytes; an article is at most {MAX_BYTES // 1024} KiB (it goes "
                        "into mail): split it, or link to the long version")
            return None
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        p.add(1, 1, f"not UTF-8 text (byte {e.start})")
        return None
    except OSError as e:
        p.add(1, 1, f"cannot be read: {e.strerror}")
        return None
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != FENCE:
        p.add(1, 1, f"an article starts with front matter: a line {FENCE!r}, the fields "
                    f"(title: ...), and {FENCE!r} again")
        return None
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip("\r\n") == FENCE), None)
    if end is None:
        p.add(1, 1, f"the front matter has no closing {FENCE!r} line")
        return None
    try:
        meta = YAML(typ="rt").load("".join(lines[1:end]))
    except MarkedYAMLError as e:
        mark = e.problem_mark
        p.add(mark.line + 2 if mark else 2, mark.column + 1 if mark else 1,
              f"YAML syntax error: {e.problem}")
        return None
    except ValueError as e:     # a value YAML reads as a date that is none: 2027-13-45
        line, col = _bad_date(lines[1:end])
        p.add(line, col, f"no such date ({e}); write dates as YYYY-MM-DD")
        return None
    if (why := too_large(meta)) is not None:
        p.add(2, 1, f"the front matter: {why}")
        return None
    if not isinstance(meta, dict):
        p.add(2, 1, "the front matter must be fields (title: ..., tags: [...])")
        return None
    values = _fields(meta, queues, p)
    body = "".join(lines[end + 1:]).strip()
    if not body:
        p.add(end + 2, 1, "the article has no text after its front matter")
    if p.items or values is None:
        return None
    return Article(slug=slug, path=path, body=body, **values)


def _bad_date(lines: list[str]) -> tuple[int, int]:
    """Where the front matter holds a YYYY-MM-DD that is no day of the calendar."""
    for i, line in enumerate(lines):
        for m in re.finditer(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", line):
            try:
                date(*map(int, m.groups()))
            except ValueError:
                return i + 2, m.start() + 1
    return 2, 1


def _at(meta: Any, key: str) -> tuple[int, int]:
    """1-based line and column of a front-matter key in its file (the fence is line 1)."""
    try:
        line, col = meta.lc.key(key)
        return line + 2, col + 1
    except (AttributeError, KeyError, TypeError):
        return 2, 1


def _fields(meta: Any, queues: set[str], p: _Problems) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key in meta:
        if key not in KEYS:
            p.add(*_at(meta, key), f"unknown field {key!r} (fields: {', '.join(KEYS)})")
    title = meta.get("title")
    if not isinstance(title, str) or not title.strip():
        p.add(*_at(meta, "title"), "title: a line of text is needed")
    else:
        out["title"] = title.strip()
    for key in ("tags", "queues"):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            p.add(*_at(meta, key), f"{key}: a list of names, e.g. [vpn, password]")
            continue
        out[key] = tuple(value)
    unknown = sorted(set(out.get("queues", ())) - queues)
    if unknown:
        p.add(*_at(meta, "queues"), f"queues: no queue {', '.join(unknown)} (queues: "
                                    f"{', '.join(sorted(queues)) or 'none configured'})")
    for key, allowed in (("audience", AUDIENCES), ("status", STATUSES)):
        if key in meta:
            if meta[key] not in allowed:
                p.add(*_at(meta, key), f"{key}: {meta[key]!r} is not one of "
                                       f"{', '.join(allowed)}")
            else:
                out[key] = meta[key]
    if "lang" in meta:
        if not isinstance(meta["lang"], str) or not LANG.match(meta["lang"]):
            p.add(*_at(meta, "lang"), f"lang: {meta['lang']!r} is no language tag (en, de, "
                                      "pt-BR)")
        else:
            out["lang"] = meta["lang"]
    if "owner" in meta:
        if not isinstance(meta["owner"], str) or not meta["owner"]:
            p.add(*_at(meta, "owner"), "owner: a name (an agent's, or a team's)")
        else:
            out["owner"] = meta["owner"]
    if "source" in meta:
        if not isinstance(meta["source"], str) or not meta["source"].strip():
            p.add(*_at(meta, "source"), "source: the ticket it came from (e.g. MD-12)")
        else:
            out["source"] = meta["source"].strip()
    if "review_by" in meta:
        if not isinstance(meta["review_by"], date):
            p.add(*_at(meta, "review_by"), f"review_by: {meta['review_by']!r} is no date "
                                           "(YYYY-MM-DD)")
        else:
            out["review_by"] = meta["review_by"]
    return out if not p.items else None
