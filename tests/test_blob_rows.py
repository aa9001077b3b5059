"""Blobs in the database (storage.backend: database, issue 18): several nodes on one
PostgreSQL read each other's mail. Before, raw mail lived only on the disk of the node that
accepted it, and the others quarantined it as "raw message unreadable".

Damage is made by hand (UPDATE blob_data) and must be found, named by ticket, refused and
mended by the same bytes; a desk that switches backend keeps reading its files, and
`maildesk blobs copy-to-database` makes them rows.
"""
from __future__ import annotations

import json
import shutil
import smtplib
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Daemon, mail, run_cli, wait_for
from sqlalchemy import create_engine, func, select, update

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.scheduler.jobs import blob_sample
from maildesk.store.blob_rows import DatabaseBlobs
from maildesk.store.blobs import BlobDamaged, BlobMissing, FileBlobs, digest_of
from maildesk.store.models import BlobData, Inbound, OutboxMail

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
DATABASE = {"backend": "database"}


def _damage(app: App, digest: str) -> None:
    """One byte of a blob_data row flipped, its length kept: what a bad disk does."""
    with app.engine.begin() as conn:
        data = bytearray(conn.execute(select(BlobData.data)
                                      .where(BlobData.digest == digest)).scalar_one())
        data[len(data) // 2] ^= 0x20
        conn.execute(update(BlobData).where(BlobData.digest == digest).values(data=bytes(data)))


def _rows(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(BlobData)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["filesystem", "database"])
def test_what_is_put_is_got_back_on_either_backend(make_app: Callable[..., App], db_url: str,
                                                   backend: str) -> None:
    app = make_app(db_url, storage={"backend": backend})
    assert isinstance(app.blobs, DatabaseBlobs if backend == "database" else FileBlobs)
    one, two, three = b"one" * 1000, b"two" * 5000, bytes(range(256)) * 400
    assert app.blobs.put(one) == digest_of(one)
    assert app.blobs.put(one) == digest_of(one)                 # twice: still one copy
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        assert batch.put(two) == batch.put(two) == digest_of(two)
        batch.put(three)
        batch.put(one)                                           # stored before: not again
        assert set(batch.pending) == {digest_of(two), digest_of(three)}
        batch.finish()
        assert app.blobs.get(digest_of(two), conn) == two        # in the transaction too
    with app.blobs.begin_with(b"four") as (_, digest):
        assert digest == digest_of(b"four")
    for data in (one, two, three, b"four"):
        assert app.blobs.get(digest_of(data)) == data
        assert app.blobs.problem(digest_of(data)) is None
    where = app.blobs.locate(digest_of(two))
    assert where == "database blob_data" if backend == "database" else ".pack@" in where
    assert app.blobs.problem("0" * 64) == "missing"
    assert app.blobs.locate("0" * 64) == "missing"
    with pytest.raises(FileNotFoundError):                      # a BlobMissing is one
        app.blobs.get("0" * 64)
    if backend == "database":
        assert _rows(db_url) == 4
        assert not app.settings.blob_dir.exists(), "a database desk makes no blob folder"


def test_a_damaged_row_is_named_refused_and_mended_by_the_same_bytes(
        make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url, storage=DATABASE)
    raws = [mail(subject=f"case {i}", message_id=f"<rows{i}@customer.test>") for i in range(3)]
    ingest(app, [(r, Envelope("pipe", None)) for r in raws])
    damaged, short = digest_of(raws[1]), digest_of(raws[2])
    _damage(app, damaged)
    with app.engine.begin() as conn:
        conn.execute(update(BlobData).where(BlobData.digest == short)
                     .values(data=raws[2][:-5]))
    with pytest.raises(BlobDamaged) as e:
        app.blobs.get(damaged)
    said = str(e.value)
    assert damaged in said and "holds other bytes" in said and "database blob_data" in said
    assert "MD-2 message" in said and "MD-2 inbound" in said
    assert app.blobs.problem(damaged) == "damaged: holds other bytes"
    assert "bytes long, not the" in str(app.blobs.problem(short))
    with pytest.raises(BlobDamaged):
        app.blobs.get(short)

    with app.engine.begin() as conn:                 # the worker's path: a batch
        batch = app.blobs.batch(conn)
        batch.put(raws[1])
        batch.put(raws[2])
        batch.put(raws[0])                           # intact: left as it is
        assert batch.repaired == 2 and set(batch.pending) == {damaged, short}
        batch.finish()
    assert app.blobs.get(damaged) == raws[1] and app.blobs.get(short) == raws[2]

    _damage(app, damaged)                            # the SMTP path: one put
    assert app.blobs.put(raws[1]) == damaged
    assert app.blobs.get(damaged) == raws[1]


def test_a_missing_row_is_named_with_its_ticket(make_app: Callable[..., App],
                                                db_url: str) -> None:
    app = make_app(db_url, storage=DATABASE)
    raw = mail()
    ingest(app, [(raw, Envelope("pipe", None))])
    with app.engine.begin() as conn:
        conn.execute(BlobData.__table__.delete().where(BlobData.digest == digest_of(raw)))
    with pytest.raises(BlobMissing) as e:
        app.blobs.get(digest_of(raw))
    assert "is not in the database" in str(e.value) and "MD-1 message" in str(e.value)
    assert app.blobs.problem(digest_of(raw)) == "missing"


def test_a_desk_that_switches_backend_reads_its_files_until_they_are_copied(
        desk_config: Callable[..., Path], tmp_path: Path, db_url: str) -> None:
    """Loose files (SMTP's path) and packs (a batch's) stored on the filesystem backend are
    read after the switch, copied by `blobs copy-to-database` (twice: the second copies
    nothing), and read from the database once the files are gone."""
    cfg = desk_config(db_url)
    settings = yaml.safe_load(cfg.read_text())
    files = [tmp_path / f"{i}.eml" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(mail(subject=f"switch {i}", message_id=f"<sw{i}@customer.test>"))
    assert run_cli("ingest", *map(str, files), config=cfg).returncode == 0
    app = App.open(_settings(cfg, "filesystem"))
    try:
        loose = app.blobs.put(b"an SMTP mail, stored loose\n" * 50)
        packed = digest_of(files[0].read_bytes())
        assert ".pack@" in app.blobs.locate(packed)
        assert str(app.blobs.locate(loose)).startswith(str(tmp_path))
    finally:
        app.close()

    cfg.write_text(yaml.safe_dump({**settings, "storage": DATABASE}))
    app = App.open(_settings(cfg, "database"))
    try:
        assert app.blobs.get(packed) == files[0].read_bytes()         # from the pack
        assert app.blobs.get(loose) == b"an SMTP mail, stored loose\n" * 50
        assert ".pack@" in app.blobs.locate(packed)
    finally:
        app.close()

    r = run_cli("blobs", "copy-to-database", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    first = json.loads(r.stdout)
    assert first["copied"] >= 7 and first["already_there"] == 0 and first["bad"] == []
    r = run_cli("blobs", "copy-to-database", "--format", "json", config=cfg)
    again = json.loads(r.stdout)
    assert r.returncode == 0 and again["copied"] == 0
    assert again["already_there"] == first["copied"]

    shutil.rmtree(tmp_path / "data" / "blobs")
    app = App.open(_settings(cfg, "database"))
    try:
        assert app.blobs.locate(packed) == "database blob_data"
        assert app.blobs.get(packed) == files[0].read_bytes()
        assert app.blobs.get(loose) == b"an SMTP mail, stored loose\n" * 50
    finally:
        app.close()
    code, out = _verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"]
    assert out["checked"]["database"] == first["copied"] and out["checked"]["loose"] == 0


def _settings(cfg: Path, backend: str) -> Any:
    from maildesk.config.schema import Settings
    data = yaml.safe_load(cfg.read_text())
    return Settings.model_validate({**data, "storage": {"backend": backend}})


def _verify(cfg: Path) -> tuple[int, dict[str, Any]]:
    r = run_cli("blobs", "verify", "--format", "json", config=cfg)
    assert r.returncode in (0, 1), r.stderr.decode()
    return r.returncode, json.loads(r.stdout)


def test_copy_leaves_out_damaged_files_and_names_their_ticket(
        desk_config: Callable[..., Path], tmp_path: Path, db_url: str) -> None:
    cfg = desk_config(db_url)
    eml = tmp_path / "a.eml"
    eml.write_bytes(mail(subject="a pack of one"))
    assert run_cli("ingest", str(eml), config=cfg).returncode == 0
    pack = next((tmp_path / "data" / "blobs" / "packs").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[10] ^= 0x20                                  # the mail is the pack's first blob
    pack.write_bytes(bytes(data))
    r = run_cli("blobs", "copy-to-database", config=cfg)
    assert r.returncode == 1, r.stderr.decode()
    assert "MD-1" in r.stdout.decode() and "holds other bytes" in r.stdout.decode()
    assert "damaged, not copied" in r.stderr.decode() and "--repair" in r.stderr.decode()


def test_verify_on_a_database_desk_names_the_ticket_of_a_damaged_row(
        desk_config: Callable[..., Path], make_app: Callable[..., App], tmp_path: Path,
        db_url: str) -> None:
    cfg = desk_config(db_url, storage=DATABASE)
    emls = []
    for i in range(3):
        emls.append(tmp_path / f"{i}.eml")
        emls[-1].write_bytes(mail(subject=f"verify {i}", message_id=f"<v{i}@customer.test>"))
    assert run_cli("ingest", *map(str, emls), config=cfg).returncode == 0
    code, out = _verify(cfg)
    assert code == 0 and out["checked"]["database"] >= 6 and out["checked"]["packed"] == 0
    app = make_app(db_url, storage=DATABASE)
    assert blob_sample(app, datetime.now(timezone.utc)).startswith("0 bad of ")
    damaged = digest_of(emls[1].read_bytes())
    _damage(app, damaged)
    code, out = _verify(cfg)
    assert code == 1 and out["damaged"] == 1 and out["tickets"] == ["MD-2"]
    (bad,) = out["bad"]
    assert (bad["digest"], bad["problem"], bad["where"]) == (
        damaged, "damaged: holds other bytes", "database blob_data")
    assert {u["kind"] for u in bad["used_by"]} == {"inbound", "message"}
    r = run_cli("blobs", "verify", config=cfg)
    assert r.returncode == 1 and "MD-2" in r.stdout.decode()
    assert "in the database" in r.stderr.decode() and "on 1 ticket" in r.stderr.decode()
    said = blob_sample(app, datetime.now(timezone.utc))
    assert said.startswith("1 bad of ")
    with app.engine.begin() as conn:
        conn.execute(BlobData.__table__.delete().where(BlobData.digest == damaged))
    code, out = _verify(cfg)
    assert code == 1 and out["missing"] == 1 and out["damaged"] == 0


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
def test_real_mail_on_a_database_desk_is_read_without_the_nodes_files(
        desk_config: Callable[..., Path], tmp_path: Path, db_url: str) -> None:
    """What issue 18's second node saw: the mail, its quarantine and its outbox read with no
    blob folder at all (another host's disk, or this one's lost)."""
    paths = sorted(p for p in CORPUS.rglob("*.eml") if p.is_file())[:40]
    assert len(paths) == 40
    held = tmp_path / "held.eml"
    held.write_bytes(b"who am I? no headers at all\n")
    cfg = desk_config(db_url, storage=DATABASE)
    r = run_cli("ingest", "--format", "json", *map(str, paths), str(held), config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["new_tickets"] >= 20
    shutil.rmtree(tmp_path / "data" / "blobs", ignore_errors=True)
    assert not (tmp_path / "data" / "blobs").exists()

    app = App.open(_settings(cfg, "database"))
    try:
        with app.sessions() as s:
            quarantined = s.scalars(select(Inbound).where(Inbound.state == "quarantined")).one()
            outbox = s.scalars(select(OutboxMail).order_by(OutboxMail.id)).first()
            refs = len(s.scalars(select(Inbound.id)).all())
        assert outbox is not None and refs >= 41
    finally:
        app.close()
    shown = json.loads(run_cli("tickets", "show", "MD-1", "--format", "json",
                               config=cfg).stdout)
    assert shown["messages"][0]["stored"] == "intact"
    assert all(a["stored"] == "intact" for m in shown["messages"] for a in m["attachments"])
    r = run_cli("quarantine", "show", str(quarantined.id), "--raw", config=cfg)
    assert r.returncode == 0 and r.stdout == held.read_bytes(), r.stderr.decode()
    r = run_cli("outbox", "show", str(outbox.id), "--format", "json", config=cfg)
    assert r.returncode == 0 and json.loads(r.stdout)["raw"] == "database blob_data"
    r = run_cli("outbox", "show", str(outbox.id), "--raw", config=cfg)
    assert r.returncode == 0 and digest_of(r.stdout) == outbox.digest
    code, out = _verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"][:3]
    assert out["checked"]["loose"] == out["checked"]["packed"] == 0


def test_smtp_mail_is_one_commit_in_the_database(daemon: Callable[..., Daemon],
                                                 db_url: str) -> None:
    """The SMTP path with no blob folder: bytes and inbound row in the same transaction."""
    d = daemon(db_url, storage=DATABASE)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail("ana@customer.test", ["support@localhost"],
                   mail(message_id="<smtp-rows@customer.test>").replace(b"\n", b"\r\n"))
    wait_for(lambda: json.loads(run_cli("tickets", "list", "--format", "json",
                                        config=d.config).stdout), 30, "the ticket")
    d.stop()
    assert not (d.config.parent / "data" / "blobs").exists()
    code, out = _verify(d.config)
    assert code == 0 and out["checked"]["database"] >= 2
