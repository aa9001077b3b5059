"""Stored mail is the bytes that arrived: across pack rollovers on every intake path, checked
on every read, verified whole by `maildesk blobs verify`, mended by `ingest --repair`.

Issue 13: an import larger than one pack (64 MiB) read back other customers' bytes, because
a second BlobBatch in the same transaction rolled the pack over under the first.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import mailbox
import os
import re
import smtplib
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, mail, run_cli, wait_for
from sqlalchemy import select

from maildesk.app import App
from maildesk.intake.inbound import Envelope
from maildesk.intake.repair import mend
from maildesk.pipeline.run import ingest
from maildesk.scheduler.jobs import blob_sample
from maildesk.store.blobs import BlobDamaged, BlobMissing, FileBlobs, digest_of
from maildesk.store.models import Attachment, BlobIndex, Message

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT.parent / "shared" / "bench" / "gen_workload.py"
BASE = 5000          # mails the shared generator writes; copies make larger workloads


@pytest.fixture(scope="session")
def base_workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    """The shared workload generator's mbox of BASE mails, and how many open tickets."""
    if not GEN.exists():
        pytest.skip(f"{GEN} not found (../shared beside the checkout)")
    out = tmp_path_factory.mktemp("workload") / "w"
    subprocess.run([sys.executable, str(GEN), "--n", str(BASE), "--out", str(out),
                    "--tag-format", "[MD-{n}]"], check=True, capture_output=True, timeout=300)
    counts = json.loads((out / "workload.json").read_text())
    return (out / "mbox").read_bytes(), int(counts["new_requests"])


def copies(base: tuple[bytes, int], n: int, folder: Path) -> Path:
    """n copies of the base mbox, each with its own Message-IDs and ticket tags, so that
    every mail is new and every reply threads to its own copy's ticket."""
    data, opened = base
    parts = [data]
    for k in range(1, n):
        copy = re.sub(rb"(<[0-9a-f]{16}\.\d+)@", rb"\1.%d@" % k, data)
        parts.append(re.sub(rb"\[MD-(\d+)\]",
                            lambda m, k=k: b"[MD-%d]" % (int(m.group(1)) + k * opened), copy))
    path = folder / f"{n * BASE}.mbox"
    path.write_bytes(b"".join(parts))
    return path


def verify(cfg: Path) -> tuple[int, dict[str, Any]]:
    r = run_cli("blobs", "verify", "--format", "json", config=cfg)
    assert r.returncode in (0, 1), r.stderr.decode()
    return r.returncode, json.loads(r.stdout)


def db_file(cfg: Path) -> Path:
    return cfg.parent / "data" / "maildesk.db"


def arrived(mbox: Path) -> set[str]:
    """The sha256 of every mail in an mbox, read by the standard library, as the desk should
    have stored it."""
    box = mailbox.mbox(str(mbox))
    try:
        return {digest_of(box.get_bytes(k)) for k in box.iterkeys()}
    finally:
        box.close()


def read_back_by_hand(cfg: Path) -> int:
    """Every packed blob read straight from its pack and hashed: how many are wrong. Does not
    trust maildesk's own checks."""
    packs = cfg.parent / "data" / "blobs" / "packs"
    bad = 0
    with sqlite3.connect(db_file(cfg)) as c:
        for digest, pack, offset, size in c.execute(
                "SELECT digest, pack, offset, size FROM blob_index"):
            with open(packs / pack, "rb") as f:
                f.seek(offset)
                bad += hashlib.sha256(f.read(size)).hexdigest() != digest
    return bad


# --- one import, many packs ------------------------------------------------------------

@pytest.mark.timeout(900)
def test_ten_thousand_mails_across_dozens_of_packs_all_read_back_as_they_arrived(
        base_workload: tuple[bytes, int], tmp_path: Path,
        desk_config: Callable[..., Path]) -> None:
    """Many rollovers in one import: with small packs every batch starts one (the next
    test crosses the real 64 MiB limit)."""
    cfg = desk_config(storage={"pack_size": "512KiB"})
    mbox = copies(base_workload, 2, tmp_path)
    r = run_cli("ingest", str(mbox), "--format", "json", config=cfg, timeout=800)
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert summary["new_tickets"] + summary["follow_ups"] == 10_000, summary
    packs = list((cfg.parent / "data" / "blobs" / "packs").glob("*.pack"))
    assert len(packs) >= 40, "the pack limit was crossed dozens of times"
    code, out = verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"][:3]
    assert out["checked"]["packed"] > 10_000
    assert read_back_by_hand(cfg) == 0
    with sqlite3.connect(db_file(cfg)) as c:
        stored = {d for (d,) in c.execute("SELECT digest FROM inbound")}
    assert stored == arrived(mbox)


@pytest.mark.timeout(600)
def test_an_import_past_the_real_pack_limit_reads_back_as_it_arrived(
        base_workload: tuple[bytes, int], tmp_path: Path, desk_config: Callable[..., Path],
        db_url: str) -> None:
    cfg = desk_config(db_url)                 # the default pack size, 64 MiB
    mbox = copies(base_workload, 2, tmp_path)
    assert mbox.stat().st_size > 64 * 1024**2 * 1.4
    r = run_cli("ingest", str(mbox), "--format", "json", config=cfg, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert len(list((cfg.parent / "data" / "blobs" / "packs").glob("*.pack"))) >= 2
    code, out = verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"][:3]
    assert out["checked"]["packed"] > 10_000


def test_a_batch_keeps_its_pack_when_a_later_batch_rolls_over(make_app: Callable[..., App],
                                                               db_url: str) -> None:
    """The cause of issue 13 as a class: two batches alive on one thread, the pack full."""
    app = make_app(db_url, storage={"pack_size": "4KiB"})
    blobs: list[bytes] = [bytes([i]) * 3000 for i in range(12)]
    with app.engine.begin() as conn:
        first = app.blobs.batch(conn)
        first.put(blobs[0])
        first.put(blobs[1])                      # now past the limit
        second = app.blobs.batch(conn)           # rolls over
        assert second.pack is not first.pack
        for b in blobs[2:7]:
            first.put(b)                         # the old pack, still open, right offsets
            second.put(b + b"!")
        first.finish()
        second.finish()
    for b in blobs[:7]:
        assert app.blobs.get(digest_of(b)) == b
    for b in blobs[2:7]:
        assert app.blobs.get(digest_of(b + b"!")) == b + b"!"


def test_a_short_write_leaves_the_next_blob_at_the_right_offset(
        make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        batch.put(b"a" * 1000)
        real = batch.pack.file

        class FullDisk:
            """Writes part of the first write, then fails as a full disk does."""
            def write(self, data: Any) -> int:
                monkeypatch.undo()
                real.write(bytes(data[:300]))
                raise OSError(errno.ENOSPC, "No space left on device")

            def fileno(self) -> int:
                return real.fileno()
        monkeypatch.setattr(batch.pack, "file", FullDisk())
        with pytest.raises(OSError):
            batch.put(b"b" * 1000)
        batch.put(b"c" * 1000)
        batch.finish()
    assert app.blobs.get(digest_of(b"c" * 1000)) == b"c" * 1000
    assert app.blobs.get(digest_of(b"a" * 1000)) == b"a" * 1000


# --- other intake paths across rollovers -------------------------------------------------

def _with_attachment(i: int) -> bytes:
    m = EmailMessage()
    m["From"] = f"user{i % 7}@customer.test"
    m["To"] = "support@localhost"
    m["Subject"] = f"Report {i}"
    m["Message-ID"] = f"<pack{i}@customer.test>"
    m.set_content(f"Report number {i} attached.\n")
    m.add_attachment(hashlib.sha512(str(i).encode()).digest() * 300, maintype="application",
                     subtype="octet-stream", filename=f"report-{i}.bin")
    return m.as_bytes()


def _all_attachments_intact(cfg: Path, n: int) -> None:
    code, out = verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"][:3]
    r = run_cli("tickets", "show", "MD-1", "--format", "json", config=cfg)
    shown = json.loads(r.stdout)
    assert shown["messages"][0]["stored"] == "intact"
    assert shown["messages"][0]["attachments"][0]["stored"] == "intact"
    with sqlite3.connect(db_file(cfg)) as c:
        assert c.execute("SELECT count(*) FROM attachments").fetchone()[0] == n
        assert c.execute("SELECT count(DISTINCT pack) FROM blob_index").fetchone()[0] > 10


def test_an_imap_folder_crossing_the_pack_limit_reads_back_as_it_arrived(
        desk_config: Callable[..., Path]) -> None:
    from dovecot import Dovecot, available
    if not available():
        pytest.skip("dovecot not installed (apt-get install dovecot-imapd)")
    d = Dovecot().start()
    try:
        cfg = desk_config(imap=[d.mailbox(batch_size=10)], storage={"pack_size": "64KiB"})
        d.append(*[_with_attachment(i) for i in range(300)])
        r = run_cli("fetch", "--format", "json", config=cfg)
        assert r.returncode == 0, r.stderr.decode()
        assert json.loads(r.stdout)["support"]["new_tickets"] == 300
        _all_attachments_intact(cfg, 300)
    finally:
        d.cleanup()


def test_smtp_mail_across_pack_rollovers_reads_back_as_it_arrived(
        daemon: Callable[..., Daemon]) -> None:
    d = daemon(storage={"pack_size": "64KiB"}, desk={"ack_window": 0, "flood_limit": 10**6})
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        for i in range(200):
            s.sendmail("ana@customer.test", ["support@localhost"],
                       _with_attachment(i).replace(b"\n", b"\r\n"))

    def done() -> bool:
        with sqlite3.connect(db_file(d.config)) as c:
            return c.execute("SELECT count(*) FROM inbound WHERE state = 'queued'").fetchone()[0] \
                == 0 and c.execute("SELECT count(*) FROM inbound").fetchone()[0] == 200
    wait_for(done, 120, "the worker to take all 200 mails")
    _all_attachments_intact(d.config, 200)


# --- damage is found, named and refused ---------------------------------------------------

@pytest.fixture
def damaged_desk(desk_config: Callable[..., Path], make_app: Callable[..., App], tmp_path: Path
                 ) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A desk of 6 tickets with attachments, each mail in a pack of its own, and the source
    they came from."""
    cfg = desk_config(storage={"pack_size": "16KiB"})
    source = tmp_path / "source"
    source.mkdir()
    app = make_app(**yaml_settings(cfg))
    for i in range(6):
        (source / f"{i}.eml").write_bytes(_with_attachment(i))
        ingest(app, [((source / f"{i}.eml").read_bytes(),
                      Envelope(source="pipe", mail_from=None, origin=f"{i}.eml"))])
    assert verify(cfg)[0] == 0
    with sqlite3.connect(db_file(cfg)) as c:
        ids = dict(c.execute(
            "SELECT t.ref, m.digest FROM messages m JOIN tickets t ON t.id = m.ticket_id "
            "WHERE m.direction = 'in'"))
    yield cfg, source, ids


def _index_row(cfg: Path, digest: str) -> tuple[Path, int, int]:
    with sqlite3.connect(db_file(cfg)) as c:
        pack, offset, size = c.execute("SELECT pack, offset, size FROM blob_index "
                                       "WHERE digest = ?", (digest,)).fetchone()
    return cfg.parent / "data" / "blobs" / "packs" / pack, offset, size


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x20]))


def test_a_flipped_byte_a_cut_pack_and_a_row_past_the_end_are_each_named_and_refused(
        damaged_desk: tuple[Path, Path, dict[str, str]], make_app: Callable[..., App]) -> None:
    cfg, _, raws = damaged_desk
    flipped, cut, beyond = raws["MD-1"], raws["MD-3"], raws["MD-5"]
    pack, offset, size = _index_row(cfg, flipped)
    _flip(pack, offset + size // 2)
    pack, offset, size = _index_row(cfg, cut)
    with open(pack, "r+b") as f:
        f.truncate(offset + size - 10)
    with sqlite3.connect(db_file(cfg)) as c:
        c.execute("UPDATE blob_index SET offset = offset + 100000 WHERE digest = ?", (beyond,))

    code, out = verify(cfg)
    assert code == 1 and out["missing"] == 0
    problems = {b["digest"]: b for b in out["bad"]}
    # the cut also takes MD-3's attachment and acknowledgement, written after its mail
    assert {flipped, cut, beyond} <= set(problems) and out["damaged"] == 5
    assert problems[flipped]["problem"] == "damaged: holds other bytes"
    assert "ends 10 bytes before" in problems[cut]["problem"]
    assert "before the blob does" in problems[beyond]["problem"]
    assert {u["ticket"] for u in problems[flipped]["used_by"]} == {"MD-1"}
    assert {u["kind"] for u in problems[flipped]["used_by"]} == {"inbound", "message"}
    assert out["tickets"] == ["MD-1", "MD-3", "MD-5"]

    r = run_cli("blobs", "verify", config=cfg)
    table = r.stdout.decode()
    assert r.returncode == 1 and "MD-3" in table and "holds other bytes" in table
    assert "5 damaged, 0 missing, on 3 tickets" in r.stderr.decode()
    assert "ingest --repair" in r.stderr.decode()

    s = yaml_settings(cfg)
    app = make_app(**s)
    for digest in (flipped, cut, beyond):
        with pytest.raises(BlobDamaged) as e:
            app.blobs.get(digest)
        assert digest in str(e.value) and "MD-" in str(e.value) and ".pack@" in str(e.value)

    shown = json.loads(run_cli("tickets", "show", "MD-1", "--format", "json",
                               config=cfg).stdout)
    assert shown["messages"][0]["stored"] == "damaged: holds other bytes"
    text = run_cli("tickets", "show", "MD-1", config=cfg).stdout.decode()
    assert "original damaged" in text and "ingest --repair" in text
    assert json.loads(run_cli("tickets", "show", "MD-2", "--format", "json", config=cfg)
                      .stdout)["messages"][0]["stored"] == "intact"


def yaml_settings(cfg: Path) -> dict[str, Any]:
    import yaml
    data: dict[str, Any] = yaml.safe_load(cfg.read_text())
    return {k: v for k, v in data.items() if k != "data_dir"}


def test_a_damaged_loose_blob_and_a_missing_one_are_named(
        desk_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    """Loose files: what the SMTP path wrote before it committed in groups (a desk keeps
    them), and a mail kept when the database refused its ticket."""
    from sqlalchemy import insert

    from maildesk.pipeline.run import drain
    from maildesk.store.tables import T_INBOUND
    cfg, app = desk_config(), make_app()
    digests = []
    for i in range(2):
        with app.blobs.begin_with(mail(subject=f"loose {i}", message_id=f"<l{i}@c.test>")
                                  ) as (conn, digest):
            conn.execute(insert(T_INBOUND).values(
                received_at=datetime.now(timezone.utc), source="smtp", mail_from="a@c.test",
                rcpt_to=["support@localhost"], digest=digest, size=1, state="queued",
                attempts=0))
            digests.append(digest)
    drain(app)
    app.close()
    root = cfg.parent / "data" / "blobs"
    _flip(root / digests[0][:2] / digests[0][2:], 5)
    (root / digests[1][:2] / digests[1][2:]).unlink()
    code, out = verify(cfg)
    assert code == 1 and out["damaged"] == 1 and out["missing"] == 1
    assert out["tickets"] == ["MD-1", "MD-2"]
    assert {b["problem"] for b in out["bad"]} == {"damaged: holds other bytes", "missing"}
    shown = json.loads(run_cli("tickets", "show", "MD-2", "--format", "json",
                               config=cfg).stdout)
    assert shown["messages"][0]["stored"] == "missing"


def test_a_damaged_original_is_never_served_by_quarantine_show(
        desk_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = desk_config()
    eml = tmp_path / "bad.eml"
    eml.write_bytes(b"who am I? no headers at all\n")
    assert run_cli("ingest", str(eml), config=cfg).returncode == 0
    with sqlite3.connect(db_file(cfg)) as c:
        (digest,) = c.execute("SELECT digest FROM inbound WHERE state = 'quarantined'").fetchone()
    pack, offset, size = _index_row(cfg, digest)
    _flip(pack, offset + 2)
    r = run_cli("quarantine", "show", "1", "--raw", config=cfg)
    assert r.returncode == 65 and r.stdout == b""
    err = r.stderr.decode()
    assert digest in err and "inbound 1 (no ticket)" in err and "--repair" in err


# --- repair ----------------------------------------------------------------------------

def test_repair_from_the_original_source_mends_mail_and_attachments(
        damaged_desk: tuple[Path, Path, dict[str, str]]) -> None:
    cfg, source, raws = damaged_desk
    with sqlite3.connect(db_file(cfg)) as c:
        attachment = c.execute("SELECT digest FROM attachments ORDER BY id").fetchone()[0]
        before = c.execute("SELECT count(*) FROM tickets").fetchone()[0]
    for digest in (raws["MD-2"], attachment):
        pack, offset, size = _index_row(cfg, digest)
        _flip(pack, offset + 7)
    with sqlite3.connect(db_file(cfg)) as c:
        c.execute("UPDATE blob_index SET offset = offset + 100000 WHERE digest = ?",
                  (raws["MD-4"],))
    assert verify(cfg)[1]["damaged"] == 3

    files = [str(p) for p in sorted(source.iterdir())]
    r = run_cli("ingest", "--repair", *files, "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    said = json.loads(r.stdout)
    assert (said["repaired"], said["already_stored"], said["new_tickets"]) == (3, 6, 0), said
    assert said["duplicates"] == 0 and said["not_mended"] == []
    code, out = verify(cfg)
    assert (code, out["damaged"], out["missing"]) == (0, 0, 0), out["bad"]
    with sqlite3.connect(db_file(cfg)) as c:
        assert c.execute("SELECT count(*) FROM tickets").fetchone()[0] == before
    r = run_cli("ingest", "--repair", *files, config=cfg)
    assert "repaired 0 stored copies of 6 mails the desk has" in r.stderr.decode()
    with sqlite3.connect(db_file(cfg)) as c:     # known mail is mended, not taken again
        assert c.execute("SELECT count(*) FROM inbound").fetchone()[0] == 6


def test_repair_on_postgresql_too(make_app: Callable[..., App], db_url: str) -> None:
    app = make_app(db_url)
    raws = [_with_attachment(i) for i in range(3)]
    env = Envelope(source="pipe", mail_from=None)
    ingest(app, [(r, env) for r in raws])
    with app.engine.connect() as conn:
        attachment = conn.execute(select(Attachment.digest).order_by(Attachment.id)).scalar()
    assert attachment is not None
    for digest in (digest_of(raws[1]), attachment):
        with app.engine.connect() as conn:
            pack, offset, size = conn.execute(select(
                BlobIndex.pack, BlobIndex.offset, BlobIndex.size)
                .where(BlobIndex.digest == digest)).one()
        _flip(app.blobs.packs / pack, offset + 3)
    with pytest.raises(BlobDamaged):
        app.blobs.get(digest_of(raws[1]))
    with app.engine.begin() as conn:                 # and one gone altogether
        conn.execute(BlobIndex.__table__.delete().where(BlobIndex.digest == digest_of(raws[2])))
    done, new = mend(app, [(r, env) for r in raws])
    assert (done.repaired, done.known, new, done.unmended) == (3, 3, [], [])
    assert app.blobs.get(digest_of(raws[1])) == raws[1]
    assert app.blobs.get(digest_of(raws[2])) == raws[2]
    assert digest_of(app.blobs.get(attachment)) == attachment
    with app.engine.connect() as conn:
        assert conn.execute(select(Message.id)).first() is not None


def test_a_copy_in_other_bytes_is_said_not_to_mend(
        damaged_desk: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """An .eml saved from an mbox differs by a line end: the same mail, other bytes."""
    cfg, source, raws = damaged_desk
    pack, offset, size = _index_row(cfg, raws["MD-2"])
    _flip(pack, offset + 9)
    other = tmp_path / "exported.eml"
    other.write_bytes((source / "1.eml").read_bytes() + b"\n")
    r = run_cli("ingest", "--repair", str(other), config=cfg)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "not mended: MD-2" in err and "other bytes" in err
    assert verify(cfg)[0] == 1


def test_taking_the_same_bytes_again_heals_a_damaged_copy_without_repair(
        make_app: Callable[..., App]) -> None:
    """A stored copy is checked before it is trusted: a batch or SMTP put of the same bytes
    replaces a damaged one, so a damaged blob nothing uses yet cannot poison a new mail."""
    app = make_app()
    data = b"the same bytes, twice" * 100
    digest = app.blobs.put(data)
    loose = app.blobs.loose_path(digest)
    loose.write_bytes(b"junk")
    assert app.blobs.put(data) == digest and loose.read_bytes() == data
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        batch.put(data + b"!")
        batch.finish()
    pack, offset, size = _index_row_app(app, digest_of(data + b"!"))
    _flip(pack, offset)
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        batch.put(data + b"!")
        assert batch.repaired == 1
        batch.finish()
    assert app.blobs.get(digest_of(data + b"!")) == data + b"!"


def _index_row_app(app: App, digest: str) -> tuple[Path, int, int]:
    with app.engine.connect() as conn:
        pack, offset, size = conn.execute(select(
            BlobIndex.pack, BlobIndex.offset, BlobIndex.size)
            .where(BlobIndex.digest == digest)).one()
    return app.blobs.packs / pack, offset, size


def test_what_is_not_a_blob_file_is_damage_not_a_traceback_or_a_hang(
        damaged_desk: tuple[Path, Path, dict[str, str]], make_app: Callable[..., App]) -> None:
    """A folder, a pipe, a dangling link where a blob should be; a pack that is a folder;
    an index row with a negative offset; an empty pack holding an empty blob."""
    cfg, _, raws = damaged_desk
    app = make_app(**yaml_settings(cfg))
    root = app.blobs.root
    shapes = {}
    for kind, data in (("folder", b"a"), ("pipe", b"b"), ("link", b"c")):
        digest = app.blobs.put(data * 50)
        path = app.blobs.loose_path(digest)
        path.unlink()
        if kind == "folder":
            path.mkdir()
        elif kind == "pipe":
            os.mkfifo(path)
        else:
            path.symlink_to(root / "nowhere")
        shapes[kind] = digest
    with sqlite3.connect(db_file(cfg)) as c:
        c.execute("UPDATE blob_index SET offset = -5 WHERE digest = ?", (raws["MD-6"],))
    with app.engine.begin() as conn:                 # an empty blob alone in a new pack
        batch = app.blobs.batch(conn)
        empty_pack = batch.pack
        assert batch.put(b"") == digest_of(b"")
        batch.finish()
    assert (app.blobs.packs / empty_pack.name).stat().st_size == 0
    code, out = verify(cfg)
    assert code == 1, out
    problems = {b["digest"]: b["problem"] for b in out["bad"]}
    assert "not a regular file" in problems[shapes["folder"]]
    assert "not a regular file" in problems[shapes["pipe"]]
    assert problems[shapes["link"]].startswith("damaged")
    assert "makes no sense" in problems[raws["MD-6"]]
    assert digest_of(b"") not in problems
    assert out["unreferenced"] == 3 and out["tickets"] == ["MD-6"]
    for digest in shapes.values():
        assert app.blobs.problem(digest) is not None
        with pytest.raises(BlobDamaged):
            app.blobs.get(digest)
    r = run_cli("tickets", "show", "MD-6", config=cfg)
    assert r.returncode == 0 and b"Traceback" not in r.stderr
    assert app.blobs.put(b"a" * 50) == shapes["folder"]          # mended; the folder kept aside
    assert app.blobs.get(shapes["folder"]) == b"a" * 50
    assert list(root.glob(f"{shapes['folder'][:2]}/*.damaged-*"))


def test_unreferenced_damage_is_listed_but_does_not_fail_verify(
        desk_config: Callable[..., Path], make_app: Callable[..., App]) -> None:
    cfg = desk_config()
    app = make_app(**yaml_settings(cfg))
    digest = app.blobs.put(b"nothing uses me")
    app.blobs.loose_path(digest).write_bytes(b"garbage")
    r = run_cli("blobs", "verify", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "1 bad blob that nothing uses: harmless" in r.stderr.decode()


def test_quarantine_delete_keeps_bytes_an_attachment_still_uses(
        desk_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = desk_config()
    held = b"Subject: no headers worth the name\n\nbody\n"
    (tmp_path / "held.txt").write_bytes(b"\xff\xfe not a mail at all")
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "a@customer.test", "support@localhost", "fw"
    m.set_content("see attached")
    m.add_attachment(b"\xff\xfe not a mail at all", maintype="application",
                     subtype="octet-stream", filename="held.txt")
    (tmp_path / "fw.eml").write_bytes(m.as_bytes())
    del held
    assert run_cli("ingest", str(tmp_path / "held.txt"), str(tmp_path / "fw.eml"),
                   config=cfg).returncode == 0
    assert run_cli("quarantine", "delete", "1", "--yes", config=cfg).returncode == 0
    code, out = verify(cfg)
    assert (code, out["missing"]) == (0, 0), out["bad"]


# --- every command on an empty desk, and the hourly sample ---------------------------------

def test_verify_on_an_empty_desk_and_a_new_one(desk_config: Callable[..., Path]) -> None:
    cfg = desk_config()
    r = run_cli("blobs", "verify", config=cfg)
    assert r.returncode == 66 and b"no desk at" in r.stderr, "nothing to verify, none made"
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("blobs", "verify", config=cfg)
    assert r.returncode == 0 and "all intact" in r.stderr.decode(), r.stderr
    code, out = verify(cfg)
    assert code == 0 and out["checked"] == {"database": 0, "loose": 0, "packed": 0, "bytes": 0}
    assert run_cli("blobs", "--help").returncode == 0


def test_the_hourly_sample_logs_damage_loudly(
        damaged_desk: tuple[Path, Path, dict[str, str]], make_app: Callable[..., App],
        caplog: pytest.LogCaptureFixture) -> None:
    cfg, _, raws = damaged_desk
    app = make_app(**yaml_settings(cfg))
    now = datetime.now(timezone.utc)
    assert blob_sample(app, now).startswith("0 bad of ")
    pack, offset, size = _index_row(cfg, raws["MD-2"])
    _flip(pack, offset + 1)
    with caplog.at_level(logging.ERROR, "maildesk.jobs"):
        said = blob_sample(app, now)
    assert said.startswith("1 bad of ")
    assert raws["MD-2"] in caplog.text and "MD-2 message" in caplog.text
    r = run_cli("jobs", "run", "blob_sample", "--force", config=cfg)
    assert r.returncode == 0 and "1 bad of" in (r.stdout + r.stderr).decode()


def test_get_refuses_what_is_not_there(tmp_path: Path, make_app: Callable[..., App]) -> None:
    app = make_app()
    store = FileBlobs(tmp_path / "b", app.engine)
    with pytest.raises(BlobMissing):
        store.get("0" * 64)
    with pytest.raises(FileNotFoundError):       # a BlobMissing is one
        store.get("1" * 64)
