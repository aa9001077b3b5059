"""IMAP intake against a real Dovecot: nothing lost, nothing doubled."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, mail, run_cli, wait_for
from dovecot import Dovecot, available

pytestmark = pytest.mark.skipif(not available(),
                                reason="dovecot not installed (apt-get install dovecot-imapd)")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    d = Dovecot().start()
    yield d
    d.cleanup()


def fetch(cfg: Path, *names: str) -> tuple[int, dict[str, Any]]:
    r = run_cli("fetch", *names, "--format", "json", config=cfg)
    return r.returncode, json.loads(r.stdout or b"{}")


def tickets(cfg: Path) -> list[dict[str, Any]]:
    r = run_cli("tickets", "list", "--limit", "0", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def folder(d: Dovecot, name: str = "INBOX", criteria: list[str] | None = None) -> list[int]:
    with d.client() as c:
        if not c.folder_exists(name):
            return []
        c.select_folder(name, readonly=True)
        return c.search(criteria or ["ALL"])


def test_new_mail_becomes_tickets_replies_thread_and_mail_is_moved(
        dovecot: Dovecot, desk_config: Callable[..., Path], db_url: str) -> None:
    cfg = desk_config(db_url, imap=[dovecot.mailbox(queue=None)])
    dovecot.append(mail(subject="VPN down", message_id="<i1@c.test>"),
                   mail(subject="Re: [MD-1] VPN down", message_id="<i2@c.test>",
                        In_Reply_To="<i1@c.test>"),
                   mail(subject="Printer", sender="bo@c.test", message_id="<i3@c.test>"))
    code, out = fetch(cfg)
    assert code == 0 and out["support"]["new_tickets"] == 2 and out["support"]["follow_ups"] == 1
    assert [(t["ref"], t["message_count"], t["notice_count"]) for t in tickets(cfg)] == \
        [("MD-2", 1, 1), ("MD-1", 2, 1)]       # newest first; the acknowledgements apart
    assert folder(dovecot) == [] and len(folder(dovecot, "maildesk.processed")) == 3
    status = json.loads(run_cli("mailboxes", "status", "--format", "json", config=cfg).stdout)
    assert status[0]["taken"] == 3 and status[0]["last_uid"] == 3
    assert status[0]["uidvalidity"] and status[0]["last_error"] is None
    code, out = fetch(cfg)
    assert code == 0 and sum(out["support"].values()) == 0, "nothing twice"


def test_implicit_tls_and_flag_mode_leave_mail_in_place(
        dovecot: Dovecot, desk_config: Callable[..., Path]) -> None:
    box = dovecot.mailbox(tls="implicit", port=dovecot.imaps_port, after="flag")
    cfg = desk_config(imap=[box])
    dovecot.append(mail(message_id="<f1@c.test>"))
    assert fetch(cfg)[0] == 0
    assert folder(dovecot) == [1] and folder(dovecot, criteria=["SEEN"]) == [1]
    dovecot.append(mail(subject="second", message_id="<f2@c.test>"))
    code, out = fetch(cfg)
    assert out["support"]["new_tickets"] == 1 and len(tickets(cfg)) == 2


def test_delete_mode_expunges_after_commit(dovecot: Dovecot,
                                           desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(imap=[dovecot.mailbox(after="delete")])
    dovecot.append(mail(message_id="<d1@c.test>"), mail(subject="b", message_id="<d2@c.test>"))
    assert fetch(cfg) == (0, {"support": {"new_tickets": 2, "follow_ups": 0, "duplicates": 0,
                                          "refused": 0, "dropped": 0, "classified": 0,
                                          "quarantined": 0}})
    assert folder(dovecot) == []


def test_mailbox_queue_is_used_for_its_tickets(dovecot: Dovecot,
                                               desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(desk={"queues": [{"name": "general"}, {"name": "facilities"}]},
                      imap=[dovecot.mailbox(queue="facilities")])
    dovecot.append(mail())
    fetch(cfg)
    assert tickets(cfg)[0]["queue"] == "facilities"


def test_broken_mail_in_the_middle_is_quarantined_and_moved(
        dovecot: Dovecot, desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(imap=[dovecot.mailbox()])
    dovecot.append(mail(subject="before", message_id="<b1@c.test>"),
                   b"\x00\x01 this is not mail\r\n\r\n",
                   mail(subject="after", message_id="<b3@c.test>"))
    code, out = fetch(cfg)
    assert code == 0 and out["support"]["new_tickets"] == 2 and out["support"]["quarantined"] == 1
    assert folder(dovecot) == [], "the bad mail does not block the mailbox"
    q = json.loads(run_cli("quarantine", "list", "--format", "json", config=cfg).stdout)
    assert q[0]["origin"] == "imap support uid 2"


def test_failure_between_commit_and_move_neither_loses_nor_doubles(
        dovecot: Dovecot, desk_config: Callable[..., Path], db_url: str) -> None:
    """The move fails after the commit (as if the process died there); the next run recovers."""
    cfg = desk_config(db_url, imap=[dovecot.mailbox(move_to="~not-allowed")])
    dovecot.append(*(mail(subject=f"m{i}", message_id=f"<c{i}@c.test>") for i in range(3)))
    code, _ = fetch(cfg)
    assert code == 75, "the move failed"
    assert len(tickets(cfg)) == 3 and len(folder(dovecot)) == 3, "committed, not yet moved"
    cfg = desk_config(db_url, imap=[dovecot.mailbox()])
    code, out = fetch(cfg)
    assert code == 0 and sum(out["support"].values()) == 0
    assert len(tickets(cfg)) == 3 and folder(dovecot) == []
    assert len(folder(dovecot, "maildesk.processed")) == 3


def test_uidvalidity_change_rescans_without_doubling(
        dovecot: Dovecot, desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(imap=[dovecot.mailbox(after="flag", folder="Support")])
    with dovecot.client() as c:
        c.create_folder("Support")
    raws = [mail(subject=f"u{i}", message_id=f"<u{i}@c.test>") for i in range(3)]
    dovecot.append(*raws, folder="Support")
    fetch(cfg)
    before = json.loads(run_cli("mailboxes", "status", "--format", "json", config=cfg).stdout)
    with dovecot.client() as c:          # the provider rebuilds the folder: new UIDVALIDITY
        c.delete_folder("Support")
        c.create_folder("Support")
    time.sleep(1.1)                      # Dovecot's UIDVALIDITY is a timestamp
    with dovecot.client() as c:
        c.delete_folder("Support")
        c.create_folder("Support")
    dovecot.append(*raws, mail(subject="u3", message_id="<u3@c.test>"), folder="Support")
    code, out = fetch(cfg)
    assert code == 0 and out["support"]["duplicates"] == 3 and out["support"]["new_tickets"] == 1
    after = json.loads(run_cli("mailboxes", "status", "--format", "json", config=cfg).stdout)
    assert after[0]["uidvalidity"] != before[0]["uidvalidity"]
    assert len(tickets(cfg)) == 4


def test_wrong_password_is_reported_as_such(dovecot: Dovecot,
                                            desk_config: Callable[..., Path]) -> None:
    cfg = desk_config(imap=[dovecot.mailbox(password="wrong")])
    r = run_cli("fetch", config=cfg)
    assert r.returncode == 77
    err = r.stderr.decode()
    assert "support: login as desk refused" in err and "check the password" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_password_command_and_file(dovecot: Dovecot, desk_config: Callable[..., Path],
                                   tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(dovecot.password + "\n")
    box_file = dovecot.mailbox(name="by-file", password=None, password_file=str(tmp_path / "pw"))
    box_cmd = dovecot.mailbox(name="by-command", password=None,
                              password_command=f"cat {tmp_path / 'pw'}")
    cfg = desk_config(imap=[box_file, box_cmd])
    dovecot.append(mail())
    code, out = fetch(cfg)
    assert code == 0 and out["by-file"]["new_tickets"] == 1 and "error" not in out["by-command"]


def test_xoauth2_login_with_a_token_command(dovecot: Dovecot,
                                            desk_config: Callable[..., Path]) -> None:
    good = dovecot.mailbox(name="oauth", password=None,
                           oauth2={"token_command": f"echo {dovecot.token}"})
    bad = dovecot.mailbox(name="stale", password=None, oauth2={"token_command": "echo expired"})
    cfg = desk_config(imap=[good, bad])
    dovecot.append(mail())
    r = run_cli("fetch", "--format", "json", config=cfg)
    out = json.loads(r.stdout)
    assert out["oauth"]["new_tickets"] == 1
    assert "login as desk refused" in out["stale"]["error"] and r.returncode == 77


def test_daemon_takes_mail_by_idle_and_survives_a_server_restart(
        dovecot: Dovecot, daemon: Callable[..., Daemon]) -> None:
    d = daemon(imap=[dovecot.mailbox(poll_interval=600)])   # only IDLE can be this quick
    wait_for(lambda: "mailbox support: waiting for mail by IDLE" in d.log.read_text(),
             what="the first IDLE")
    time.sleep(0.5)
    t0 = time.monotonic()
    dovecot.append(mail(subject="by idle", message_id="<idle1@c.test>"))
    cfg = d.config
    db = sqlite3.connect(cfg.parent / "data" / "maildesk.db")
    wait_for(lambda: db.execute("SELECT count(*) FROM tickets").fetchone()[0], 20,
             "the ticket from IDLE")
    db.close()
    assert time.monotonic() - t0 < 10, "IDLE, not a 600 s poll"
    dovecot.stop()
    wait_for(lambda: "mailbox support: connection" in d.log.read_text(), 30, "a logged failure")
    status = json.loads(run_cli("mailboxes", "status", "--format", "json", config=cfg).stdout)
    assert status[0]["connected"] is False and status[0]["last_error"]
    dovecot.start()
    dovecot.append(mail(subject="after restart", message_id="<idle2@c.test>"))
    wait_for(lambda: len(tickets(cfg)) == 2, 60, "the ticket after the server restart")
    assert d.stop(signal.SIGTERM) == 0


def test_bad_imap_settings_are_config_errors(desk_config: Callable[..., Path],
                                             tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("imap:\n  - name: a\n    host: mail.example.com\n    tls: plain\n"
                   "    username: u\n    password: p\n    after: burn\n")
    r = run_cli("config", "check", config=cfg)
    assert r.returncode == 78
    err = r.stderr.decode()
    assert f"{cfg}:7:12: imap.0.after:" in err and "'burn'" in err


def test_kill_9_during_a_drain_neither_loses_nor_doubles(
        dovecot: Dovecot, desk_config: Callable[..., Path]) -> None:
    """SIGKILL `maildesk fetch` as soon as its first batch is committed, then run it again."""
    import subprocess
    import sys
    cfg = desk_config(imap=[dovecot.mailbox(batch_size=20)])
    n = 150
    dovecot.append(*(mail(subject=f"k{i}", message_id=f"<kill{i}@c.test>") for i in range(n)))
    proc = subprocess.Popen([sys.executable, "-m", "maildesk", "--config", str(cfg), "fetch"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = cfg.parent / "data" / "maildesk.db"

    def committed() -> int:
        try:
            with sqlite3.connect(db, timeout=0.1) as c:
                return int(c.execute("SELECT coalesce(max(last_uid), 0) FROM imap_state")
                           .fetchone()[0])
        except sqlite3.Error:
            return 0
    wait_for(lambda: committed() > 0 or proc.poll() is not None, 60, "a first commit")
    proc.kill()
    proc.wait()
    left_in_inbox = len(folder(dovecot))
    code, _ = fetch(cfg)
    assert code == 0
    subjects = [t["subject"] for t in tickets(cfg)]
    assert sorted(subjects) == sorted(f"k{i}" for i in range(n)), \
        f"{len(subjects)} tickets for {n} mails (killed with {left_in_inbox} still in INBOX)"
    assert folder(dovecot) == [] and len(folder(dovecot, "maildesk.processed")) == n


@pytest.mark.parametrize("capabilities", ["IMAP4rev1 LITERAL+ IDLE UIDPLUS", "IMAP4rev1 IDLE"])
def test_move_without_the_move_extension(desk_config: Callable[..., Path],
                                         capabilities: str) -> None:
    """Servers without MOVE: COPY, \\Deleted, then UID EXPUNGE (or EXPUNGE without UIDPLUS)."""
    d = Dovecot(extra=f"imap_capability = {capabilities}\n").start()
    try:
        cfg = desk_config(imap=[d.mailbox()])
        d.append(mail(message_id="<nm1@c.test>"), mail(subject="b", message_id="<nm2@c.test>"))
        with d.client() as c:
            assert not c.has_capability("MOVE")
        code, out = fetch(cfg)
        assert code == 0 and out["support"]["new_tickets"] == 2
        assert folder(d) == [] and len(folder(d, "maildesk.processed")) == 2
    finally:
        d.cleanup()


def test_a_batch_is_rolled_back_when_another_node_committed_meanwhile(
        dovecot: Dovecot, make_app: Callable[..., Any], db_url: str) -> None:
    """The fence under leadership: a drain advances the last UID only from the value it
    read. Another node's commit in between (a leader that lost its lock, overlapping its
    successor) rolls this batch back whole: no ticket, the mail left in place."""
    from functools import partial

    from sqlalchemy import text

    from maildesk.config.schema import Mailbox
    from maildesk.intake.imap import Drainer, Overtaken, connect
    from maildesk.pipeline.run import ingest
    app = make_app(db_url)
    box = Mailbox.model_validate(dovecot.mailbox())
    dovecot.append(mail(message_id="<o1@c.test>"), mail(subject="b", message_id="<o2@c.test>"))

    def overtaken(*args: Any) -> Any:
        with app.engine.begin() as conn:      # the other node's commit
            conn.execute(text("UPDATE imap_state SET last_uid = 1"))
        return ingest(app, *args)
    client = connect(box)
    try:
        with pytest.raises(Overtaken):
            Drainer(app, box, overtaken).drain(client)
        with app.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM tickets")).scalar() == 0
        assert len(folder(dovecot)) == 2
        assert sum(Drainer(app, box, partial(ingest, app)).drain(client).values()) == 1, \
            "the next round takes what the other node left (uid 2)"
    finally:
        client.logout()


def test_mail_announced_during_a_drain_is_taken_before_idle(
        dovecot: Dovecot, make_app: Callable[..., Any]) -> None:
    """A mail arriving while a drain runs, after its SEARCH, is announced by the server at
    the end of a later command of that drain and never again: an IDLE begun after it would
    sit until the next mail or its renewal (up to poll_interval). The poller asks
    `announced` first and drains again; with nothing new, it says no (no busy loop)."""
    from functools import partial

    from maildesk.config.schema import Mailbox
    from maildesk.intake.imap import Drainer, announced, connect
    from maildesk.pipeline.run import ingest
    app = make_app()
    box = Mailbox.model_validate(dovecot.mailbox())
    dovecot.append(mail(message_id="<a1@c.test>"))

    def meanwhile(*args: Any) -> Any:
        dovecot.append(mail(subject="meanwhile", message_id="<a2@c.test>"))
        return ingest(app, *args)
    client = connect(box)
    try:
        assert Drainer(app, box, meanwhile).drain(client)["new_tickets"] == 1
        assert len(folder(dovecot)) == 1, "the second mail waits in INBOX"
        assert announced(client), "and the server has said so already"
        drainer = Drainer(app, box, partial(ingest, app))
        assert drainer.drain(client)["new_tickets"] == 1
        assert not announced(client), "nothing new: the poller may IDLE"
        assert drainer.drain(client)["new_tickets"] == 0 and not announced(client)
    finally:
        client.logout()
