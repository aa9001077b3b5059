"""The README's Postfix recipe against the code: docs and the `ingest` parser cannot drift."""
from __future__ import annotations

import re
from pathlib import Path

from maildesk.cli.ingest import ingest
from maildesk.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def recipe() -> str:
    text = README.read_text()
    section = text[text.index("## Mail from an MTA by pipe"):]
    section = section[:section.index("\n## ")]
    block = re.search(r"^```\n(.*?)^```$", section, re.S | re.M)
    assert block, "the section has a fenced block"
    return block[1]


def test_the_recipe_sets_the_recipient_delimiter() -> None:
    assert re.search(r"^recipient_delimiter = \+$", recipe(), re.M)


def test_the_pipe_runs_as_the_desk_user_with_an_argv_ingest_accepts() -> None:
    lines = recipe().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"maildesk\s+unix\s", ln))
    entry = [lines[start]]
    for ln in lines[start + 1:]:        # master.cf: an indented line continues the entry
        if not ln[:1].isspace():
            break
        entry.append(ln)
    words = " ".join(entry).split()
    assert words[7] == "pipe" and "user=maildesk" in words, "the desk's user, not nobody"
    argv = words[words.index(next(w for w in words if w.startswith("argv="))):]
    argv = [argv[0].removeprefix("argv="), *argv[1:]]
    assert argv[0] == "/usr/local/bin/maildesk"
    cut = argv.index("ingest")
    group = cli.make_context("maildesk", [*argv[1:cut], "ingest"])
    assert group.params["config"] == "/etc/maildesk/maildesk.yaml"
    for sender in ("", "ana@customer.test"):     # "": a bounce's null sender
        said = [a.replace("${sender}", sender)
                .replace("${original_recipient}", "support+md-1-x@example.com")
                for a in argv[cut + 1:]]
        ctx = ingest.make_context("ingest", said)
        assert ctx.params["sender"] == sender
        assert ctx.params["recipients"] == ("support+md-1-x@example.com",)
        assert ctx.params["paths"] == (), "the message comes on stdin"
