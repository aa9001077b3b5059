"""Rating links for the web, for desks that prefer them to mailto links (off by default).

Mail security scanners open every link in a mail, so a GET only shows a page
that asks to confirm; the rating is recorded on the POST that page sends.
The link carries the same token as the rate address, so it is good for one
ticket's requester, once. Pages are plain HTML with no script and a strict
Content-Security-Policy.

The pages are a site on the daemon's small HTTP server (maildesk/webserver.py, where its
limits are): `surveys.web.timeout` for a request to arrive whole,
`surveys.web.max_connections` open at once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from urllib.parse import parse_qs

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from ..app import App
from ..core.context import Context
from ..errors import error_line
from ..store.rows import TicketRow
from ..tickets.refs import read_rate_address, requester_token_ok
from ..webserver import Request, Response, Server, Site
from .answer import SCALES, Rating, record
from .send import survey_opt_out

log = logging.getLogger("maildesk.surveys")
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


@dataclass(frozen=True)
class Page:
    status: int
    title: str
    body: str                                       # HTML
    headers: tuple[tuple[str, str], ...] = ()


BAD_REQUEST = Page(400, "Bad request", "<p>This is not a request this server understands.</p>")
REFUSED = {
    400: BAD_REQUEST,
    405: Page(405, "Not allowed", "<p>Rating pages take GET and POST only.</p>",
              (("Allow", "GET, POST"),)),
    411: Page(411, "Length required", "<p>A form needs a Content-Length.</p>"),
    413: Page(413, "Too large", "<p>This form is larger than a rating and a comment.</p>"),
    431: Page(431, "Headers too large", "<p>The request's headers are too large.</p>"),
    500: Page(500, "Sorry", "<p>Something went wrong on our side.</p>"),
    503: Page(503, "Busy", "<p>Too many people at once; please try again in a minute.</p>",
              (("Retry-After", "60"),)),
}
UNAVAILABLE = Page(503, "Try again later", "<p>Your answer cannot be recorded just now; "
                                           "please try again in a few minutes.</p>",
                   (("Retry-After", "300"),))


def _html(title: str, body: str) -> bytes:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
            f"max-width:32em;margin:2em auto;padding:0 1em;color:#1d2430}}button{{font-size:1em;"
            f"padding:.6em 1.2em}}textarea{{width:100%;min-height:5em}}</style></head><body>"
            f"<h1>{escape(title)}</h1>{body}</body></html>").encode()


def _response(page: Page) -> Response:
    return Response(page.status, _html(page.title, page.body), "text/html; charset=utf-8",
                    (("Content-Security-Policy", CSP), ("X-Frame-Options", "DENY"),
                     ("Referrer-Policy", "no-referrer"), *page.headers))


def _target(app: App, conn: Connection, path: str
            ) -> tuple[str, str | None, TicketRow, Context] | Page:
    code = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]   # behind any prefix
    found = read_rate_address(f"x+{code}@x", app.settings.desk.ref_prefix)
    if found is None or found[1] is None:
        return Page(404, "Not found", "<p>This is not a rating link.</p>")
    ref, choice, token = found
    ctx = app.context(conn, datetime.now(timezone.utc))
    ticket = ctx.ledger.by_ref(ref)
    if ticket is None or not requester_token_ok(token, app.secrets, ref, ticket.requester,
                                                     "rate"):
        return Page(403, "Link not valid", "<p>This rating link is not valid.</p>")
    return ref, choice, ticket, ctx


def _confirm(app: App, path: str) -> Page:
    """GET: the question and a form to confirm it; nothing changes."""
    with app.engine.connect() as conn:
        target = _target(app, conn, path)
    if isinstance(target, Page):
        return target
    ref, choice, _ticket, _ctx = target
    if choice == "optout":
        question = "Send me no more satisfaction surveys."
    else:
        label = dict(SCALES[app.settings.surveys.scale]).get(int(choice or 0), choice)
        question = f"Your rating for {ref}: {label}."
    return Page(200, f"Rate {ref}", f"<p>{escape(question)}</p><form method=post>"
                f"<p><label>Anything to add? (optional)<br><textarea name=comment "
                f"maxlength=2000></textarea></label></p><p><button>Confirm</button></p>"
                f"</form>")


def _record(app: App, path: str, body: bytes) -> Page:
    """POST: the rating (or the opt-out) and its comment, once."""
    form = parse_qs(body.decode("utf-8", "replace"))
    comment = (form.get("comment") or [""])[0].strip()[:2000]
    with app.engine.begin() as conn:
        target = _target(app, conn, path)
        if isinstance(target, Page):
            return target
        ref, choice, ticket, ctx = target
        if choice == "optout":
            survey_opt_out(ctx, ticket)
            done = True
        else:
            done = record(ctx, ticket, Rating(int(choice or 0), comment), via="web")
        ctx.write()
    if done:
        return Page(200, "Thank you", "<p>Thank you: your answer is recorded.</p>")
    return Page(409, "Already answered",
                f"<p>{escape(ref)} has been rated already, or has no survey.</p>")


def _answer(app: App, request: Request) -> Response:
    try:
        page = _confirm(app, request.path) if request.method == "GET" else \
            _record(app, request.path, request.form)
    except SQLAlchemyError as e:       # the database is down: the customer may retry
        log.error("rating page: %s", error_line(e))
        page = UNAVAILABLE
    return _response(page)


def rating_server(app: App) -> Server:
    """The rating pages' server, its port bound (OSError if it cannot be)."""
    web = app.settings.surveys.web
    site = Site("rating pages", "surveys.web", ("GET", "POST"),
                lambda request: _answer(app, request),
                lambda status: _response(REFUSED.get(status, BAD_REQUEST)))
    return Server(site, web.host, web.port, web.timeout, web.max_connections)
