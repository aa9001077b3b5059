"""Every reply of the corpus (bench/reply_corpus.py) is split where a person would split it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from reply_corpus import CASES  # noqa: E402

from maildesk.mail.quotes import split_reply  # noqa: E402


@pytest.mark.parametrize("text, new", [(t, n) for _name, t, n in CASES],
                         ids=[name for name, _t, _n in CASES])
def test_reply_corpus(text: str, new: str) -> None:
    got, rest = split_reply(text)
    assert got.strip() == new.strip()
    assert (got + rest).replace("\n", "").replace(" ", "") in text.replace("\n", "").replace(
        " ", "") or rest == "", "nothing is lost: new text and the rest come from the mail"
