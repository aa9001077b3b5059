"""The durable inbound queue: how accepted mail enters maildesk by any route.

accept() is the SMTP listener's half: fsync the raw bytes, commit an inbound
row, and only then may the listener say 250. drain() is the worker's half: it
takes queued rows in arrival order and runs the pipeline over them in
batches. ingest() does both in one transaction for files and pipes, where the
source still holds the mail until we exit 0.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, insert, select, update

from ..app import App
from ..mail.parse import ParsedMail
from ..pipeline.driver import Summary, process
from ..pipeline.work import Arrival, Context, Work
from ..tickets.ledger import T_INBOUND

BATCH = 200


@dataclass(frozen=True)
class Envelope:
    source: str                   # smtp | pipe | imap
    mail_from: str | None         # None: unknown (a file); "": the null sender
    rcpt_to: tuple[str, ...] = ()
    origin: str | None = None     # where it came from, for people reading the logs
    queue: str | None = None      # the queue this intake's mail belongs to (an IMAP mailbox's)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def accept(app: App, raw: bytes, env: Envelope) -> int:
    """Store durably; returns the inbound id. Raises if the database is down."""
    digest = app.blobs.put(raw)
    with app.engine.begin() as conn:
        return int(conn.execute(insert(T_INBOUND).returning(T_INBOUND.c.id).values(
            received_at=_now(), source=env.source, origin=env.origin, mail_from=env.mail_from,
            rcpt_to=list(env.rcpt_to), digest=digest, size=len(raw), state="queued",
            attempts=0, queue=env.queue)).scalar_one())


def _run(ctx: Context, works: list[Work]) -> Summary:
    """Run the pipeline, write, and make every blob durable and indexed before the commit."""
    summary = process(ctx, works)      # writes the ledger
    ctx.blobs.finish()
    summary.repaired = ctx.blobs.repaired
    return summary


def drain(app: App, limit: int = BATCH) -> Summary:
    """Process queued inbound mail until none is left; safe with several workers."""
    total = Summary()
    while True:
        with app.engine.begin() as conn:
            query = select(T_INBOUND).where(T_INBOUND.c.state.in_(("queued", "released"))) \
                .order_by(T_INBOUND.c.id).limit(limit)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).mappings().all()
            if not rows:
                return total
            works, now = [], _now()
            for r in rows:
                try:
                    raw = app.blobs.get(r["digest"], conn)
                except OSError as e:
                    conn.execute(update(T_INBOUND).where(T_INBOUND.c.id == r["id"]).values(
                        state="quarantined", reason=f"raw message unreadable: {e}",
                        processed_at=now))
                    total.quarantined += 1
                    continue
                works.append(Work(inbound=Arrival(
                    id=r["id"], source=r["source"], origin=r["origin"], mail_from=r["mail_from"],
                    rcpt_to=tuple(r["rcpt_to"] or ()), digest=r["digest"], size=r["size"],
                    received_at=r["received_at"], attempts=r["attempts"], queue=r["queue"],
                    released=r["state"] == "released"),
                    raw=raw))
            total.add(_run(app.context(conn, now), works))


def ingest(app: App, items: Iterable[tuple[bytes, Envelope]],
           parsed: list[ParsedMail | str] | None = None,
           also: Callable[[Connection], None] | None = None,
           now: datetime | None = None, repair: bool = False) -> Summary:
    """Store and process in one transaction; committed when this returns.

    parsed: the items already parsed by parse_batch() (in a worker process
    while the previous batch was being stored), in the same order.
    also: more to write in the same transaction (an IMAP mailbox's progress).
    now: the batch's clock (tests set it; SLA clocks start from it).
    repair: mail already stored has its stored bytes (and its attachments') checked, and
    stored again where they are damaged or gone.
    """
    now = now or _now()
    with app.engine.begin() as conn:
        ctx = app.context(conn, now, repair)
        blobs = ctx.blobs
        works = [Work(inbound=Arrival(id=None, source=env.source, origin=env.origin,
                                      mail_from=env.mail_from, rcpt_to=env.rcpt_to,
                                      digest=blobs.put(raw), size=len(raw), received_at=now,
                                      queue=env.queue),
                      raw=raw) for raw, env in items]
        for w, p in zip(works, parsed or ()):
            w.parsed_ahead = p
        summary = _run(ctx, works)
        if also is not None:
            also(conn)
        return summary
