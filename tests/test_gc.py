"""`maildesk blobs gc` (issue 21): what nothing refers to is freed, what is referred to or
about to be is never touched, while a real `maildesk serve` takes mail."""
from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, mail, run_cli
from sqlalchemy import create_engine, func, select

from maildesk.app import App
from maildesk.config.load import load_settings
from maildesk.intake.inbound import Envelope
from maildesk.pipeline.run import ingest
from maildesk.store.blobs import FileBlobs, digest_of
from maildesk.store.gc import collect, kept_from_gc, purge
from maildesk.store.models import BlobIndex, Inbound, Message

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
HOURS_AGO = time.time() - 2 * 3600
PIPE = Envelope("pipe", None)
TINY = {"pack_size": 4096}


class Rollback(Exception):
    pass


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def age(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (HOURS_AGO, HOURS_AGO))


def gc(cfg: Path, *args: str) -> dict[str, Any]:
    r = run_cli("blobs", "gc", "--format", "json", *args, config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def verified(cfg: Path) -> dict[str, Any]:
    r = run_cli("blobs", "verify", "--format", "json", config=cfg)
    assert r.returncode == 0, r.stdout.decode()[:2000]
    return dict(json.loads(r.stdout))


def rolled_back(app: App, *blobs: bytes) -> None:
    """Bytes appended to this thread's pack by a batch whose transaction rolled back."""
    with pytest.raises(Rollback), app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        for b in blobs:
            batch.put(b)
        batch.finish()
        raise Rollback


def plant(cfg: Path) -> dict[str, Any]:
    """Garbage of every kind, two hours old: unreferenced loose files, a pack of rolled-back
    bytes only, and a pack mostly of them with one live mail. What each is, to check."""
    app = App.open(load_settings(cfg))
    try:
        assert isinstance(app.blobs, FileBlobs)
        loose = [app.blobs.loose_path(app.blobs.put(os.urandom(3000))) for _ in range(5)]
        rolled_back(app, os.urandom(50_000))          # the thread's first pack: junk only
        junk_pack = app.blobs._local.pack.name
        app.blobs._local.pack.retired = True
        app.blobs._close_if_unused(app.blobs._local.pack)
        app.blobs._local.pack = None
        live = mail(subject="kept through gc", message_id="<planted-live@customer.test>")
        ingest(app, [(live, PIPE)])
        with app.engine.begin() as conn:      # indexed, then what named it was deleted
            batch = app.blobs.batch(conn)
            batch.put(os.urandom(2000))
            batch.finish()
        rolled_back(app, os.urandom(60_000))
        mixed_pack = app.blobs._local.pack.name
        assert mixed_pack != junk_pack
    finally:
        app.close()
    packs = app.settings.blob_dir / "packs"
    age(*loose, packs / junk_pack, packs / mixed_pack)
    return {"loose": loose, "junk": packs / junk_pack, "mixed": packs / mixed_pack,
            "live": digest_of(live), "packs": packs}


def corpus(n: int) -> list[bytes]:
    paths = sorted(p for p in CORPUS.rglob("*.eml") if p.is_file())
    return [p.read_bytes() for p in paths[:n]]


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not found")
def test_gc_while_serve_takes_mail(daemon: Callable[..., Daemon], db_url: str) -> None:
    """gc again and again while four SMTP clients send real mail to a real daemon whose
    packs roll over every few KiB, and every pack looks two hours old: only the appenders'
    locks keep gc off the live ones. Nothing that got its 250 is lost; the planted garbage
    is gone."""
    d = daemon(db_url, storage=TINY)
    planted = plant(d.config)
    mails = corpus(120) * 2        # each twice: the second finds its file, and freshens it
    accepted: list[bytes] = []
    refused: list[str] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        for raw in mails[k::4]:
            try:
                with smtplib.SMTP("127.0.0.1", d.port, timeout=60) as s:
                    s.sendmail("ana@customer.test", ["support@localhost"], crlf(raw))
            except smtplib.SMTPException as e:
                with lock:
                    refused.append(str(e))
                continue
            with lock:
                accepted.append(raw)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    runs: list[dict[str, Any]] = []
    app = App.open(load_settings(d.config))     # gc in this process too: many more runs
    try:
        while any(t.is_alive() for t in threads) or len(runs) < 3:
            age(*planted["packs"].glob("*.pack"))
            if len(runs) % 5 == 0:
                runs.append(gc(d.config, "--min-age", "30s", "--all"))
            else:
                runs.append(collect(app.blobs, app.engine, 30, every=True).as_dict())
    finally:
        app.close()
    for t in threads:
        t.join()
    assert len(accepted) >= 200, refused[:3]
    engine = create_engine(load_settings(d.config).database_url)
    try:
        def drained() -> bool:
            with engine.connect() as c:
                return not c.execute(select(func.count()).select_from(Inbound)
                                     .where(Inbound.state == "queued")).scalar_one()
        deadline = time.monotonic() + 120
        while not drained():
            assert time.monotonic() < deadline, "the daemon did not take its queue"
            age(*planted["packs"].glob("*.pack"))
            runs.append(gc(d.config, "--min-age", "30s", "--all"))
        with engine.connect() as c:
            smtp = c.execute(select(func.count()).select_from(Inbound)
                             .where(Inbound.source == "smtp")).scalar_one()
            states = dict(c.execute(select(Inbound.state, func.count())
                                    .group_by(Inbound.state)).all())
        assert smtp == len(accepted)
        assert "quarantined" not in states, states
        assert sum(r["live_packs"] for r in runs) > 0      # the daemon's packs were skipped
        out = verified(d.config)
        assert out["damaged"] == out["missing"] == 0
        shown = run_cli("tickets", "list", "--format", "json", config=d.config)
        assert len(json.loads(shown.stdout)) >= 50
    finally:
        engine.dispose()
    assert not any(p.exists() for p in planted["loose"])
    assert not planted["junk"].exists() and not planted["mixed"].exists()
    assert sum(r["loose"] for r in runs) >= 5
    assert sum(r["packs_removed"] for r in runs) >= 1
    assert sum(r["packs_compacted"] for r in runs) >= 1
    assert d.stop() == 0
    final = gc(d.config, "--min-age", "0", "--all")
    assert final["live_packs"] == 0          # the daemon closed its packs: none locked
    assert verified(d.config)["checked"]["packed"] > 0
    app = App.open(load_settings(d.config))
    try:
        assert b"kept through gc" in app.blobs.get(planted["live"])
    finally:
        app.close()


APPENDER = """
import sys
from pathlib import Path
from maildesk.store.blobs import Pack
pack = Pack(Path(sys.argv[1]))
pack.append(b"bytes of a batch not yet committed" * 100)
pack.sync()
print(pack.name, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def appender(make_app: Callable[..., App]) -> Iterator[tuple[App, subprocess.Popen[str], Path]]:
    """A desk, and another process appending to a pack of it (holding it, as a daemon's
    thread does until its batch commits): the pack has bytes but no index row yet."""
    app = make_app()
    assert isinstance(app.blobs, FileBlobs)
    child = subprocess.Popen([sys.executable, "-c", APPENDER, str(app.blobs.packs)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert child.stdout is not None
    pack = app.blobs.packs / child.stdout.readline().strip()
    age(pack)
    yield app, child, pack
    child.kill()
    child.communicate()


def test_a_pack_a_live_process_appends_to_is_skipped(
        appender: tuple[App, subprocess.Popen[str], Path]) -> None:
    """Its name's pid is alive here, but that proves nothing (pids are reused): the lock
    does. Without it gc would remove the pack, whose bytes are about to be indexed."""
    app, child, pack = appender
    out = collect(app.blobs, app.engine, min_age=0, every=True)
    assert out.live == 1 and out.packs_removed == 0 and pack.exists()
    child.communicate("")          # the appender closes the pack (and exits)
    out = collect(app.blobs, app.engine, min_age=0, every=True)
    assert out.live == 0 and out.packs_removed == 1 and not pack.exists()


def test_without_the_appenders_lock_gc_would_take_its_pack(
        appender: tuple[App, subprocess.Popen[str], Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the test above guards against: with no lock to find, the pack looks abandoned."""
    import maildesk.store.gc as gc_module
    app, _, pack = appender
    monkeypatch.setattr(gc_module.fcntl, "flock", lambda fd, how: None)
    out = collect(app.blobs, app.engine, min_age=0, every=True)
    assert out.packs_removed == 1 and not pack.exists()


def _state(app: App) -> tuple[list[tuple[str, float, int]], list[Any]]:
    files = sorted((str(p), p.stat().st_mtime, p.stat().st_size)
                   for p in app.settings.blob_dir.rglob("*") if p.is_file())
    with app.engine.connect() as c:
        rows = list(c.execute(select(BlobIndex.__table__).order_by(BlobIndex.digest)).all())
    return files, rows


def test_dry_run_changes_nothing(desk_config: Callable[..., Path], db_url: str) -> None:
    cfg = desk_config(db_url)
    assert run_cli("ingest", "--format", "json", "-", input=mail(), config=cfg).returncode == 0
    plant(cfg)
    app = App.open(load_settings(cfg))
    try:
        before = _state(app)
        out = gc(cfg, "--dry-run")
        assert out["dry_run"] and out["loose"] == 5 and out["rows"] == 1
        assert out["packs_removed"] >= 1
        assert out["packs_compacted"] >= 1 and out["bytes"] > 100_000
        assert _state(app) == before
        again = gc(cfg)
        assert {k: v for k, v in again.items() if k != "seconds"} == \
            {k: v for k, v in out.items() if k != "seconds"} | {"dry_run": False}
        assert _state(app) != before
    finally:
        app.close()


def test_min_age_spares_a_fresh_unreferenced_blob(make_app: Callable[..., App]) -> None:
    app = make_app()
    assert isinstance(app.blobs, FileBlobs)
    old = app.blobs.loose_path(app.blobs.put(b"stored two hours ago, then rolled back"))
    new = app.blobs.loose_path(app.blobs.put(b"stored now: its row may be about to commit"))
    age(old)
    out = collect(app.blobs, app.engine)
    assert (out.loose, out.young) == (1, 1)
    assert new.exists() and not old.exists()
    assert collect(app.blobs, app.engine, min_age=0).loose == 1 and not new.exists()


def test_a_writer_that_finds_an_old_file_freshens_it(make_app: Callable[..., App]) -> None:
    """The same mail arriving again (an MTA retrying after a 451) finds its old unreferenced
    file and is about to commit a row naming it: the file's mtime now says "in use", so gc
    spares it (gc runs after the batch here: SQLite's write lock would make it wait)."""
    app = make_app()
    assert isinstance(app.blobs, FileBlobs)
    raw = mail(message_id="<again@customer.test>")
    path = app.blobs.loose_path(app.blobs.put(raw))
    age(path)
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        assert batch.put(raw) == digest_of(raw)
        batch.finish()
    assert collect(app.blobs, app.engine).loose == 0
    assert path.exists()


def test_gc_on_a_database_desk_deletes_unreferenced_rows(desk_config: Callable[..., Path],
                                                         db_url: str) -> None:
    cfg = desk_config(db_url, storage={"backend": "database"})
    assert run_cli("ingest", "-", input=mail(), config=cfg).returncode == 0
    app = App.open(load_settings(cfg))
    try:
        orphan = app.blobs.put(b"an attachment of a rolled-back reply" * 50)
        out = gc(cfg)
        assert (out["rows"], out["bytes"]) == (1, len(b"an attachment of a rolled-back reply" * 50))
        assert app.blobs.problem(orphan) == "missing"
        assert verified(cfg)["checked"]["database"] >= 1
    finally:
        app.close()


def test_purge_takes_the_bytes_out_of_their_pack_now(make_app: Callable[..., App]) -> None:
    """For an erase: once nothing refers to a blob, its bytes leave the disk, young or not;
    its pack's other blobs are moved, intact. (The secret is in a header: the desk's
    acknowledgement quotes the body, and an erase deletes that mail too.)"""
    app = make_app()
    assert isinstance(app.blobs, FileBlobs)
    secret = b"a requester's personal data " + os.urandom(16).hex().encode()
    ingest(app, [(mail(subject="erase me", X_Personal=secret.decode()), PIPE)])
    ingest(app, [(mail(subject="keep me", body="the other customer's\n"), PIPE)])
    with app.engine.connect() as c:
        digests = {r.digest: r.id for r in c.execute(select(Inbound.digest, Inbound.id))}
    assert len(digests) == 2
    target = next(d for d in digests if secret in app.blobs.get(d))
    assert purge(app.blobs, app.engine, [target]).left == [target]      # still referred to
    with app.engine.begin() as conn:
        conn.execute(Inbound.__table__.update().where(Inbound.digest == target)
                     .values(state="deleted"))
        conn.execute(Message.__table__.update().where(Message.digest == target)
                     .values(digest="0" * 64))
    app.blobs.close()           # the test's own thread closes its pack (a daemon: at stop)
    out = purge(app.blobs, app.engine, [target])
    assert out.left == []
    on_disk = b"".join(p.read_bytes() for p in app.settings.blob_dir.rglob("*") if p.is_file())
    assert secret not in on_disk
    other = next(d for d in digests if d != target)
    assert b"the other customer's" in app.blobs.get(other)


def test_one_gc_at_a_time_and_what_a_killed_one_held_comes_back(
        desk_config: Callable[..., Path]) -> None:
    """A second gc on the same files exits 75 in one line; a file a killed gc held (renamed
    away for its last look) is put back at its name and judged again."""
    import fcntl
    cfg = desk_config()
    assert run_cli("ingest", "-", input=mail(), config=cfg).returncode == 0
    app = App.open(load_settings(cfg))
    try:
        assert isinstance(app.blobs, FileBlobs)
        with app.engine.connect() as c:
            used = c.execute(select(Inbound.digest)).scalar_one()
        raw = app.blobs.get(used)
        path = app.blobs.loose_path(app.blobs.put(raw))
        held = path.with_name(f".{path.name}.gc")
        os.rename(path, held)
        with (app.settings.blob_dir / "gc.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = run_cli("blobs", "gc", config=cfg)
            assert r.returncode == 75 and len(r.stderr.decode().splitlines()) == 1
            assert "another `maildesk blobs gc`" in r.stderr.decode()
        assert app.blobs.get(used) == raw          # the pack's copy meanwhile
        age(held)
        assert gc(cfg, "--min-age", "0")["loose"] == 0
        assert path.exists() and not held.exists()
    finally:
        app.close()


def test_a_row_a_writer_reuses_is_not_dropped_under_it(make_app: Callable[..., App],
                                                       db_url: str) -> None:
    """PostgreSQL: a batch finds a packed blob nothing refers to (its mail was erased) and is
    about to commit a row naming it. gc, meanwhile, skips the row the batch holds instead of
    deleting it (or waiting, which could deadlock); after the commit the blob is referred to
    and intact. (On SQLite the batch holds the whole database: gc waits for it.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's BEGIN IMMEDIATE already keeps gc out of a writer's transaction")
    app = make_app(db_url)
    raw = mail(message_id="<reused@customer.test>")
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        digest = batch.put(raw)
        batch.finish()
    app.blobs.close()
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        assert batch.put(raw) == digest and not batch.pending      # found, and held
        out = collect(app.blobs, app.engine, min_age=0, every=True)
        assert out.rows == 0
        conn.execute(Inbound.__table__.insert().values(
            received_at=datetime.now(timezone.utc), source="pipe", digest=digest,
            size=len(raw), state="processed", attempts=1, rcpt_to=[]))
    assert app.blobs.get(digest) == raw
    assert collect(app.blobs, app.engine, min_age=0, every=True).rows == 0


def test_a_read_that_looked_up_a_compacted_pack_looks_again(
        make_app: Callable[..., App], db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc compacts a pack between a reader's lookup and its read (forced here: the lookup
    runs gc before it answers). The pack is gone; the reader looks up again and finds the
    blob where gc moved it."""
    app = make_app(db_url)
    assert isinstance(app.blobs, FileBlobs)
    raw = mail(message_id="<moved@customer.test>")
    with app.engine.begin() as conn:
        batch = app.blobs.batch(conn)
        digest = batch.put(raw)
        batch.finish()
        conn.execute(Inbound.__table__.insert().values(
            received_at=datetime.now(timezone.utc), source="pipe", digest=digest,
            size=len(raw), state="processed", attempts=1, rcpt_to=[]))
    rolled_back(app, os.urandom(20_000))
    pack = app.blobs.packs / app.blobs._local.pack.name
    app.blobs.close()
    age(pack)
    lookup = app.blobs._lookup
    calls: list[Any] = []

    def stale(*args: Any) -> Any:
        row = lookup(*args)
        if not calls:
            out = collect(app.blobs, app.engine, min_age=0)
            assert out.packs_compacted == 1 and not pack.exists()
        calls.append(row)
        return row

    monkeypatch.setattr(app.blobs, "_lookup", stale)
    assert app.blobs.get(digest) == raw
    assert calls[0][0] == pack.name != calls[1][0]


def test_gc_and_backup_take_turns(desk_config: Callable[..., Path], tmp_path: Path) -> None:
    """A backup copies the packs its database snapshot places blobs in; a gc compacting
    one in between would leave the backup without it. So a backup keeps gc out (gc exits
    75, naming both), and a backup begun during a gc waits for it."""
    import fcntl
    import subprocess
    import sys
    cfg = desk_config()
    assert run_cli("ingest", "-", input=mail(), config=cfg).returncode == 0
    settings = load_settings(cfg)
    with kept_from_gc(settings.blob_dir):
        r = run_cli("blobs", "gc", config=cfg)
    assert r.returncode == 75 and "or a `maildesk backup`" in r.stderr.decode(), r.stderr
    with (settings.blob_dir / "gc.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                     # a gc at work
        waiting = subprocess.Popen([sys.executable, "-m", "maildesk", "--config", str(cfg),
                                    "backup", str(tmp_path / "bk")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(3)
        assert not (tmp_path / "bk" / "MANIFEST.json").exists()
    assert waiting.wait(60) == 0, waiting.stderr.read() if waiting.stderr else ""
    assert (tmp_path / "bk" / "MANIFEST.json").exists()


def test_an_erasure_zeroes_packed_bytes_only_between_backups(tmp_path: Path) -> None:
    """An erasure zeroes a blob's bytes inside its pack after its commit; a backup whose
    snapshot came before still copies that blob, so the zeroing waits for it."""
    import threading

    from sqlalchemy import create_engine

    from maildesk.store.shred import Dropped
    pack = tmp_path / "packs" / "p.pack"
    pack.parent.mkdir()
    pack.write_bytes(b"Doug Sauder's mail")
    dropped = Dropped(FileBlobs(tmp_path, create_engine("sqlite://")), {"d" * 64},
                      [("p.pack", 0, 11)])
    done = threading.Event()

    def erase() -> None:
        dropped.wipe()
        done.set()
    with kept_from_gc(tmp_path):
        t = threading.Thread(target=erase)
        t.start()
        assert not done.wait(0.5), "zeroed under a backup"
        assert pack.read_bytes() == b"Doug Sauder's mail"
    assert done.wait(10)
    t.join()
    assert pack.read_bytes() == bytes(11) + b"'s mail"
