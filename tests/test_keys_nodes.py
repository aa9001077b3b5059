"""Keys every node shares, and the nodes table: who runs, and who must not start."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    PG_OK,
    Daemon,
    free_port,
    mail,
    reply_address,
    run_cli,
    settings_dict,
    wait_for,
)
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store import keys, nodes
from maildesk.store.models import Ticket

DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}]}
PIPE = Envelope(source="pipe", mail_from=None)


def command(app: App, to: str, line: str, n: int) -> dict[str, int]:
    raw = (f"From: bob@desk.test\nTo: {to}\nSubject: Re: [MD-1] Printer\n"
           f"Message-ID: <cmd{n}@desk.test>\n\n{line}\n").encode()
    return ingest(app, [(raw, Envelope(source="smtp", mail_from="bob@desk.test",
                                       rcpt_to=(to,)))]).as_dict()


def priority(app: App) -> str:
    with app.engine.connect() as c:
        return str(c.scalar(select(Ticket.priority).where(Ticket.ref == "MD-1")))


def test_a_token_signed_on_one_node_is_good_on_another_and_rotation_reaches_both(
        make_app: Callable[..., App], db_url: str, tmp_path: Path) -> None:
    """Two nodes with data folders of their own on one database. The key is made once, in
    the database; no node writes secret.key. A rotation on one node reaches the other at
    its next heartbeat (refresh_keys); mail sent before it can still be answered."""
    a = make_app(db_url, desk=DESK)
    b = make_app(db_url, desk=DESK, data_dir=str(tmp_path / "other"))
    assert a.secrets == b.secrets and len(a.secrets) == 1
    assert not (tmp_path / "data" / "secret.key").exists()
    ingest(a, [(mail(), PIPE)])
    old = reply_address(a, person="bob@desk.test")
    assert command(b, old, "#priority P1", 1)["follow_ups"] == 1
    assert priority(a) == "P1"

    with a.engine.begin() as c:
        assert keys.rotate(c, datetime.now(timezone.utc)) == 2
    b.refresh_keys()
    assert b.secrets[1] == a.secrets[0] and b.secrets[0] != a.secrets[0]
    new = reply_address(b, person="bob@desk.test")
    command(a, new, "#priority P2", 2)                       # a has not refreshed yet
    assert priority(a) == "P1"
    a.refresh_keys()
    assert command(a, new, "#priority P2", 3)["follow_ups"] == 1
    assert command(a, old, "#priority P3", 4)["follow_ups"] == 1  # the key before verifies
    assert priority(b) == "P3"
    with a.engine.begin() as c:
        keys.rotate(c, datetime.now(timezone.utc))
    a.refresh_keys()
    command(a, old, "#priority P4", 5)                       # two rotations: retired
    assert priority(a) == "P3"
    with a.engine.connect() as c:
        assert [k["use"] for k in keys.listing(c)] == ["signs and verifies", "verifies",
                                                        "retired"]


def test_the_key_file_of_an_older_desk_becomes_its_first_generation(
        make_app: Callable[..., App], tmp_path: Path) -> None:
    """Tokens in mail an older maildesk sent (signed with <data_dir>/secret.key) stay good."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_bytes(b"0123456789abcdef0123456789abcdef\n")
    app = make_app()
    assert app.secrets == (b"0123456789abcdef0123456789abcdef",)


def test_keys_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path)))
    assert run_cli("keys", "list", config=cfg).returncode == 66          # no desk yet
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("keys", "rotate", config=cfg)
    assert r.returncode == 0 and b"generation 2 signs" in r.stdout, r.stderr
    listed = json.loads(run_cli("keys", "list", "--format", "json", config=cfg).stdout)
    assert [k["generation"] for k in listed] == [2, 1]
    assert all(len(k["fingerprint"]) == 16 and "secret" not in k for k in listed)
    filed = tmp_path / "filed.yaml"
    filed.write_text(yaml.safe_dump(settings_dict(tmp_path, secret_file=str(tmp_path / "k"))))
    r = run_cli("keys", "rotate", config=filed)
    assert r.returncode == 78 and b"secret_file" in r.stderr


def node(name: str, data_dir: str = "/srv/a", storage: str = "database",
         host: str = "mx1", pid: int = 1) -> nodes.Node:
    return nodes.Node(name=name, data_dir=data_dir, storage=storage, host=host, pid=pid)


def test_who_may_start_beside_whom(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    now = datetime.now(timezone.utc)
    with app.engine.begin() as c:
        nodes.register(c, node("a", host="mx1", pid=os.getpid()), now)
        # shared storage: any number of nodes
        assert nodes.refusal(c, node("b", "/srv/b", host="mx2"), now) is None
        # blobs on a disk of its own, beside a node elsewhere: refused
        refused = nodes.refusal(c, node("b", "/srv/b", "filesystem", host="mx2"), now)
        assert refused is not None and "storage.backend: database" in str(refused)
        # the same name, running on another host: refused until it stops
        refused = nodes.refusal(c, node("a", host="mx2"), now)
        assert refused is not None and "node.name" in str(refused)
        # the same name and host, its process gone (killed; restarted at once): this is it
        dead = 2**22 + 12345
        nodes.register(c, node("c", host=socket.gethostname(), pid=dead), now)
        assert nodes.refusal(c, node("c", host=socket.gethostname(), pid=os.getpid()),
                             now) is None
        # killed, and not yet reaped by whoever started it (a zombie): gone as well
        zombie = subprocess.Popen(["true"])
        wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] == "Z",
                 what="a zombie")
        nodes.register(c, node("z", host=socket.gethostname(), pid=zombie.pid), now)
        assert nodes.refusal(c, node("z", host=socket.gethostname(), pid=os.getpid()),
                             now) is None
        zombie.wait()
        # a node silent past ALIVE is gone, whatever it kept where
        assert nodes.refusal(c, node("x", "/srv/x", "filesystem", host="mx9"),
                             now + nodes.ALIVE + timedelta(seconds=1)) is None
        rows = nodes.status(c, now + timedelta(seconds=1))
        assert [(r["name"], r["state"]) for r in rows] == [("a", "running"), ("c", "running"),
                                                           ("z", "running")]
        assert nodes.forget(c, "a", now) is not None              # running: refused
        assert nodes.forget(c, "a", now + nodes.ALIVE * 2) is None
        assert nodes.forget(c, "nobody", now) == "no node 'nobody'"


@pytest.mark.skipif(not PG_OK, reason="PostgreSQL not reachable")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)   # hosts share no SQLite
def test_a_second_node_with_its_own_disk_is_refused_at_start(
        tmp_path: Path, db_url: str) -> None:
    """Two `maildesk serve` on one PostgreSQL, each with its own data folder and
    storage.backend filesystem: the second says why in one line and exits 78; with
    storage.backend database it starts, and `nodes status` lists both."""
    def config(name: str, backend: str) -> tuple[Path, int]:
        port = free_port()
        data = settings_dict(tmp_path / name, db_url, smtp={"port": port},
                             storage={"backend": backend}, node={"name": name})
        path = tmp_path / f"{name}.yaml"
        (tmp_path / name).mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        return path, port

    first = Daemon(*config("mx1", "filesystem"), tmp_path / "mx1.log").start()
    try:
        cfg, _port = config("mx2", "filesystem")
        for command in ("serve", "config check"):   # and the check run before a restart
            r = run_cli(*command.split(), config=cfg, timeout=60)
            assert r.returncode == 78, r.stderr
            assert b"node mx1" in r.stderr and b"storage.backend: database" in r.stderr
            assert b"Traceback" not in r.stderr
        first.stop()
        first = Daemon(*config("mx1", "database"), tmp_path / "mx1.log").start()
        second = Daemon(*config("mx2", "database"), tmp_path / "mx2.log").start()
        try:
            status = json.loads(run_cli("nodes", "status", "--format", "json",
                                        config=cfg).stdout)
            assert {(n["name"], n["state"]) for n in status} == {("mx1", "running"),
                                                                   ("mx2", "running")}
        finally:
            second.stop()
        status = json.loads(run_cli("nodes", "status", "--format", "json", config=cfg).stdout)
        assert {n["name"]: n["state"] for n in status}["mx2"] == "stopped"
    finally:
        first.stop()


def test_nodes_status_on_a_desk_that_never_ran_a_node(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path)))
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("nodes", "status", config=cfg)
    assert r.returncode == 0 and b"no node has run" in r.stdout
    assert json.loads(run_cli("nodes", "status", "--format", "json", config=cfg).stdout) == []
    assert run_cli("nodes", "forget", "mx9", config=cfg).returncode == 66


@pytest.mark.parametrize("setting, words", [
    ({"database": {"url": "postgres://maildesk@db/maildesk"}}, b"'postgres' is not a database"),
    ({"database": {"url": "mysql://root@localhost/desk"}}, b"'mysql' is not a database"),
    ({"node": {"name": "mx\x1b[31m\nevil"}}, b"node.name"),
])
def test_a_database_or_node_name_maildesk_cannot_use_is_one_line_and_78(
        tmp_path: Path, setting: dict[str, Any], words: bytes) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(settings_dict(tmp_path, **setting)))
    for command in ("config check", "serve"):
        r = run_cli(*command.split(), config=cfg)
        assert r.returncode == 78 and words in r.stderr, r.stderr
        assert b"Traceback" not in r.stderr and b"\x1b" not in r.stderr


def test_a_database_password_is_never_shown() -> None:
    from maildesk.store.db import shown_url
    shown = shown_url("postgresql+psycopg://root:s3cret@db/desk?password=qs3cret&sslmode=require")
    assert "s3cret" not in shown and "sslmode=require" in shown and "root:***@db" in shown
