"""`maildesk ingest --queue`: the MTA's pipe stores the mail for the daemon's ingest worker.

Real processes: the pipe and `maildesk serve` on one desk. With a live daemon the pipe
only stores (exit 0 after the commit) and the daemon makes the ticket; with none (never
started, stopped, killed) the pipe makes it at once; a pipe killed before its commit
told the MTA nothing and left nothing; and real mail ends the same either way.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, mail, run_cli, settings_dict, wait_for
from sqlalchemy import Engine, create_engine, insert, select, text

from maildesk.config.load import load_settings
from maildesk.config.schema import Settings
from maildesk.intake.inbound import Envelope
from maildesk.intake.queued import queue, wake_address
from maildesk.store import migrate
from maildesk.store.tables import T_INBOUND, T_NODES

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
PIPE = ("ingest", "--queue", "--format", "json", "--sender=ana@customer.test",
        "--recipient=support@localhost")


def _engine(cfg: Path) -> Engine:
    return create_engine(load_settings(cfg).database_url)


def _inbound(cfg: Path) -> list[dict[str, Any]]:
    engine = _engine(cfg)
    try:
        with engine.connect() as c:
            return [dict(r) for r in c.execute(select(T_INBOUND).order_by(T_INBOUND.c.id))
                    .mappings()]
    finally:
        engine.dispose()


def _tickets(cfg: Path) -> list[dict[str, Any]]:
    r = run_cli("tickets", "list", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    return list(json.loads(r.stdout))


def test_with_a_live_daemon_the_pipe_stores_and_the_daemon_makes_the_ticket(
        daemon: Callable[..., Daemon], db_url: str) -> None:
    d = daemon(db_url)
    r = run_cli(*PIPE, config=d.config, input=mail(subject="Queued by the pipe"))
    assert r.returncode == 0, r.stderr.decode()
    said = json.loads(r.stdout)
    assert said["queued"] == 1
    inbound = said["inbound_id"]
    assert r.stderr == b"", "--format json: the JSON says it all, as an import's summary"
    row = next(row for row in _inbound(d.config) if row["id"] == inbound)
    assert row["source"] == "pipe" and row["mail_from"] == "ana@customer.test"
    assert row["rcpt_to"] == ["support@localhost"]
    tickets = wait_for(lambda: _tickets(d.config), 30, "the daemon's ticket")
    assert [t["subject"] for t in tickets] == ["Queued by the pipe"]
    assert wait_for(lambda: _inbound(d.config)[0]["state"] == "ticketed", 10, "ticketed")
    assert "new tickets 1" in d.log.read_text()     # the daemon's worker made it
    text = run_cli(*(a for a in PIPE if a not in ("--format", "json")), config=d.config,
                   input=mail(subject="Said for people"))
    assert text.returncode == 0 and text.stdout == b""
    assert text.stderr.decode().startswith("queued inbound ")
    assert d.stop() == 0


def test_without_a_live_daemon_the_pipe_makes_the_ticket_at_once(
        daemon: Callable[..., Daemon], desk_config: Callable[..., Path]) -> None:
    """No desk yet, a daemon that stopped, one killed a moment ago (its heartbeat still
    fresh): each time the ticket is there when the pipe exits."""
    cfg = desk_config()
    r = run_cli(*PIPE, config=cfg, input=mail(subject="No desk yet"))
    assert r.returncode == 0 and json.loads(r.stdout)["new_tickets"] == 1, r.stderr.decode()
    d = daemon()
    assert d.stop() == 0
    r = run_cli(*PIPE, config=cfg, input=mail(subject="Daemon stopped"))
    assert r.returncode == 0 and json.loads(r.stdout)["new_tickets"] == 1, r.stderr.decode()
    d.start()
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    r = run_cli(*PIPE, config=cfg, input=mail(subject="Daemon killed"))
    assert r.returncode == 0 and json.loads(r.stdout)["new_tickets"] == 1, r.stderr.decode()
    assert {t["subject"] for t in _tickets(cfg)} == {"No desk yet", "Daemon stopped",
                                                    "Daemon killed"}


def _connected(pid: int, db: Path) -> bool:
    """Whether process pid has the database file open (it is past its imports, and waits
    for the lock the test holds)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(db.resolve())
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_pipe_killed_before_its_commit_said_nothing_and_kept_nothing(
        daemon: Callable[..., Daemon], desk_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The test holds the database's write lock, so the pipe waits inside its transaction;
    killed there, it exits non-zero (the MTA keeps the mail), and nothing was committed.
    Sent again, exit 0 means the mail is in: the daemon tickets it."""
    d = daemon()
    db = tmp_path / "data" / "maildesk.db"
    blocker = create_engine(f"sqlite:///{db}", connect_args={"timeout": 30})
    with blocker.connect() as lock:
        lock.exec_driver_sql("BEGIN IMMEDIATE")
        one = tmp_path / "one.eml"
        one.write_bytes(mail(subject="Killed mid-delivery"))
        with one.open("rb") as stdin:
            pipe = subprocess.Popen([sys.executable, "-m", "maildesk", "--config",
                                     str(d.config), *PIPE], stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: _connected(pipe.pid, db), 60, "the pipe to open the database")
        time.sleep(0.3)
        pipe.kill()
        out, _err = pipe.communicate(timeout=30)
        assert pipe.returncode != 0 and out == b"", "the MTA was told nothing"
        lock.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    assert _inbound(d.config) == []
    r = run_cli(*PIPE, config=d.config, input=mail(subject="Killed mid-delivery"))
    assert r.returncode == 0 and json.loads(r.stdout)["queued"] == 1, r.stderr.decode()
    wait_for(lambda: _tickets(d.config), 30, "the daemon's ticket")
    assert d.stop() == 0


def _alive_elsewhere(cfg: Path) -> None:
    """A node on another host with a fresh heartbeat: a live daemon, as the pipe sees it."""
    now = datetime.now(timezone.utc)
    engine = _engine(cfg)
    with engine.begin() as c:
        c.execute(insert(T_NODES).values(
            name="elsewhere", host="elsewhere.test", pid=1, data_dir="/srv/maildesk",
            storage="database", started_at=now, heartbeat_at=now, stopped_at=None, leads=[]))
    engine.dispose()


def test_disk_trouble_is_75_and_keeps_nothing(desk_config: Callable[..., Path],
                                              tmp_path: Path) -> None:
    cfg = desk_config()
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    _alive_elsewhere(cfg)
    blobs = tmp_path / "data" / "blobs"
    if blobs.is_dir():
        blobs.rename(tmp_path / "blobs.away")
    blobs.write_text("not a folder\n")
    r = run_cli(*PIPE, config=cfg, input=mail())
    assert r.returncode == 75, r.stderr.decode()
    assert r.stderr.decode().startswith("maildesk: temporary failure, the mail was not kept")
    assert _inbound(cfg) == []


# -- when the pipe leaves the mail to a daemon: queue() in this process ----------------------

@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings.model_validate(settings_dict(tmp_path)).resolved(tmp_path)
    yield settings


def _upgraded(settings: Settings) -> Engine:
    engine = create_engine(settings.database_url)
    migrate.upgrade(engine)
    return engine


def _node(engine: Engine, host: str, pid: int, beat: timedelta,
          stopped: bool = False) -> None:
    now = datetime.now(timezone.utc)
    with engine.begin() as c:
        c.execute(T_NODES.delete())
        c.execute(insert(T_NODES).values(
            name="n1", host=host, pid=pid, data_dir="/srv", storage="filesystem",
            started_at=now - beat, heartbeat_at=now - beat,
            stopped_at=now - beat if stopped else None, leads=[]))


ENV = Envelope(source="pipe", mail_from="ana@customer.test", rcpt_to=("support@localhost",))


def test_no_desk_no_daemon_or_another_schema_stores_nothing(desk: Settings) -> None:
    db = desk.data_dir / "maildesk.db"
    desk.data_dir.mkdir(parents=True)
    assert queue(desk, mail(), ENV) is None
    assert not db.exists(), "no empty database made"
    engine = _upgraded(desk)
    here = socket.gethostname()
    try:
        assert queue(desk, mail(), ENV) is None                          # no node at all
        _node(engine, "elsewhere.test", 1, timedelta(seconds=2), stopped=True)
        assert queue(desk, mail(), ENV) is None                          # stopped
        _node(engine, "elsewhere.test", 1, timedelta(minutes=5))
        assert queue(desk, mail(), ENV) is None                          # silent: gone
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _node(engine, here, dead.pid, timedelta(seconds=2))
        assert queue(desk, mail(), ENV) is None                          # killed, here
        _node(engine, here, os.getpid(), timedelta(seconds=2))
        with engine.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        assert queue(desk, mail(), ENV) is None                          # another schema
        with engine.begin() as c:
            assert c.execute(select(T_INBOUND)).first() is None
            c.execute(text(f"UPDATE alembic_version SET version_num = '{migrate.HEAD}'"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as daemon:
            daemon.bind(wake_address(desk))         # where this host's daemon listens
            daemon.settimeout(5)
            first = queue(desk, mail(), ENV)
            assert daemon.recv(64) == b"queued", "the daemon's worker is woken"
        _node(engine, "elsewhere.test", 1, timedelta(seconds=2))
        second = queue(desk, mail(), ENV)           # nobody listening here: no error
        assert first is not None and second == first + 1
        with engine.connect() as c:
            states = c.execute(select(T_INBOUND.c.state)).scalars().all()
        assert states == ["queued", "queued"]
    finally:
        engine.dispose()


def test_the_queued_pipe_imports_no_pipeline_no_parser_no_app_no_orm(
        desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    _alive_elsewhere(cfg)
    probe = ("import json, sys\nfrom maildesk.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(json.dumps([code, sorted(sys.modules)]), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", probe, "--config", str(cfg), *PIPE],
                       input=mail(), capture_output=True, check=True)
    code, loaded = json.loads(r.stderr.splitlines()[-1])
    assert code == 0 and json.loads(r.stdout)["queued"] == 1
    unwanted = [m for m in loaded if m.split(".")[0] in ("mailparser", "jinja2", "flufl",
                                                         "rich", "apscheduler")
                or m.startswith(("maildesk.pipeline", "maildesk.rules", "maildesk.app",
                                 "maildesk.mail.parse", "maildesk.tickets", "maildesk.kb",
                                 "maildesk.core", "maildesk.notify", "maildesk.store.models",
                                 "sqlalchemy.orm"))]
    assert unwanted == []


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
def test_real_mail_ends_the_same_queued_as_ingested_at_once(
        daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """A sample of the shared corpus (single-message files, spread over its sources): one
    `ingest` of the files on one desk, a `--queue` pipe per mail on another whose daemon
    runs; the same tickets, messages and ends of each mail."""
    index = [line.split("\t") for line in (CORPUS / "INDEX.tsv").read_text().splitlines()[1:]]
    files = [CORPUS / row[0] for row in index if row[3] == "eml"]
    sample = files[::max(1, len(files) // 16)][:16]
    direct = tmp_path / "direct"
    direct.mkdir()
    cfg = direct / "maildesk.yaml"
    cfg.write_text(json.dumps(settings_dict(direct)))
    r = run_cli("ingest", "--format", "json", *map(str, sample), config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    d = daemon()
    for path in sample:
        r = run_cli("ingest", "--queue", "--format", "json", config=d.config,
                    input=path.read_bytes())
        assert r.returncode == 0 and json.loads(r.stdout)["queued"] == 1, r.stderr.decode()
    wait_for(lambda: all(row["state"] != "queued" for row in _inbound(d.config)), 60,
             "the daemon to drain the queue")
    assert d.stop() == 0

    def ends(cfg: Path) -> tuple[list[tuple[Any, ...]], list[tuple[str, str | None]]]:
        tickets = [(t["ref"], t["subject"], t["requester"], t["status"], t["queue"],
                    t["type"], t["priority"], t["category"], t["tags"], t["message_count"])
                   for t in _tickets(cfg)]
        return sorted(tickets), [(row["state"], row["reason"]) for row in _inbound(cfg)]
    queued = ends(d.config)
    assert len(queued[1]) == len(sample)
    assert queued == ends(cfg)
