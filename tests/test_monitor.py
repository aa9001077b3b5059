"""Monitoring: GET /healthz and GET /metrics from a real `maildesk serve` (monitor.enabled),
and `maildesk status` from the command line.

The database outage is real: a PostgreSQL cluster of the test's own, started in a temp
folder on a free port, stopped and started again under a running daemon (the shared
PostgreSQL other tests use is never touched).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from glob import glob
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, free_port, mail, run_cli, wait_for
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert

from maildesk.app import App
from maildesk.monitor.health import Check, checks
from maildesk.store.tables import T_INBOUND, T_OUTBOX


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def health(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(port, "/healthz")
    return status, json.loads(body)


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as Prometheus parses it: (sample name, labels) -> value."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def send(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for i in range(n):
            smtp.sendmail("ana@customer.test", ["support@localhost"],
                          mail(subject=f"Printer {i} is jammed"))


def monitored(daemon: Callable[..., Daemon], db_url: str | None = None,
              **settings: Any) -> tuple[Daemon, int]:
    """A daemon with the listener on; it opens after the SMTP port the fixture waits for."""
    port = free_port()
    d = daemon(db_url, monitor={"enabled": True, "port": port}, **settings)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 30, "the monitoring port")
    return d, port


def test_healthz_is_green_and_the_counters_follow_the_mail(daemon: Callable[..., Daemon]
                                                          ) -> None:
    d, port = monitored(daemon)
    status, body = health(port)
    assert status == 200 and body["status"] == "ok", body
    assert set(body["checks"]) == {"database", "schema", "workers", "inbound_queue"}
    assert all(c["ok"] for c in body["checks"].values()), body
    assert "ingest" in body["checks"]["workers"]["detail"]
    before = samples(port)
    assert before[("maildesk_database_up", ())] == 1
    assert before[("maildesk_tickets_opened_total", ())] == 0
    assert before[("maildesk_quarantine_size", ())] == 0
    assert before[("maildesk_outbox_mails", (("status", "failed"),))] == 0
    taken = ("maildesk_mail_taken_total", (("source", "smtp"), ("verdict", "ticketed")))
    assert taken not in before

    send(d.port, 3)
    after = wait_for(lambda: (m := samples(port))[("maildesk_tickets_opened_total", ())] == 3
                     and m.get(("maildesk_delivery_latency_seconds_count", ()), 0) >= 3
                     and m, what="three tickets opened and their answers sent")
    assert after[taken] == 3
    assert after[("maildesk_deliveries_total", (("result", "sent"),))] >= 3
    assert after[("maildesk_batch_duration_seconds_count", (("worker", "ingest"),))] >= 1
    assert after[("maildesk_inbound_queue_depth", ())] == 0
    assert get(port, "/nothing")[0] == 404
    assert health(port)[0] == 200


def test_a_breached_clock_shows_in_the_gauge_until_it_stops(daemon: Callable[..., Daemon]
                                                            ) -> None:
    """maildesk_sla_breached_clocks counts the clocks running past their target, by kind:
    the daemon's own scan breaches a two-second first response; closing the ticket stops
    its clocks and the gauge falls back."""
    d, port = monitored(daemon, sla={"scan_interval": 1, "policies": [
        {"name": "fast", "calendar": "24x7", "first_response": "2s", "resolution": "1h"}]},
        desk={"agents": [{"name": "bob", "address": "bob@desk.test"}]})
    first = ("maildesk_sla_breached_clocks", (("kind", "first_response"),))
    assert samples(port).get(first, 0) == 0
    send(d.port, 1)
    wait_for(lambda: samples(port).get(first) == 1, 60, "the breach in the gauge")
    assert samples(port).get(("maildesk_sla_breached_clocks", (("kind", "resolution"),)),
                             0) == 0
    r = run_cli("tickets", "close", "MD-1", "--as", "bob", config=d.config)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: samples(port).get(first, 0) == 0, 30, "the gauge to fall back")


def test_the_listener_is_off_by_default(daemon: Callable[..., Daemon]) -> None:
    port = free_port()
    d = daemon(monitor={"port": port})          # a port, but not enabled
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert b"monitoring" not in d.log.read_bytes()


def test_a_port_out_of_range_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "maildesk.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nmonitor:\n  enabled: true\n"
                   "  port: 70000\n")
    for args in (("config", "check"), ("serve",)):
        r = run_cli(*args, config=cfg)
        assert r.returncode == 78, r.stderr
        assert f"{cfg}:4:9: monitor.port:" in r.stderr.decode()
        assert "Traceback" not in r.stderr.decode()
    assert not (tmp_path / "data").exists()


# -- a PostgreSQL of the test's own, to stop and start -------------------------------------

class OwnPostgres:
    """A cluster in a temp folder on a free port; as root, run as the postgres user (initdb
    refuses root)."""

    def __init__(self) -> None:
        binaries = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)")
        self.bin = Path(binaries[-1]).parent
        self.runner: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                import pwd
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root, and no postgres user to run initdb as")
            if runuser is None:
                pytest.skip("running as root, and no runuser to run initdb as postgres")
            self.runner = [runuser, "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="health-pg-", dir="/tmp"))
        if self.runner:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        r = subprocess.run([*self.runner, str(self.bin / tool), *args], capture_output=True,
                           timeout=120)
        assert r.returncode == 0, f"{tool}: {r.stdout.decode()}{r.stderr.decode()}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                  "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def test_healthz_goes_red_without_the_database_and_green_when_it_returns(
        daemon: Callable[..., Daemon], own_postgres: OwnPostgres) -> None:
    d, port = monitored(daemon, own_postgres.url)
    assert health(port)[0] == 200
    own_postgres.stop()
    status, body = health(port)
    assert status == 503 and body["status"] == "failing", body
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["database"]["detail"], body
    assert body["checks"]["workers"]["ok"] is True      # the threads live through it
    assert samples(port)[("maildesk_database_up", ())] == 0
    own_postgres.start()
    wait_for(lambda: health(port)[0] == 200, what="/healthz green again")
    assert all(c["ok"] for c in health(port)[1]["checks"].values())
    send(d.port, 1)
    wait_for(lambda: samples(port)[("maildesk_tickets_opened_total", ())] == 1,
             what="mail ticketed after the outage")
    assert samples(port)[("maildesk_database_up", ())] == 1     # the figures, on PostgreSQL


def test_a_check_that_hangs_fails_in_time(make_app: Callable[..., App]) -> None:
    """A database that does not answer must fail the probe, not hang it."""
    def stuck() -> str:
        time.sleep(30)
        return "never"
    app = make_app(monitor={"timeout": 0.5})
    began = time.monotonic()
    found = {c.name: c for c in checks(app.settings, app.engine, stuck)}
    assert time.monotonic() - began < 5
    assert found["workers"] == Check("workers", False, "no answer in 0.5 s")
    assert found["database"].ok and found["schema"].ok


# -- maildesk status ------------------------------------------------------------------------

def test_status_on_an_empty_desk_without_a_daemon(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("status", "--format", "json", config=cfg)
    assert r.returncode == 69, r.stderr
    body = json.loads(r.stdout)
    assert body["status"] == "failing"
    checks = body["checks"]
    assert checks["database"]["ok"] and checks["schema"]["ok"] and \
        checks["inbound_queue"]["ok"]
    assert not checks["workers"]["ok"] and "no daemon is running" in \
        checks["workers"]["detail"]
    assert body["figures"]["inbound_queued"] == 0 and body["figures"]["quarantined"] == 0
    table = run_cli("status", config=cfg)
    assert table.returncode == 69
    assert b"FAILING" in table.stdout and b"inbound queued" in table.stdout
    assert re.search(rb"sla breached\s.*\b0\b", table.stdout), table.stdout


def test_status_of_a_desk_with_mail_and_its_daemon(daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    send(d.port, 2)
    wait_for(lambda: len(json.loads(run_cli("tickets", "list", "--format", "json",
                                            config=d.config).stdout)) == 2,
             what="two tickets")
    r = run_cli("status", "--format", "json", config=d.config)
    assert r.returncode == 0, r.stdout
    body = json.loads(r.stdout)
    assert body["status"] == "ok" and "running" in body["checks"]["workers"]["detail"]
    table = run_cli("status", config=d.config)
    assert table.returncode == 0 and b"FAILING" not in table.stdout


def test_status_fails_on_a_stuck_queue_and_a_mailbox_never_connected(
        desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(imap=[{"name": "support", "host": "127.0.0.1", "port": free_port(),
                             "username": "u", "password": "p"}],
                      monitor={"queue_stuck_after": "5m"})
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    url = f"sqlite:///{cfg.parent / 'data' / 'maildesk.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(T_INBOUND).values(
            source="pipe", digest="0" * 64, size=1, state="queued",
            received_at=datetime.now(timezone.utc) - timedelta(minutes=20)))
        for status, error in [("queued", None), ("queued", None), ("queued", "421 busy"),
                              ("sending", None), ("failed", "550 no such user")]:
            conn.execute(insert(T_OUTBOX).values(
                template="ack", envelope_from="support@localhost", to=["a@customer.test"],
                subject="s", message_id="<m@desk>", digest="0" * 64, status=status,
                last_error=error))
    engine.dispose()
    body = json.loads(run_cli("status", "--format", "json", config=cfg).stdout)
    assert {k: v for k, v in body["figures"].items() if k.startswith("outbox")} == {
        "outbox_queued": 2, "outbox_retrying": 1, "outbox_sending": 1, "outbox_failed": 1}
    queue = body["checks"]["inbound_queue"]
    assert not queue["ok"] and "1 waiting" in queue["detail"] and \
        "monitor.queue_stuck_after: 5m" in queue["detail"]
    assert body["checks"]["imap:support"] == {"ok": False, "detail": "never connected"}
    assert body["figures"]["inbound_queued"] == 1
    assert body["figures"]["inbound_oldest_s"] >= 20 * 60


def test_status_where_there_is_no_desk_makes_none(tmp_path: Path) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    r = run_cli("status", cwd=here)
    assert r.returncode == 66
    assert r.stderr.decode().startswith("maildesk: no desk at ") and r.stderr.count(b"\n") == 1
    assert list(here.iterdir()) == []


def test_the_scrape_reads_each_mailbox_from_the_database(make_app: Callable[..., App]) -> None:
    from maildesk.monitor.health import T_IMAP
    from maildesk.monitor.metrics import Metrics
    app = make_app()
    metrics = Metrics(app.engine, 5.0)

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(metrics.exposition().decode())
                for s in f.samples}
    empty = scraped()                       # an empty desk: zeros, and no mailbox
    assert empty[("maildesk_database_up", ())] == 1
    assert empty[("maildesk_inbound_queue_depth", ())] == 0
    assert not any(name.startswith("maildesk_imap") for name, _ in empty)
    at = datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc)
    with app.engine.begin() as conn:
        conn.execute(insert(T_IMAP).values(mailbox="support", connected=True,
                                           last_success_at=at))
        conn.execute(insert(T_IMAP).values(mailbox="sales", connected=False))
    got = scraped()
    box = (("mailbox", "support"),)
    assert got[("maildesk_imap_connected", box)] == 1
    assert got[("maildesk_imap_last_success_timestamp_seconds", box)] == at.timestamp()
    assert got[("maildesk_imap_connected", (("mailbox", "sales"),))] == 0
    assert ("maildesk_imap_last_success_timestamp_seconds", (("mailbox", "sales"),)) not in got


def test_a_reload_keeps_the_listener_as_started_and_says_so(daemon: Callable[..., Daemon]
                                                            ) -> None:
    import signal

    import yaml
    d, port = monitored(daemon)
    data = yaml.safe_load(d.config.read_text())
    data["monitor"]["port"] = free_port()
    d.config.write_text(yaml.safe_dump(data))
    d.send(signal.SIGHUP)
    wait_for(lambda: b"reload: monitor changed" in d.log.read_bytes(), what="the reload")
    assert health(port)[0] == 200
