#!/usr/bin/env python3
"""Articles from a public FAQ: sections of the Debian GNU/Linux FAQ, as articles.

    apt-get install debian-faq && python3 bench/kb/debian_faq.py

No IT-support FAQ data set is in the package registries we can reach (PyPI's
FAQ packages are Django apps or Chinese counselling corpora); Debian's package
`debian-faq` is a real, public FAQ whose questions a desk supporting Linux
desktops gets. Each chosen section becomes articles/debian/<slug>.md: its
question as the title, its answer verbatim (re-flowed) as the text. The FAQ's
copyright and permission notice is copied to articles/debian/NOTICE, as its
licence asks. The mails asking these questions (kb_eval.py) are written apart
from this text.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

SOURCE = Path("/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")
OUT = Path(__file__).resolve().parent / "articles" / "debian"
# section number: slug; the questions a desktop user might send a service desk
SECTIONS = {
    "2.1": "debian-latest-version", "4.5": "debian-rpm-packages",
    "4.6": "debian-non-debian-program", "5.4": "debian-developer-environment",
    "5.6": "debian-ld-cannot-find", "5.7": "debian-java",
    "5.8": "debian-which-version", "5.9": "debian-non-english",
    "5.14": "debian-wireless-card", "6.2": "debian-release-names",
    "7.12": "debian-package-hold", "7.13": "debian-source-package",
    "8.3": "debian-installed-packages", "8.4": "debian-package-files",
    "8.5": "debian-file-owner-package", "8.6": "debian-remove-data-package",
    "9.1": "debian-keep-current", "9.3": "debian-deb-archive-files",
    "9.5": "debian-automatic-updates", "10.4": "debian-remove-old-kernel",
    "11.1": "debian-paper-size", "11.3": "debian-console-font",
    "12.5": "debian-report-bug",
}
_HEAD = re.compile(r"^(\d+\.\d+)\.\s(.*)$")   # a no-break space follows the number


def sections(text: str) -> dict[str, tuple[str, str]]:
    """Section number: (question, answer), from the FAQ's plain-text rendering (after
    its table of contents, where each heading starts a line)."""
    out: dict[str, tuple[str, str]] = {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if _HEAD.match(line) and line.startswith("1.1."))
    current: list[str] = []
    number = title = ""
    for line in lines[start:] + ["0.0. end"]:
        m = _HEAD.match(line)
        if m or re.match(r"^Chapter \d+", line):
            if number:
                body = "\n".join(current).strip("\n")
                head, _, rest = body.partition("\n\n")   # a question wrapped over two lines
                if head and not head[0].isspace():
                    title, body = f"{title} {head.strip()}", rest.strip()
                out[number] = (title, body)
            number, title, current = (m.group(1), m.group(2).strip(), []) if m else ("", "", [])
            continue
        current.append(line)
    return out


def main() -> int:
    text = gzip.decompress(SOURCE.read_bytes()).decode("utf-8")
    found = sections(text)
    OUT.mkdir(parents=True, exist_ok=True)
    notice = text[:text.index("Abstract")].strip()
    (OUT / "NOTICE").write_text(f"From the package debian-faq ({SOURCE}):\n\n{notice}\n",
                                encoding="utf-8")
    for number, slug in SECTIONS.items():
        title, body = found[number]
        body = "\n".join(line[4:] if line[:4].isspace() else line
                          for line in body.splitlines()).strip()
        (OUT / f"{slug}.md").write_text(
            f"---\ntitle: {json.dumps(' '.join(title.split()))}\nqueues: [it]\n"
            f"audience: customers\nlang: en\n"
            f"status: published\nowner: debian-faq\n---\n{body}\n", encoding="utf-8")
    print(f"{len(SECTIONS)} articles in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
