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


def test_list_limit_says_how_many_more_matched_and_the_next_page(desk: tuple[App, Path]
                                                                  ) -> None:
    app, cfg = desk
    busy(app)
    r = run_cli("tickets", "list", "--limit", "2", "--queue", "general", "--format", "json",
                config=cfg)
    assert [t["ref"] for t in json.loads(r.stdout)] == ["MD-3", "MD-2"], "a bare list"
    assert r.stderr.decode() == (
        f"1 more matched; the next page: maildesk --config {cfg} tickets list --queue "
        "general --limit 2 --format json --after MD-2\n")
    r = run_cli("tickets", "list", "--limit", "2", "--queue", "general", "--format", "json",
                "--after", "MD-2", config=cfg)
    assert [t["ref"] for t in json.loads(r.stdout)] == ["MD-1"]
    assert r.stderr == b"", "the last page"
    r = run_cli("tickets", "list", "--limit", "0", "--format", "json", config=cfg)
    assert len(json.loads(r.stdout)) == 6 and r.stderr == b""
    r = run_cli("tickets", "list", "--limit", "2", "--search", "printer jammed", config=cfg)
    assert b"MD-6" in r.stdout and b"MD-4" in r.stdout and b"MD-2" not in r.stdout
    assert r.stderr.decode() == (
        f"1 more matched; the next page: maildesk --config {cfg} tickets list --search "
        "'printer jammed' --limit 2 --after MD-4\n"), "the table's note, quoted for a shell"


def test_pages_by_key_skip_and_repeat_nothing(desk: tuple[App, Path]) -> None:
    """Paging as a script does, --after the last ref of each page until a page is short
    (or empty), gives what one listing of all gives, in its order, for every filter:
    tickets of one instant (MD-2 to MD-5) are ordered by id, and a page that ends among
    them goes on with the rest of them."""
    app, cfg = desk
    busy(app)
    with app.engine.begin() as conn:
        from maildesk.store.tables import T_TICKETS
        conn.execute(T_TICKETS.update().where(T_TICKETS.c.number.between(2, 5))
                     .values(created_at=DAY + timedelta(days=1)))
    assert [t["ref"] for t in cli_json(cfg, "tickets", "list")] == \
        ["MD-6", "MD-5", "MD-4", "MD-3", "MD-2", "MD-1"]
    for args, size in [([], 1), ([], 2), ([], 3), *[(f, 2) for f, refs in FILTERS if refs]]:
        everything = [t["ref"] for t in in_process(cfg, *args, "--limit", "0")]
        pages: list[list[str]] = []
        after: list[str] = []
        while True:
            pages.append([t["ref"] for t in in_process(cfg, *args, "--limit", str(size),
                                                       *after)])
            if len(pages[-1]) < size:
                break
            after = ["--after", pages[-1][-1]]
        assert [ref for p in pages for ref in p] == everything, (args, size, pages)
        assert all(len(p) == size for p in pages[:-1])
    # the ticket --after names need not match the filters: the page starts where it stood
    assert [t["ref"] for t in cli_json(cfg, "tickets", "list", "--queue", "general",
                                       "--after", "md-4")] == ["MD-3", "MD-2", "MD-1"]


def in_process(cfg: Path, *args: str) -> Any:
    """`tickets list --format json` run in this process: the pages of every filter in
    their own processes would take a minute."""
    from click.testing import CliRunner

    from maildesk.cli.main import cli
    r = CliRunner().invoke(cli, ["--config", str(cfg), "tickets", "list", *args,
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize(("after", "code", "said"), [
    ("MD-99", 66, "maildesk: --after MD-99: no such ticket (it names the last ticket of the "
                  "page before; start again without --after)\n"),
    ("42", 64, "maildesk: --after '42' is not a ticket reference (like MD-42): it names the "
               "last ticket of the page before\n"),
    ("", 64, "maildesk: --after '' is not a ticket reference"),
])
def test_a_bad_cursor_is_one_line(desk: tuple[App, Path], after: str, code: int, said: str
                                  ) -> None:
    app, cfg = desk
    busy(app)
    r = run_cli("tickets", "list", "--after", after, "--format", "json", config=cfg)
    assert r.returncode == code and r.stdout == b""
    assert r.stderr.decode().startswith(said) and r.stderr.count(b"\n") == 1


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


# -- acting as an agent -----------------------------------------------------------------

def outbox(app: App, ref: str) -> list[tuple[str, list[str]]]:
    from sqlalchemy import select

    from maildesk.store.models import OutboxMail, Ticket
    with app.sessions() as s:
        return [(t, list(to)) for t, to in s.execute(
            select(OutboxMail.template, OutboxMail.to).join(Ticket)
            .where(Ticket.ref == ref).order_by(OutboxMail.id))]


def shown(cfg: Path, ref: str) -> dict[str, Any]:
    return cli_json(cfg, "tickets", "show", ref)  # type: ignore[no-any-return]


def by_mail(app: App, ref: str, body: str) -> None:
    """What bob does from his mail client: a reply to his reply address for the ticket."""
    from conftest import reply_address
    ingest(app, [(mail(subject=f"Re: [{ref}] printer", body=body, sender="Bob <bob@desk.test>",
                       to=reply_address(app, ref, "bob@desk.test")), PIPE)])


def acts(cfg: Path, *args: str, input: bytes | None = None) -> str:
    r = run_cli("tickets", *args, "--as", "bob", config=cfg, input=input)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"\n") == 1, r.stdout
    return r.stdout.decode()


def history(t: dict[str, Any]) -> list[tuple[str, str | None, Any, Any]]:
    return [(e["kind"], e["actor"], (e["data"] or {}).get("field"), (e["data"] or {}).get("new"))
            for e in t["events"]]


def test_assign_and_status_do_what_the_mail_commands_do(desk: tuple[App, Path]) -> None:
    app, cfg = desk
    for i in (1, 2):
        ingest(app, [(mail(message_id=f"<p{i}@customer.test>"), PIPE)])
    ack = len(shown(cfg, "MD-1")["events"])
    said = acts(cfg, "assign", "MD-1", "me")
    assert said.startswith("MD-1: assignee: - -> bob"), said
    acts(cfg, "status", "MD-1", "pending")
    by_mail(app, "MD-2", "#assign me\n")
    by_mail(app, "MD-2", "#status pending\n")
    cli, mailed = shown(cfg, "MD-1"), shown(cfg, "MD-2")
    assert (cli["assignee"], cli["status"]) == (mailed["assignee"], mailed["status"]) \
        == ("bob", "pending")
    assert history(cli) == history(mailed), "the same events, by the same actor"
    assert ("ticket.updated", "agent:bob", "assignee", "bob") in history(cli)[ack:]
    assert [t for t, _to in outbox(app, "MD-1")] == [t for t, _to in outbox(app, "MD-2")]
    proofs = [m["proof"] for m in cli["messages"] if m["from"] == "bob@desk.test"]
    assert proofs == ["operator", "operator"]
    text = run_cli("tickets", "show", "MD-1", config=cfg).stdout.decode()
    assert "assignee: - -> bob; by agent bob's command" in text
    assert f"messages:    3 written, {cli['notice_count']} notices sent" in text, \
        "the customer's mail and bob's two, as by mail; the notices apart"
    assert "unassigned" not in acts(cfg, "assign", "MD-1", "none")
    assert shown(cfg, "MD-1")["assignee"] is None


def test_reply_reaches_the_customer_and_a_note_does_not(desk: tuple[App, Path]) -> None:
    app, cfg = desk
    ingest(app, [(mail(), PIPE)])
    before = outbox(app, "MD-1")
    acts(cfg, "note", "MD-1", "-", input=b"Called her: the tray is broken.\n")
    assert outbox(app, "MD-1") == before or all(
        "ana@customer.test" not in to for _t, to in outbox(app, "MD-1")[len(before):])
    t = shown(cfg, "MD-1")
    note = t["messages"][-1]
    assert note["visibility"] == "internal" and "tray is broken" in note["text"]
    said = acts(cfg, "reply", "MD-1", "Please try tray 2.")
    assert "reply relayed" in said and "status: new -> pending" in said, said
    sent = outbox(app, "MD-1")[-1]
    assert sent == ("agent.reply", ["ana@customer.test"])
    with app.sessions() as s:
        from sqlalchemy import select

        from maildesk.store.models import OutboxMail
        digest = s.scalars(select(OutboxMail.digest).order_by(OutboxMail.id.desc())).first()
    assert digest is not None
    raw = app.blobs.get(digest)
    assert b"Please try tray 2." in raw and b"#" not in raw.split(b"\n\n", 1)[1][:5]


def test_merge_moves_the_messages(desk: tuple[App, Path]) -> None:
    app, cfg = desk
    ingest(app, [(mail(message_id="<m1@customer.test>"), PIPE)])
    ingest(app, [(mail(subject="printer again", message_id="<m2@customer.test>"), PIPE)])
    n = len(shown(cfg, "MD-2")["messages"])
    said = acts(cfg, "merge", "MD-2", "MD-1")
    assert "merged into MD-1" in said and "status: new -> closed" in said, said
    assert "linked_to" not in said, "a row id is nothing to an operator"
    history = run_cli("tickets", "show", "MD-2", config=cfg).stdout.decode()
    assert "linked_to: -" not in history and "merged into MD-1" in history, history
    two, one = shown(cfg, "MD-2"), shown(cfg, "MD-1")
    assert two["status"] == "closed" and two["linked_to"] == "MD-1" and two["messages"] == []
    assert len(one["messages"]) >= n + 1
    assert "printer again" in [m["subject"] for m in one["messages"]]
    assert [t["ref"] for t in cli_json(cfg, "tickets", "list", "--search", "again")] == ["MD-1"]
    moved = next(e["data"]["moved"] for e in two["events"] if e["kind"] == "ticket.merged")
    assert f"merged into MD-1 ({moved} messages moved)" in \
        run_cli("tickets", "show", "MD-2", config=cfg).stdout.decode()
    assert f"absorbed MD-2 ({moved} messages moved)" in \
        run_cli("tickets", "show", "MD-1", config=cfg).stdout.decode(), "both sides say it"


@pytest.mark.parametrize(("args", "code", "said"), [
    (["status", "MD-9", "open"], 66, b"no ticket MD-9"),
    (["merge", "MD-1", "MD-9"], 66, b"no ticket MD-9"),
    (["merge", "MD-1", "md-1"], 64, b"MD-1 cannot be merged into itself"),
    (["status", "MD-1", "sleeping"], 64, b"'sleeping' is not a status (open, pending, "
                                          b"resolved, closed)"),
    (["assign", "MD-1", "zed"], 64, b"no agent 'zed'"),
    (["close", "MD-1", "--as", "zed"], 67, b"no agent 'zed' (agents: bob, lea"),
])
def test_action_errors_are_one_line(desk: tuple[App, Path], args: list[str], code: int,
                                    said: bytes) -> None:
    app, cfg = desk
    ingest(app, [(mail(), PIPE)])
    r = run_cli("tickets", *args, *([] if "--as" in args else ["--as", "bob"]), config=cfg)
    assert r.returncode == code and said in r.stderr and r.stderr.count(b"\n") == 1, r.stderr
    assert shown(cfg, "MD-1")["status"] == "new", "nothing happened"


def test_the_history_says_a_reply_moved_the_ticket_and_a_command_set_it(
        desk: tuple[App, Path]) -> None:
    """A reply moves a new ticket to pending on its own: the history says so, not that the
    agent commanded it (a trial read "by agent bob's command" for a plain reply)."""
    app, cfg = desk
    ingest(app, [(mail(message_id="<m1@customer.test>"), PIPE)])
    acts(cfg, "reply", "MD-1", input=b"Try turning it off and on.\n")
    acts(cfg, "status", "MD-1", "open")
    r = run_cli("tickets", "show", "MD-1", config=cfg)
    assert r.returncode == 0, r.stderr
    said = [line.strip() for line in r.stdout.decode().splitlines()]
    assert "status: new -> pending; after agent bob's reply" in said, said
    assert "status: pending -> open; by agent bob's command" in said, said


def test_the_history_says_why_a_tag_in_the_subject_was_ignored(desk: tuple[App, Path]
                                                               ) -> None:
    """`[MD-1]` from somebody not on MD-1 opens a ticket of their own; the text view says
    why, as the JSON did alone."""
    app, cfg = desk
    ingest(app, [(mail(message_id="<m1@customer.test>"), PIPE)])
    ingest(app, [(mail(subject="Re: [MD-1] mine too", sender="eve@else.test",
                       message_id="<e1@else.test>"), PIPE)])
    r = run_cli("tickets", "show", "MD-2", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "tag ignored: MD-1: the sender is not on that ticket" in r.stdout.decode()
