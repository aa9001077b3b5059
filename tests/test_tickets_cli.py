"""`maildesk tickets`: finding tickets on a busy desk, and acting on them as an agent."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import mail, run_cli

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest

DESK = {"addresses": ["support@localhost", "network@localhost"],
        "queues": [{"name": "general", "group": "helpdesk"},
                   {"name": "network", "group": "helpdesk",
                    "addresses": ["network@localhost"]}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]},
                   {"name": "lea", "address": "lea@desk.test", "groups": ["helpdesk"]}],
        "groups": [{"name": "helpdesk"}]}
PIPE = Envelope("pipe", None)
DAY = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=timezone.utc)


@pytest.fixture
def desk(make_app: Callable[..., App], desk_config: Callable[..., Path], db_url: str
         ) -> tuple[App, Path]:
    """An App to fill the desk through the pipeline, and the config the CLI reads."""
    return make_app(db_url, desk=DESK), desk_config(db_url, desk=DESK)


def cli_json(cfg: Path, *args: str) -> Any:
    r = run_cli(*args, "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def busy(app: App) -> None:
    """Six tickets a day apart (MD-1 oldest): two requesters, two queues, one assigned."""
    people = ["ana@customer.test", "raj@customer.test"]
    for i in range(6):
        ingest(app, [(mail(subject=f"case {i + 1} " + ("printer jammed" if i % 2 else "vpn down"),
                           body=f"Ticket body number {i + 1}.\nThe Zebra label tray.\n"
                           if i == 4 else "Please help.\n",
                           sender=people[i % 2], message_id=f"<c{i}@customer.test>",
                           to="network@localhost" if i >= 3 else "support@localhost"),
                      PIPE)], now=DAY + timedelta(days=i))
    with app.engine.begin() as conn:
        from maildesk.store.tables import T_TICKETS
        conn.execute(T_TICKETS.update().where(T_TICKETS.c.ref == "MD-2")
                     .values(assignee="bob", status="pending"))


def test_list_is_newest_first_with_an_assignee_column_to_the_minute(desk: tuple[App, Path]
                                                                   ) -> None:
    app, cfg = desk
    busy(app)
    rows = cli_json(cfg, "tickets", "list")
    assert [t["ref"] for t in rows] == ["MD-6", "MD-5", "MD-4", "MD-3", "MD-2", "MD-1"]
    assert rows[-1]["created_at"] == "2026-11-02T09:30:15.123456Z", "json keeps ISO"
    assert rows[0]["message_count"] == 1 and rows[0]["notice_count"] >= 1, \
        "the acknowledgement is a notice, not a message of the conversation"
    table = run_cli("tickets", "list", config=cfg).stdout.decode()
    assert "assignee" in table and "bob" in table
    assert "2026-11-02 09:30" in table and "09:30:15" not in table and ".123456" not in table


FILTERS = [
    (["--requester", "RAJ@customer.test"], ["MD-6", "MD-4", "MD-2"]),
    (["--queue", "network"], ["MD-6", "MD-5", "MD-4"]),
    (["--assignee", "bob"], ["MD-2"]),
    (["--unassigned", "--queue", "general"], ["MD-3", "MD-1"]),
    (["--status", "pending"], ["MD-2"]),
    (["--status", "new,pending"], ["MD-6", "MD-5", "MD-4", "MD-3", "MD-2", "MD-1"]),
    (["--status", "closed", "--status", "pending"], ["MD-2"]),
    (["--search", "printer"], ["MD-6", "MD-4", "MD-2"]),
    (["--search", "zebra TRAY"], ["MD-5"]),
    (["--search", "zebra printer"], []),
    (["--search", "\"(*:-"], []),
    (["--since", "2026-11-04", "--until", "2026-11-05"], ["MD-4", "MD-3"]),
]


def test_list_filters(desk: tuple[App, Path]) -> None:
    app, cfg = desk
    busy(app)
    for args, refs in FILTERS:
        assert [t["ref"] for t in cli_json(cfg, "tickets", "list", *args)] == refs, args


def test_list_limit_says_how_many_more_matched(desk: tuple[App, Path]) -> None:
    app, cfg = desk
    busy(app)
    r = run_cli("tickets", "list", "--limit", "2", "--format", "json", config=cfg)
    assert [t["ref"] for t in json.loads(r.stdout)] == ["MD-6", "MD-5"]
    assert r.stderr.decode() == "4 more matched; --limit 6 or --limit 0 shows them\n"
    r = run_cli("tickets", "list", "--limit", "0", "--format", "json", config=cfg)
    assert len(json.loads(r.stdout)) == 6 and r.stderr == b""


def test_list_on_an_empty_desk(desk: tuple[App, Path]) -> None:
    _app, cfg = desk
    assert cli_json(cfg, "tickets", "list", "--search", "printer") == []
    r = run_cli("tickets", "list", config=cfg)
    assert r.returncode == 0 and b"no tickets" in r.stdout


@pytest.mark.parametrize(("args", "said"), [
    (["--status", "open,sleeping"], b"sleeping (statuses: new, open, pending"),
    (["--assignee", "bob", "--unassigned"], b"exclude each other"),
    (["--since", "yesterday"], b"'yesterday' does not match the format"),
])
def test_list_bad_filters_say_so_in_one_line(desk: tuple[App, Path], args: list[str],
                                             said: bytes) -> None:
    _app, cfg = desk
    r = run_cli("tickets", "list", *args, config=cfg)
    assert r.returncode in (2, 64) and said in r.stderr and b"Traceback" not in r.stderr
