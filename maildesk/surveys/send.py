"""Sending surveys: one per resolved ticket, after a delay, to people who read mail.

Not to requesters who opted out, whose mail to us was a machine's, whose
mail from us bounced, in a queue without surveys, or who had a survey
within `surveys.per_requester_days`. Each answer is one click that works in
any mail client: a mailto link to a rate address that carries the score.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import exists, insert, select

from ..app import App
from ..notify.outbox import desk_address, queue_mail
from ..pipeline.work import Context
from ..rules.vocabulary import parse_duration
from ..store.models import Event, Message, Survey, SurveyOptOut
from ..tickets.ledger import T_TICKETS, TicketRow
from ..tickets.refs import rate_address
from .answer import SCALES

T, S, OPT = T_TICKETS, Survey.__table__, SurveyOptOut.__table__
E, M = Event.__table__, Message.__table__
BATCH = 200


def survey_opt_out(ctx: Context, ticket: TicketRow) -> None:
    conn = ctx.ledger.conn
    if conn.execute(select(OPT.c.address).where(OPT.c.address == ticket.requester)).first() is None:
        conn.execute(insert(OPT).values(address=ticket.requester, at=ctx.now))
    ctx.ledger.add_event(ticket, "survey.opted_out", ctx.now, actor=ticket.requester)


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


def send_surveys(app: App, now: datetime) -> str:
    s = app.settings.surveys
    if not s.enabled:
        return "surveys are off"
    queues = [q.name for q in app.settings.desk.queues if q.surveys]
    cap = now - timedelta(days=s.per_requester_days)
    earlier = S.alias("earlier")
    sent = 0
    while True:
        with app.engine.begin() as conn:
            ids = conn.execute(select(T.c.id).where(
                T.c.status.in_(("resolved", "closed")),
                T.c.updated_at <= now - timedelta(seconds=parse_duration(s.delay)),
                T.c.updated_at >= now - timedelta(days=s.recent_days),
                T.c.queue.in_(queues),
                ~exists(select(S.c.id).where(S.c.ticket_id == T.c.id)),
                ~exists(select(OPT.c.address).where(OPT.c.address == T.c.requester)),
                ~exists(select(earlier.c.id).where(earlier.c.requester == T.c.requester,
                                                   earlier.c.sent_at > cap)),
                ~exists(select(E.c.id).where(E.c.ticket_id == T.c.id,
                                             E.c.kind == "delivery.failed")),
                exists(select(M.c.id).where(M.c.ticket_id == T.c.id, M.c.direction == "in",
                                            M.c.verdict == "person")),
            ).order_by(T.c.id).limit(BATCH)).scalars().all()
            if not ids:
                return f"{sent} sent"
            ctx = app.context(conn, now)
            asked: set[str] = set()
            for i in ids:
                ticket = ctx.ledger.by_id(i)
                assert ticket is not None
                if ticket.requester in asked and s.per_requester_days:
                    continue    # one per requester: the cap leaves the others out next time
                asked.add(ticket.requester)
                conn.execute(insert(S).values(ticket_id=i, requester=ticket.requester,
                                              sent_at=now))
                links = _links(ctx, ticket)
                queue_mail(ctx, ticket, "survey", [(ticket.requester_name or "",
                                                    ticket.requester)],
                           answering=None, auto_submitted="auto-generated", extra=links,
                           reply_address=rate_address(ctx.secrets[0], desk_address(ctx, ticket),
                                                      ticket.ref, ticket.requester))
                ctx.ledger.add_event(ticket, "survey.sent", now, actor="job:surveys")
                sent += 1
            ctx.write()
