"""Every reply of the corpus (bench/reply_corpus.py) is split where a person would split it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from reply_corpus import CASES, LATER  # noqa: E402

from maildesk.mail.html import html_to_text  # noqa: E402
from maildesk.mail.quotes import split_reply  # noqa: E402


@pytest.mark.parametrize("text, new", [(t, n) for _name, t, n in CASES + LATER],
                         ids=[name for name, _t, _n in CASES + LATER])
def test_reply_corpus(text: str, new: str) -> None:
    got, rest = split_reply(text)
    assert got.strip() == new.strip()
    said = sorted(x.strip() for x in (got + "\n" + rest).splitlines() if x.strip())
    assert said == sorted(x.strip() for x in text.splitlines() if x.strip()), \
        "nothing is lost or made up: the new text and the rest are the mail's lines"


def test_an_hr_above_the_history_of_an_html_reply() -> None:
    html = ("<div>Done, thanks.</div><hr><div><b>From:</b> IT Desk &lt;support@desk.test&gt;"
            "<br><b>Sent:</b> Tuesday, November 3, 2026 9:12 AM<br><b>To:</b> Ana<br>"
            "<b>Subject:</b> Printer</div><div>Hello, my printer jams.</div>")
    assert split_reply(html_to_text(html))[0] == "Done, thanks."


@pytest.mark.parametrize("answer", ["Room 2.14.", "Fixed at 10:30", "Ask ana@customer.test"])
def test_an_inline_answer_with_a_number_or_address_is_not_an_attribution(answer: str) -> None:
    text = f"> Which room?\nFloor two.\n> And then?\n{answer}\n> Thanks\n"
    new, _rest = split_reply(text)
    assert new.endswith(answer), new
