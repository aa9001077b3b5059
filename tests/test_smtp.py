"""The SMTP listener of a real `maildesk serve`, driven by real SMTP clients."""
from __future__ import annotations

import email
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from email import policy
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, mail, run_cli, wait_for


def crlf(raw: bytes) -> bytes:
    """SMTP lines end in CRLF; smtplib sends bytes as they are."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(port: int, raw: bytes, rcpts: list[str] | None = None,
         sender: str = "ana@customer.test") -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        return s.sendmail(sender, rcpts or ["support@localhost"], crlf(raw))


def cli_json(d: Daemon, *args: str) -> Any:
    r = run_cli(*args, "--format", "json", config=d.config)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def outbox_files(d: Daemon) -> list[Path]:
    folder = d.config.parent / "data" / "outbox" / "new"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_mail_by_smtp_becomes_a_ticket_and_an_acknowledgement(
        daemon: Callable[..., Daemon], db_url: str) -> None:
    d = daemon(db_url)
    send(d.port, mail(message_id="<smtp1@customer.test>"))
    rows = wait_for(lambda: cli_json(d, "tickets", "list"), what="a ticket")
    t = rows[0]
    assert {k: t[k] for k in ("ref", "requester", "status", "message_count")} == \
        {"ref": "MD-1", "requester": "ana@customer.test", "status": "new", "message_count": 1}
    for key in ("subject", "priority", "category", "queue", "type", "assignee", "created_at",
                "updated_at"):
        assert key in t
    files = wait_for(lambda: outbox_files(d), what="the acknowledgement in the outbox")
    ack = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert ack["Subject"] == "[MD-1] Printer on floor 2 is jammed"
    assert ack["In-Reply-To"] == "<smtp1@customer.test>"
    assert ack["References"] == "<smtp1@customer.test>"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["Reply-To"].addresses[0].username.startswith("support+md-1-")
    assert ack.get_body(("html",)) is not None
    out = wait_for(lambda: [o for o in cli_json(d, "outbox", "list") if o["status"] == "sent"],
                   what="the outbox row marked sent")
    assert out[0] | {"to": ["ana@customer.test"], "template": "acknowledgement", "ticket": "MD-1",
                     "attempts": 1} == out[0]
    shown = cli_json(d, "tickets", "show", "MD-1")
    m = shown["messages"][0]
    assert (m["message_id"], m["from"], m["direction"], m["visibility"]) == \
        ("<smtp1@customer.test>", "ana@customer.test", "in", "public")
    assert [e["kind"] for e in shown["events"]][:2] == ["ticket.created", "notification.queued"]


def test_unknown_recipient_gets_550_and_known_ones_still_work(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    with smtplib.SMTP("127.0.0.1", d.port) as s:
        s.ehlo()
        s.mail("ana@customer.test")
        code, msg = s.rcpt("someone@elsewhere.test")
        assert code == 550 and msg.startswith(b"5.1.1")
        assert s.rcpt("SUPPORT@localhost")[0] == 250
        assert s.rcpt("support+md-9-xyz@localhost")[0] == 250
        code, _ = s.data(crlf(mail()))
        assert code == 250


def test_oversized_mail_gets_552_and_nothing_is_stored(daemon: Callable[..., Daemon]) -> None:
    d = daemon(smtp={"max_message_size": "64KiB"})
    big = mail(body="x" * 80 + "\n") + (b"y" * 76 + b"\n") * 1000
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:   # declared with SIZE=
        send(d.port, big)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
    with smtplib.SMTP("127.0.0.1", d.port) as s:                  # undeclared: after DATA
        s.ehlo()
        s.mail("ana@customer.test")
        s.rcpt("support@localhost")
        code, msg = s.data(crlf(big))
    assert code == 552 and msg.startswith(b"5.3.4")
    with smtplib.SMTP("127.0.0.1", d.port) as s:
        s.ehlo()
        assert s.esmtp_features.get("size") == "65536"
    send(d.port, mail())
    wait_for(lambda: cli_json(d, "tickets", "list"), what="the small mail's ticket")
    time.sleep(0.3)
    assert len(cli_json(d, "tickets", "list")) == 1


def test_broken_mail_gets_250_and_lands_in_quarantine(daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    send(d.port, b"\x00\x00 not a mail \xff\n\n")
    send(d.port, mail())
    wait_for(lambda: cli_json(d, "tickets", "list"), what="the good mail's ticket")
    q = wait_for(lambda: cli_json(d, "quarantine", "list"), what="the quarantined mail")
    assert len(q) == 1 and "no mail headers" in q[0]["reason"]
    raw = run_cli("quarantine", "show", str(q[0]["id"]), "--raw", config=d.config)
    assert raw.returncode == 0 and raw.stdout.startswith(b"\x00\x00 not a mail"), raw.stderr


def test_restart_keeps_everything_and_threads_across_it(daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    send(d.port, mail(message_id="<r1@customer.test>"))
    wait_for(lambda: cli_json(d, "tickets", "list"), what="a ticket")
    assert d.stop() == 0
    d.start()
    send(d.port, mail(subject="Re: [MD-1] Printer", body="again\n"))
    wait_for(lambda: cli_json(d, "tickets", "list")[0]["message_count"] == 2, what="follow-up")
    assert len(cli_json(d, "tickets", "list")) == 1


def test_sigterm_answers_idle_sessions_with_421_and_exits_0(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    s = smtplib.SMTP("127.0.0.1", d.port, timeout=10)
    s.ehlo()
    d.send(signal.SIGTERM)
    code, msg = s.getreply()
    s.close()
    assert code == 421 and msg.startswith(b"4.3.2")
    assert d.proc is not None and d.proc.wait(20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=1).close()


def test_sigterm_lets_an_open_transaction_finish(daemon: Callable[..., Daemon]) -> None:
    d = daemon(smtp={"shutdown_grace": 10})
    s = smtplib.SMTP("127.0.0.1", d.port, timeout=20)
    s.ehlo()
    s.mail("ana@customer.test")
    s.rcpt("support@localhost")
    d.send(signal.SIGTERM)
    time.sleep(0.5)
    code, _ = s.data(crlf(mail(message_id="<late@customer.test>")))
    s.close()
    assert code == 250
    assert d.proc is not None and d.proc.wait(20) == 0
    d.start()
    rows = wait_for(lambda: cli_json(d, "tickets", "list"), what="the late mail's ticket")
    assert rows[0]["message_count"] >= 1


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_delivers_a_mail(daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    d = daemon()
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail(subject="sent by swaks"))
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{d.port}", "--to", "support@localhost",
                        "--from", "ana@customer.test", "--data", f"@{eml}"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    rows = wait_for(lambda: cli_json(d, "tickets", "list"), what="swaks's ticket")
    assert rows[0]["subject"] == "sent by swaks"


def test_kill_9_while_clients_send_loses_and_doubles_nothing(
        daemon: Callable[..., Daemon], db_url: str) -> None:
    """Every message answered 250 is stored exactly once after a kill -9 and restart."""
    d = daemon(db_url)
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"client {n} mail {i}"
            try:
                send(d.port, mail(subject=subject, message_id=f"<k{n}.{i}@customer.test>"))
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)
                continue       # not answered 250: the client would retry, not our problem
            with lock:
                accepted.append(subject)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= 40, 60, "40 accepted mails")
    assert d.proc is not None and len(d.listeners()) == 1
    d.proc.kill()
    d.proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    # the listener dies with the daemon, leaving the port to the next one
    wait_for(lambda: not d.listeners(), 10, "the listener process to end with the daemon")
    d.start()
    want = set(accepted)

    def stored() -> list[str]:
        tickets = cli_json(d, "tickets", "list", "--limit", "0")     # all, not the newest 50
        return [t["subject"] for t in tickets]
    subjects = wait_for(lambda: (s := stored()) and len(s) >= len(want) and s, 60,
                        f"{len(want)} tickets")
    assert len(subjects) == len(set(subjects)), "a mail was stored twice"
    assert want <= set(subjects), f"lost after 250: {sorted(want - set(subjects))[:5]}"
    q = cli_json(d, "quarantine", "list")
    assert q == []


def test_a_listener_process_that_dies_stops_the_daemon_with_75(
        daemon: Callable[..., Daemon]) -> None:
    """The SMTP listener runs in a process of its own: if it dies, the daemon does not
    go on without taking mail; it stops, saying why, with 75 for systemd's Restart=."""
    d = daemon()
    send(d.port, mail(message_id="<before@customer.test>"))
    [pid] = d.listeners()
    os.kill(pid, signal.SIGKILL)
    assert d.proc is not None and d.proc.wait(30) == 75
    log = d.log.read_text()
    assert "the SMTP listener process ended unexpectedly" in log and "Traceback" not in log
    assert not d.listeners()


def test_the_listener_run_by_hand_says_serve_starts_it(tmp_path: Path) -> None:
    r = run_cli("listen", "--report-fd", "97", cwd=tmp_path)
    assert r.returncode == 64
    assert r.stderr.decode().strip() == ("maildesk: no pipe at file descriptor 97: `maildesk "
                                         "serve` starts the listener itself; run that")


def test_sighup_gives_the_listener_the_desks_new_addresses(
        daemon: Callable[..., Daemon]) -> None:
    """The recipients the listener accepts are the configuration's after a reload: the
    listener's process re-reads it too."""
    import yaml
    d = daemon()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(d.port, mail(message_id="<x1@customer.test>"), rcpts=["help@localhost"])
    cfg = yaml.safe_load(d.config.read_text())
    cfg["desk"]["addresses"] = ["support@localhost", "help@localhost"]
    d.config.write_text(yaml.safe_dump(cfg))
    d.send(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log.read_text(), what="the reload")

    def taken() -> bool:
        try:
            send(d.port, mail(message_id="<x2@customer.test>"), rcpts=["help@localhost"])
            return True
        except smtplib.SMTPRecipientsRefused:
            return False
    wait_for(taken, 10, "the new address to be accepted")


def test_serve_runs_on_the_embedded_default_without_a_config(tmp_path: Path) -> None:
    """The README's first command: no config file, SQLite and a maildir under ./maildesk-data."""
    import os
    import subprocess as sp
    import sys
    try:
        socket.create_connection(("127.0.0.1", 2525), timeout=0.5).close()
        pytest.skip("something already listens on 127.0.0.1:2525")
    except OSError:
        pass
    env = {k: v for k, v in os.environ.items() if k != "MAILDESK_CONFIG"}
    with (tmp_path / "serve.log").open("wb") as log:     # the daemon has its own copy
        proc = sp.Popen([sys.executable, "-m", "maildesk", "serve"], cwd=tmp_path, env=env,
                        stdout=log, stderr=sp.STDOUT)
    try:
        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", 2525), timeout=0.2).close()
                return True
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                return False
        wait_for(up, 30, "the listener on 2525")
        send(2525, mail())
        outbox = tmp_path / "maildesk-data" / "outbox" / "new"
        wait_for(lambda: outbox.is_dir() and any(outbox.iterdir()), what="the acknowledgement")
        assert (tmp_path / "maildesk-data" / "maildesk.db").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    text = (tmp_path / "serve.log").read_text()
    line = [ln for ln in text.splitlines() if "listening on" in ln][0]
    assert "smtp://127.0.0.1:2525" in line and str(tmp_path / "maildesk-data") in line


def test_sighup_reloads_templates_and_keeps_running_on_a_bad_file(
        daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    import yaml
    d = daemon()
    send(d.port, mail(message_id="<h1@customer.test>"))
    wait_for(lambda: outbox_files(d), what="first acknowledgement")
    good = yaml.safe_load(d.config.read_text())
    d.config.write_text("desk: [this is not a mapping\n")
    d.send(signal.SIGHUP)
    wait_for(lambda: "reload refused" in d.log.read_text(), what="the refusal in the log")
    good["desk"]["name"] = "Renamed Desk"
    d.config.write_text(yaml.safe_dump(good))
    d.send(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log.read_text(), what="the reload")
    send(d.port, mail(message_id="<h2@customer.test>", subject="second"))
    files = wait_for(lambda: len(outbox_files(d)) == 2 and outbox_files(d),
                     what="second acknowledgement")
    newest = email.message_from_bytes(files[-1].read_bytes(), policy=policy.default)
    assert newest["From"].addresses[0].display_name == "Renamed Desk"
    assert d.proc is not None and d.proc.poll() is None


def test_mail_from_the_null_sender_is_never_answered(daemon: Callable[..., Daemon]) -> None:
    """MAIL FROM:<> is a bounce or an auto-reply: an acknowledgement to its From would be
    backscatter to whoever the From names."""
    d = daemon()
    send(d.port, mail(sender="victim@third.test", message_id="<null@third.test>"), sender="")
    rows = wait_for(lambda: cli_json(d, "quarantine", "list", "--state", "all"),
                    what="the mail to be kept")
    assert [r["state"] for r in rows] == ["bounce"]
    assert cli_json(d, "tickets", "list") == [] and outbox_files(d) == []


def test_sessions_that_end_together_share_a_commit_and_each_hears_its_own(
        make_app: Callable[..., Any], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: 40 sessions whose DATA ends at once are stored in a few transactions,
    not 40, each session gets its own mail's id, and every id is a committed row holding
    that session's bytes. A group that fails is retried a mail at a time: only the mail
    that cannot be stored hears the error."""
    import asyncio

    from sqlalchemy import text

    from maildesk.intake import smtp
    from maildesk.intake.inbound import Envelope
    app = make_app(db_url)
    groups: list[int] = []
    real = smtp.accept

    def counted(store: Any, mails: list[tuple[bytes, Envelope]]) -> list[int]:
        groups.append(len(mails))
        if any(b"poison" in raw for raw, _ in mails):
            raise OSError("disk full")
        time.sleep(0.01)        # a commit's fsync: others arrive meanwhile
        return real(store, mails)
    monkeypatch.setattr(smtp, "accept", counted)
    env = Envelope(source="smtp", mail_from="ana@customer.test", rcpt_to=("support@localhost",))
    raws = [mail(message_id=f"<m{i}@customer.test>") for i in range(40)]
    raws[17] = mail(body="poison\n")

    from maildesk.store.db import make_engine
    engine = make_engine(db_url, urgent=True)    # the listener process's (listening.py)
    committer = smtp.Committer(smtp.Writer(app.settings, engine, app.blobs), most=16)

    async def sessions() -> list[int | BaseException]:
        return await asyncio.gather(*(committer.accept(r, env) for r in raws),
                                    return_exceptions=True)
    got = asyncio.run(sessions())
    if db_url.startswith("sqlite"):     # its commits leave checkpoints to the worker's
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        with app.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    engine.dispose()
    assert isinstance(got[17], OSError)
    ids = [i for i in got if isinstance(i, int)]
    assert len(ids) == 39 and len(set(ids)) == 39
    assert len(groups) < 40 and max(groups) == 16, groups
    with app.engine.connect() as c:
        stored = dict(c.execute(text("SELECT id, digest FROM inbound")).all())
    assert sorted(stored) == sorted(ids)
    for raw, i in zip(raws, got):
        if isinstance(i, int):
            assert app.blobs.get(stored[i]) == raw
