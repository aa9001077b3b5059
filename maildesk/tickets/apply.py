"""Turning a mail into a new ticket or a follow-up on one."""
from __future__ import annotations

from datetime import datetime

from ..mail.parse import ParsedMail
from ..store.blobs import BlobBatch
from ..store.rows import Pending, TicketRow
from .ledger import Ledger

# After a customer writes, a ticket waiting for them or resolved is open again.
STATUS_AFTER_CUSTOMER_REPLY = {"pending": "open", "resolved": "open"}


def open_ticket(ledger: Ledger, mail: ParsedMail, *, queue: str, cc: list[str],
                now: datetime, linked_to: TicketRow | None, priority: str,
                requester: str | None = None, assignee: str | None = None) -> TicketRow:
    """A new ticket of medium impact and urgency (priority from the desk's matrix).

    requester: someone other than the sender (an agent logging a caller's ticket).
    """
    return ledger.open_ticket(
        subject=mail.subject, requester=requester or mail.from_addr,
        requester_name=None if requester else mail.from_name or None,
        cc=cc, status="new", type="incident", priority=priority, impact="medium",
        urgency="medium", tags=[], problem=None, category=None, queue=queue,
        assignee=assignee, created_at=now, updated_at=now, linked_ticket=linked_to)


def add_participants(ledger: Ledger, ticket: TicketRow, addresses: list[str]) -> list[str]:
    known = {ticket.requester, *ticket.cc}
    new = list(dict.fromkeys(a for a in addresses if a not in known))
    if new:
        ledger.change(ticket, cc=[*ticket.cc, *new])
    return new


def store_message(ledger: Ledger, blobs: BlobBatch, ticket: TicketRow, mail: ParsedMail,
                  digest: str, now: datetime, *, text: str | None = None, quoted: str = "",
                  visibility: str = "public", verdict: str = "person",
                  proof: str | None = None) -> Pending:
    """text/quoted: the mail's new text and what it quotes, when they were split; proof:
    how its sender was proven ("" nothing proved it, None not looked at)."""
    attachments = [{"filename": a.filename, "content_type": a.content_type, "size": len(a.data),
                    "digest": blobs.put(a.data)} for a in mail.attachments]
    message = ledger.add_message(ticket, {
        "message_id": mail.message_id, "dedupe_key": mail.dedupe_key, "direction": "in",
        "visibility": visibility, "from_addr": mail.from_addr,
        "from_name": mail.from_name or None, "to": list(mail.to), "cc": list(mail.cc),
        "subject": mail.subject, "date": mail.date or now,
        "text": mail.text if text is None else text, "quoted": quoted, "verdict": verdict,
        "digest": digest,
        "defects": [*mail.defects, *(f"truncated: {t}" for t in mail.truncated)],
        "proof": proof, "created_at": now}, attachments, answers=mail.thread_ids[:10])
    ledger.change(ticket, updated_at=now)
    return message
