"""The digest: the report of the last period, mailed to the managers who asked for it.

It goes through the outbox like every mail we send (retries, attempts, the
maildir on a new desk), with the HTML report as its HTML part and the totals
as its text part; it belongs to no ticket.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert

from ..app import App
from ..config.durations import parse_duration
from ..mail.compose import Outgoing, compose, new_message_id
from ..store.models import OutboxMail
from .metrics import ALL, build
from .render import TABLE, as_html, last_day

T_OUTBOX = OutboxMail.__table__


def send_digest(app: App, now: datetime) -> str:
    settings = app.settings
    if not settings.digest.to:
        return "no recipients"
    end = datetime.combine(now.date(), datetime.min.time(), now.tzinfo)
    start = end - timedelta(seconds=parse_duration(settings.digest.every))
    with app.engine.begin() as conn:
        report = build(conn, start, end, "queue")
        total = report.groups.get(ALL, {})
        lines = [f"{k.replace('_', ' ')}: {total.get(k, '-')}" for k in TABLE]
        subject = (f"{settings.desk.name}: report {start.date()} to {last_day(report)} "
                   f"({total.get('created', 0)} new, {total.get('backlog', 0)} open)")
        text = (f"{subject}\n\n" + "\n".join(lines)
                + f"\n\n{len(report.breaches)} SLA breaches; the full report is the HTML part "
                  f"of this mail, or `maildesk report --format html`.\n")
        out = Outgoing(from_name=settings.desk.name, from_addr=settings.desk.addresses[0],
                       to=tuple(("", a) for a in settings.digest.to), subject=subject,
                       text=text, html=as_html(report, app.templates, settings.desk.name),
                       message_id=new_message_id(settings.desk.domain), date=now,
                       auto_submitted="auto-generated", x_loop=settings.desk.addresses[0])
        blobs = app.blobs.batch(conn)
        digest = blobs.put(compose(out))
        conn.execute(insert(T_OUTBOX).values(
            ticket_id=None, template="digest", envelope_from=settings.envelope_from,
            to=list(settings.digest.to), subject=subject, message_id=out.message_id,
            digest=digest, status="queued", attempts=0, next_attempt_at=now,
            last_error=None, created_at=now, sent_at=None))
        blobs.finish()
    return f"sent to {len(settings.digest.to)}"
