"""Jinja templates for the mail we send: subject, text and HTML parts.

A notification `name` is three files: name.subject.j2, name.txt.j2 and
name.html.j2 (optional). Files in settings.templates_dir override the
built-in ones file by file, so a desk can change one text and keep the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2

from ..mail.headers import one_line


def builtin_templates_dir() -> Path:
    """Installed wheels carry templates/ as maildesk/_templates; a checkout has ../templates."""
    here = Path(__file__).resolve().parent.parent
    installed = here / "_templates"
    return installed if installed.is_dir() else here.parent / "templates"


# a span in words: each unit up to twice the next (90 minutes, not 2 hours)
_UNITS = (("second", 1, 120), ("minute", 60, 7200), ("hour", 3600, 172800),
          ("day", 86400, math.inf))


def duration(span: timedelta) -> str:
    """A time span as people say it, `4 minutes`, `3 hours`, rounded up: what a mail says
    things happened "within" must not be less than it was (the filter `duration`)."""
    seconds = max(span.total_seconds(), 1.0)
    name, size = next((n, s) for n, s, below in _UNITS if seconds < below)
    n = math.ceil(seconds / size)
    return f"{n} {name}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class Templates:
    def __init__(self, override: Path | None = None) -> None:
        self.override = override
        dirs = [str(p) for p in (override, builtin_templates_dir()) if p is not None]
        loader = jinja2.FileSystemLoader(dirs)
        self.text_env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined,
                                           autoescape=False, keep_trailing_newline=True)
        self.html_env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined,
                                           autoescape=True)
        for env in (self.text_env, self.html_env):
            env.filters["duration"] = duration

    def names(self) -> set[str]:
        """Notifications that can be sent: those with a subject and a text template."""
        files = set(self.text_env.list_templates(filter_func=lambda n: n.endswith(".j2")))
        return {n.removesuffix(".txt.j2") for n in files
                if n.endswith(".txt.j2") and n.replace(".txt.j2", ".subject.j2") in files}

    def text(self, name: str, context: dict[str, Any]) -> str:
        """A text part alone: what wraps the words of a mail that is not a notification
        (an agent's reply relayed: name.txt.j2, no subject, so no rule can send it)."""
        return self.text_env.get_template(f"{name}.txt.j2").render(context)

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        subject = self.text_env.get_template(f"{name}.subject.j2").render(context)
        text = self.text(name, context)
        try:
            html_t = self.html_env.get_template(f"{name}.html.j2")
        except jinja2.TemplateNotFound:
            html = None
        else:
            html = html_t.render(context)
        return Rendered(one_line(subject), text, html)

    def check(self) -> list[str]:
        """Every override compiles: a broken one must fail at start, not at first mail. The
        built-in templates are compiled by the tests, not at every start: that took a pipe
        delivery 0.23 of its 0.26 seconds."""
        if self.override is None or not self.override.is_dir():
            return []
        ours = set(jinja2.FileSystemLoader(str(self.override)).list_templates())
        errors = []
        for env in (self.text_env, self.html_env):
            for name in sorted(n for n in ours if n.endswith(".j2")):
                try:
                    env.get_template(name)
                except jinja2.TemplateSyntaxError as e:
                    errors.append(f"{e.filename or name}:{e.lineno}: template error: {e.message}")
        return sorted(set(errors))
