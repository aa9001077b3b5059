"""The retention policy per queue (issue 21): a desk with tickets of every age in two
queues, one with a policy and one without; `retention run --dry-run` changes nothing and
says exactly what the run then does; the run does the policy and nothing else.
On SQLite and PostgreSQL, the commands as real processes."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from sqlalchemy import create_engine, text

from maildesk.app import App
from maildesk.config.load import load_settings
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest

NOW = datetime.now(timezone.utc)
POLICY = {"close_after": "10d", "purge_raw_after": "30d", "purge_after": "90d"}
DESK = {"addresses": ["support@localhost", "hr@localhost"], "ack_window": 0,
        "flood_limit": 1_000_000,
        "queues": [{"name": "general", "addresses": ["support@localhost"],
                    "retention": POLICY},
                   {"name": "hr", "addresses": ["hr@localhost"]}]}
# (status, age in days) of each queue's tickets, and what the policy makes of them
CASES = [("resolved", 20, "closed"), ("resolved", 5, "kept"), ("closed", 40, "raw purged"),
         ("closed", 100, "purged"), ("closed", 10, "kept"), ("open", 200, "kept"),
         ("closed", 95, "purged")]
SHARED = b"the same attachment on a purged ticket and a kept one\n"


def _mail(n: int, to: str) -> bytes:
    m = EmailMessage()
    m["From"] = f"Person {n} <p{n}@customer.test>"
    m["To"] = to
    m["Subject"] = f"case {n}"
    m["Message-ID"] = f"<case{n}.{to}@customer.test>"
    m.set_content(f"Text of case {n}.\n")
    m.add_attachment(f"log of case {n}\n".encode(), maintype="text", subtype="plain",
                     filename=f"log{n}.txt")
    if n in (3, 4):          # a purged ticket and a kept one share an attachment's bytes
        m.add_attachment(SHARED, maintype="text", subtype="plain", filename="shared.txt")
    return m.as_bytes()


@pytest.fixture
def desk(desk_config: Callable[..., Path], make_app: Callable[..., App], db_url: str
         ) -> tuple[Path, dict[str, dict[str, str]]]:
    """Each case in each queue, aged in the database; ref -> (queue, expected)."""
    cfg = desk_config(db_url, desk=DESK)
    app = make_app(db_url, desk=DESK)
    expected: dict[str, dict[str, str]] = {}
    n = 0
    for queue, to in (("general", "support@localhost"), ("hr", "hr@localhost")):
        for status, days, fate in CASES:
            n += 1
            ingest(app, [(_mail(n, to), Envelope("pipe", None))], now=NOW)
            ref = f"MD-{n}"
            expected[ref] = {"queue": queue, "fate": fate if queue == "general" else "kept"}
            with app.engine.begin() as conn:
                conn.execute(text("UPDATE tickets SET status = :s, updated_at = :at "
                                  "WHERE ref = :ref"),
                             {"s": status, "at": (NOW - timedelta(days=days)).replace(
                                 tzinfo=None) if conn.dialect.name == "sqlite"
                              else NOW - timedelta(days=days), "ref": ref})
    # MD-3 (raw purged) and MD-4 (purged) in general, and MD-11 in hr: 3 and 4 share one
    # attachment's bytes; the purge keeps them for MD-3
    return cfg, expected


def snapshot(cfg: Path) -> dict[str, Any]:
    """Every row of the tables retention touches, and every file of the data directory
    (name and sha256)."""
    settings = load_settings(cfg)
    engine = create_engine(settings.database_url)
    out: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            for table in ("tickets", "messages", "attachments", "events", "inbound", "outbox",
                          "blob_index", "blob_data", "sla_clocks", "thread_refs"):
                out[table] = sorted(json.dumps([str(v) for v in r])
                                    for r in conn.execute(text(f"SELECT * FROM {table}")))
    finally:
        engine.dispose()
    out["files"] = {str(p.relative_to(settings.data_dir)): hashlib.sha256(p.read_bytes())
                    .hexdigest() for p in sorted(settings.data_dir.rglob("*"))
                    if p.is_file() and "blobs" in p.parts}
    return out


def _json(r: Any) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_retention_dry_run_then_run_does_exactly_the_policy(
        desk: tuple[Path, dict[str, dict[str, str]]]) -> None:
    cfg, expected = desk
    fates = [e["fate"] for e in expected.values() if e["queue"] == "general"]
    want = {"queue": "general", "closed": fates.count("closed"),
            "raw_purged": fates.count("raw purged"), "purged": fates.count("purged")}
    statuses = {t["ref"]: t["status"] for t in _json(run_cli(
        "tickets", "list", "--limit", "0", "--format", "json", config=cfg))}
    before = snapshot(cfg)
    dry = _json(run_cli("retention", "run", "--dry-run", "--format", "json", config=cfg))
    assert dry["dry_run"] is True and len(dry["queues"]) == 1      # hr has no policy
    got = dry["queues"][0]
    assert {k: got[k] for k in want} == want and got["blobs"] > 0
    # which tickets, to check before anything irreversible
    assert sorted(got["purged_refs"]) == sorted(
        r for r, e in expected.items() if e["fate"] == "purged")
    assert sorted(got["raw_purged_refs"]) == sorted(
        r for r, e in expected.items() if e["fate"] == "raw purged")
    said = run_cli("retention", "run", "--dry-run", config=cfg).stdout.decode()
    assert all(f"general: would delete {r}" in said or f", {r}" in said
               for r in got["purged_refs"]), said
    assert snapshot(cfg) == before, "a dry run changed something"

    done = _json(run_cli("retention", "run", "--format", "json", config=cfg))
    assert done["queues"] == dry["queues"]
    tickets = {t["ref"]: t for t in _json(run_cli("tickets", "list", "--limit", "0",
                                                  "--format", "json", config=cfg))}
    for ref, e in expected.items():
        if e["fate"] == "purged":
            assert ref not in tickets
            assert run_cli("tickets", "show", ref, config=cfg).returncode == 66
            continue
        shown = _json(run_cli("tickets", "show", ref, "--format", "json", config=cfg))
        customer = shown["messages"][0]
        assert customer["text"].startswith("Text of case")               # text always kept
        assert all(a["stored"] == "intact" for a in customer["attachments"])
        if e["fate"] == "raw purged":
            assert {m["stored"] for m in shown["messages"]} == {"removed"}
        else:
            assert {m["stored"] for m in shown["messages"]} == {"intact"}, ref
        if e["fate"] == "closed":
            assert shown["status"] == "closed"
            assert any(ev["actor"] == "job:retention" for ev in shown["events"])
            # the requester hears of it, as from auto_close
            assert any(ev["kind"] == "notification.queued" and "ticket_closed" in
                       json.dumps(ev) for ev in shown["events"]), shown["events"]
        else:
            assert shown["status"] == statuses[ref]
    # nothing dangles: every blob in use is intact (the shared attachment kept for MD-3);
    # the purged tickets' own blobs are gone from the index and the disk
    assert run_cli("blobs", "verify", config=cfg).returncode == 0
    after = snapshot(cfg)
    assert len(after["blob_index"]) + len(after["blob_data"]) < \
        len(before["blob_index"]) + len(before["blob_data"])
    assert len(after["inbound"]) == len(before["inbound"])            # records, all kept
    audit = _json(run_cli("requester", "audit", "--format", "json", config=cfg))
    assert audit[0]["action"] == "retention" and audit[0]["counts"]["purged"] == \
        want["purged"]
    # run again: nothing left to do (the tickets it closed were changed today)
    again = _json(run_cli("retention", "run", "--format", "json", config=cfg))
    assert again["queues"] == [{"queue": "general", "closed": 0, "raw_purged": 0,
                                "purged": 0, "blobs": 0, "purged_refs": [],
                                "raw_purged_refs": []}]


def test_no_policy_deletes_nothing(desk_config: Callable[..., Path], tmp_path: Path) -> None:
    """The default: no queue has a policy; the job is off and the command says so."""
    cfg = desk_config()
    assert run_cli("ingest", config=cfg, input=_mail(1, "support@localhost")).returncode == 0
    r = run_cli("retention", "run", config=cfg)
    assert r.returncode == 0 and b"no queue has a retention policy" in r.stdout
    assert "retention" not in run_cli("jobs", "run", "--force", "--format", "json",
                                      config=cfg).stdout.decode()


def test_retention_deletes_the_maildir_copies_of_the_mail_it_purges(
        desk: tuple[Path, dict[str, dict[str, str]]]) -> None:
    """The maildir outbox holds a copy of each mail sent (the requester's address, a live
    reply address): a purged ticket's go with it, as an erasure's do; so do a ticket's
    whose raw mail goes. The kept tickets' stay."""
    cfg, expected = desk
    assert run_cli("outbox", "send", config=cfg).returncode == 0
    maildir = load_settings(cfg).outbox_maildir
    engine = create_engine(load_settings(cfg).database_url)
    try:
        with engine.connect() as conn:
            sent = {ref: [i for (i,) in conn.execute(text(
                "SELECT o.id FROM outbox o JOIN tickets t ON t.id = o.ticket_id "
                "WHERE t.ref = :ref"), {"ref": ref})] for ref in expected}
    finally:
        engine.dispose()

    def copies(ref: str) -> list[Path]:
        return [p for i in sent[ref] for p in maildir.glob(f"*/outbox{i}_*")]
    assert all(copies(ref) for ref in expected)
    assert run_cli("retention", "run", config=cfg).returncode == 0
    for ref, e in expected.items():
        gone = e["fate"] in ("purged", "raw purged")
        assert bool(copies(ref)) != gone, (ref, e, copies(ref))
    left = b"".join(p.read_bytes() for p in maildir.rglob("*") if p.is_file())
    assert b"p4@customer.test" not in left and b"p7@customer.test" not in left
