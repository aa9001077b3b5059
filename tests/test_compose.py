"""Composing the mail we send (issue 22): a plain header value skips email.header.Header,
and every mail comes out byte for byte as when every value went through it."""
from __future__ import annotations

from datetime import datetime, timezone
from email.header import Header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maildesk.mail import compose as compose_module
from maildesk.mail.compose import Outgoing, compose
from maildesk.mail.headers import CONTROL


def through_header(value: str, name: str) -> str:
    """What _header gave for every value before: the email package's encoding."""
    if CONTROL.search(value):
        raise ValueError(value)
    return Header(value, "us-ascii" if value.isascii() else "utf-8",
                  maxlinelen=76, header_name=name).encode()


def outgoing(**over: object) -> Outgoing:
    fields: dict[str, object] = dict(
        from_name="Example Support", from_addr="support@example.com",
        to=(("Ana Lima", "ana@customer.test"),), subject="[MD-7] Printer on floor 3 is jammed",
        text="Hello Ana,\n\nwe have your mail.\n", html=None,
        message_id="<md-7.0123456789abcdef0123@example.com>",
        date=datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc),
        in_reply_to="<CAF+x=y@mail.customer.test>",
        references=("<a@customer.test>", "<CAF+x=y@mail.customer.test>"),
        reply_to="support+t.md-7.abcdef@example.com", auto_submitted="auto-replied",
        x_loop="support@example.com", ticket_ref="MD-7")
    fields.update(over)
    return Outgoing(**fields)  # type: ignore[arg-type]


MAILS = [
    outgoing(),
    outgoing(subject="[MD-7] Ünïcode subject, in UTF-8", to=(("Zoë Ñandú", "zoe@x.test"),)),
    outgoing(subject="[MD-7] " + "a very long subject that has to be folded " * 3),
    outgoing(subject="[MD-7]  two  spaces and a tab\there ", in_reply_to=None, references=()),
    outgoing(references=tuple(f"<ref{i}.{'x' * 30}@customer.test>" for i in range(25))),
    outgoing(subject="=?utf-8?q?looks_encoded?= but is not", cc=(("", "bo@x.test"),)),
]


@pytest.mark.parametrize("mail", MAILS)
def test_a_mail_comes_out_as_when_every_value_went_through_header(
        mail: Outgoing, monkeypatch: pytest.MonkeyPatch) -> None:
    now = compose(mail)
    monkeypatch.setattr(compose_module, "_header", through_header)
    assert now == compose(mail)


def test_a_plain_mail_does_not_go_through_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """Header's folding machinery cost a third of composing an acknowledgement; a plain
    ASCII value short enough not to be folded needs none of it."""
    def header(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("email.header.Header used")
    monkeypatch.setattr(compose_module, "Header", header)
    assert b"Subject: [MD-7] Printer on floor 3 is jammed\n" in compose(outgoing())


@settings(max_examples=3000, deadline=None)
@given(st.text(st.sampled_from("ab =?Z_-:;,<>\"\t()\\'@.~!é"), max_size=90),
       st.sampled_from(["Subject", "Message-ID", "In-Reply-To", "References", "To",
                        "Auto-Submitted", "X-Maildesk-Ticket"]))
def test_a_header_value_is_encoded_as_header_encodes_it(value: str, name: str) -> None:
    assert compose_module._header(value, name) == through_header(value, name)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                        max_size=30), min_size=1, max_size=8).map(" ".join),
       st.sampled_from(["Subject", "Message-ID", "References", "X-Maildesk-Ticket"]))
def test_plain_values_about_the_folding_length_are_encoded_as_header_does(
        value: str, name: str) -> None:
    """The values the shortcut takes, up to and past the length Header folds at."""
    assert compose_module._header(value, name) == through_header(value, name)
