"""Issue 18: one IMAP mailbox configured on several nodes (`maildesk serve` on one
PostgreSQL database). One node drains it; when that one is killed (kill -9) mid-drain,
another takes over within seconds, and every mail is taken exactly once."""
from __future__ import annotations

import json
import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import PG_OK, PG_URL, Daemon, free_port, mail, run_cli, settings_dict, wait_for
from dovecot import Dovecot, available
from sqlalchemy import Engine, create_engine, text

pytestmark = [
    pytest.mark.skipif(not available(),
                       reason="dovecot not installed (apt-get install dovecot-imapd)"),
    pytest.mark.skipif(not PG_OK, reason=f"PostgreSQL not reachable at {PG_URL}")]

MAILS = 2_000
LEADING = re.compile(r"mailbox support: leading \(node (node\d)\)")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    d = Dovecot().start()
    yield d
    d.cleanup()


@pytest.fixture
def pg() -> Iterator[tuple[str, Engine]]:
    """A schema of the test's own, as conftest's db_url makes, and an engine on it."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def node_config(tmp_path: Path, name: str, url: str, box: dict[str, object]) -> Daemon:
    """A node of its own (data_dir, log, SMTP port) on the shared database."""
    home = tmp_path / name
    home.mkdir()
    port = free_port()
    # one sender: the default ack limit (10 an hour) keeps the outbox from 2,000 notices
    data = settings_dict(home, url, imap=[box], node={"name": name}, smtp={"port": port},
                         desk={"ack_window": 3600}, storage={"backend": "database"})
    cfg = home / "maildesk.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return Daemon(cfg, port, home / "daemon.log")


def leaders(nodes: list[Daemon]) -> list[str]:
    """The nodes whose log says they took the lead, in the order the test sees them."""
    return [m for d in nodes if d.log.exists() for m in LEADING.findall(d.log.read_text())]


def scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as c:
        return int(c.execute(text(sql)).scalar() or 0)


def append_bulk(d: Dovecot, raws: list[bytes]) -> None:
    """MULTIAPPEND (RFC 3502) in slices: one command, one fsync per slice."""
    with d.client() as c:
        for i in range(0, len(raws), 250):
            c.multiappend("INBOX", [r.replace(b"\n", b"\r\n") for r in raws[i:i + 250]])


def test_three_nodes_one_mailbox_leader_killed_mid_drain(
        dovecot: Dovecot, pg: tuple[str, Engine], nodes: list[Daemon],
        tmp_path: Path) -> None:
    url, db = pg
    box = dovecot.mailbox(batch_size=50)
    # one after the other: the first applies the migrations the others then find done
    for name in ("node0", "node1", "node2"):
        nodes.append(node_config(tmp_path, name, url, box).start())
    wait_for(lambda: sum("standing by" in d.log.read_text() for d in nodes) == 2, 20,
             "two nodes to stand by")
    raws = [mail(subject=f"n{i}", message_id=f"<node{i}.{secrets.token_hex(4)}@c.test>")
            for i in range(MAILS)]
    append_bulk(dovecot, raws)    # the leader hears of it by IDLE, and drains as it comes
    # the mail is all in: past its first round (what IDLE announced first), the leader is
    # in a round of the rest, batch by batch
    wait_for(lambda: scalar(db, "SELECT count(*) FROM inbound") >= 500, 60,
             "the leader's first batches")
    first = leaders(nodes)
    assert len(first) == 1, f"one leader, not {first}"
    leader = next(d for d in nodes if f"(node {first[0]})" in d.log.read_text())
    assert scalar(db, "SELECT count(*) FROM inbound") < MAILS, "killed mid-drain"
    at_kill = scalar(db, "SELECT count(*) FROM inbound")
    leader.send(signal.SIGKILL)
    killed_at = time.monotonic()
    leader.proc.wait()  # type: ignore[union-attr]
    wait_for(lambda: len(leaders(nodes)) == 2, 10, "another node to take the lead")
    takeover = time.monotonic() - killed_at
    print(f"killed {first[0]} at {at_kill} mails; takeover after kill -9: {takeover:.2f} s")
    assert takeover < 5
    wait_for(lambda: scalar(db, "SELECT last_uid FROM imap_state") == MAILS, 120,
             f"all {MAILS} mails committed")

    # exactly once: each mail one delivery, one message and one ticket, none seen twice
    assert scalar(db, "SELECT count(*) FROM inbound WHERE source = 'imap'") == MAILS
    assert scalar(db, "SELECT count(*) FROM inbound WHERE state <> 'ticketed'") == 0
    assert scalar(db, "SELECT count(*) FROM messages WHERE direction = 'in'") == MAILS
    assert scalar(db, "SELECT count(DISTINCT message_id) FROM messages "
                      "WHERE direction = 'in'") == MAILS
    assert scalar(db, "SELECT count(*) FROM tickets") == MAILS
    assert scalar(db, "SELECT count(DISTINCT subject) FROM tickets") == MAILS
    assert scalar(db, "SELECT taken FROM imap_state") == MAILS
    with dovecot.client() as c:    # the move follows the commit: give it a moment
        wait_for(lambda: c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0, 30,
                 "the INBOX to empty")
        assert c.select_folder("maildesk.processed", readonly=True)[b"EXISTS"] == MAILS
    followers = [d for d in nodes if d is not leader]
    new = next(d for d in followers if "leading" in d.log.read_text())
    other = next(d for d in followers if d is not new)
    assert "led by another node; standing by" in other.log.read_text()
    for d in followers:
        assert d.stop(signal.SIGTERM) == 0
        assert "Traceback" not in d.log.read_text()
    assert "imap_state_pkey" not in "".join(d.log.read_text() for d in nodes)


def test_fetch_while_a_node_leads_the_mailbox_exits_75(
        dovecot: Dovecot, pg: tuple[str, Engine], nodes: list[Daemon],
        tmp_path: Path) -> None:
    url, _db = pg
    box = dovecot.mailbox()
    nodes.append(node_config(tmp_path, "node0", url, box).start())
    wait_for(lambda: leaders(nodes), 20, "the node to lead the mailbox")
    cron = node_config(tmp_path, "cron", url, box).config
    r = run_cli("fetch", config=cron)
    assert r.returncode == 75
    assert r.stderr.decode() == ("support: a running node (maildesk serve) leads this "
                                 "mailbox and drains it; not drained here\n")
    out = json.loads(run_cli("fetch", "--format", "json", config=cron).stdout)
    assert "a running node" in out["support"]["error"]
    nodes[0].stop(signal.SIGTERM)
    dovecot.append(mail(message_id="<cron1@c.test>"))
    r = run_cli("fetch", config=cron)
    assert r.returncode == 0 and r.stdout.startswith(b"support: 1 new tickets"), r.stderr


def test_a_leader_whose_lock_connection_breaks_stops_and_leads_again(
        dovecot: Dovecot, pg: tuple[str, Engine], nodes: list[Daemon],
        tmp_path: Path) -> None:
    """The server ends the session that holds the lock (a restart, a network cut): the
    lock is gone, so the node stops draining at once, then takes the lead again."""
    url, db = pg
    # IDLE may miss a mail appended between the drain and the IDLE that follows (Dovecot;
    # intake/imap.py): a short poll_interval picks it up whatever the moment
    node = node_config(tmp_path, "node0", url, dovecot.mailbox(poll_interval=3))
    nodes.append(node.start())
    wait_for(lambda: "connected to" in node.log.read_text(), 20, "the node to drain")
    from maildesk.store.leadership import advisory_key
    with db.connect() as c:
        # this desk's lock alone: the suite's other workers hold advisory locks of their own
        # (migrations, other nodes) in the same database
        key = advisory_key("support", str(c.execute(text("SELECT current_schema()")).scalar()))
        pid = c.execute(text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                             "AND objsubid = 1 AND classid::bigint = :hi AND objid::bigint = :lo"),
                        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar()
        assert pid and c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    wait_for(lambda: len(leaders(nodes)) == 2, 10, "the node to lead again")
    assert "WARNING maildesk.imap: mailbox support: leadership lost; stopped draining it" \
        in node.log.read_text()
    dovecot.append(mail(message_id="<again@c.test>"))
    wait_for(lambda: scalar(db, "SELECT count(*) FROM tickets") == 1, 20, "the mail after")
    assert node.stop(signal.SIGTERM) == 0
