"""GET /healthz and GET /metrics, a site on the daemon's small HTTP server
(maildesk/webserver.py) on a port of its own (monitor.host, monitor.port).

/healthz answers 200 when every check passes and 503 when one fails, with the checks as
JSON: a load balancer reads the status, a person the details. /metrics is Prometheus's
text format (metrics.py). Both take GET only and show no mail, only counts and states.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine

from ..config.schema import Settings
from ..webserver import Request, Response, Server, Site
from .health import checks
from .metrics import Metrics

TEXT = "text/plain; charset=utf-8"


def _refused(status: int) -> Response:
    headers = (("Allow", "GET"),) if status == 405 else \
        (("Retry-After", "10"),) if status == 503 else ()
    return Response(status, f"{status} {HTTPStatus(status).phrase}\n".encode(), TEXT, headers)


def healthz(settings: Callable[[], Settings], engine: Engine,
            workers: Callable[[], str]) -> Response:
    found = checks(settings(), engine, workers)
    ok = all(c.ok for c in found)
    body = {"status": "ok" if ok else "failing",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in found}}
    return Response(200 if ok else 503, json.dumps(body, indent=2).encode() + b"\n",
                    "application/json")


def monitor_server(settings: Callable[[], Settings], engine: Engine, metrics: Metrics,
                   workers: Callable[[], str]) -> Server:
    """The monitoring server, its port bound (OSError if it cannot be). settings: the
    running settings, as the last reload left them (`monitor` itself stays as started);
    workers: the daemon's check of its own threads."""
    def answer(request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return healthz(settings, engine, workers)
        if path == "/metrics":
            return Response(200, metrics.exposition(), CONTENT_TYPE_LATEST)
        return Response(404, b"404 Not Found: try /healthz or /metrics\n", TEXT)
    s = settings().monitor
    return Server(Site("monitoring", "monitor", ("GET",), answer, _refused),
                  s.host, s.port, s.timeout, s.max_connections)
