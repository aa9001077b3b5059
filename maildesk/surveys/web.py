"""Rating links for the web, for desks that prefer them to mailto links (off by default).

Mail security scanners open every link in a mail, so a GET only shows a page
that asks to confirm; the rating is recorded on the POST that page sends.
The link carries the same token as the rate address, so it is good for one
ticket's requester, once. Pages are plain HTML with no script and a strict
Content-Security-Policy.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from sqlalchemy import Connection

from ..app import App
from ..pipeline.work import Context
from ..tickets.ledger import TicketRow
from ..tickets.refs import rate_token_ok, read_rate_address
from .answer import SCALES, Rating, record
from .send import survey_opt_out

log = logging.getLogger("maildesk.surveys")
MAX_FORM = 8192


def _page(title: str, body: str) -> bytes:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
            f"max-width:32em;margin:2em auto;padding:0 1em;color:#1d2430}}button{{font-size:1em;"
            f"padding:.6em 1.2em}}textarea{{width:100%;min-height:5em}}</style></head><body>"
            f"<h1>{escape(title)}</h1>{body}</body></html>").encode()


class Handler(BaseHTTPRequestHandler):
    server: RatingServer

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("web: " + fmt, *args)

    def _send(self, code: int, title: str, body: str) -> None:
        data = _page(title, body)
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(data)

    def _target(self, conn: Connection) -> tuple[str, str | None, TicketRow, Context] | None:
        app = self.server.app
        code = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]   # behind any prefix
        found = read_rate_address(f"x+{code}@x", app.settings.desk.ref_prefix)
        if found is None or found[1] is None:
            self._send(404, "Not found", "<p>This is not a rating link.</p>")
            return None
        ref, choice, token = found
        ctx = app.context(conn, datetime.now(timezone.utc))
        ticket = ctx.ledger.by_ref(ref)
        if ticket is None or not rate_token_ok(token, app.secrets, ref, ticket.requester):
            self._send(403, "Link not valid", "<p>This rating link is not valid.</p>")
            return None
        return ref, choice, ticket, ctx

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        with self.server.app.engine.connect() as conn:
            target = self._target(conn)
        if target is None:
            return
        ref, choice, _ticket, _ctx = target
        if choice == "optout":
            question = "Send me no more satisfaction surveys."
        else:
            label = dict(SCALES[self.server.app.settings.surveys.scale]).get(int(choice or 0),
                                                                             choice)
            question = f"Your rating for {ref}: {label}."
        self._send(200, f"Rate {ref}", f"<p>{escape(question)}</p><form method=post>"
                   f"<p><label>Anything to add? (optional)<br><textarea name=comment "
                   f"maxlength=2000></textarea></label></p><p><button>Confirm</button></p>"
                   f"</form>")

    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        length = min(int(self.headers.get("Content-Length") or 0), MAX_FORM)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        comment = (form.get("comment") or [""])[0].strip()[:2000]
        app = self.server.app
        with app.engine.begin() as conn:
            target = self._target(conn)
            if target is None:
                return
            ref, choice, ticket, ctx = target
            if choice == "optout":
                survey_opt_out(ctx, ticket)
                done = True
            else:
                done = record(ctx, ticket, Rating(int(choice or 0), comment), via="web")
            ctx.write()
        if done:
            self._send(200, "Thank you", "<p>Thank you: your answer is recorded.</p>")
        else:
            self._send(409, "Already answered",
                       f"<p>{escape(ref)} has been rated already, or has no survey.</p>")


class RatingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: App) -> None:
        web = app.settings.surveys.web
        super().__init__((web.host, web.port), Handler)
        self.app = app

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="ratings", daemon=True)
        thread.start()
        return thread
