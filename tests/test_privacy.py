"""A requester's data exported and erased (issue 21): real mail from the corpus through
`maildesk ingest`, the commands as real processes, on SQLite and PostgreSQL.

The erasure is checked the hard way: every row of every table the database has (FTS
shadow tables and the tsvector included), every file under the data directory (loose
blobs, packs, the SQLite file and its WAL), read for the person's address, local part
and display name.
"""
from __future__ import annotations

import json
import re
import smtplib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, desk_key, mail, run_cli, wait_for
from sqlalchemy import create_engine, inspect, text

from maildesk.config.load import load_settings
from maildesk.tickets.export import safe_name

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
EMAILS = CORPUS / "mail-mime-parser" / "tests" / "_data" / "emails"
WHO = "dwsauder@example.com"
TRACES = (b"dwsauder", b"doug sauder")
OTHERS = [CORPUS / "django-mailbox" / "django_mailbox" / "tests" / "messages" / n
          for n in ("generic_message.eml", "message_with_attachment.eml")]
DESK = {"agents": [{"name": "bob", "address": "bob@desk.test"}], "ack_window": 0,
        "flood_limit": 1_000_000}

pytestmark = pytest.mark.skipif(not EMAILS.is_dir(), reason="../shared/corpus not found")


def theirs() -> list[Path]:
    """Ten of Doug Sauder's mails in the corpus, each of its own Message-ID (several with
    attachments)."""
    found: dict[bytes, Path] = {}
    for p in sorted(EMAILS.glob("m*.txt")):
        raw = p.read_bytes()
        msgid = re.search(rb"^Message-ID:(.*)$", raw, re.M | re.I)
        if re.search(rb"^From:.*dwsauder@example\.com", raw, re.M) and msgid:
            found.setdefault(msgid.group(1).strip(), p)
    return list(found.values())[:10]


@pytest.fixture
def busy(desk_config: Callable[..., Path], db_url: str, tmp_path: Path) -> Path:
    """A desk with Doug's mail, others' mail, a mail that copies him, an agent's reply and
    note on his first ticket, a survey sent to him, and an auto-reply of his held."""
    cfg = desk_config(db_url, desk=DESK)
    mine = theirs()
    assert len(mine) >= 8
    r = run_cli("ingest", *map(str, mine), *map(str, OTHERS), config=cfg)
    assert r.returncode == 0, r.stderr
    evil = mail(subject="Files", sender="Doug Sauder <dwsauder@example.com>",
                message_id="<evil@example.com>")
    cc = mail(subject="Printer for Doug", sender="Carol Day <carol@other.test>",
              Cc="Doug Sauder <dwsauder@example.com>", message_id="<cc@other.test>",
              body="Doug (dwsauder@example.com) cannot print either.\n")
    auto = mail(subject="Out of office", sender="Doug Sauder <dwsauder@example.com>",
                message_id="<ooo@example.com>", Auto_Submitted="auto-replied")
    for raw in (_with_attachment(evil, "../../etc/pass\x1bwd"), cc, auto):
        assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    for args in (["tickets", "reply", "MD-1", "Hello Doug Sauder, try again.", "--as", "bob"],
                 ["tickets", "note", "MD-1", "NOTE-SECRET: dwsauder is the VP", "--as", "bob"],
                 ["tickets", "status", "MD-2", "resolved", "--as", "bob"],
                 ["jobs", "run", "--force"]):
        r = run_cli(*args, config=cfg)
        assert r.returncode == 0, (args, r.stderr)
    return cfg


def _with_attachment(raw: bytes, filename: str) -> bytes:
    from email import message_from_bytes, policy
    m = message_from_bytes(raw, policy=policy.default)
    m.add_attachment(b"secret report\n", maintype="application", subtype="octet-stream",
                     filename=filename)
    return m.as_bytes()


def _json(r: Any) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_export_holds_their_tickets_mail_and_attachments(busy: Path, tmp_path: Path) -> None:
    out = tmp_path / "doug.zip"
    said = _json(run_cli("requester", "export", WHO.upper(), "--out", str(out),
                         "--format", "json", config=busy))
    z = zipfile.ZipFile(out)
    names = z.namelist()
    assert all(re.fullmatch(r"index\.json|tickets/MD-\d+/(ticket\.json|messages/\d+\.eml|"
                            r"attachments/\d+-[\w.\- ]+)", n) for n in names), names
    index = json.loads(z.read("index.json"))
    roles = {t["ref"]: t["role"] for t in index["tickets"]}
    assert index["address"] == WHO and index["names"] == ["Doug Sauder"]
    assert list(roles.values()).count("requester") == len(theirs()) + 1   # + the "Files" one
    assert list(roles.values()).count("participant") == 1                 # Carol's, copying him
    assert said["tickets"] == len(roles) and said["unreadable"] == 0, index["unreadable"]
    # each raw mail is the bytes that arrived: every corpus mail of his is in the zip whole
    emls = {z.read(n) for n in names if n.endswith(".eml")}
    assert all(p.read_bytes() in emls for p in theirs())
    attached = [n for n in names if "/attachments/" in n]
    assert len(attached) >= 5 and any(n.endswith("-pass wd") for n in attached)
    first = json.loads(z.read("tickets/MD-1/ticket.json"))
    assert first["ticket"]["requester"] == WHO
    texts = [m["text"] for m in first["messages"]]
    assert any("try again" in t for t in texts)                  # the agent's public reply
    assert not any("NOTE-SECRET" in t for t in texts)            # not the internal note
    assert "note.added" not in {e["kind"] for e in first["events"]}
    assert {"ticket.created", "agent.replied"} <= {e["kind"] for e in first["events"]}, first
    # with --internal the notes come too
    run_cli("requester", "export", WHO, "--out", str(tmp_path / "all.zip"), "--internal",
            config=busy)
    assert b"NOTE-SECRET" in zipfile.ZipFile(tmp_path / "all.zip").read(
        "tickets/MD-1/ticket.json")
    audit = _json(run_cli("requester", "audit", "--address", WHO, "--format", "json",
                          config=busy))
    assert [a["action"] for a in audit] == ["export", "export"]
    assert WHO not in json.dumps(audit) and audit[1]["counts"]["tickets"] == len(roles)


def test_safe_names_make_no_paths() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..") == "attachment" and safe_name(None) == "attachment"
    assert safe_name("C:\\x\\..\\boot.ini") == "boot.ini"
    assert safe_name("a\x1b[31m b.pdf") == "a_31m b.pdf"
    assert safe_name(".hidden") == "hidden"


def traces(cfg: Path) -> list[str]:
    """Every place the person is still found: table.column of every row of every table,
    and every file of the data directory."""
    settings = load_settings(cfg)
    found = []
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                q = f'SELECT * FROM "{table}"'
                if conn.dialect.name == "postgresql":
                    q = f'SELECT t::text FROM "{table}" t'
                for row in conn.execute(text(q)):
                    for value in row:
                        if _holds(value):
                            found.append(f"{table}: {str(value)[:120]!r}")
    finally:
        engine.dispose()
    for path in sorted(settings.data_dir.rglob("*")):
        if path.is_file() and _holds(path.read_bytes()):
            found.append(str(path.relative_to(settings.data_dir)))
    return found


def _holds(value: Any) -> bool:
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    elif isinstance(value, memoryview):
        value = bytes(value)
    elif not isinstance(value, bytes):
        value = json.dumps(value, default=str).encode()
    low = value.lower()
    return any(t in low for t in TRACES)


def rows(cfg: Path, query: str) -> list[Any]:
    engine = create_engine(load_settings(cfg).database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query)))
    finally:
        engine.dispose()


def smtp(port: int, sender: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, ["support@localhost"], raw.replace(b"\n", b"\r\n"))


def settled(cfg: Path) -> bool:
    """Nothing queued in, nothing owed out: the daemon is idle."""
    return rows(cfg, "SELECT count(*) FROM inbound WHERE state = 'queued'")[0][0] == 0 and \
        rows(cfg, "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')")[0][0] == 0


def test_erase_leaves_no_trace_and_keeps_the_rest(busy: Path, db_url: str, tmp_path: Path,
                                                  daemon: Callable[..., Daemon]) -> None:
    # the daemon runs all along; a mail of his comes by SMTP (his address in the envelope)
    d = daemon(db_url, desk=DESK)
    smtp(d.port, WHO, mail(subject="By SMTP", sender="Doug Sauder <dwsauder@example.com>",
                           message_id="<smtp@example.com>"))
    wait_for(lambda: rows(busy, "SELECT count(*) FROM tickets WHERE subject = 'By SMTP'")
             [0][0] == 1 and settled(busy), what="his SMTP mail ticketed and acknowledged")
    assert traces(busy)                                     # the check finds him before
    before = _json(run_cli("report", "--format", "json", config=busy))
    other = _json(run_cli("tickets", "list", "--requester", "carol@other.test",
                          "--format", "json", config=busy))
    # without --yes: what it would do, nothing done, exit 64
    r = run_cli("requester", "erase", WHO, "--format", "json", config=busy)
    assert r.returncode == 64 and b"--yes" in r.stderr
    plan = json.loads(r.stdout)
    assert plan["erased"] is False and plan["tickets_requested"] == len(theirs()) + 2
    assert plan["tickets_participated"] == 1 and plan["blobs"] > 0
    assert rows(busy, "SELECT count(*) FROM privacy_audit")[0][0] == 0
    assert traces(busy)

    done = _json(run_cli("requester", "erase", WHO, "--yes", "--format", "json",
                         config=busy))
    assert done["erased"] is True and done["outbox"] >= 1 and done["held_or_queued"] == 1
    assert done == plan | {"erased": True}
    assert traces(busy) == []
    token = done["pseudonym"]
    assert re.fullmatch(r"erased-[0-9a-f]{16}@invalid", token)
    # his tickets still count, under one pseudonym; Carol's ticket keeps her words
    after = _json(run_cli("report", "--format", "json", config=busy))
    assert after["rows"] == before["rows"]
    assert after["top_requesters"][0] == {"name": token, "tickets": len(theirs()) + 2}
    mine = _json(run_cli("tickets", "list", "--requester", token, "--format", "json",
                         config=busy))
    assert len(mine) == len(theirs()) + 2 and {t["subject"] for t in mine} == {"[erased]"}
    kept = _json(run_cli("tickets", "list", "--requester", "carol@other.test", "--format",
                         "json", config=busy))
    assert [t["subject"] for t in kept] == [t["subject"] for t in other]
    shown = _json(run_cli("tickets", "show", kept[0]["ref"], "--format", "json",
                          config=busy))
    assert shown["messages"][0]["cc"] == [token] and "cannot print" in \
        shown["messages"][0]["text"]
    # nothing dangles: verify finds every blob in use intact, the search finds no word of his
    assert run_cli("blobs", "verify", config=busy).returncode == 0
    assert _json(run_cli("tickets", "list", "--search", "Hasen", "--format", "json",
                         config=busy)) == []
    audit = _json(run_cli("requester", "audit", "--address", WHO, "--format", "json",
                          config=busy))
    assert [a["action"] for a in audit] == ["erase"] and audit[0]["subject"] == token
    assert audit[0]["actor"]
    # the daemon goes on: a new mail is ticketed after the erasure
    smtp(d.port, "carol@other.test", mail(subject="After", sender="carol@other.test"))
    wait_for(lambda: rows(busy, "SELECT count(*) FROM tickets WHERE subject = 'After'")[0][0],
             what="a mail after the erasure ticketed")
    assert d.proc is not None and d.proc.poll() is None
    # a second erasure finds nothing left
    again = _json(run_cli("requester", "erase", WHO, "--yes", "--format", "json",
                          config=busy))
    assert again["tickets_requested"] == 0 and again["blobs"] == 0


def test_erase_refuses_what_it_must_not_touch(desk_config: Callable[..., Path],
                                              tmp_path: Path) -> None:
    cfg = desk_config(desk=DESK | {"agents": [{"name": "bob", "address": "bob@desk.test",
                                               "also": ["Bob@Phone.test"]}]})
    assert run_cli("ingest", config=cfg, input=mail()).returncode == 0
    for address, said in (("bob@desk.test", b"agent"), ("BOB@phone.test", b"agent"),
                          ("bob+x@desk.test", b"agent"),
                          ("Support@localhost", b"desk's own address"),
                          ("support+md-1-abc@localhost", b"desk's own address"),
                          ("support+status@localhost", b"desk's own address"),
                          ("support+bounce-1-abc@localhost", b"desk's own address"),
                          ("not-an-address", b"not a mail address"),
                          ("erased-0123456789abcdef@invalid", b"pseudonym")):
        # an export of the desk's or an agent's address would hold every customer's tickets
        for args in (["erase", address, "--yes"],
                     ["export", address, "--out", str(tmp_path / "refused.zip")]):
            r = run_cli("requester", *args, config=cfg)
            assert r.returncode == 64 and said in r.stderr and b"Traceback" not in r.stderr, \
                args
            assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "refused.zip").exists()
    r = run_cli("requester", "export", "nobody@else.test", "--out",
                str(tmp_path / "n.zip"), config=cfg)
    assert r.returncode == 0 and b"no ticket concerns" in r.stderr
    assert json.loads(zipfile.ZipFile(tmp_path / "n.zip").read("index.json"))["tickets"] == []
    r = run_cli("requester", "export", "ana@customer.test", "--out",
                str(tmp_path / "nodir" / "x.zip"), config=cfg)
    assert r.returncode == 73 and b"Traceback" not in r.stderr




TOKEN = re.compile(rb"(?i)(\+|%2b|=2b)(rate-|bounce-|solved-|problem-)?md-\d")


def _agent_answers(cfg: Path, ref: str, words: str, purpose: str = "reply") -> None:
    """bob answers the notification of ref by mail, to his own token address."""
    from maildesk.tickets.refs import token_address
    to = token_address(desk_key(cfg), "support@localhost", ref, "bob@desk.test", purpose)
    raw = mail(subject=f"Re: [{ref}] x", sender="bob <bob@desk.test>", to=to, body=words)
    r = run_cli("ingest", "--recipient", to, config=cfg, input=raw)
    assert r.returncode == 0, r.stderr


def test_export_holds_no_token_and_no_mail_of_agents(desk_config: Callable[..., Path],
                                                     db_url: str, tmp_path: Path) -> None:
    cfg = desk_config(db_url, desk=DESK | {
        "queues": [{"name": "general", "group": "helpdesk"}], "groups": [{"name": "helpdesk"}],
        "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]}]})
    for sender, cc in (("Carol Day <carol@other.test>", "Doug Sauder <dwsauder@example.com>"),
                       ("Doug Sauder <dwsauder@example.com>", None),
                       ("Eve Ray <eve@other.test>", None)):
        raw = mail(subject="Printer jammed again", sender=sender,
                   **({"Cc": cc} if cc else {}))
        assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    _agent_answers(cfg, "MD-2", "Try tray 2.")
    _agent_answers(cfg, "MD-2", "NOTE: same as MD-3", "note")
    _agent_answers(cfg, "MD-3", "Eve, try tray 3.")
    assert run_cli("jobs", "run", "--force", config=cfg).returncode == 0
    outbox = load_settings(cfg).outbox_maildir
    sent = [p.read_bytes() for p in outbox.rglob("*") if p.is_file()]
    assert any(b"bob@desk.test" in m and TOKEN.search(m) for m in sent), \
        "the desk notified its agent with his token"
    for internal in ([], ["--internal"]):
        out = tmp_path / f"doug{len(internal)}.zip"
        _json(run_cli("requester", "export", WHO, "--out", str(out), *internal,
                      "--format", "json", config=cfg))
        z = zipfile.ZipFile(out)
        every = b"".join(z.read(n) for n in z.namelist())
        assert b"Try tray 2." in every and b".eml" in every
        assert TOKEN.search(every) is None, every[TOKEN.search(every).start() - 200:][:400]
        assert b"eve@other.test" not in every and b"agent_notification" not in every
        assert (b"NOTE: same as MD-3" in every) == bool(internal)
        if not internal:                          # no other customer's ticket, no agent's mail
            assert b"MD-3" not in every and b"bob@desk.test" not in every


def test_erase_after_their_raw_mail_went(desk_config: Callable[..., Path], db_url: str) -> None:
    """Mail whose bytes were removed (an earlier erasure, retention) is no obstacle: two
    people on one ticket erased one after the other, and one of them twice."""
    cfg = desk_config(db_url, desk=DESK)
    raw = mail(sender="Carol Day <carol@other.test>", Cc="Doug Sauder <dwsauder@example.com>",
               body="Doug (dwsauder) cannot print either.\n")
    assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    for who in (WHO, "carol@other.test", "carol@other.test"):
        r = run_cli("requester", "erase", who, "--yes", config=cfg)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert rows(cfg, "SELECT count(*) FROM messages WHERE digest != ''")[0][0] == 0


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00" \
      b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def test_erase_keeps_an_attachment_others_have_too(desk_config: Callable[..., Path],
                                                    db_url: str) -> None:
    from email import message_from_bytes, policy
    cfg = desk_config(db_url, desk=DESK)
    for sender in ("Doug Sauder <dwsauder@example.com>", "Carol Day <carol@other.test>"):
        m = message_from_bytes(mail(sender=sender), policy=policy.default)
        m.add_attachment(GIF, maintype="image", subtype="gif", filename="logo.gif")
        assert run_cli("ingest", config=cfg, input=m.as_bytes()).returncode == 0
    carols = ("SELECT a.digest FROM attachments a JOIN messages m ON m.id = a.message_pk "
              "WHERE m.from_addr = 'carol@other.test'")
    before = rows(cfg, carols)
    assert len(before) == 1 and before[0][0]
    assert run_cli("requester", "erase", WHO, "--yes", config=cfg).returncode == 0
    assert rows(cfg, carols) == before
    assert run_cli("blobs", "verify", config=cfg).returncode == 0
    shown = _json(run_cli("tickets", "show", "MD-2", "--format", "json", config=cfg))
    assert "[removed]" not in json.dumps(shown)
    assert rows(cfg, "SELECT count(*) FROM attachments a JOIN messages m ON "
                     "m.id = a.message_pk WHERE m.ticket_id = 1")[0][0] == 0


def test_erased_name_leaves_the_search_and_others_addresses_stay(
        desk_config: Callable[..., Path], db_url: str) -> None:
    cfg = desk_config(db_url, desk=DESK)
    for raw in (mail(sender="Doug Sauder <dwsauder@example.com>"),
                mail(subject="Second printer", sender="Doug Sauder <dsauder@home.test>",
                     body="Regards, Doug Sauder\n"),
                mail(subject="Third", sender="Carol Day <carol@other.test>",
                     Cc="dwsauder@example.com",
                     body="Hi dwsauder, or write to dwsauder@zeegee.com instead.\n")):
        assert run_cli("ingest", config=cfg, input=raw).returncode == 0

    def found(word: str) -> list[str]:
        return [t["ref"] for t in _json(run_cli("tickets", "list", "--search", word,
                                                "--format", "json", config=cfg))]
    assert found("Sauder") == ["MD-2"]          # another address of the same name
    assert run_cli("requester", "erase", WHO, "--yes", config=cfg).returncode == 0
    # a name another address uses too is not one address's to erase: the same person with
    # two addresses is erased by each
    assert found("Sauder") == ["MD-2"] and found("Doug") == ["MD-2"]
    assert run_cli("requester", "erase", "dsauder@home.test", "--yes",
                   config=cfg).returncode == 0
    assert found("Sauder") == [] and found("Doug") == []
    third = _json(run_cli("tickets", "show", "MD-3", "--format", "json", config=cfg))
    assert third["messages"][0]["text"].startswith("Hi [erased], or write to "
                                                   "dwsauder@zeegee.com")


def test_export_never_overwrites_a_file_unless_forced(desk_config: Callable[..., Path],
                                                     tmp_path: Path) -> None:
    cfg = desk_config(desk=DESK)
    assert run_cli("ingest", config=cfg, input=mail(sender=WHO)).returncode == 0
    there = tmp_path / "README.md"
    there.write_text("keep me\n")
    r = run_cli("requester", "export", WHO, "--out", str(there), config=cfg)
    assert r.returncode == 73 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert there.read_text() == "keep me\n" and b"--force" in r.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    r = run_cli("requester", "export", WHO, "--out", str(there), "--force", config=cfg)
    assert r.returncode == 0, r.stderr
    assert zipfile.ZipFile(there).namelist()


def test_erase_leaves_nothing_in_sqlites_wal(desk_config: Callable[..., Path],
                                             daemon: Callable[..., Daemon]) -> None:
    """The daemon holds the database open, so the WAL outlives the command: the erasure
    checkpoints it (TRUNCATE) itself."""
    d = daemon(None, desk=DESK)
    smtp(d.port, WHO, mail(subject="By SMTP", sender="Doug Sauder <dwsauder@example.com>"))
    wait_for(lambda: rows(d.config, "SELECT count(*) FROM tickets")[0][0] == 1 and
             settled(d.config), what="his mail ticketed")
    assert run_cli("requester", "erase", WHO, "--yes", config=d.config).returncode == 0
    wal = load_settings(d.config).data_dir / "maildesk.db-wal"
    # (the daemon writes on meanwhile, its heartbeat say: the WAL need not be empty, only
    # free of him)
    assert not wal.exists() or not _holds(wal.read_bytes())


# a desk that signs as "IT Service Desk" and tells its agent bob of each new ticket
NAMED = DESK | {"name": "IT Service Desk", "queues": [{"name": "general", "group": "helpdesk"}],
                "groups": [{"name": "helpdesk"}],
                "agents": [{"name": "bob", "address": "bob@desk.test", "groups": ["helpdesk"]}]}
# what an attacker chooses: a display name and a local part the desk or others use too
SHARED_NAMES = [("IT Service Desk", "mallory@evil.test"),     # the desk's From name
                ("Support", "support@evil.test"),             # its address's local part
                ("the", "the@evil.test"),                     # a word of every mail
                ("Bob", "bobby@evil.test"),                   # an agent's name
                ("Ana Lima", "lima@evil.test"),               # another requester's name
                ("helpdesk", "general@evil.test")]            # a group's, a queue's


def _own_rows(cfg: Path, ticket: int) -> dict[str, int]:
    """How many rows of each table belong to one ticket."""
    where = {"tickets": f"id = {ticket}",
             "inbound": f"message_pk IN (SELECT id FROM messages WHERE ticket_id = {ticket})"}
    return {table: rows(cfg, f"SELECT count(*) FROM {table} WHERE "
                             f"{where.get(table, f'ticket_id = {ticket}')}")[0][0]
            for table in ("tickets", "messages", "events", "outbox", "inbound", "thread_refs",
                          "sla_clocks")}


def test_a_name_others_use_is_not_erased_beyond_their_tickets(
        desk_config: Callable[..., Path], db_url: str) -> None:
    """Erasing a person whose display name or local part the desk, an agent or another
    requester also uses touches their own ticket only: the preview counts its rows and
    blobs, and after the erasure every other ticket's mail and the desk's signature in it
    are whole. (No problem proposal: it would name them by their address, and go.)"""
    cfg = desk_config(db_url, desk=NAMED, problems={"propose": False})
    for sender in ("Ana Lima <ana@customer.test>", "Carol Day <carol@other.test>"):
        raw = mail(sender=sender, body="The printer says the toner is low.\n")
        assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    assert run_cli("tickets", "reply", "MD-1", "Hello Ana, the IT Service Desk here: try "
                   "the Support page.", "--as", "bob", config=cfg).returncode == 0
    for name, address in SHARED_NAMES:
        raw = mail(subject=f"Help from {address}", sender=f"{name} <{address}>")
        assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    assert run_cli("jobs", "run", "--force", config=cfg).returncode == 0
    maildir = load_settings(cfg).outbox_maildir
    for name, address in SHARED_NAMES:
        r = run_cli("requester", "erase", address, "--format", "json", config=cfg)
        assert r.returncode == 64, r.stderr
        plan = json.loads(r.stdout)
        ticket = rows(cfg, f"SELECT id FROM tickets WHERE requester = '{address}'")[0][0]
        own = _own_rows(cfg, ticket)
        digests = rows(cfg, f"SELECT digest FROM messages WHERE ticket_id = {ticket} UNION "
                            f"SELECT digest FROM outbox WHERE ticket_id = {ticket}")
        assert (plan["tickets_requested"], plan["tickets_participated"]) == (1, 0), name
        assert 0 < plan["blobs"] <= len(digests), (name, plan)
        assert plan["messages"] == 1 and plan["outbox"] == 1, (name, plan)
        assert all(n <= own[table] for table, n in plan["rows_rewritten"].items()), \
            (name, plan["rows_rewritten"], own)
    before = {p.name for p in maildir.rglob("outbox*")}
    mallory = rows(cfg, "SELECT id FROM tickets WHERE requester = 'mallory@evil.test'")[0][0]
    theirs = {i for (i,) in rows(cfg, f"SELECT id FROM outbox WHERE ticket_id = {mallory}")}
    done = _json(run_cli("requester", "erase", "mallory@evil.test", "--yes", "--format",
                         "json", config=cfg))
    assert done["erased"] is True
    assert rows(cfg, f"SELECT count(*) FROM messages WHERE ticket_id != {mallory} AND "
                     f"(text LIKE '%[erased]%' OR subject LIKE '%[erased]%')")[0][0] == 0
    assert rows(cfg, f"SELECT count(*) FROM outbox WHERE ticket_id != {mallory} AND "
                     f"(digest = '' OR subject LIKE '%[erased]%')")[0][0] == 0
    assert any("Ana, the IT Service Desk here: try the Support page" in m["text"]
               for m in _json(run_cli("tickets", "show", "MD-1", "--format", "json",
                                      config=cfg))["messages"])
    kept = {p.name for p in maildir.rglob("outbox*")}
    assert {n for n in before - kept if int(n[6:].split("_")[0]) not in theirs} == set()
    signed = [p.read_bytes() for p in maildir.rglob("outbox*") if p.is_file()]
    assert len(signed) > 3 and all(b"[erased]" not in m for m in signed)
    assert run_cli("blobs", "verify", config=cfg).returncode == 0


def test_outbox_of_an_erased_ticket_names_nothing_and_shows_its_copy_removed(
        desk_config: Callable[..., Path], db_url: str) -> None:
    """The agent's notification of the person's ticket stays, its subject erased, its
    copy removed: `outbox show` says so, `--raw` exits 66 with one line."""
    cfg = desk_config(db_url, desk=NAMED)
    raw = mail(subject="Problem 0 from Anastasia: laptop zorbfrazzle",
               sender="Anastasia Quist <anastasia@customer.test>")
    assert run_cli("ingest", config=cfg, input=raw).returncode == 0
    assert run_cli("jobs", "run", "--force", config=cfg).returncode == 0
    assert run_cli("requester", "erase", "anastasia@customer.test", "--yes",
                   config=cfg).returncode == 0
    left = rows(cfg, "SELECT id, subject, digest, message_id FROM outbox")
    notice, msgid = next((i, m) for i, _, d, m in left if d == "")
    r = run_cli("outbox", "show", str(notice), config=cfg)
    assert r.returncode == 0 and b"original removed: retention, a requester's erasure" \
        in r.stdout, r.stderr
    assert _json(run_cli("outbox", "show", str(notice), "--format", "json",
                         config=cfg))["raw"] == "removed"
    r = run_cli("outbox", "show", str(notice), "--raw", config=cfg)
    assert r.returncode == 66 and r.stdout == b"" and b"Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and b"removed" in r.stderr
    assert all(not re.search(r"(?i)anastasia|zorbfrazzle|laptop", s)
               for _, s, _, _ in left), left
    # bob's #split answers the notification whose copy went: what it answered is read from
    # the copies; without this one, he is told so
    from maildesk.tickets.refs import token_address
    to = token_address(desk_key(cfg), "support@localhost", "MD-1", "bob@desk.test", "reply")
    raw = mail(subject="Re: [MD-1] x", sender="bob <bob@desk.test>", to=to,
               body="#split\nOn it.\n", In_Reply_To=msgid)
    assert run_cli("ingest", "--recipient", to, config=cfg, input=raw).returncode == 0
    assert rows(cfg, "SELECT state FROM inbound ORDER BY id DESC")[0][0] == "ticketed"
    assert rows(cfg, "SELECT template, \"to\" FROM outbox ORDER BY id DESC")[0][0] == \
        "command_error"
