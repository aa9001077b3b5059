"""A tiny HTTP endpoint that takes a form POST and answers JSON, for identity providers."""
from __future__ import annotations

import json
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any


class FormToJSON(BaseHTTPRequestHandler):
    """Subclasses say what to answer a form with: (HTTP status, JSON body)."""

    def answer(self, form: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def do_POST(self) -> None:  # noqa: N802
        form = dict(urllib.parse.parse_qsl(
            self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()))
        status, body = self.answer(form)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass
