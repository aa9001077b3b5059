"""Plain text from HTML mail, for messages that carry no text/plain part.

Only the readable text is kept: scripts, styles and heads are dropped, block
elements become line breaks, links keep their address in brackets so an agent
reading the ticket sees where they point.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
          "pre", "table", "ul", "ol", "hr"}
_IN, _OUT = "\x02", "\x03"     # blockquote depth markers, turned into "> " at the end
_SKIP = {"script", "style", "head", "title", "noscript", "template"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "blockquote":
            self.out.append(f"\n{_IN}\n")
        elif tag == "hr":       # as Outlook writes it in plain text: quotes.py knows it
            self.out.append("\n" + "_" * 32 + "\n")
        elif tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.out.append("\n")
        elif tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "blockquote":
            self.out.append(f"\n{_OUT}\n")
        elif tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK and tag != "br":
            self.out.append("\n")
        elif tag == "a" and self.href:
            if self.href.startswith(("http:", "https:", "mailto:")):
                self.out.append(f" <{self.href}>")
            self.href = None

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines, depth = [], 0
    for ln in "".join(parser.out).split("\n"):
        ln = ln.strip()
        if ln == _IN:
            depth += 1
        elif ln == _OUT:
            depth = max(0, depth - 1)
        else:      # quoted HTML reads as quoted text: strip_reply can find it
            lines.append(("> " * depth + ln).rstrip() if depth and ln else ln)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
