"""The application object: settings and the resources built from them.

Built once by whoever starts maildesk (the daemon, a CLI command, a test)
and passed down explicitly; nothing in maildesk reads module-level state.
"""
from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from .config.schema import Settings
from .desk import DataDirError, StartupError, named, open_engine
from .errors import error_line
from .kb.library import Library
from .notify.templates import Templates
from .sla.calendar import NoWorkingTime
from .sla.policy import Slas
from .store import keys
from .store.blob_rows import open_blobs
from .store.blobs import BlobStore
from .store.db import make_sessionmaker
from .tickets.similar import SimilarTickets

if TYPE_CHECKING:       # imported where used: a command that only reads loads none of it
    from .core.context import Context
    from .ml.embeddings import Embedder
    from .ml.triage import Model
    from .rules.engine import RuleSet

log = logging.getLogger("maildesk")


def load_rules(settings: Settings, templates: Templates) -> RuleSet:
    """The configured rules, or StartupError listing every problem with its place."""
    from .rules import load as rules
    from .rules.engine import EMPTY
    if not settings.rules:
        return EMPTY
    try:
        return rules.load(settings.rules, settings.desk, templates.names())
    except rules.RulesError as e:
        raise StartupError("rules not loaded:\n" + "\n".join(e.problems)) from None


def load_kb(settings: Settings, before: Library | None = None,
            strict: bool = True) -> Library:
    """The knowledge base. An article with a problem: StartupError naming the first one
    (strict), or else no articles, said in the log: articles are content, edited by many,
    and one bad file must not keep mail from being taken in. kb.rerank without the extra
    maildesk[ml] or its model is the configuration's fault: StartupError in one line.
    kb.rerank: the articles embedded too, by before's embedder when it has one (the model
    stays loaded, and only changed articles are embedded again), else by a new one whose
    model is extracted under data_dir/models."""
    from .kb import library
    from .kb.articles import KbError
    try:
        return library.read(settings.kb.folder, {q.name for q in settings.desk.queues},
                            kb_embedder(settings, before))
    except OSError as e:       # the model could not be extracted under data_dir
        raise StartupError(f"kb.rerank: the model could not be extracted into "
                           f"{settings.data_dir / 'models'}: {e}") from None
    except KbError as e:
        said = (f"knowledge base not loaded: {len(e.problems)} problem(s), the first: "
                f"{e.problems[0]} (`maildesk kb check` lists them all)")
    if strict:
        raise StartupError(said)
    log.error("%s; no article is suggested until it is fixed", said)
    return Library(settings.kb.folder, stamp=library.stamp(settings.kb.folder))


def kb_embedder(settings: Settings, before: Library | None = None) -> Embedder | None:
    """kb.rerank's embedder: before's, or a new one; StartupError without maildesk[ml]."""
    if not settings.kb.rerank:
        return None
    from .ml import embeddings
    try:
        embeddings.check("kb.rerank")
    except embeddings.MlMissing as e:
        raise StartupError(str(e)) from None
    if before is not None and before.embedder is not None:
        return before.embedder
    return embeddings.Embedder(settings.data_dir / "models")


def ticket_embedder(settings: Settings, kb: Library) -> Embedder | None:
    """The embedder of problems.embeddings and similar.embeddings: the knowledge base's,
    when it has one (one model in memory), else a new one; StartupError without
    maildesk[ml]."""
    asked = [name for name, on in (("problems.embeddings", settings.problems.embeddings),
                                   ("similar.embeddings", settings.similar.embeddings)) if on]
    if not asked:
        return None
    from .ml import embeddings
    try:
        embeddings.check(asked[0])
    except embeddings.MlMissing as e:
        raise StartupError(str(e)) from None
    return kb.embedder or embeddings.Embedder(settings.data_dir / "models")


def load_triage(conn: Connection, model: int | None = None) -> Model | None:
    """The stored triage model of that id (None: the newest); None when there is none,
    and, said in the log, when it cannot be read (damaged, or of another format: the next
    training replaces it)."""
    from .ml.triage import Model, TriageError
    from .store import triage
    found = triage.stored(conn, model)
    if found is None:
        return None
    try:
        loaded = Model.from_bytes(found.data)
    except TriageError as e:
        log.error("triage model %d not used: %s; `maildesk triage train` makes a new one",
                  found.id, e)
        return None
    loaded.id = found.id
    return loaded


def load_slas(settings: Settings, templates: Templates) -> Slas:
    """Calendars and policies, or StartupError naming the policy or calendar at fault."""
    missing = sorted({level.template for p in settings.sla.policies
                      for level in (p.escalation or settings.sla.escalation)}
                     - templates.names())
    if missing:
        raise StartupError(f"sla: escalation template(s) {', '.join(missing)} not found "
                           f"(templates: {', '.join(sorted(templates.names()))})")
    try:
        slas = Slas(settings)
        for p in slas.policies:      # a calendar with no working time at all fails here
            p.calendar.add(datetime(2026, 1, 1, tzinfo=timezone.utc), 1)
    except NoWorkingTime as e:
        raise StartupError(f"sla: {e}") from None
    return slas


def writable_dir(path: Path, make: bool = True) -> None:
    """Make the data directory (private_dir) and prove it takes a file, by writing and
    removing one: the database, blobs and outbox fail later, deep in a driver, and less
    clearly. DataDirError says who cannot write where, and why. make=False (a check): a
    directory not there yet is not made; its nearest existing parent must let us make it."""
    if not make and not path.exists():
        parent = next(p for p in path.parents if p.exists())
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            raise DataDirError(
                f"data_dir {path} is not writable by uid {os.getuid()}: it is not there, "
                f"and {parent} is no directory that uid may make it in; fix: make it "
                "writable by that user (chown; under systemd, ReadWritePaths=) or set "
                "data_dir in maildesk.yaml")
        return
    try:
        private_dir(path)
        fd, probe = tempfile.mkstemp(prefix=".maildesk-probe-", dir=path)
        try:
            os.write(fd, b"probe\n")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise DataDirError(
            f"data_dir {path} is not writable by uid {os.getuid()}: {e.strerror}; fix: make "
            "it writable by that user (chown; under systemd, ReadWritePaths=) or set "
            "data_dir in maildesk.yaml") from None


def private_dir(path: Path) -> None:
    """Make the data directory, for the desk's user alone: it holds every mail, the outbox
    (agents' reply addresses are bearer tokens) and the secret key. A directory that is
    already there and open to others is closed, once, and the log says so (its files were
    made before maildesk set its umask, and this keeps them from other local users)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(0o700)
        except OSError as e:
            log.warning("data directory %s is mode %04o, open to other users, and cannot be "
                        "made 0700: %s", path, mode, e.strerror)
        else:
            log.warning("data directory %s was mode %04o, open to other users; now 0700",
                        path, mode)


def load_secret(path: Path) -> bytes:
    """The reply-token key; made once, readable by the desk's user only."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
            f.flush()
            os.fsync(f.fileno())
        data = path.read_bytes()
    secret = data.strip()
    if len(secret) < 16:
        raise StartupError(f"{path}: secret key is shorter than 16 bytes; "
                           "remove it to make a new one")
    return secret


def load_keys(settings: Settings, engine: Engine) -> tuple[bytes, ...]:
    """The reply-token keys, the one that signs first: from the files the settings name,
    or else from the database (store/keys.py), where every node finds the same ones."""
    if settings.secret_file is None:
        try:
            return keys.load(engine, settings.data_dir / "secret.key")
        except Exception as e:  # a driver error: say which database and why
            raise StartupError(f"{named(engine)}: cannot read the reply-token keys: "
                               f"{error_line(e)}", temporary=True) from e
    return (load_secret(settings.secret_file),
            *([load_secret(settings.previous_secret_file)]
              if settings.previous_secret_file else []))


@dataclass
class App:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    templates: Templates
    secrets: tuple[bytes, ...]      # the current key first, then the one before rotation
    rules: RuleSet
    slas: Slas
    kb: Library = field(default_factory=Library)
    dns: Any = None      # DKIM key lookups: None is the system resolver (tests give a stub)
    similar: SimilarTickets = field(default_factory=SimilarTickets)   # kept across batches
    embedder: Embedder | None = None    # problems.embeddings' (the model loads on first use)
    # the pipeline's stages, as (name, function) pairs; () is pipeline/stages STAGES (a test
    # runs its own list; the App does not import the pipeline that works through it)
    stages: tuple[tuple[str, Callable[[Any, Any], None]], ...] = ()
    # the triage model in use, by its row's id (None: a damaged one, not read again)
    _triage: tuple[int, Model | None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, upgrade: bool | None = None,
             existing: bool = False) -> App:
        """The desk of these settings, made (data directory, database, schema) if it is not
        there yet; existing: only a desk that is there, else NoDesk, making nothing (a
        command that reads, run in the wrong directory, must not leave an empty desk)."""
        upgrading = settings.database.auto_upgrade if upgrade is None else upgrade
        if not existing:
            writable_dir(settings.data_dir)
        engine = open_engine(settings, upgrading, existing)
        templates = Templates(settings.templates_dir)
        problems = templates.check()
        if problems:
            raise StartupError("; ".join(problems))
        kb = load_kb(settings, strict=False)
        embedder = ticket_embedder(settings, kb)
        return cls(
            rules=load_rules(settings, templates),
            slas=load_slas(settings, templates),
            kb=kb,
            embedder=embedder,
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            blobs=open_blobs(settings, engine),
            templates=templates,
            secrets=load_keys(settings, engine),
            similar=SimilarTickets(settings.data_dir / "similar.npz",
                                   embedder if settings.similar.embeddings else None),
        )

    def meaning(self, keys: list[int], texts: list[str]) -> Any:
        """The sentence embeddings of incidents (keys: their ids), each computed once and
        kept in data_dir/embeddings; problems.embeddings only."""
        from .ml.kept import kept_rows
        assert self.embedder is not None, "problems.embeddings is off"
        return kept_rows(self.settings.data_dir / "embeddings" / "incidents.npz", keys, texts,
                         self.embedder)

    def refresh_keys(self) -> None:
        """The keys as the database holds them now (another node may have rotated them);
        a desk with a secret_file keeps the files' keys it read at start."""
        if self.settings.secret_file is None:
            with self.engine.connect() as conn:
                self.secrets = keys.read(conn) or self.secrets

    def triage(self, conn: Connection) -> Model | None:
        """The newest triage model (none with triage.enabled off), read again only when a
        newer one is stored, by this node or another: one indexed look per batch. A model
        that cannot be read is said once in the log, and the desk runs without it."""
        from .store import triage
        if not self.settings.triage.enabled:
            return None
        newest = triage.newest_id(conn)
        if newest is None:
            return None
        if self._triage is None or self._triage[0] != newest:
            self._triage = (newest, load_triage(conn, newest))
        return self._triage[1]

    def context(self, conn: Connection, now: datetime, history: bool = False) -> Context:
        """A batch's view of the desk on one transaction: what stages, jobs and the SLA
        scan work through. Its blobs are the transaction's only BlobBatch. history: an
        import of old mail (Context says what changes)."""
        from .core.context import Context
        from .tickets.ledger import Ledger
        return Context(ledger=Ledger(conn, self.settings.desk.ref_prefix),
                       settings=self.settings, blobs=self.blobs.batch(conn),
                       templates=self.templates, secrets=self.secrets, now=now,
                       rules=self.rules, slas=self.slas, kb=self.kb, dns=self.dns,
                       similar=self.similar, triage=self.triage(conn),
                       history=history)

    def close(self) -> None:
        self.blobs.close()
        self.engine.dispose()
