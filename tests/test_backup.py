"""`maildesk backup` of a live desk and `maildesk restore` of it elsewhere (issue 21), against
a real `maildesk serve` taking real mail (../shared/corpus) from several SMTP clients.

The promise checked: every mail a client heard 250 for before the backup began is in the
restored desk, as the same bytes (its inbound row, with the blob of its digest read back
and checked), and every blob the restored desk refers to is intact.
"""
from __future__ import annotations

import json
import secrets
import shutil
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import PG_OK, Daemon, mail, run_cli, settings_dict
from nodes import PG_URL
from sqlalchemy import create_engine, text
from test_real_mail import CORPUS, corpus_mails

from maildesk.config.load import load_settings
from maildesk.store.blob_rows import DatabaseBlobs
from maildesk.store.blobs import FileBlobs

needs_pg_dump = pytest.mark.skipif(not PG_OK or shutil.which("pg_dump") is None,
                                   reason="no PostgreSQL, or no pg_dump on PATH")
DESKS = [pytest.param(("sqlite", "filesystem"), id="sqlite"),
         pytest.param(("sqlite", "database"), id="sqlite-blob-rows"),
         pytest.param(("postgresql", "filesystem"), id="postgresql", marks=needs_pg_dump)]


@pytest.fixture
def fresh_db() -> Iterator[Callable[[], str]]:
    """Fresh PostgreSQL databases, dropped afterwards: pg_dump and pg_restore take a whole
    database, not the schema of one test."""
    made: list[str] = []

    def make() -> str:
        name = f"md_backup_{secrets.token_hex(5)}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        made.append(name)
        return PG_URL.rsplit("/", 1)[0] + "/" + name
    yield make
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        for name in made:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def config(root: Path, db_url: str | None = None, **overrides: Any) -> Path:
    """A maildesk.yaml for a desk under root."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "maildesk.yaml"
    path.write_text(yaml.safe_dump(settings_dict(root, db_url, **overrides)))
    return path


def url_of(cfg: Path) -> str:
    data = yaml.safe_load(cfg.read_text())
    return str(data.get("database", {}).get("url")
               or f"sqlite:///{Path(data['data_dir']) / 'maildesk.db'}")


def inbound(cfg: Path) -> dict[int, str]:
    """inbound id -> digest, as the desk of cfg holds them."""
    engine = create_engine(url_of(cfg))
    try:
        with engine.connect() as c:
            return dict(c.execute(text("SELECT id, digest FROM inbound")).all())
    finally:
        engine.dispose()


class Senders:
    """Client threads sending corpus mail to a daemon until stopped; for each 250, the
    inbound id it names and when it came."""

    def __init__(self, port: int, mails: list[bytes], clients: int = 4) -> None:
        self.port, self.mails = port, mails
        self.accepted: list[tuple[float, int]] = []     # (monotonic time of the 250, id)
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.next = 0
        self.threads = [threading.Thread(target=self._work) for _ in range(clients)]

    def __enter__(self) -> Senders:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()

    def _take(self) -> bytes:
        with self.lock:
            raw = self.mails[self.next % len(self.mails)]
            self.next += 1
            return raw

    def _work(self) -> None:
        s: smtplib.SMTP | None = None
        while not self.stopping.is_set():
            raw = self._take()
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                s.ehlo("client.test")
                s.mail("sender@customer.test")
                s.rcpt("support@localhost")
                code, said = s.data(raw)
            except (smtplib.SMTPException, OSError) as e:
                self.failures.append(f"{type(e).__name__}: {e}"[:200])
                if s is not None:
                    s.close()
                s = None
                continue
            if code == 250:
                with self.lock:
                    self.accepted.append((time.monotonic(),
                                          int(said.decode().rsplit(" ", 1)[1])))
        if s is not None:
            s.quit()

    def before(self, moment: float) -> list[int]:
        with self.lock:
            return [i for at, i in self.accepted if at < moment]


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} not found (../shared beside the checkout)")
    return [raw for _, raw in corpus_mails() if len(raw) < 256 * 1024][:400]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", DESKS)
def test_a_backup_of_a_desk_taking_mail_restores_every_mail_it_had_accepted(
        kind: tuple[str, str], tmp_path: Path, corpus: list[bytes],
        fresh_db: Callable[[], str], daemon: Callable[..., Daemon]) -> None:
    backend, storage = kind
    pg = backend == "postgresql"
    # small packs: the worker starts new ones while the backup copies
    d = daemon(fresh_db() if pg else None, storage={"backend": storage, "pack_size": 65536})
    restored = config(tmp_path / "restored", fresh_db() if pg else None,
                      storage={"backend": storage})
    dest = tmp_path / "backup"
    with Senders(d.port, corpus) as senders:
        while len(senders.before(time.monotonic())) < 60:
            time.sleep(0.05)
            assert len(senders.failures) < 20, senders.failures
        began = time.monotonic()
        made = run_cli("backup", str(dest), "--format", "json", config=d.config)
        ended = time.monotonic()
        time.sleep(0.5)
    assert made.returncode == 0, made.stderr.decode()
    manifest = json.loads(made.stdout)
    assert json.loads((dest / "MANIFEST.json").read_text())["counts"] == manifest["counts"]
    before = senders.before(began)
    during = [i for at, i in senders.accepted if began <= at < ended]
    assert len(before) >= 60 and during, "mail was taken while the backup ran"
    assert not senders.failures, senders.failures[:3]
    assert manifest["backend"] == backend and manifest["storage"] == storage
    assert manifest["schema"] and manifest["counts"]["blobs"] >= len(before) > 0

    done = run_cli("restore", str(dest), "--format", "json", config=restored)
    assert done.returncode == 0, done.stderr.decode()
    assert d.stop() == 0
    source, copy = inbound(d.config), inbound(restored)
    assert {i: source[i] for i in before} == {i: copy.get(i) for i in before}, \
        "every mail accepted before the backup began is in the restored desk"
    engine = create_engine(url_of(restored))
    blobs_dir = tmp_path / "restored" / "data" / "blobs"
    files = FileBlobs(blobs_dir, engine) if blobs_dir.is_dir() else None
    store = files if storage == "filesystem" else DatabaseBlobs(engine, files)
    assert store is not None
    try:
        for i in before:
            store.get(copy[i])          # read back, checked against its sha256
    finally:
        store.close()
        engine.dispose()
    verified = run_cli("blobs", "verify", "--format", "json", config=restored)
    assert verified.returncode == 0, verified.stdout.decode()[-2000:]
    checked = json.loads(verified.stdout)
    assert not checked["bad"]
    assert sum(checked["checked"][k] for k in ("database", "loose", "packed")) \
        == manifest["counts"]["blobs"]
    listed = run_cli("tickets", "list", "--limit", "0", "--format", "json", config=restored)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) \
        == manifest["counts"]["tickets"]


def test_a_backup_missing_its_blobs_fails_its_restore(tmp_path: Path,
                                                      daemon: Callable[..., Daemon],
                                                      corpus: list[bytes]) -> None:
    """The check has teeth: a backup whose blobs were lost restores with exit 1, naming the
    tickets whose mail is missing."""
    d = daemon()
    with Senders(d.port, corpus[:30], clients=2) as senders:
        while len(senders.accepted) < 30:
            time.sleep(0.05)
    dest = tmp_path / "backup"
    assert run_cli("backup", str(dest), config=d.config).returncode == 0
    d.stop()
    shutil.rmtree(dest / "blobs")
    done = run_cli("restore", str(dest), config=config(tmp_path / "restored"))
    assert done.returncode == 1, done.stderr.decode()
    assert b"missing" in done.stdout and b"MD-1 " in done.stdout


def test_restore_refuses_a_desk_that_is_there_and_a_folder_that_is_no_backup(
        tmp_path: Path, daemon: Callable[..., Daemon], corpus: list[bytes]) -> None:
    d = daemon()
    with Senders(d.port, corpus[:5], clients=1) as senders:
        while len(senders.accepted) < 5:
            time.sleep(0.05)
    dest = tmp_path / "backup"
    assert run_cli("backup", str(dest), config=d.config).returncode == 0
    d.stop()
    tickets = inbound(d.config)

    over = run_cli("restore", str(dest), config=d.config)
    assert over.returncode == 73
    said = over.stderr.decode()
    assert said.count("\n") == 1 and "already holds a database" in said, said
    assert inbound(d.config) == tickets, "the desk there is left as it was"

    elsewhere = config(tmp_path / "other")
    blobs = tmp_path / "other" / "data" / "blobs" / "ab"
    blobs.mkdir(parents=True)
    (blobs / ("c" * 62)).write_bytes(b"someone's")
    there = run_cli("restore", str(dest), config=elsewhere)
    assert there.returncode == 73 and b"already holds blobs" in there.stderr
    assert not (tmp_path / "other" / "data" / "maildesk.db").exists()

    manifest = json.loads((dest / "MANIFEST.json").read_text())
    (dest / "MANIFEST.json").write_text(json.dumps({**manifest, "schema": "9999"}))
    newer = run_cli("restore", str(dest), config=config(tmp_path / "newer"))
    assert newer.returncode == 78 and b"newer than this maildesk" in newer.stderr
    assert not (tmp_path / "newer" / "data" / "maildesk.db").exists()

    (dest / "MANIFEST.json").unlink()
    cut = run_cli("restore", str(dest), config=config(tmp_path / "third"))
    assert cut.returncode == 65
    assert cut.stderr.decode().count("\n") == 1 and b"not a complete backup" in cut.stderr
    assert not (tmp_path / "third" / "data" / "maildesk.db").exists()

    nothing = run_cli("restore", str(tmp_path / "nowhere"), config=config(tmp_path / "fourth"))
    assert nothing.returncode == 66 and b"no such backup folder" in nothing.stderr


def test_backup_never_writes_into_a_folder_that_holds_something(
        tmp_path: Path, daemon: Callable[..., Daemon]) -> None:
    d = daemon()
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("last week's")
    r = run_cli("backup", str(dest), config=d.config)
    assert r.returncode == 73 and r.stderr.decode().count("\n") == 1, r.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt"]
    file = tmp_path / "a-file"
    file.write_text("x")
    assert run_cli("backup", str(file), config=d.config).returncode == 73
    inside = load_settings(d.config).data_dir / "backup"      # the desk copying itself
    r = run_cli("backup", str(inside), config=d.config)
    assert r.returncode == 73 and b"inside the desk's data_dir" in r.stderr, r.stderr
    assert not inside.exists()
    assert run_cli("backup", "", config=d.config).returncode == 64     # not the cwd
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("backup", str(empty), config=d.config).returncode == 0
    assert (empty / "MANIFEST.json").is_file()
    assert {p.stat().st_mode & 0o777 for p in empty.rglob("*")} <= {0o600, 0o700}


@pytest.mark.parametrize("kind", ["new", "none"])
def test_a_new_desk_backs_up_and_restores_and_no_desk_is_said(kind: str,
                                                             tmp_path: Path) -> None:
    cfg = config(tmp_path / "desk")
    if kind == "new":
        assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("backup", str(tmp_path / "backup"), "--format", "json", config=cfg)
    if kind == "none":
        assert r.returncode == 66 and b"no desk at" in r.stderr
        assert not (tmp_path / "backup").exists()
        return
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["counts"] == {"tickets": 0, "messages": 0, "blobs": 0,
                                              "bytes": 0}
    again = config(tmp_path / "again")
    done = run_cli("restore", str(tmp_path / "backup"), config=again)
    assert done.returncode == 0, done.stderr.decode()
    assert run_cli("tickets", "list", config=again).returncode == 0


@pytest.mark.skipif(not PG_OK, reason="no PostgreSQL")
def test_on_postgresql_without_pg_dump_backup_says_what_to_install(
        tmp_path: Path, fresh_db: Callable[[], str]) -> None:
    cfg = config(tmp_path / "desk", fresh_db())
    assert run_cli("db", "upgrade", config=cfg).returncode == 0
    r = run_cli("backup", str(tmp_path / "backup"), config=cfg, env={"PATH": "/nonexistent"})
    assert r.returncode == 69, r.stderr
    said = r.stderr.decode()
    assert said.count("\n") == 1 and "pg_dump not found on PATH" in said \
        and "postgresql-client" in said, said
    assert not (tmp_path / "backup").exists(), "nothing is left behind"
    if shutil.which("pg_dump") is None:
        return
    assert run_cli("backup", str(tmp_path / "backup"), config=cfg).returncode == 0
    over = run_cli("restore", str(tmp_path / "backup"), config=cfg)
    assert over.returncode == 73 and b"already holds" in over.stderr, over.stderr
    other = config(tmp_path / "other", fresh_db(), storage={"backend": "database"})
    kind = run_cli("restore", str(tmp_path / "backup"), config=other)
    assert kind.returncode == 78 and b"storage.backend: filesystem" in kind.stderr


def test_a_backup_of_an_older_schema_is_restored_and_upgraded(tmp_path: Path) -> None:
    """Backup copies the schema as it is (a way back from an upgrade); restore brings it to
    this maildesk's, as `serve` would."""
    from alembic import command

    from maildesk.store import migrate
    cfg = config(tmp_path / "desk")
    (tmp_path / "desk" / "data").mkdir()
    engine = create_engine(url_of(cfg))
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0015")
    engine.dispose()
    r = run_cli("backup", str(tmp_path / "backup"), "--format", "json", config=cfg)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["schema"] == "0015"
    assert migrate.current(create_engine(url_of(cfg))) == "0015", "the desk is left as it was"
    again = config(tmp_path / "again")
    done = run_cli("restore", str(tmp_path / "backup"), config=again)
    assert done.returncode == 0, done.stderr.decode()
    assert f"schema upgraded from 0015 to {migrate.HEAD}".encode() in done.stderr
    assert migrate.current(create_engine(url_of(again))) == migrate.HEAD


def backed_up(tmp_path: Path, db_url: str | None) -> Path:
    """A backup of a desk of 12 tickets (their mails ingested by the CLI), in tmp_path/backup."""
    cfg = config(tmp_path / "desk", db_url)
    mails = tmp_path / "mails"
    mails.mkdir()
    for i in range(12):
        (mails / f"{i}.eml").write_bytes(mail(f"Laptop {i} will not boot", "x" * 3000 * i))
    done = run_cli("ingest", *sorted(str(f) for f in mails.iterdir()), config=cfg)
    assert done.returncode == 0, done.stderr.decode()
    made = run_cli("backup", str(tmp_path / "backup"), config=cfg)
    assert made.returncode == 0, made.stderr.decode()
    return tmp_path / "backup"


def tables(db_url: str) -> list[str]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return list(c.execute(text("SELECT relname FROM pg_class WHERE relnamespace = "
                                       "'public'::regnamespace AND relkind IN ('r', 'S')"))
                        .scalars())
    finally:
        engine.dispose()


def damage(backup: Path, how: str) -> Path:
    """The backup's database file, damaged as a tester found backups damaged."""
    database = backup / json.loads((backup / "MANIFEST.json").read_text())["database"]
    if how == "truncated":
        with open(database, "rb+") as f:
            f.truncate(database.stat().st_size // 3)
    elif how == "random":
        database.write_bytes(secrets.token_bytes(database.stat().st_size))
    elif how == "unrelated":          # another SQLite file: no maildesk schema
        database.unlink()
        engine = create_engine(f"sqlite:///{database}")
        with engine.begin() as c:
            c.execute(text("CREATE TABLE notes (line TEXT)"))
        engine.dispose()
    else:                               # another moment's copy: the counts do not match
        manifest = json.loads((backup / "MANIFEST.json").read_text())
        manifest["counts"]["tickets"] += 1
        (backup / "MANIFEST.json").write_text(json.dumps(manifest))
    return database


@pytest.mark.parametrize("backend,how", [
    ("sqlite", "truncated"), ("sqlite", "random"), ("sqlite", "unrelated"),
    ("sqlite", "counts"),
    pytest.param("postgresql", "truncated", marks=needs_pg_dump),
    pytest.param("postgresql", "counts", marks=needs_pg_dump)])
def test_a_damaged_backup_database_is_refused_before_anything_is_put_in_place(
        backend: str, how: str, tmp_path: Path, fresh_db: Callable[[], str]) -> None:
    """The backup's database is checked against its manifest first: 65, one line naming
    the backup's file, and nothing left in the data_dir (or the database), so that a good
    backup restores there next."""
    pg = backend == "postgresql"
    good = backed_up(tmp_path, fresh_db() if pg else None)
    bad = tmp_path / "damaged"
    shutil.copytree(good, bad)
    database = damage(bad, how)
    target_url = fresh_db() if pg else None
    target = config(tmp_path / "target", target_url)
    kept = tmp_path / "target" / "data" / "outbox" / "mine"       # there before: untouched
    kept.parent.mkdir(parents=True)
    kept.write_text("someone's")

    r = run_cli("restore", str(bad), config=target)
    said = r.stderr.decode()
    assert r.returncode == 65 and said.count("\n") == 1 and str(database) in said, said
    assert ("does not match its MANIFEST.json" in said) == (how in ("unrelated", "counts"))
    left = [f for f in (tmp_path / "target" / "data").rglob("*") if f != kept.parent]
    assert left == [kept], "nothing of the restore is left"
    if target_url:
        assert tables(target_url) == []
    again = run_cli("restore", str(good), config=target)
    assert again.returncode == 0, again.stderr.decode()
    assert kept.read_text() == "someone's"


@needs_pg_dump
def test_a_pg_restore_that_fails_leaves_the_database_and_data_dir_as_they_were(
        tmp_path: Path, fresh_db: Callable[[], str]) -> None:
    """pg_restore runs as one transaction, and the blobs copied before it go again: the
    line says what happened, and the restore runs again once the cause is mended."""
    good = backed_up(tmp_path, fresh_db())
    url = fresh_db()
    target = config(tmp_path / "target", url)
    engine = create_engine(url)
    with engine.begin() as c:       # not a table, so no desk: pg_restore itself trips on it
        c.execute(text("CREATE SEQUENCE tickets_id_seq"))
    r = run_cli("restore", str(good), config=target)
    said = r.stderr.decode()
    assert r.returncode == 75 and said.count("\n") == 1, said
    assert '"tickets_id_seq" already exists' in said and "nothing was restored" in said, said
    assert tables(url) == ["tickets_id_seq"], "the database is as it was"
    assert not [f for f in (tmp_path / "target").rglob("*") if f.is_file()
                and f.name != "maildesk.yaml"], "the blobs copied are gone"
    with engine.begin() as c:
        c.execute(text("DROP SEQUENCE tickets_id_seq"))
    engine.dispose()
    again = run_cli("restore", str(good), config=target)
    assert again.returncode == 0, again.stderr.decode()


def test_restore_names_what_is_wrong_with_what_it_was_given(tmp_path: Path) -> None:
    good = backed_up(tmp_path, None)
    target = config(tmp_path / "target")
    afile = run_cli("restore", str(good / "MANIFEST.json"), config=target)
    assert afile.returncode == 66 and b"is a file, not a backup folder" in afile.stderr

    (good / "maildesk.db").rename(tmp_path / "aside.db")
    gone = run_cli("restore", str(good), config=target)
    said = gone.stderr.decode()
    assert gone.returncode == 65 and said.count("\n") == 1, said
    assert f"{good / 'maildesk.db'}, the database MANIFEST.json names, is missing" in said
    (good / "maildesk.db").mkdir()
    folder = run_cli("restore", str(good), config=target)
    assert folder.returncode == 65 and b"is a folder, not a file" in folder.stderr
    assert not (tmp_path / "target" / "data").exists()

    # the schema decides, not the maildesk version that wrote the backup (README)
    (good / "maildesk.db").rmdir()
    (tmp_path / "aside.db").rename(good / "maildesk.db")
    manifest = json.loads((good / "MANIFEST.json").read_text())
    (good / "MANIFEST.json").write_text(json.dumps({**manifest, "maildesk": "99.0.0"}))
    newer = run_cli("restore", str(good), config=target)
    assert newer.returncode == 0, newer.stderr.decode()


def test_a_restore_cut_short_after_its_database_is_in_place_leaves_no_desk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure of any kind, however late (here an interrupt while the blobs are read
    back), takes away the database file, its -wal and -shm, and the blobs."""
    from maildesk.store import backup as work
    good = backed_up(tmp_path, None)
    settings = load_settings(config(tmp_path / "target"))

    def interrupted(*args: object) -> None:
        assert (tmp_path / "target" / "data" / "maildesk.db").is_file()
        raise KeyboardInterrupt
    monkeypatch.setattr(work, "_verify_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        work.restore(settings, good)
    assert not (tmp_path / "target" / "data").exists()
