"""Which ticket a mail belongs to.

In order of trust: a reply address whose token is genuine; a subject tag,
but only from someone already on that ticket (a stranger who types [MD-12]
must not join MD-12); a Message-ID in In-Reply-To/References that we stored
on a ticket (knowing it means having seen the mail); and the other way round,
a ticket whose mail answered this one's Message-ID (the reply came first),
when the sender is already on it. Else: a new ticket.

A merged ticket is never where mail lands: whichever way a mail names it, it goes
on to the ticket the merge kept (survivor()), whose participants the merge made
of both tickets' people.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from ..mail.parse import base_address
from ..store.rows import TicketRow
from .ledger import Ledger
from .refs import Grant, read_token_ref, tagged_numbers, token_grant

MAX_MERGES = 20     # merged into a merged ticket ...: how far survivor() follows


def participants(ticket: TicketRow) -> set[str]:
    return {ticket.requester, *ticket.cc}


def survivor(ledger: Ledger, ticket: TicketRow) -> tuple[TicketRow, list[str]]:
    """The ticket a merged one lives on in (MD-3 merged into MD-5, merged into MD-7: MD-7),
    and the refs of the merged tickets passed on the way ([] for a ticket not merged)."""
    passed: list[str] = []
    while len(passed) < MAX_MERGES:
        into = ledger.merged_into(ticket)
        if into is None or into.ref in passed or into is ticket:
            break
        passed.append(ticket.ref)
        ticket = into
    return ticket, passed


def by_token(ledger: Ledger, recipients: Sequence[str], sender: str, secrets: tuple[bytes, ...],
             support: list[str], today: date, max_age: int
             ) -> tuple[Grant, TicketRow] | tuple[None, None]:
    """The ticket and grant of a live token address this mail was sent to, made for its
    sender; or made for the requester and answered by one of the ticket's participants
    (a relayed reply goes to all of them with the requester's reply address)."""
    for addr in recipients:
        if "+" not in addr or base_address(addr) not in support:
            continue
        found = read_token_ref(addr, support, ledger.prefix)
        ticket = ledger.by_ref(found[0]) if found is not None else None
        if found is None or ticket is None:
            continue
        people = [sender] if sender == ticket.requester or sender not in participants(ticket) \
            else [sender, ticket.requester]
        for person in people:
            grant = token_grant(*found, person, secrets, today, max_age)
            if grant is not None:
                return grant, ticket
    return None, None


def by_tag(ledger: Ledger, subject: str, sender: str, trusted: bool = False
           ) -> TicketRow | None:
    """trusted: the sender is a proven agent, who may work on any ticket. A merged
    ticket's tag is its survivor's, for the survivor's participants."""
    for number in tagged_numbers(subject, ledger.prefix):
        ticket = ledger.by_number(number)
        if ticket is not None and (trusted or sender in participants(
                survivor(ledger, ticket)[0])):
            return ticket
    return None


def by_references(ledger: Ledger, thread_ids: tuple[str, ...]) -> TicketRow | None:
    return ledger.by_message_ids(list(thread_ids[:50])) if thread_ids else None


def by_replies(ledger: Ledger, message_id: str, sender: str) -> TicketRow | None:
    """The ticket a reply to this mail opened before the mail itself arrived (imports and
    IMAP folders are not in date order). Only for its requester, or a participant of the
    requester's own domain: anyone can put a stranger in Cc and quote a Message-ID in
    References, and must not pull the stranger's mail into their ticket so."""
    ticket = ledger.referenced_by(message_id)
    if ticket is None:
        return None
    ticket = survivor(ledger, ticket)[0]     # its participants are the merged one's too
    same_domain = sender.rpartition("@")[2] == ticket.requester.rpartition("@")[2]
    return ticket if sender == ticket.requester or (
        same_domain and sender in participants(ticket)) else None
