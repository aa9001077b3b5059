"""SLA clocks as plain values, and what starts, pauses, resumes and stops them.

A clock counts business time in segments: `elapsed` holds the finished ones,
`running_since` starts the current one. Its due time is where the calendar
reaches the target; `next_check_at` is the next moment the scan must look at
it (the warning, the breach, the next escalation level), None when nothing
is left to watch. Every function here is pure over the clock and the clock's
policy, so the pipeline, the scan and the tests share one definition.
"""
from __future__ import annotations

from datetime import datetime

from ..store.rows import PAUSED, RUNNING, STOPPED, ClockRow
from .policy import SlaPolicy


def time_used(clock: ClockRow, policy: SlaPolicy, now: datetime) -> float:
    """Business seconds the clock has used so far."""
    if clock.state == RUNNING and clock.running_since is not None:
        return clock.elapsed + policy.calendar.between(clock.running_since, now)
    return clock.elapsed


def start(kind: str, policy: SlaPolicy, now: datetime) -> ClockRow:
    clock = ClockRow(kind=kind, policy=policy.name, target=policy.targets[kind], started_at=now,
                     running_since=now)
    schedule(clock, policy, now)
    return clock


def schedule(clock: ClockRow, policy: SlaPolicy, now: datetime) -> None:
    """Due, warning and next check times of a running clock, from what it has used."""
    assert clock.running_since is not None
    cal, since = policy.calendar, clock.running_since
    clock.due_at = cal.add(since, max(0.0, clock.target - clock.elapsed))
    warn_after = policy.warn_after(clock.target)
    clock.warn_at = None if clock.warned_at is not None or warn_after >= clock.target \
        else cal.add(since, max(0.0, warn_after - clock.elapsed))
    clock.next_check_at = next_check(clock, policy)


def next_check(clock: ClockRow, policy: SlaPolicy) -> datetime | None:
    if clock.state != RUNNING:
        return None
    if clock.breached_at is None:
        return clock.warn_at if clock.warn_at is not None and clock.warned_at is None \
            else clock.due_at
    if clock.level < len(policy.levels):
        return policy.calendar.add(clock.breached_at, policy.levels[clock.level].after)
    return None


def pause(clock: ClockRow, policy: SlaPolicy, now: datetime) -> None:
    if clock.state != RUNNING:
        return
    clock.elapsed = time_used(clock, policy, now)
    clock.state, clock.running_since, clock.next_check_at = PAUSED, None, None
    clock.pauses = [*clock.pauses, [now.isoformat(), None]]


def resume(clock: ClockRow, policy: SlaPolicy, now: datetime) -> None:
    """A paused clock runs again; so does a stopped resolution clock of a reopened ticket."""
    if clock.state == RUNNING:
        return
    if clock.state == PAUSED and clock.pauses:
        clock.pauses = [*clock.pauses[:-1], [clock.pauses[-1][0], now.isoformat()]]
    clock.state, clock.running_since, clock.stopped_at = RUNNING, now, None
    schedule(clock, policy, now)


def stop(clock: ClockRow, policy: SlaPolicy, now: datetime) -> None:
    """Met or missed; a miss the scan had not seen yet is recorded at its due time."""
    if clock.state == STOPPED:
        return
    clock.elapsed = time_used(clock, policy, now)
    if clock.state == PAUSED and clock.pauses:
        clock.pauses = [*clock.pauses[:-1], [clock.pauses[-1][0], now.isoformat()]]
    if clock.elapsed > clock.target and clock.breached_at is None:
        clock.breached_at = clock.due_at or now
    clock.state, clock.running_since, clock.stopped_at = STOPPED, None, now
    clock.next_check_at = None


def retarget(clock: ClockRow, old: SlaPolicy, new: SlaPolicy, now: datetime) -> None:
    """The ticket now falls under another policy (its priority changed): the time used so
    far (counted on the old calendar), the new target."""
    if clock.kind not in new.targets:
        stop(clock, old, now)
        return
    if clock.state == RUNNING:
        clock.elapsed, clock.running_since = time_used(clock, old, now), now
    clock.policy, clock.target = new.name, new.targets[clock.kind]
    if clock.state == RUNNING:
        schedule(clock, new, now)
