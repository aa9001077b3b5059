"""The pipeline's half of the durable inbound queue, and ingest() for files and pipes.

drain() is the worker's half of the queue the intake fills (intake/inbound.py):
it takes queued rows in arrival order and runs the stages over them in
batches. ingest() stores and processes in one transaction, for files, pipes
and IMAP mailboxes, where the source still holds the mail until we commit.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from functools import partial

from sqlalchemy import Connection, RowMapping, insert, select, update

from ..app import App
from ..core.context import Context
from ..errors import error_line
from ..intake.inbound import Envelope
from ..mail.headers import one_line
from ..mail.parse import ParsedMail, Unread, parse_batch, written_at
from ..store.blobs import digest_of
from ..store.db import retried
from ..store.tables import T_INBOUND
from .driver import TRANSIENT, Line, Summary, process
from .stages import STAGES, look_ahead
from .work import Accepted, Arrival

BATCH = 200
# failures that are nobody's mail's fault: the caller retries later (451, exit 75)
NOT_THE_MAILS_FAULT = (*TRANSIENT, OSError)
log = logging.getLogger("maildesk.pipeline")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _run(app: App, ctx: Context, batch: list[Accepted]) -> Summary:
    """Run the pipeline, write, and make every blob durable and indexed before the commit."""
    look_ahead(ctx, batch)
    summary = process(ctx, batch, app.stages or STAGES)      # writes the ledger
    ctx.blobs.finish()
    return summary


def drain(app: App, limit: int = BATCH, between: Callable[[], None] | None = None,
          budget: Callable[[], float | None] = lambda: None) -> Summary:
    """Process queued inbound mail until none is left; safe with several workers.
    between: called before each batch; the daemon's watchdog ping, so that a backlog of
    thousands of mails is progress, not a hang.
    budget: asked before each batch, the seconds its transaction should last at most
    (None: as long as `limit` mails take), the batch sized on the CPU time per mail of the
    one before (this thread's: waits for a core or for the lock are not the batch size's
    doing). On SQLite the SMTP listener's commit waits for the transaction under way
    (store/turns.py): short ones keep a sender's wait for its 250 short; long ones pay
    fewer commits."""
    total = Summary()
    each: float | None = None       # CPU seconds per mail, as the last batch took
    while True:
        most = budget()
        size = limit if most is None else \
            1 if each is None else max(1, min(limit, int(most / each) if each else limit))
        if between is not None:
            between()
        began = time.thread_time()
        try:
            done = retried(partial(_drain_batch, app, size), "a batch of queued mail")
        except NOT_THE_MAILS_FAULT:
            raise
        except Exception as e:  # noqa: BLE001 - one mail broke the batch's write: one by one
            log.error("a batch of queued mail could not be written; taking it one by one: %s",
                      error_line(e))
            done = _one_by_one(app, size)
        if done is None:
            return total
        each = (time.thread_time() - began) / max(1, sum(done.as_dict().values()))
        total.add(done.announce())


def _claim(conn: Connection, limit: int, only: int | None = None) -> Sequence[RowMapping]:
    query = select(T_INBOUND).where(T_INBOUND.c.state.in_(("queued", "released"))) \
        .order_by(T_INBOUND.c.id).limit(limit)
    if only is not None:
        query = query.where(T_INBOUND.c.id == only)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).mappings().all()


def _drain_batch(app: App, limit: int, only: int | None = None) -> Summary | None:
    """One batch of queued mail in one transaction; None when nothing is queued."""
    with app.engine.begin() as conn:
        rows = _claim(conn, limit, only)
        if not rows:
            return None
        batch: list[Accepted] = []
        now, unreadable = _now(), Summary()
        for r in rows:
            try:
                raw = app.blobs.get(r["digest"], conn)
            except OSError as e:
                reason = f"raw message unreadable: {e}"
                conn.execute(update(T_INBOUND).where(T_INBOUND.c.id == r["id"]).values(
                    state="quarantined", reason=reason, processed_at=now))
                unreadable.lines.append(Line(
                    "quarantined inbound %s: %s", {"inbound_id": r["id"], "source": r["source"],
                                                   "reason": one_line(reason, 300)},
                    level=logging.WARNING, args=(str(r["id"]), one_line(reason))))
                unreadable.quarantined += 1
                unreadable.taken[(r["source"], "quarantined")] += 1
                continue
            batch.append(Accepted(inbound=Arrival(
                id=r["id"], source=r["source"], origin=r["origin"], mail_from=r["mail_from"],
                rcpt_to=tuple(r["rcpt_to"] or ()), digest=r["digest"], size=r["size"],
                received_at=r["received_at"], attempts=r["attempts"], queue=r["queue"],
                released=r["state"] == "released"),
                raw=raw))
        ctx = app.context(conn, now)
        ctx.ledger.older_than = rows[0]["id"]
        unreadable.add(_run(app, ctx, batch))
        return unreadable


def _one_by_one(app: App, limit: int) -> Summary | None:
    """The next batch's mails each in a transaction of its own; a mail whose own write
    still fails is quarantined with the traceback, and the rest go on."""
    with app.engine.connect() as conn:
        sources = {r["id"]: r["source"] for r in _claim(conn, limit)}
    if not sources:
        return None
    total = Summary()
    for i, source in sources.items():
        try:
            total.add((retried(partial(_drain_batch, app, 1, only=i), f"inbound {i}")
                       or Summary()).announce())
        except NOT_THE_MAILS_FAULT:
            raise
        except Exception as e:  # noqa: BLE001 - this mail's fault: kept, said, passed
            with app.engine.begin() as conn:
                conn.execute(update(T_INBOUND).where(T_INBOUND.c.id == i).values(
                    state="quarantined", processed_at=_now(), reason=_unstorable(e),
                    traceback=traceback.format_exc()[-20000:]))
            log.error("could not store inbound %s; quarantined: %s", i, _unstorable(e),
                      extra={"inbound_id": i, "source": source})
            total.quarantined += 1
            total.taken[(source, "quarantined")] += 1
    return total


def _unstorable(e: Exception) -> str:
    return f"store: {error_line(e, 2000)}"


def ingest(app: App, items: Iterable[tuple[bytes, Envelope]],
           parsed: list[ParsedMail | Unread] | None = None,
           also: Callable[[Connection], None] | None = None,
           now: datetime | None = None, history: bool = False) -> Summary:
    """Store and process in one transaction; committed when this returns.

    parsed: the items already parsed by parse_batch() (in a worker process
    while the previous batch was being stored), in the same order.
    also: more to write in the same transaction (an IMAP mailbox's progress).
    now: the batch's clock (tests set it; SLA clocks start from it).
    history: old mail (core/context.py), taken in the order it was written.

    A batch whose write fails for a reason that is not the database's or the disk's (one
    mail's values that the database refuses) is taken again mail by mail, so that the mail
    at fault is quarantined and the others are kept.
    """
    items = list(items)
    now = now or _now()
    if history:
        items, parsed = _by_date(app, items, parsed, now)
    try:
        return retried(lambda: _ingest(app, items, parsed, also, now, history),
                       f"a batch of {len(items)} mails").announce()
    except NOT_THE_MAILS_FAULT:
        raise
    except Exception as e:  # noqa: BLE001 - see the docstring
        if len(items) == 1:
            return _keep_unstorable(app, items[0], now, e)
        log.error("a batch of %d mails could not be written; taking it one by one: %s",
                  len(items), error_line(e))
    total = Summary()
    for i, item in enumerate(items):
        total.add(ingest(app, [item], [parsed[i]] if parsed else None, None, now, history))
    if also is not None:
        with app.engine.begin() as conn:
            also(conn)
    return total


def _by_date(app: App, items: list[tuple[bytes, Envelope]],
             parsed: list[ParsedMail | Unread] | None, now: datetime
             ) -> tuple[list[tuple[bytes, Envelope]], list[ParsedMail | Unread]]:
    """A batch of old mail in the order it was written, each with its parse (made here if
    no worker made it; the driver would make it anyway). Only the batch is sorted: it is
    what is held in memory, and an mbox or a maildir of one mailbox is in order, or
    nearly, already. A mail that cannot be read goes last, at `now`, as it will be kept."""
    parsed = parsed or parse_batch([(raw, env.mail_from) for raw, env in items],
                                   app.settings.limits)
    when = [written_at(p, now) if isinstance(p, ParsedMail) else now for p in parsed]
    order = sorted(range(len(items)), key=when.__getitem__)
    return [items[i] for i in order], [parsed[i] for i in order]


def act(app: App, raw: bytes, env: Envelope, operator: str) -> Summary:
    """Run the mail the operator CLI wrote for agent `operator` (a configured agent's
    name) through the pipeline, proven as that agent's (pipeline/sender.py): the same
    stages, events, rules and notices as the agent's own mail. One transaction; a
    failure is raised, not quarantined, for the person at the terminal to read."""
    return retried(lambda: _ingest(app, [(raw, env)], None, None, _now(), False, operator),
                   "the operator's mail").announce()


def _ingest(app: App, items: list[tuple[bytes, Envelope]],
            parsed: list[ParsedMail | Unread] | None,
            also: Callable[[Connection], None] | None, now: datetime,
            history: bool, operator: str | None = None) -> Summary:
    with app.engine.begin() as conn:
        ctx = app.context(conn, now, history)
        blobs = ctx.blobs
        blobs.expect(digest_of(raw) for raw, _ in items)
        batch = [Accepted(inbound=Arrival(id=None, source=env.source, origin=env.origin,
                                          mail_from=env.mail_from, rcpt_to=env.rcpt_to,
                                          digest=blobs.put(raw), size=len(raw),
                                          received_at=now, queue=env.queue,
                                          operator=operator),
                          raw=raw) for raw, env in items]
        for a, p in zip(batch, parsed or ()):
            a.parsed_ahead = p
        summary = _run(app, ctx, batch)
        if also is not None:
            also(conn)
        return summary


def _keep_unstorable(app: App, item: tuple[bytes, Envelope], now: datetime,
                     e: Exception) -> Summary:
    """A mail whose ticket the database refused: its bytes and a quarantined row, kept."""
    raw, env = item
    with app.blobs.begin_with(raw) as (conn, digest):
        kept = conn.execute(insert(T_INBOUND).values(
            received_at=now, source=env.source, origin=env.origin, mail_from=env.mail_from,
            rcpt_to=list(env.rcpt_to), digest=digest, size=len(raw), state="quarantined",
            reason=_unstorable(e), traceback=traceback.format_exc()[-20000:], attempts=1,
            processed_at=now, queue=env.queue).returning(T_INBOUND.c.id)).scalar_one()
    log.error("could not store %s; quarantined: %s", one_line(env.origin or "a mail"),
              _unstorable(e), extra={"inbound_id": kept, "source": env.source})
    return Summary(quarantined=1, taken=Counter({(env.source, "quarantined"): 1}))
