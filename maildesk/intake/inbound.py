"""The durable inbound queue, the intake's half: how accepted mail enters maildesk.

accept() stores the raw bytes and commits an inbound row, and only then may
the SMTP listener say 250. The pipeline's half (pipeline/run.py) takes
queued rows in arrival order and runs the stages over them. Intake knows
nothing of tickets, rules or notices: it stores, and the pipeline decides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import insert

from ..store.blobs import digest_of
from ..store.handle import Store
from ..store.intake_tables import T_INBOUND

# C0 controls (NUL, CR and LF among them), DEL, C1 controls, and the lone surrogates
# that stand for bytes that are not UTF-8: none belongs in an envelope address, and
# each is trouble in a database column, a log line, a terminal or a reply that quotes it.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Envelope:
    source: str                   # smtp | pipe | imap
    mail_from: str | None         # None: unknown (a file); "": the null sender
    rcpt_to: tuple[str, ...] = ()
    origin: str | None = None     # where it came from, for people reading the logs
    queue: str | None = None      # the queue this intake's mail belongs to (an IMAP mailbox's)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def accept(app: Store, mails: list[tuple[bytes, Envelope]]) -> list[int]:
    """Store durably, all in one transaction; returns the inbound ids, in order. Raises if
    the database is down. The bytes and the rows commit together (blob_data rows in the
    same transaction, or a pack file fsynced before it): one commit, on every node's
    database, makes the mails safe, however many there are: the SMTP listener's group
    commit (smtp.py) pays one fsync for all the sessions whose DATA ended meanwhile."""
    now = _now()
    with app.engine.begin() as conn:
        blobs = app.blobs.batch(conn)
        blobs.expect(digest_of(raw) for raw, _ in mails)    # one lookup for the group
        digests = [blobs.put(raw) for raw, _ in mails]
        blobs.finish()
        return [int(i) for i in conn.execute(
            insert(T_INBOUND).returning(T_INBOUND.c.id, sort_by_parameter_order=True),
            [{"received_at": now, "source": env.source, "origin": env.origin,
              "mail_from": env.mail_from, "rcpt_to": list(env.rcpt_to), "digest": digest,
              "size": len(raw), "state": "queued", "attempts": 0, "queue": env.queue}
             for (raw, env), digest in zip(mails, digests)]).scalars().all()]
