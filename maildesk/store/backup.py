"""`maildesk backup` and `maildesk restore`: a consistent copy of a live desk, and a desk
made again from one.

A backup is a folder laid out like a data directory: the database (`maildesk.db`, or
`database.dump` from pg_dump), the blobs (`blobs/ab/cdef...`, `blobs/packs/*.pack`), and
`MANIFEST.json`, written last: a folder without it is an incomplete backup.

Consistency rests on one order, and on what the blob store already promises: a blob is
durable (fsynced) before the row that refers to it commits (the SMTP path fsyncs and
renames the loose file first; a batch fsyncs its pack before its index rows commit), a
loose file appears whole (renamed into place), and a pack only grows. So:

1. The database first, as one snapshot while the daemon writes: SQLite's online backup
   API copies every page in one step of one read transaction (WAL mode lets writers go
   on meanwhile); on PostgreSQL a REPEATABLE READ transaction exports its snapshot and
   pg_dump dumps exactly that snapshot (`--snapshot`), the transaction held open.
2. Then the blobs. Every blob the snapshot refers to was durable before the snapshot was
   taken, so it is on disk now: each loose file as it is (more than the snapshot needs
   is harmless: nothing refers to it), and of each pack the bytes up to the end of the
   last blob the snapshot's blob_index places in it (bytes after are later batches').
3. Then the copy is checked: verify.verify() reads every blob of the backup, with the
   snapshot's rows (the copied SQLite file; on PostgreSQL the still open snapshot), so
   each blob the snapshot refers to is found in the backup with its sha256. Blobs in
   blob_data rows (storage.backend: database) are in the database copy itself.
4. os.sync(), then MANIFEST.json (counts, schema, version), renamed into place.

A restore writes only into a desk that is not there: no database file (SQLite) or no
maildesk tables (PostgreSQL), and no blob files. It checks the backup's database first
(SQLite's integrity_check on a copy beside the target; a dump read whole by pg_restore),
and that it holds the manifest's schema and counts: a damaged file would otherwise be
found only once put in place, named as the target's. Then it copies the blobs, then
the database (the SQLite file renamed into place last; pg_restore in one transaction),
checks every blob again, and brings an older schema to this maildesk's. A restore that
fails takes away every path it made under the data_dir (and the database file's
folder), never one that was there before.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, func, inspect, make_url, select
from sqlalchemy.exc import DBAPIError

from ..config.schema import Settings
from ..errors import MaildeskError, error_line
from . import migrate
from .blob_rows import open_blobs
from .blobs import T_INDEX, BlobError, FileBlobs, fsync_dir, read_file
from .db import make_engine, shown_url, sqlite_file
from .gc import kept_from_gc
from .tables import T_MESSAGES, T_TICKETS
from .verify import Verified, verify

MANIFEST = "MANIFEST.json"
DB_FILE = "maildesk.db"
DUMP_FILE = "database.dump"
BLOBS = "blobs"
DATABASES = {"sqlite": DB_FILE, "postgresql": DUMP_FILE}    # backend -> its database file
COUNTED = {"tickets": T_TICKETS, "messages": T_MESSAGES}    # the manifest's counts of rows
CHUNK = 1024**2
Progress = Callable[[int], None]


class BackupError(MaildeskError):
    """A backup or restore that cannot be done, in one line that says what to do. kind:
    exists (the destination holds something), missing (no such backup), incomplete (no
    manifest), tool (pg_dump or pg_restore not installed), config (a backup of another
    kind of desk, or of a newer schema), damaged (the backup's database is unreadable or not
    the desk its manifest describes), failed (pg_dump or pg_restore said no, or the
    database did)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Result:
    """What a backup or restore did: the manifest, and the blobs found bad on checking."""

    manifest: dict[str, Any]
    checked: Verified = field(default_factory=Verified)
    upgraded: str | None = None       # restore: the schema it was at, when it was migrated

    def as_dict(self) -> dict[str, Any]:
        return {**self.manifest, "verified": self.checked.as_dict(),
                **({"upgraded_from": self.upgraded} if self.upgraded else {})}


# -- backup --------------------------------------------------------------------------------

def backup(settings: Settings, engine: Engine, dest: Path, sized: Progress = lambda n: None,
           advance: Progress = lambda n: None) -> Result:
    """A consistent copy of the desk into dest (a folder not there yet, or empty);
    sized(total) once the bytes to copy are known, advance(n) as they are."""
    pg_dump = None if engine.dialect.name == "sqlite" else _tool("pg_dump", "backup")
    _new_folder(dest, settings.data_dir)
    started = time.perf_counter()
    # from the snapshot to the last blob copied, no gc compacts a pack the snapshot uses
    with kept_from_gc(settings.blob_dir) if settings.blob_dir.is_dir() else nullcontext():
        if pg_dump is None:
            out = _backup_sqlite(settings, engine, dest, sized, advance)
        else:
            out = _backup_postgresql(settings, engine, dest, pg_dump, sized, advance)
    out.manifest["seconds"] = round(time.perf_counter() - started, 3)
    os.sync()           # everything above on disk before the manifest says it is whole
    _write_file(dest / MANIFEST, json.dumps(out.manifest, indent=2).encode() + b"\n",
                replace=True)
    fsync_dir(dest)
    return out


def _new_folder(dest: Path, data_dir: Path) -> None:
    """dest made (0700), or BackupError: a backup is never written over anything, nor into
    the desk it copies (its blobs would be the desk's garbage, copied again by the next)."""
    if dest.exists() and not dest.is_dir():
        raise BackupError(f"{dest} is a file; a backup goes into a new folder (name "
                          "another)", "exists")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; a backup goes into a new or empty folder "
                          "(name another)", "exists")
    if dest.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"{dest} is inside the desk's data_dir {data_dir}; put the backup "
                          "outside it (best: on another disk)", "exists")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)


def _backup_sqlite(settings: Settings, engine: Engine, dest: Path, sized: Progress,
                   advance: Progress) -> Result:
    copy = dest / DB_FILE
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    raw = engine.raw_connection()
    try:
        live = raw.driver_connection
        assert isinstance(live, sqlite3.Connection)
        target = sqlite3.connect(copy)
        try:
            live.backup(target)    # all pages in one step: one snapshot
            target.execute("PRAGMA journal_mode=DELETE")    # one file, not -wal and -shm
        finally:
            target.close()
    finally:
        raw.close()
    snapshot = create_engine(f"sqlite:///{copy}")
    try:
        with snapshot.connect() as conn:
            return _blobs_and_manifest(settings, engine, conn, dest, "sqlite", DB_FILE,
                                       sized, advance)
    finally:
        snapshot.dispose()


def _tool(name: str, command: str) -> str:
    """The path of a PostgreSQL client program, or BackupError saying how to get it."""
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found on PATH: install the PostgreSQL client (Debian: "
                          "apt install postgresql-client; the server's major version or "
                          f"newer), then run `maildesk {command}` again", "tool")
    return found


def _backup_postgresql(settings: Settings, engine: Engine, dest: Path, pg_dump: str,
                       sized: Progress, advance: Progress) -> Result:
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, \
            conn.begin():
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        fd = os.open(dest / DUMP_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        _run([pg_dump, "--format=custom", f"--snapshot={snapshot}",
              f"--file={dest / DUMP_FILE}"], settings.database_url, "pg_dump")
        return _blobs_and_manifest(settings, engine, conn, dest, "postgresql", DUMP_FILE,
                                   sized, advance)


def _run(argv: list[str], url: str, tool: str) -> None:
    """A PostgreSQL client on the desk's database, without a shell; the password in its
    environment (PGPASSWORD), never on its command line, where `ps` shows it."""
    u = make_url(url)
    env = {**os.environ, **({"PGPASSWORD": u.password} if u.password else {})}
    libpq = u.set(drivername="postgresql", password=None).render_as_string(
        hide_password=False)
    done = subprocess.run([*argv, f"--dbname={libpq}"], env=env, capture_output=True,
                          text=True, errors="replace")
    if done.returncode != 0:
        raise BackupError(f"{tool} on {shown_url(url)} exited {done.returncode}: "
                          f"{_said(done.stderr, tool)}", "failed")


def _said(stderr: str, tool: str) -> str:
    """What a PostgreSQL client said went wrong, in one line: its last line of its own
    ("pg_restore: error: ..."), not the statement it quotes after it."""
    lines = stderr.strip().splitlines()
    own = [line for line in lines if line.startswith(f"{tool}: ")]
    return " ".join((own or lines or ["no message"])[-1].split())


def _blobs_and_manifest(settings: Settings, engine: Engine, snapshot: Connection, dest: Path,
                        backend: str, database: str, sized: Progress, advance: Progress
                        ) -> Result:
    """The blobs the snapshot refers to copied into dest/blobs and checked there, with
    the snapshot's rows; the manifest to write."""
    if settings.blob_dir.is_dir():
        _copy_blobs(FileBlobs(settings.blob_dir, engine), snapshot, dest / BLOBS, sized,
                    advance)
    checked = _verify_at(settings, dest, engine, snapshot)
    manifest = {
        "maildesk": version("maildesk"), "schema": migrate.revision(snapshot),
        "backend": backend, "storage": settings.storage.backend, "database": database,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {**{k: _count(snapshot, t) for k, t in COUNTED.items()},
                   "blobs": checked.database + checked.loose + checked.packed,
                   "bytes": checked.bytes},
        "damaged": len(checked.used)}
    return Result(manifest, checked)


def _count(conn: Connection, table: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _copy_blobs(source: FileBlobs, snapshot: Connection, into: Path, sized: Progress,
                advance: Progress) -> None:
    """Every loose file, and of each pack the bytes the snapshot's index reaches."""
    ends = dict(snapshot.execute(select(T_INDEX.c.pack, func.max(T_INDEX.c.offset
                                                                + T_INDEX.c.size))
                                 .group_by(T_INDEX.c.pack)).all())
    loose = list(source.loose_files())
    sized(sum(ends.values()) + sum(f.lstat().st_size for _, f in loose))
    (into / "packs").mkdir(mode=0o700, parents=True, exist_ok=True)
    for digest, path in loose:
        try:
            data = read_file(path)
        except BlobError:
            continue            # not a file: verify names it, if the snapshot uses it
        folder = into / digest[:2]
        folder.mkdir(mode=0o700, exist_ok=True)
        _write_file(folder / digest[2:], data)
        advance(len(data))
    for pack, end in sorted(ends.items()):
        _copy_head(source.packs / pack, into / "packs" / pack, int(end), advance)


def _copy_head(source: Path, target: Path, size: int, advance: Progress) -> None:
    """The first size bytes of source (all it has, when shorter: verify says what is cut)."""
    if not source.is_file():
        return                  # gone: verify names its blobs
    with open(source, "rb") as src:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            left = size
            while left > 0:
                data = src.read(min(CHUNK, left))
                if not data:
                    break
                out.write(data)
                left -= len(data)
                advance(len(data))


def _write_file(path: Path, data: bytes, replace: bool = False) -> None:
    """A new file, 0600 whatever the umask; replace: written aside and renamed over path."""
    target = path.with_name(f".{path.name}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        f.write(data)
        if replace:
            f.flush()
            os.fsync(f.fileno())
    if replace:
        os.replace(target, path)


def _verify_at(settings: Settings, data_dir: Path, engine: Engine, conn: Connection
               ) -> Verified:
    """Every blob under data_dir/blobs (and in blob_data rows, on a database desk) read
    and checked, against the rows conn sees."""
    store = open_blobs(settings.model_copy(update={"data_dir": data_dir}), engine)
    try:
        return verify(store, conn)
    finally:
        store.close()


# -- restore -------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of the backup in src, or BackupError (missing, incomplete)."""
    if src.exists() and not src.is_dir():
        raise BackupError(f"{src} is a file, not a backup folder; name the folder "
                          "`maildesk backup` made", "missing")
    if not src.is_dir():
        raise BackupError(f"{src}: no such backup folder", "missing")
    try:
        manifest = dict(json.loads((src / MANIFEST).read_bytes()))
        if manifest["database"] != DATABASES[manifest["backend"]]:
            raise KeyError(manifest["database"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BackupError(f"{src}: not a complete backup (no readable {MANIFEST} naming its "
                          "database, which a backup writes last); use another backup",
                          "incomplete") from None
    database = src / manifest["database"]
    problem = None
    if not database.exists():
        problem = "is missing"
    elif database.is_dir():
        problem = "is a folder, not a file"
    elif not database.is_file():
        problem = "is not a regular file"
    else:
        try:
            with open(database, "rb"):
                pass
        except OSError as e:
            problem = f"cannot be read ({e.strerror})"
    if problem:
        raise BackupError(f"{database}, the database {MANIFEST} names, {problem}: not a "
                          "complete backup; use another backup", "incomplete")
    return manifest


def restore(settings: Settings, src: Path, sized: Progress = lambda n: None,
            advance: Progress = lambda n: None) -> Result:
    """The desk of the backup in src made where settings point, checked, its schema
    brought to this maildesk's (with database.auto_upgrade; else it says to). The backup's
    database is checked against its manifest before anything is put in place, and a
    restore that fails takes away all it made (never what was there before)."""
    manifest = read_manifest(src)
    url = settings.database_url
    backend = make_url(url).get_backend_name()
    if backend != manifest["backend"]:
        raise BackupError(f"{src} is a backup of a {manifest['backend']} desk and the "
                          f"configuration names a {backend} database; restore it with a "
                          f"configuration for {manifest['backend']}", "config")
    if manifest.get("storage", "filesystem") != settings.storage.backend:
        raise BackupError(f"{src} is a backup of a desk with storage.backend: "
                          f"{manifest.get('storage')}; set that in the configuration to restore "
                          "it", "config")
    schema = manifest.get("schema")
    if schema and schema > migrate.HEAD:
        raise BackupError(f"{src}: {migrate.mismatch(schema)}", "config")
    pg_restore = None if backend == "sqlite" else _tool("pg_restore", "restore")
    _no_desk_yet(settings)
    db = sqlite_file(url)
    made = _Made([settings.data_dir, settings.blob_dir, *([db.parent] if db else [])])
    try:
        return _restore(settings, src, manifest, pg_restore, sized, advance)
    except BaseException:
        made.undo()
        raise


def _restore(settings: Settings, src: Path, manifest: dict[str, Any], pg_restore: str | None,
             sized: Progress, advance: Progress) -> Result:
    url = settings.database_url
    database = src / manifest["database"]
    blobs = src / BLOBS
    sized(sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file())
          + database.stat().st_size)
    db = sqlite_file(url)
    if db is None:
        assert pg_restore is not None       # restore() found it
        _check(database, manifest, _dump_contents(database, pg_restore))
        # one transaction: a pg_restore that fails leaves the database as it was
        argv = [pg_restore, "--no-owner", "--no-privileges", "--single-transaction",
                str(database)]
    else:
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = db.with_name(f".{db.name}.restoring")
        tmp.unlink(missing_ok=True)
        shutil.copyfile(database, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _check(database, manifest, _sqlite_contents(tmp, database))
    advance(database.stat().st_size)
    if blobs.is_dir():
        _copy_tree(blobs, settings.blob_dir, advance)
    os.sync()           # the blobs on disk before the database that refers to them
    if db is None:
        try:
            _run(argv, url, "pg_restore")
        except BackupError as e:
            raise BackupError(f"{e}; nothing was restored (the database is as it was, the "
                              "blobs copied are removed): mend that and run `maildesk "
                              "restore` again", e.kind) from None
    else:
        os.replace(tmp, db)
        fsync_dir(db.parent)
    engine = make_engine(url)
    try:
        before = migrate.current(engine)
        upgraded = None
        if before != migrate.HEAD and settings.database.auto_upgrade:
            upgraded = migrate.upgrade(engine)[0] or "none"
        with engine.connect() as conn:
            checked = _verify_at(settings, settings.data_dir, engine, conn)
    except Exception as e:
        if db is not None:
            raise       # the database file goes with the rest: no desk is left
        raise BackupError(f"{e if isinstance(e, BackupError) else error_line(e)}; the "
                          f"database {shown_url(url)} holds the restored tables (the blobs "
                          "copied are removed): drop and create it (dropdb, createdb) and run "
                          "`maildesk restore` again", "failed") from e
    finally:
        engine.dispose()
    os.sync()
    return Result(manifest, checked, upgraded)


def _check(database: Path, manifest: dict[str, Any], found: dict[str, Any]) -> None:
    """BackupError (damaged) unless the backup's database holds the desk its manifest
    describes: its schema, and as many tickets and messages (another file put in its
    place, or a copy of another moment, would restore as a desk that is not this one)."""
    said = {"schema": manifest.get("schema"),
            **{k: manifest.get("counts", {}).get(k) for k in COUNTED}}
    if found["schema"] is None:
        wrong = [f"no maildesk schema where {MANIFEST} says {said['schema']}"]
    else:
        wrong = [f"{found[k]} {k} where {MANIFEST} says {said[k]}" for k in said
                 if found[k] != said[k]]
    if wrong:
        raise BackupError(f"{database} does not match its {MANIFEST}: {', '.join(wrong)} "
                          "(another file, or a damaged one); use another backup", "damaged")


def _sqlite_contents(path: Path, database: Path) -> dict[str, Any]:
    """The schema and counts of the SQLite file at path (the copy of the backup's
    database), opened read only once SQLite's integrity_check passed; BackupError
    (damaged) naming the backup's file and what is wrong."""
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True))
    try:
        with engine.connect() as conn:
            problems = conn.exec_driver_sql("PRAGMA integrity_check").scalars().all()
            if problems != ["ok"]:
                raise BackupError(f"{database} is damaged: SQLite's integrity_check says "
                                  f"{problems[0]}; use another backup", "damaged")
            schema = migrate.revision(conn)
            if schema is None:
                return {"schema": None, **dict.fromkeys(COUNTED)}
            return {"schema": schema, **{k: _count(conn, t) for k, t in COUNTED.items()}}
    except DBAPIError as e:
        raise BackupError(f"{database} is damaged: {error_line(e)}; use another backup",
                          "damaged") from None
    finally:
        engine.dispose()


def _dump_contents(dump: Path, pg_restore: str) -> dict[str, Any]:
    """The schema and counts in a pg_dump archive, read whole by `pg_restore --file=-` (a
    damaged or cut archive fails there), no database touched; BackupError (damaged). The
    rows of a table are the lines of its COPY block (COPY escapes a newline in a value)."""
    counted = {t.name: k for k, t in COUNTED.items()}
    found: dict[str, Any] = {"schema": None, **dict.fromkeys(COUNTED)}
    with tempfile.TemporaryFile() as errors, subprocess.Popen(
            [pg_restore, "--file=-", str(dump)], stdout=subprocess.PIPE, stderr=errors
            ) as proc:
        assert proc.stdout is not None
        table = None            # the table whose COPY block the lines are in
        for line in proc.stdout:
            if table is None:
                if line.startswith(b"COPY "):
                    table = line[5:].split(b" ", 1)[0].rsplit(b".", 1)[-1].strip(b'"')\
                        .decode()
                    if table in counted:
                        found[counted[table]] = 0
            elif line == b"\\.\n":
                table = None
            elif table == "alembic_version":
                found["schema"] = line.strip().decode()
            elif table in counted:
                found[counted[table]] += 1
        if proc.wait() != 0:
            errors.seek(0)
            said = _said(errors.read().decode(errors="replace"), "pg_restore")
            raise BackupError(f"{dump} is damaged: pg_restore cannot read it whole (exited "
                              f"{proc.returncode}: {said}); use another backup", "damaged")
    return found


def _no_desk_yet(settings: Settings) -> None:
    """BackupError (exists) when settings point at a desk already: a restore never writes
    over one."""
    db = sqlite_file(settings.database_url)
    said = "; restore makes a new desk: move it aside (or point data_dir or database.url " \
           "elsewhere) first"
    # a -wal file beside a database file made anew would be read into it
    for file in (db, db.with_name(f"{db.name}-wal")) if db is not None else ():
        if file.exists() and file.stat().st_size > 0:
            raise BackupError(f"{file} already holds a database{said}", "exists")
    if db is None:
        engine = make_engine(settings.database_url)
        try:
            with engine.connect() as conn:
                tables = inspect(conn).get_table_names()
        finally:
            engine.dispose()
        if tables:
            raise BackupError(f"database {shown_url(settings.database_url)} already holds "
                              f"{len(tables)} tables{said}", "exists")
    blobs = settings.blob_dir
    if blobs.is_dir() and any(f.is_file() for f in blobs.rglob("*")):
        raise BackupError(f"{blobs} already holds blobs{said}", "exists")


class _Made:
    """What a restore makes under some folders, taken away again when it fails: every path
    there that was not there at the start (files, then folders, deepest first); a folder
    not there at the start goes whole. What was there before is never touched."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.before = {p for root in roots if root.is_dir() for p in root.rglob("*")}
        self.before.update(p for root in roots for p in (root, *root.parents) if p.exists())

    def undo(self) -> None:
        with suppress(OSError):     # the error that made the restore fail is the one to say
            self._undo()

    def _undo(self) -> None:
        for root in self.roots:
            top = next((p for p in reversed((root, *root.parents)) if p not in self.before),
                       None)
            if top is not None:
                shutil.rmtree(top, ignore_errors=True)
            elif root.is_dir():
                new = sorted((p for p in root.rglob("*") if p not in self.before),
                             key=lambda p: (p.is_dir() and not p.is_symlink(), -len(p.parts)))
                for p in new:
                    if p.is_dir() and not p.is_symlink():
                        p.rmdir()
                    else:
                        p.unlink(missing_ok=True)


def _copy_tree(source: Path, target: Path, advance: Progress) -> None:
    """source's files into target (folders 0700, files 0600)."""
    for folder, _dirs, files in os.walk(source):
        into = target / Path(folder).relative_to(source)
        into.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in files:
            _copy_head(Path(folder) / name, into / name, 2**63 - 1, advance)
