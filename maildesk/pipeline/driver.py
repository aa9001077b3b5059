"""Runs the stages over a batch of accepted mail inside one transaction.

Each mail runs in a ledger draft. A named Outcome keeps what the stages
decided and sets the inbound state; any other exception undoes the mail's
draft and quarantines it with the stage, the error and the traceback (logged
at ERROR, as Mailman shunts a message), so one bad mail never stops the mail
behind it. Database outages are not the mail's fault: they propagate, the
whole batch rolls back, and the caller retries later (451, exit 75).
"""
from __future__ import annotations

import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from ..core.context import Context, Dropped, Outcome, Quarantined
from ..logs import domain_of
from ..mail.headers import one_line
from ..store.rows import Pending
from .parse import parse_mail
from .work import Accepted, Arrival, Crashed, Stage, Work, in_its_time

log = logging.getLogger("maildesk.pipeline")
TRANSIENT = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Line:
    """One log line of what a batch did, and the inbound row it is about (its id is known
    once the batch is written)."""

    message: str
    fields: dict[str, Any]
    row: Pending | None = None
    level: int = logging.INFO
    args: tuple[str, ...] = ()


@dataclass
class Summary:
    """What a batch did, for `maildesk ingest` and the logs."""

    new_tickets: int = 0
    follow_ups: int = 0
    duplicates: int = 0
    refused: int = 0
    dropped: int = 0
    classified: int = 0     # machines' mail kept without a ticket: auto-replies, bounces, ...
    quarantined: int = 0
    refs: list[str] = field(default_factory=list)
    # (source, verdict: the state the mail was left in) -> mails: the monitor's counts
    taken: Counter[tuple[str, str]] = field(default_factory=Counter)
    # the log lines of what the batch did, written by announce() once it is committed: a
    # rolled-back batch opened no ticket, and a mail taken from a pipe has its id only then
    lines: list[Line] = field(default_factory=list)

    def add(self, other: Summary) -> None:
        for k in ("new_tickets", "follow_ups", "duplicates", "refused", "dropped", "classified",
                  "quarantined"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.refs.extend(other.refs)
        self.taken.update(other.taken)
        self.lines.extend(other.lines)

    def announce(self) -> Summary:
        """Log the batch's events, one line each, once; returns self."""
        for line in self.lines:
            fields = line.fields if line.row is None else {**line.fields,
                                                           "inbound_id": line.row.id}
            log.log(line.level, line.message, *line.args, extra=fields)
        self.lines.clear()
        return self

    def as_dict(self) -> dict[str, int]:
        """What became of each mail: the counts add up to the mails taken."""
        return {k: getattr(self, k) for k in
                ("new_tickets", "follow_ups", "duplicates", "refused", "dropped", "classified",
                  "quarantined")}


def _run_one(ctx: Context, a: Accepted, stages: tuple[tuple[str, Stage], ...]
             ) -> tuple[str, Pending, Work | None]:
    """Parse, then run the stages on one mail in a ledger draft; returns the mail's final
    state, its inbound row, and its Work once it was parsed."""
    ctx.ledger.start_mail()
    stage, w = "parse", None
    try:
        w = Work(a.inbound, a.raw, parse_mail(ctx, a))
        here = in_its_time(ctx, w.parsed)
        for stage, fn in stages:  # noqa: B007 - the handlers below name the stage
            fn(here, w)
    except (Quarantined, Dropped) as o:
        ctx.ledger.undo_mail()
        return o.state, _settle(ctx, a, w, o.state, f"{stage}: {o.reason}"), w
    except Outcome as o:
        ctx.ledger.keep_mail()
        return o.state, _settle(ctx, a, w, o.state, o.reason), w
    except TRANSIENT:
        ctx.ledger.undo_mail()
        raise
    except Exception as e:
        ctx.ledger.undo_mail()
        reason = f"{stage}: {e}" if isinstance(e, Crashed) else f"{stage}: {type(e).__name__}: {e}"
        trace = e.trace if isinstance(e, Crashed) else traceback.format_exc()
        log.error("maildesk failed on %s and quarantined it (`maildesk quarantine show %s` "
                  "shows it again): %s", a.inbound.origin or f"inbound {a.inbound.id}",
                  a.inbound.id or "ID", reason[:300],
                  extra={"inbound_id": a.inbound.id, "traceback": trace[-5000:]})
        return "quarantined", _settle(ctx, a, w, "quarantined", reason[:2000],
                                      trace[-20000:]), w
    ctx.ledger.keep_mail()
    return "ticketed", _settle(ctx, a, w, "ticketed", None), w


def _settle(ctx: Context, accepted: Accepted, w: Work | None, state: str, reason: str | None,
            trace: str | None = None) -> Pending:
    a = accepted.inbound
    values: dict[str, Any] = {"state": state, "reason": reason, "traceback": trace,
                              "attempts": a.attempts + 1, "processed_at": ctx.now}
    if a.id is None:   # not yet in the database: insert it whole
        values |= {"received_at": a.received_at, "source": a.source, "origin": a.origin,
                   "mail_from": a.mail_from, "rcpt_to": list(a.rcpt_to), "digest": a.digest,
                   "size": a.size, "queue": a.queue}
    return ctx.ledger.settle(a.id, w.message if w is not None and state == "ticketed"
                             else None, **values)


def _ticket_line(w: Work, arrival: Arrival, row: Pending, events: list[Pending]) -> Line:
    """A ticketed mail's log line: the ticket it opened, or what it changed and who did."""
    assert w.ticket is not None
    t = w.ticket
    if w.created:
        return Line("ticket opened", {"ref": t.ref, "queue": t.queue, "source": arrival.source,
                                      "verdict": w.verdict, "subject": one_line(t.subject, 100)},
                    row)
    kinds = list(dict.fromkeys(str(e.values["kind"]) for e in events if e.ticket is t))
    return Line("ticket resolved" if "ticket.resolved" in kinds else "ticket updated",
                {"ref": t.ref, "by": w.agent.name if w.agent else "customer",
                 "changed": ",".join(kinds[:8]) or "-", "status": t.status}, row)


def process(ctx: Context, batch: list[Accepted], stages: tuple[tuple[str, Stage], ...]
            ) -> Summary:
    """Run the batch and write what it decided (the caller commits)."""
    summary = Summary()
    for a in batch:
        arrival, before = a.inbound, len(ctx.ledger.events)
        state, row, w = _run_one(ctx, a, stages)
        if arrival.id is None:    # taken now from a pipe, a file or a mailbox, not queued
            summary.lines.append(Line("mail taken", {
                "source": arrival.source, "origin": one_line(arrival.origin or ""),
                "sender_domain": domain_of(arrival.mail_from or ""), "size": arrival.size},
                row))
        summary.taken[(a.inbound.source, state)] += 1
        reason = row.values["reason"]
        if state == "quarantined" and row.values["traceback"] is None:   # a crash is an ERROR
            summary.lines.append(Line(
                "quarantined %s: %s", {"source": arrival.source,
                                       "reason": one_line(reason or "", 300)}, row,
                logging.WARNING, (one_line(arrival.origin or "a mail"), one_line(reason or ""))))
        elif state not in ("ticketed", "quarantined"):   # kept without a ticket: why
            summary.lines.append(Line(
                "mail kept without a ticket (%s)", {
                    "source": arrival.source, "state": state,
                    "verdict": w.verdict if w is not None else None,
                    "sender_domain": domain_of(arrival.mail_from or ""),
                    "reason": one_line(reason or "", 300)}, row, args=(state,)))
        if state == "ticketed" and w is not None and w.ticket is not None:
            summary.lines.append(_ticket_line(w, arrival, row, ctx.ledger.events[before:]))
            if w.created:
                summary.new_tickets += 1
                summary.refs.append(w.ticket.ref)
            else:
                summary.follow_ups += 1
        elif state == "duplicate":
            summary.duplicates += 1
        elif state == "refused":
            summary.refused += 1
        elif state == "spam":
            summary.dropped += 1
        elif state == "quarantined":
            summary.quarantined += 1
        else:
            summary.classified += 1
    ctx.ledger.write()
    return summary
