"""Time-based jobs: the SLA scan, closing resolved tickets, reminding waiting customers,
retraining the triage model.

APScheduler (in `maildesk serve`) decides when to try; the `job_runs` table
decides whether to run. A run first takes a lease on its row, so a job never
runs twice at once, not even in two daemons on one database; and it runs
only if its interval has passed since the last run, so a daemon that starts
after hours of downtime catches each job up once, not once per missed
interval. Every job takes `now` from its caller, so tests set the clock.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..app import App
from ..config.durations import parse_duration
from ..config.schema import Settings
from ..core.context import Context
from ..core.fire import change, fire
from ..core.proposals import find, propose
from ..core.views import send_agent_view
from ..notify.delivery import deliver_due, make_transport
from ..reports.digest import send_digest
from ..store.references import describe
from ..store.rows import TicketRow
from ..store.tables import T_RUNS, T_TICKETS
from ..store.verify import sample
from ..surveys.send import send_surveys
from ..tickets.privacy import record
from ..tickets.retention import purge, purge_raw
from .sla_scan import scan, settle_history
from .triage import retrain

log = logging.getLogger("maildesk.jobs")
LEASE = timedelta(minutes=15)
BATCH = 500


@dataclass(frozen=True)
class Job:
    name: str
    interval: float                                # seconds
    run: Callable[[App, datetime], str]            # returns what it did, one line
    # what a forced run does instead, where the job has a wait of its own besides its
    # interval (the survey delay); None: the same as run
    forced: Callable[[App, datetime], str] | None = None


@dataclass(frozen=True)
class Planned:
    """A job the daemon may run, and what turns it on: the registry `jobs_for` reads the
    desk's jobs from, and `maildesk jobs --help` lists."""

    name: str
    about: str                                    # what it does, and which setting
    on: Callable[[Settings], bool]
    interval: Callable[[Settings], float]         # seconds
    run: Callable[[App, datetime], str]
    forced: Callable[[App, datetime], str] | None = None


def jobs_for(app: App) -> list[Job]:
    """The jobs this desk's settings turn on."""
    return [Job(p.name, p.interval(app.settings), p.run, p.forced) for p in PLANNED
            if p.on(app.settings)]


def propose_problems(app: App, now: datetime) -> str:
    """Groups of alike incidents, each new one mailed to its queue's lead as a problem to
    make (core/proposals.py)."""
    with app.engine.begin() as conn:
        ctx = app.context(conn, now)
        found = find(conn, app.settings.problems, now,
                     app.meaning if app.settings.problems.embeddings else None)
        for group in found:
            propose(ctx, group)
        ctx.write()
    return f"{len(found)} proposed" if found else "no new group"


def blob_sample(app: App, now: datetime) -> str:
    """Stored mail read back and checked, a sample an hour: damage is logged as an error
    the day it is found, not the day someone opens the mail."""
    with app.engine.connect() as conn:
        checked, bad = sample(app.blobs, conn, app.settings.storage.sample)
    for b in bad:
        log.error("blob %s %s (%s), used by %s; run `maildesk blobs verify`, then "
                  "`maildesk ingest --repair SOURCE`", b.digest, b.problem, b.where,
                  describe(b.uses) or "nothing")
    return f"{len(bad)} bad of {checked} checked"


def agent_digests(app: App, now: datetime) -> str:
    """Each agent who asked for it hears once a day what waits for them (nothing, no mail)."""
    sent = 0
    with app.engine.begin() as conn:
        ctx = app.context(conn, now)
        for agent in app.settings.desk.agents:
            if agent.digest:
                sent += send_agent_view(ctx, agent, [("mine", "", None),
                                                     ("unassigned", "", None)], None)
        ctx.write()
    return f"{sent} sent"


def deliver_outbox(app: App, now: datetime) -> str:
    """The outbox delivered as the daemon's outbox worker delivers it (claim by claim, so
    both may run). Not among jobs_for's, since the daemon delivers all the time:
    `maildesk jobs run` ends with it, so a desk with pipe intake and cron needs no daemon
    and the mail the jobs before it queued leaves at once."""
    return _said(deliver_due(app, make_transport(app)).as_dict())


OUTBOX = Job("outbox", 0.0, deliver_outbox)
OUTBOX_ABOUT = "delivers the mail that is due; ends every `jobs run`"


def _said(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing due"


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(app: App, job: Job, now: datetime, who: str | None = None,
            force: bool = False) -> str | None:
    """Run the job if its interval has passed (or force, which skips a job's own wait
    too: Job.forced) and nobody holds it; None if not."""
    who = who or owner()
    with app.engine.begin() as conn:
        if conn.execute(select(T_RUNS.c.name).where(T_RUNS.c.name == job.name)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(T_RUNS).values(name=job.name))
            except IntegrityError:
                pass            # another daemon made the row first
        due = now if force else now - timedelta(seconds=job.interval * 0.99)  # timers jitter
        claimed = conn.execute(update(T_RUNS).where(
            T_RUNS.c.name == job.name,
            or_(T_RUNS.c.lease_until.is_(None), T_RUNS.c.lease_until < now),
            or_(T_RUNS.c.last_run_at.is_(None), T_RUNS.c.last_run_at <= due))
            .values(lease_until=now + LEASE, owner=who)).rowcount
    if claimed != 1:
        return None
    result = "failed"
    try:
        result = (job.forced if force and job.forced else job.run)(app, now)
        return result
    finally:
        with app.engine.begin() as conn:
            conn.execute(update(T_RUNS).where(T_RUNS.c.name == job.name, T_RUNS.c.owner == who)
                         .values(last_run_at=now, lease_until=None, last_result=result[:500]))


def _aged(now: datetime, status: str, age: str,
          extra: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
    """Tickets in `status` untouched for `age` (and extra)."""
    where = [T_TICKETS.c.status == status,
             T_TICKETS.c.updated_at <= now - timedelta(seconds=parse_duration(age))]
    return and_(*where, *([extra] if extra is not None else []))


def _old_tickets(app: App, now: datetime, status: str, age: str,
                 act: Callable[[Context, TicketRow, int], None],
                 extra: ColumnElement[bool] | None = None, history: bool = False) -> int:
    """Tickets in `status` untouched for `age`, in batches; act on each; how many.
    history: act as the job would have, when the age was reached (core/context.py)."""
    wait = timedelta(seconds=parse_duration(age))
    days = round(parse_duration(age) / 86400)
    done, after = 0, 0
    while True:
        with app.engine.begin() as conn:
            ids = conn.execute(select(T_TICKETS.c.id).where(_aged(now, status, age, extra),
                                                            T_TICKETS.c.id > after)
                               .order_by(T_TICKETS.c.id).limit(BATCH)).scalars().all()
            if not ids:
                return done
            ctx = app.context(conn, now, history)
            for i in ids:
                ticket = ctx.ledger.by_id(i)
                if ticket is not None:      # read in this transaction: always there
                    act(replace(ctx, now=ticket.updated_at + wait) if history else ctx,
                        ticket, days)
                    done += 1
            after = ids[-1]
            ctx.write()


def _closer(actor: str, why: str) -> Callable[[Context, TicketRow, int], None]:
    """Closing an old resolved ticket, with a notice; why: the reason, of {days}."""
    def close(ctx: Context, ticket: TicketRow, days: int) -> None:
        ctx.ledger.change(ticket, updated_at=ctx.now)
        change(ctx, ticket, actor, status="closed", note={"reason": why.format(days=days)},
               context={"days": days})
    return close


def auto_close(app: App, now: datetime, history: bool = False) -> str:
    """Resolved tickets nobody answered for a while are closed, with a notice."""
    close = _closer("job:auto_close", "resolved {days} days without a reply")
    age = app.settings.sla.auto_close_after
    return f"{_old_tickets(app, now, 'resolved', age, close, history=history)} closed" \
        if age else "off"


@dataclass
class Retained:
    """What the retention policy did (or, dry, would do) to one queue's tickets."""

    queue: str
    closed: int = 0
    raw_purged: int = 0      # tickets whose raw mails went
    purged: int = 0          # tickets deleted
    blobs: int = 0
    purged_refs: list[str] = field(default_factory=list)       # which, for a dry run's
    raw_purged_refs: list[str] = field(default_factory=list)   # reader to check first

    def said(self) -> str:
        return (f"{self.queue}: {self.closed} closed, {self.raw_purged} raw purged, "
                f"{self.purged} purged, {self.blobs} blobs")


def retention(app: App, now: datetime, dry_run: bool = False) -> list[Retained]:
    """Each queue's retention policy (README "Retention and privacy"): resolved tickets
    closed, closed ones deleted, and the raw mail of closed ones dropped, in that order;
    a run that did anything is a line of the privacy audit. dry_run: what it would do,
    exactly (the same changes, rolled back), and no audit line."""
    done = []
    for q in app.settings.desk.queues:
        policy, r = q.retention, Retained(q.name)
        if not policy.on:
            continue
        if policy.close_after:
            mine = T_TICKETS.c.queue == q.name
            if dry_run:
                with app.engine.connect() as conn:
                    r.closed = conn.execute(select(func.count()).where(
                        _aged(now, "resolved", policy.close_after, mine))).scalar_one()
            else:
                r.closed = _old_tickets(app, now, "resolved", policy.close_after, _closer(
                    "job:retention", f"resolved {{days}} days (retention of queue {q.name})"),
                    mine)
        purged_at = None
        if policy.purge_after:
            purged_at = now - timedelta(seconds=parse_duration(policy.purge_after))
            did = purge(app.engine, app.blobs, app.settings, q.name, purged_at, dry_run)
            r.purged, r.blobs, r.purged_refs = did.tickets, did.blobs, did.refs
        if policy.purge_raw_after:
            did = purge_raw(app.engine, app.blobs, app.settings, q.name, now - timedelta(
                seconds=parse_duration(policy.purge_raw_after)), dry_run, purged_at)
            r.raw_purged, r.blobs, r.raw_purged_refs = did.tickets, r.blobs + did.blobs, did.refs
        done.append(r)
    counts = {k: sum(getattr(r, k) for r in done)
              for k in ("closed", "raw_purged", "purged", "blobs")}
    if not dry_run and any(counts.values()):
        with app.engine.begin() as conn:
            record(conn, now, "retention", None, counts,
                   "; ".join(r.said() for r in done))
    return done


def pending_reminders(app: App, now: datetime, history: bool = False) -> str:
    """A customer we wait for hears from us once per wait, after a while."""
    def remind(ctx: Context, ticket: TicketRow, days: int) -> None:
        ctx.ledger.change(ticket, reminded_at=ctx.now)
        fire(ctx, ticket, "reminder.sent", actor="job:pending_reminders", waiting_days=days,
             context={"days": days})
    age = app.settings.sla.pending_reminder_after
    if not age:
        return "off"
    once = or_(T_TICKETS.c.reminded_at.is_(None), T_TICKETS.c.reminded_at < T_TICKETS.c.updated_at)
    return f"{_old_tickets(app, now, 'pending', age, remind, once, history)} reminded"


def finish_history(app: App, now: datetime) -> int:
    """The end of an import of old mail (`ingest --history`), at its real time `now`; returns
    how many SLA clocks it found breached.

    What these jobs would have done to its tickets is done as it would have been then, at
    those dates, sending nothing: else they would close last year's tickets and remind
    last year's customers today, by mail. (A live ticket that a job has not reached yet,
    when no daemon ran, is taken too, as quietly.) Then the clocks are settled
    (sla_scan.py settle_history). Running it again changes nothing."""
    auto_close(app, now, history=True)
    pending_reminders(app, now, history=True)
    return settle_history(app, now)


# every job, in the order the daemon schedules them; jobs_for keeps those the settings
# turn on, and `maildesk jobs --help` lists them all
HOUR, DAY = 3600.0, 86400.0
PLANNED = (
    Planned("sla_scan", "SLA warnings, breaches and escalations (sla.enabled)",
            lambda s: s.sla.enabled, lambda s: s.sla.scan_interval,
            lambda a, now: _said(scan(a, now).as_dict())),
    Planned("auto_close", "closes tickets resolved for sla.auto_close_after",
            lambda s: bool(s.sla.auto_close_after), lambda s: HOUR, auto_close),
    Planned("pending_reminders", "reminds customers pending for sla.pending_reminder_after",
            lambda s: bool(s.sla.pending_reminder_after),
            lambda s: HOUR, pending_reminders),
    Planned("surveys", "satisfaction surveys of resolved tickets (surveys.enabled)",
            lambda s: s.surveys.enabled, lambda s: 300.0, send_surveys,
            forced=lambda a, now: send_surveys(a, now, wait=False)),
    Planned("digest", "the desk's report to digest.to, every digest.every",
            lambda s: bool(s.digest.to), lambda s: parse_duration(s.digest.every),
            send_digest),
    Planned("agent_digests", "what waits for each agent with digest: true, daily",
            lambda s: any(a.digest for a in s.desk.agents), lambda s: DAY, agent_digests),
    Planned("blob_sample", "reads back storage.sample stored mails an hour, for damage",
            lambda s: bool(s.storage.sample), lambda s: HOUR, blob_sample),
    Planned("propose_problems", "proposes alike incidents as a problem (problems.propose)",
            lambda s: s.problems.propose,
            lambda s: parse_duration(s.problems.every), propose_problems),
    Planned("retention", "closes, strips and deletes old tickets per queue (retention:)",
            lambda s: any(q.retention.on for q in s.desk.queues), lambda s: HOUR,
            lambda a, now: "; ".join(r.said() for r in retention(a, now))),
    Planned("triage_retrain", "retrains the triage model (triage.enabled)",
            lambda s: s.triage.enabled,
            lambda s: parse_duration(s.triage.retrain), lambda a, now: retrain(a, now).said()),
)
