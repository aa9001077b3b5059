"""APScheduler inside `maildesk serve`: when to try each job (jobs.py decides whether).

Each job is tried at start (which catches up what downtime missed, once) and
then every interval; misfires coalesce into one run and a job never overlaps
itself in this process.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ..app import App
from ..errors import error_line, expected
from .jobs import Job, jobs_for, run_job

log = logging.getLogger("maildesk.jobs")


def _tick(app: App, job: Job, done: Callable[[], None]) -> None:
    try:
        result = run_job(app, job, datetime.now(timezone.utc))
    except Exception as e:  # noqa: BLE001 - one line, and the next interval tries again
        log.error("job %s failed: %s", job.name, error_line(e), exc_info=not expected(e),
                  extra={"job": job.name})
        return
    if result is not None:
        quiet = result.startswith(("0 ", "nothing"))
        log.log(logging.DEBUG if quiet else logging.INFO, "job %s: %s", job.name, result)
        done()


def start(app: App, done: Callable[[], None]) -> BackgroundScheduler:
    """Start the jobs; done() is called after each run (to wake the outbox)."""
    scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    for job in jobs_for(app):
        scheduler.add_job(_tick, IntervalTrigger(seconds=job.interval, timezone=timezone.utc),
                          args=(app, job, done), id=job.name, name=job.name,
                          next_run_time=datetime.now(timezone.utc))
    scheduler.start()
    return scheduler
