"""Commands by mail: `#assign me`, `#status pending`, ... in the first lines of an agent's reply.

All commands of a mail are checked before any is applied: one bad line and
none runs, and the agent gets a short mail naming the line and what is wrong.
Only an authenticated agent's mail gets here (see the identify stage).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from ..config.schema import Agent, Desk
from ..kb.articles import Article
from ..kb.library import Library
from ..mail.parse import clean_address

LEVELS = ("high", "medium", "low")
STATUSES = ("open", "pending", "resolved", "closed")
TYPES = ("incident", "request", "problem")
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")
_LINE = re.compile(r"^#([a-z]+(?:-[a-z]+)*)\b\s*(.*)$", re.IGNORECASE)
# a problem ticket's record: #root-cause TEXT, #workaround TEXT, #known-error [off]
RECORD = {"root-cause": "root_cause", "workaround": "workaround"}


@dataclass
class Plan:
    """What the commands of one mail ask for, checked; or the lines that are wrong."""

    changes: dict[str, object] = field(default_factory=dict)
    tags_add: list[str] = field(default_factory=list)
    tags_remove: list[str] = field(default_factory=list)
    cc_add: list[str] = field(default_factory=list)
    cc_remove: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    merge_into: str | None = None
    problem: str | None = None       # #problem: "new", a problem's ref, or "none" (unlink)
    split: str | None = None         # #split [MESSAGE-ID]: "" the customer's message answered
    note: bool = False
    silent: bool = False
    history: bool = False            # the agent asks for the whole thread by mail
    views: list[tuple[str, str]] = field(default_factory=list)   # #mine, #unassigned
    articles: list[Article] = field(default_factory=list)   # #kb SLUG: for the customer
    draft: str | None = None         # #kb new [SLUG-OR-TITLE]: what to name it ("": the subject)
    lines: list[str] = field(default_factory=list)      # the commands as written
    errors: list[str] = field(default_factory=list)


def split_commands(text: str) -> tuple[list[tuple[int, str]], str]:
    """The leading command lines (with their numbers), and the text after them."""
    lines = text.splitlines()
    commands: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line and not commands:
            i += 1
            continue
        if not line.startswith("#"):
            break
        commands.append((i + 1, line))
        i += 1
    return commands, "\n".join(lines[i:]).strip()


def plan(commands: list[tuple[int, str]], desk: Desk, agent: Agent, prefix: str,
         kb: Library) -> Plan:
    """kb: the knowledge base `#kb` lines name articles of."""
    p = Plan()
    queues = {q.name for q in desk.queues}
    for number, line in commands:
        p.lines.append(line)
        m = _LINE.match(line)
        if not m:
            p.errors.append(f"line {number}: {line!r} is not a command")
            continue
        name, arg = m.group(1).lower(), m.group(2).strip()
        why = _kb(p, arg, kb) if name == "kb" else _one(p, name, arg, desk, agent, queues,
                                                         prefix)
        if why:
            p.errors.append(f"line {number}: {line}: {why}")
    if p.split is not None and p.merge_into:
        p.errors.append("#split and #merge in one mail: split first, then merge")
    return p


def _one(p: Plan, name: str, arg: str, desk: Desk, agent: Agent, queues: set[str],
         prefix: str) -> str | None:
    if name in ("mine", "unassigned"):
        why = _view(name, arg, queues)
        if why is None:
            p.views.append((name, arg))
        return why
    if name in ("note", "silent", "history"):
        if arg:
            return f"#{name} takes nothing after it"
        setattr(p, name, True)
        return None
    if name == "assign":
        if arg.lower() in ("me", "none"):
            p.changes["assignee"] = agent.name if arg.lower() == "me" else None
            return None
        who = next((a for a in desk.agents if arg.lower() in (a.name.lower(), a.address)), None)
        if who is None:
            return f"no agent {arg!r} (agents: {', '.join(a.name for a in desk.agents)}, " \
                   "or me, or none)"
        p.changes["assignee"] = who.name
        return None
    if name == "queue":
        if arg not in queues:
            return f"no queue {arg!r} (queues: {', '.join(sorted(queues))})"
        p.changes["queue"] = arg
        return None
    choices = {"priority": PRIORITIES, "impact": LEVELS, "urgency": LEVELS, "type": TYPES,
               "status": STATUSES}
    if name in choices:
        value = arg.upper() if name == "priority" else arg.lower()
        if value not in choices[name]:
            return f"{arg!r} is not a {name} ({', '.join(choices[name])})"
        p.changes[name] = value
        return None
    if name == "category":
        if not arg:
            return "#category needs a name"
        p.changes["category"] = arg[:100]
        return None
    if name in ("tag", "cc"):
        words = arg.split()
        if not words or not all(w[:1] in "+-" and len(w) > 1 for w in words):
            return f"#{name} takes +word and -word"
        key = "tags" if name == "tag" else "cc"
        for w in words:
            value = w[1:].lower() if name == "tag" else clean_address(w[1:])
            if not value:
                return f"{w[1:]!r} is not a mail address"
            getattr(p, f"{key}_{'add' if w[0] == '+' else 'remove'}").append(value)
        return None
    if name == "split":
        if p.split is not None:
            return "one #split per mail"
        if arg and (" " in arg or "@" not in arg):
            return f"{arg!r} is not a Message-ID (e.g. <abc@example.com>)"
        p.split = arg if not arg or arg.startswith("<") else f"<{arg}>"
        return None
    if name in ("link", "merge"):
        if not re.fullmatch(rf"{re.escape(prefix)}-\d+", arg, re.IGNORECASE):
            return f"{arg!r} is not a ticket reference (e.g. {prefix}-12)"
        if name == "link":
            p.links.append(arg.upper())
        else:
            p.merge_into = arg.upper()
        return None
    if name == "problem":    # tickets/problems.py checks it against the tickets
        if arg.lower() in ("new", "none"):
            p.problem = arg.lower()
        elif re.fullmatch(rf"{re.escape(prefix)}-\d+", arg, re.IGNORECASE):
            p.problem = arg.upper()
        else:
            return f"#problem takes new, none or a problem's reference (e.g. {prefix}-12)"
        return None
    if name in RECORD:
        if not arg:
            return f"#{name} needs its text"
        p.changes[RECORD[name]] = arg[:4000]
        return None
    if name == "known-error":
        if arg.lower() not in ("", "off"):
            return "#known-error takes nothing, or off"
        p.changes["known_error"] = arg.lower() != "off"
        return None
    return (f"unknown command #{name} (assign, queue, priority, impact, urgency, type, "
            "category, tag, status, link, merge, split, cc, note, silent, history, kb, mine, "
            "unassigned, problem, root-cause, workaround, known-error)")


def _kb(p: Plan, arg: str, kb: Library) -> str | None:
    """`#kb SLUG ...`: published articles for the customer, sent with the reply; `#kb new
    [SLUG-OR-TITLE]`: the reply kept as a draft article (pipeline/stages/agent.py)."""
    if kb.folder is None:
        return "this desk has no knowledge base (kb.folder)"
    words = arg.replace(",", " ").split()
    if not words:
        return "#kb needs an article's slug (#kb SLUG ...) or new (#kb new [TITLE])"
    if words[0].lower() == "new":
        if p.draft is not None:
            return "one #kb new per mail"
        p.draft = arg[len("new"):].strip(" \t,")
        return None
    wrong = []
    for slug in words:
        found = kb.article(slug.lower())
        if found is None:
            near = difflib.get_close_matches(slug.lower(), [a.slug for a in kb.articles
                                                            if _sendable(a)], n=3)
            wrong.append(f"no article {slug!r}" + (f" (near: {', '.join(near)})" if near
                                                   else ""))
        elif found.status != "published":
            wrong.append(f"article {found.slug} is a draft: only published articles are sent")
        elif not _sendable(found):
            wrong.append(f"article {found.slug} is for agents")
        elif found not in p.articles:
            p.articles.append(found)
    return "; ".join(wrong) or None


def _sendable(a: Article) -> bool:
    return a.status == "published" and a.audience == "customers"


def _view(name: str, arg: str, queues: set[str]) -> str | None:
    if name == "mine" and arg:
        return "#mine takes nothing after it"
    if arg and arg not in queues:
        return f"no queue {arg!r} (queues: {', '.join(sorted(queues))})"
    if name == "queue" and not arg:
        return "#queue needs a queue's name"
    return None


def views(text: str, desk: Desk) -> list[tuple[str, str, str | None]] | None:
    """The leading lines of an agent's mail to the desk itself (no ticket) when all of them
    are questions: `#mine`, `#queue NAME`, `#unassigned [QUEUE]`, as (name, argument, what
    is wrong or None); else None, and the mail is what it was before (a new ticket)."""
    lines, _rest = split_commands(text)
    asked = []
    queues = {q.name for q in desk.queues}
    for _n, line in lines:
        m = _LINE.match(line)
        if not m or m.group(1).lower() not in ("mine", "queue", "unassigned"):
            return None
        name, arg = m.group(1).lower(), m.group(2).strip()
        asked.append((name, arg, _view(name, arg, queues)))
    return asked or None


def requester_line(text: str) -> str | None:
    """The customer a `#requester ADDRESS` line among the leading commands names: an agent
    logging a caller's ticket by mail (text: the mail's new text)."""
    lines, _rest = split_commands(text)
    for _n, line in lines:
        parts = line.split(None, 1)
        if parts[0].lower() == "#requester" and len(parts) == 2:
            return clean_address(parts[1]) or None
    return None
