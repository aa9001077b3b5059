"""Every command and every job works on any desk: empty, only new tickets with surveys off,
and a year of history; reports over a quiet period too (issue 14).

The commands are found by walking the CLI itself, so a new command is covered (or this
test fails until it says what arguments to give it).
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from conftest import mail

from maildesk.app import App
from maildesk.cli.main import cli
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.scheduler.sla_scan import scan
from maildesk.tickets.refs import token_address

UTC = timezone.utc
PIPE = Envelope("pipe", None)
START = datetime(2025, 11, 3, tzinfo=UTC)          # a Monday, a year before "now"
DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}], "ack_window": 0,
        "flood_limit": 1_000_000,
        "queues": [{"name": "general", "retention": {"close_after": "60d",
                                                     "purge_raw_after": "120d",
                                                     "purge_after": "240d"}}]}


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):      # the top level loads its commands lazily
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name)


def invocations(tmp: Path, eml: Path) -> dict[tuple[str, ...], list[list[str]]]:
    """What to run of each command (its formats, its required arguments); serve is tested
    as a daemon elsewhere, and listen, serve's own process, with it (test_smtp.py)."""
    report = [["--format", f] for f in ("table", "csv", "json")] + [
        ["--format", "html", "--out", str(tmp / "r.html")],
        ["--from", "2020-01-01", "--to", "2020-01-31", "--format", "json"],
        ["--from", "2020-01-01", "--to", "2020-01-31", "--format", "html",
         "--out", str(tmp / "quiet.html")],
        *[["--by", by, "--format", "table"] for by in ("queue", "category", "agent", "type",
                                                       "priority", "week")]]
    return {
        ("serve",): [],
        ("listen",): [],
        ("init",): [[str(tmp / "init")]],
        ("ingest",): [[str(eml)], ["--format", "json", str(eml)]],
        ("fetch",): [[], ["--format", "json"]],
        ("mailboxes", "status"): [[], ["--format", "json"]],
        ("tickets", "list"): [[], ["--format", "json"], ["--sla", "breached"],
                              ["--sla", "at-risk", "--format", "json"]],
        ("tickets", "show"): [["MD-1"], ["MD-1", "--format", "json"], ["MD-999999"]],
        ("tickets", "assign"): [["MD-1", "me", "--as", "bob"], ["MD-999999", "none", "--as",
                                                               "bob"]],
        ("tickets", "status"): [["MD-1", "pending", "--as", "bob", "--format", "json"]],
        ("tickets", "note"): [["MD-1", "looked at it", "--as", "bob"]],
        ("tickets", "reply"): [["MD-1", "Try again now.", "--as", "bob"]],
        ("tickets", "close"): [["MD-2", "--as", "bob"]],
        ("tickets", "merge"): [["MD-3", "MD-1", "--as", "bob"]],
        ("tickets", "problem"): [["MD-1", "new", "--as", "bob"], ["MD-999999", "none", "--as",
                                                                  "bob"]],
        ("tickets", "root-cause"): [["MD-1", "a full disk", "--as", "bob"]],
        ("tickets", "workaround"): [["MD-1", "restart it", "--as", "bob", "--format", "json"]],
        ("tickets", "known-error"): [["MD-1", "--as", "bob"], ["MD-1", "--off", "--as", "bob"]],
        ("problems", "list"): [[], ["--format", "json"]],
        ("problems", "suggest"): [[], ["--since", "400d", "--format", "json"],
                                  ["--since", "400d", "--propose"]],
        ("problems", "proposals"): [[], ["--format", "json"]],
        ("problems", "accept"): [["1", "--as", "bob"], ["999", "--as", "bob"]],
        ("tickets", "split"): [["MD-1", "<any@customer.test>", "--as", "bob"]],
        ("outbox", "list"): [[], ["--format", "json"], ["--status", "failed"]],
        ("outbox", "show"): [["1"], ["1", "--format", "json"]],   # --raw: test_outbox
        ("outbox", "send"): [[], ["--format", "json"]],
        ("outbox", "retry"): [["1"]],
        ("quarantine", "list"): [[], ["--state", "all", "--format", "json"]],
        ("quarantine", "show"): [["1"], ["1", "--format", "json"]],
        ("quarantine", "retry"): [["999"]],
        ("quarantine", "release"): [["999"]],
        ("quarantine", "delete"): [["999", "--yes"]],
        ("rules", "check"): [[]],
        ("rules", "test"): [[str(eml)]],
        ("sla", "show"): [["MD-1"], ["MD-1", "--format", "json"]],
        ("jobs", "run"): [["--force"], ["--force", "--format", "json"]],
        ("report",): report,
        ("blobs", "verify"): [[], ["--format", "json"]],
        ("blobs", "copy-to-database"): [[], ["--format", "json"]],
        ("blobs", "gc"): [[], ["--dry-run", "--format", "json"], ["--min-age", "0", "--all"]],
        ("db", "upgrade"): [[]],
        ("backup",): [[str(tmp / "backup")], [str(tmp / "backup-json"), "--format", "json"]],
        ("restore",): [[str(tmp / "no-backup")]],     # a desk is there: test_backup
        ("config", "check"): [[]],
        ("config", "show"): [[]],
        ("nodes", "status"): [[], ["--format", "json"]],
        ("status",): [[], ["--format", "json"]],      # 69: no daemon runs, so not healthy
        ("nodes", "forget"): [["mx9"]],
        ("keys", "list"): [[], ["--format", "json"]],
        ("keys", "rotate"): [[]],
        ("kb", "check"): [[]],
        ("kb", "list"): [[], ["--format", "json"]],
        ("kb", "show"): [["reset-vpn-password"], ["reset-vpn-password", "--format", "json"]],
        ("kb", "index"): [[], ["--format", "json"]],
        ("kb", "search"): [["vpn", "password"], ["vpn", "--all", "--format", "json"]],
        ("kb", "suggest"): [[str(eml)], [str(eml), "--format", "json"]],
        ("triage", "train"): [[], ["--format", "json"]],
        ("triage", "show"): [[], ["--format", "json"]],
        ("triage", "predict"): [[str(eml)], [str(eml), "--format", "json"]],
        ("requester", "export"): [["user1@customer.test", "--out", str(tmp / "u1.zip")],
                                  ["nobody@else.test", "--out", str(tmp / "no.zip"),
                                   "--format", "json"]],
        ("requester", "erase"): [["user2@customer.test"],
                                 ["user3@customer.test", "--yes", "--format", "json"]],
        ("retention", "run"): [["--dry-run"], ["--dry-run", "--format", "json"], []],
        ("requester", "audit"): [[], ["--format", "json"], ["--address", "user3@customer.test"]],
    }


def run(cfg: Path, args: list[str]) -> tuple[int, str]:
    """In this process: 150 start-ups of a Python process would take minutes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(["--config", str(cfg), *args], standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        except click.ClickException as e:
            e.show()
            code = e.exit_code
    return code, out.getvalue() + err.getvalue()


def customer(app: App, when: datetime, n: int, ref: str | None = None) -> None:
    subject = f"Re: [{ref}] case" if ref else f"case {n}"
    ingest(app, [(mail(subject=subject, message_id=f"<c{n}.{when:%m%d%H}@customer.test>",
                       sender=f"user{n % 7}@customer.test"), PIPE)], now=when)


def agent(app: App, when: datetime, ref: str, body: str) -> None:
    to = token_address(app.secrets[0], "support@localhost", ref, "bob@desk.test")
    raw = (f"From: Bob <bob@desk.test>\nTo: {to}\nSubject: Re: [{ref}] case\n"
           f"Message-ID: <bob.{ref}.{when:%m%d%H}@desk.test>\n\n{body}\n").encode()
    ingest(app, [(raw, PIPE)], now=when)


def a_year(app: App) -> None:
    """A ticket or three a fortnight for a year: answered, resolved, reopened, left open,
    breached; surveys sent and answered by the jobs themselves."""
    n = 0
    for week in range(0, 52, 2):
        monday = START + timedelta(weeks=week)
        for k in range(3):
            n += 1
            customer(app, monday + timedelta(hours=10 + k), n)
        first = n - 2
        agent(app, monday + timedelta(hours=13), f"MD-{first}", "Try restarting it.")
        agent(app, monday + timedelta(days=1, hours=10), f"MD-{first + 1}",
              "#status resolved\nDone.")
        if week % 4 == 0:
            customer(app, monday + timedelta(days=2, hours=9), first + 1, f"MD-{first + 1}")
        scan(app, monday + timedelta(days=6))


@pytest.fixture(params=["empty", "new-surveys-off", "a-year"])
def desk(request: pytest.FixtureRequest, desk_config: Callable[..., Path],
         make_app: Callable[..., App]) -> Path:
    kind = request.param
    cfg = desk_config(desk=DESK, digest={"to": ["boss@desk.test"]},
                      surveys={"enabled": kind != "new-surveys-off"})
    data = {k: v for k, v in yaml.safe_load(cfg.read_text()).items() if k != "data_dir"}
    app = make_app(**data)
    if kind == "new-surveys-off":
        for i in range(3):
            customer(app, datetime.now(UTC) - timedelta(hours=i), i)
    elif kind == "a-year":
        a_year(app)
    return cfg


@pytest.mark.timeout(600)
def test_every_command_and_job_on_any_desk(desk: Path, tmp_path: Path) -> None:
    eml = tmp_path / "one.eml"
    eml.write_bytes(mail(subject="one more", message_id="<any@customer.test>"))
    table = invocations(tmp_path, eml)
    missing = [c for c in commands() if c not in table]
    assert not missing, f"say how to run {missing} in invocations()"
    failures: list[Any] = []
    for command, variants in table.items():
        for args in variants:
            code, said = run(desk, [*command, *args])
            if "Traceback" in said or code not in (0, 1, 2, 64, 65, 66, 69, 78):
                failures.append((command, args, code, said[-800:]))
    assert not failures, failures[:3]
    for made in ("backup", "backup-json"):
        manifest = json.loads((tmp_path / made / "MANIFEST.json").read_text())
        assert manifest["damaged"] == 0, manifest
    code, said = run(desk, ["jobs", "run", "--force", "--format", "json"])
    ran = {r["job"]: r for r in json.loads(said[:said.rindex("]") + 1])}
    assert all(r["ran"] and not r["result"].startswith("failed") for r in ran.values()), ran
    assert {"digest", "blob_sample", "sla_scan", "propose_problems", "triage_retrain",
            "retention"} <= set(ran)
    html = (tmp_path / "quiet.html").read_text()
    assert "–" in html and "<td>None</td>" not in html and "<b>None" not in html
