"""The same mail by two routes (SMTP and IMAP, a resent file) is one mail."""
from __future__ import annotations

from ...core.context import Context, Duplicate
from ...mail.parse import ParsedMail
from ..work import Work


def dedupe_ahead(ctx: Context, mails: list[ParsedMail]) -> None:
    """The batch's dedupe keys looked up at once (Ledger.expect)."""
    ctx.ledger.expect(dedupe_keys=[p.dedupe_key for p in mails])


def dedupe_stage(ctx: Context, w: Work) -> None:
    ref = ctx.ledger.stored_as(w.parsed.dedupe_key)
    if ref is not None:
        raise Duplicate(f"{w.parsed.message_id} is already on {ref}")
