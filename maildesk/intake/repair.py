"""`maildesk ingest --repair`: the mail a desk already has, taken again to mend its copies.

A mail the desk has (an inbound row holds its digest) is not ingested again: its stored
bytes, and those of its attachments, are read and checked, and stored again where they
are damaged or missing. What the desk does not have yet goes on to ingest() as usual.
Content addressing decides what can be mended: only these exact bytes can stand in for
a blob of that name. A copy of a mail in another form (an .eml saved from an mbox, with
a line end more or less) is the same mail with other bytes; it is reported, not used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, exists, select

from ..mail.parse import parse
from ..store.blobs import BlobBatch, digest_of
from ..store.handle import Store
from ..store.models import Attachment, Inbound, Message, Ticket
from .inbound import Envelope

T_INBOUND, T_MESSAGES, T_ATTACHMENTS, T_TICKETS = (
    Inbound.__table__, Message.__table__, Attachment.__table__, Ticket.__table__)


@dataclass
class Mended:
    repaired: int = 0          # stored copies found damaged or missing, and stored again
    known: int = 0             # mails the desk already had
    unmended: list[str] = field(default_factory=list)   # what these bytes cannot mend, why

    def add(self, other: Mended) -> None:
        self.repaired += other.repaired
        self.known += other.known
        self.unmended += other.unmended


def _used(conn: Connection, table: Table, digest: str) -> bool:
    return bool(conn.execute(select(exists().where(table.c.digest == digest))).scalar())


def _put(batch: BlobBatch, data: bytes, used: bool) -> int:
    """Store data through the batch (which checks a stored copy); 1 if that mended a copy
    that something uses."""
    before = batch.repaired
    appended = digest_of(data) not in batch.pending
    digest = batch.put(data)
    if batch.repaired > before:
        return 1
    return int(used and appended and digest in batch.pending)


def mend(app: Store, items: list[tuple[bytes, Envelope]]
         ) -> tuple[Mended, list[tuple[bytes, Envelope]]]:
    """Mend what items can; return them with the ones the desk does not have yet."""
    done, new = Mended(), []
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        for raw, env in items:
            digest = digest_of(raw)
            if not _used(conn, T_INBOUND, digest):
                new.append((raw, env))
                continue
            done.known += 1
            done.repaired += _put(batch, raw, True)
            try:
                mail = parse(raw, digest, env.mail_from, app.settings.limits)
            except Exception:  # noqa: BLE001 - unreadable mail has no attachments to mend
                continue
            for a in mail.attachments:
                done.repaired += _put(batch, a.data, _used(conn, T_ATTACHMENTS,
                                                           digest_of(a.data)))
        batch.finish()
    done.unmended += _other_bytes(app, new)
    return done, new


def _other_bytes(app: Store, items: list[tuple[bytes, Envelope]]) -> list[str]:
    """Mail the desk has under other bytes, whose stored original is damaged: say so."""
    said = []
    with app.engine.connect() as conn:
        for raw, env in items:
            try:
                mail = parse(raw, digest_of(raw), env.mail_from, app.settings.limits)
            except Exception:  # noqa: BLE001 - not a mail the desk could have
                continue
            row = conn.execute(select(T_MESSAGES.c.digest, T_TICKETS.c.ref).join(
                T_TICKETS, T_TICKETS.c.id == T_MESSAGES.c.ticket_id)
                .where(T_MESSAGES.c.dedupe_key == mail.dedupe_key)).first()
            if row is not None and app.blobs.problem(row.digest, conn) is not None:
                said.append(f"{row.ref}: the stored original of {mail.message_id} is damaged, "
                            f"and {env.origin or 'this copy'} has other bytes (not the same "
                            f"file it came from), so it cannot stand in for it")
    return said
