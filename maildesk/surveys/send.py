"""Sending surveys: one per resolved ticket, after a delay, to people who read mail.

Not to requesters who opted out, whose mail to us was a machine's, whose
mail from us bounced, in a queue without surveys, or who had a survey
within `surveys.per_requester_days`; not for a ticket last changed by an import
of old mail. Each answer is one click that works in
any mail client: a mailto link to a rate address that carries the score.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import exists, select

from ..app import App
from ..config.durations import parse_duration
from ..core.context import Context
from ..core.fire import fire
from ..core.outbox import desk_address
from ..store.rows import TicketRow
from ..store.tables import T_EVENTS as E
from ..store.tables import T_MESSAGES as M
from ..store.tables import T_OPT_OUTS as OPT
from ..store.tables import T_SURVEYS as S
from ..store.tables import T_TICKETS as T
from ..tickets.refs import rate_address
from .answer import SCALES

BATCH = 200


def survey_opt_out(ctx: Context, ticket: TicketRow) -> None:
    ctx.ledger.opt_out(ticket.requester, ctx.now)
    fire(ctx, ticket, "survey.opted_out", actor=ticket.requester)


def _links(ctx: Context, ticket: TicketRow) -> dict[str, object]:
    surveys, desk = ctx.settings.surveys, desk_address(ctx, ticket)
    web = surveys.web

    def mailto(choice: str | None, subject: str) -> str:
        address = rate_address(ctx.secrets[0], desk, ticket.ref, ticket.requester, choice)
        return f"mailto:{address}?subject={quote(subject)}"
    choices = []
    for score, label in SCALES[surveys.scale]:
        code = rate_address(ctx.secrets[0], desk, ticket.ref, ticket.requester,
                            str(score)).split("+", 1)[1].split("@", 1)[0]
        choices.append({"score": score, "label": label,
                        "mailto": mailto(str(score), f"{label} ({ticket.ref})"),
                        "web": f"{web.base_url.rstrip('/')}/{code}" if web.enabled else None})
    return {"choices": choices, "optout": mailto("optout", f"No more surveys ({ticket.ref})"),
            "scale": surveys.scale}


def send_surveys(app: App, now: datetime, wait: bool = True) -> str:
    """Surveys for the tickets resolved `surveys.delay` ago or more; wait=False: resolved
    at all (`jobs run surveys --force`, for an operator who wants them out now)."""
    s = app.settings.surveys
    if not s.enabled:
        return "surveys are off"
    delay = timedelta(seconds=parse_duration(s.delay) if wait else 0)
    queues = [q.name for q in app.settings.desk.queues if q.surveys]
    cap = now - timedelta(days=s.per_requester_days)
    earlier = S.alias("earlier")
    sent = 0
    while True:
        with app.engine.begin() as conn:
            ids = conn.execute(select(T.c.id).where(
                T.c.status.in_(("resolved", "closed")),
                T.c.updated_at <= now - delay,
                T.c.updated_at >= now - timedelta(days=s.recent_days),
                T.c.queue.in_(queues),
                ~exists(select(S.c.id).where(S.c.ticket_id == T.c.id)),
                ~exists(select(OPT.c.address).where(OPT.c.address == T.c.requester)),
                ~exists(select(earlier.c.id).where(earlier.c.requester == T.c.requester,
                                                   earlier.c.sent_at > cap)),
                ~exists(select(E.c.id).where(E.c.ticket_id == T.c.id,
                                             E.c.kind == "delivery.failed")),
                # old mail's (`ingest --history`) last word: it was answered long ago
                ~exists(select(E.c.id).where(E.c.ticket_id == T.c.id, E.c.at >= T.c.updated_at,
                                             E.c.data["history"].as_boolean())),
                exists(select(M.c.id).where(M.c.ticket_id == T.c.id, M.c.direction == "in",
                                            M.c.verdict == "person")),
            ).order_by(T.c.id).limit(BATCH)).scalars().all()
            if not ids:
                return f"{sent} sent"
            ctx = app.context(conn, now)
            asked: set[str] = set()
            for i in ids:
                ticket = ctx.ledger.by_id(i)
                if ticket is None or (ticket.requester in asked and s.per_requester_days):
                    continue    # one per requester: the cap leaves the others out next time
                asked.add(ticket.requester)
                ctx.ledger.add_survey(ticket, now)
                fire(ctx, ticket, "survey.sent", actor="job:surveys", context=_links(ctx, ticket))
                sent += 1
            ctx.write()
