"""Several `maildesk serve` on one PostgreSQL database (issue 18), for the tests and the
benchmark: real processes, real SMTP, one desk.

A `Cluster` makes a fresh database `md_nodes_<random>` (dropped afterwards) and N nodes,
each with its own data directory, configuration, SMTP port, outbox maildir and log, all
on the same database URL, with `storage: {backend: database}` and `node: {name: nodeN}`.
`send_all` sends mail from K client threads, round-robin over the nodes; a client that
meets a 4xx, a refused or broken connection tries the next node, as an MTA would, and
every mail's fate is kept: which node said 250, and how long the 250 took after the end
of DATA. A node can be killed with SIGKILL and started again.

What agents read is read where they would read it: the outbox maildirs of all nodes
(`Cluster.delivered`, `Cluster.notifications`). Only when a notification never arrived is
a reply address computed from the desk's keys (`desk_keys`, else a node's secret.key),
and the caller is told which.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, getaddresses, make_msgid
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import yaml
from sqlalchemy import Engine, create_engine, text

from maildesk.tickets.refs import token_address

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("MAILDESK_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")
DESK = "support@desk.test"
AGENTS = [
    {"name": "alice", "address": "alice@desk.test", "queues": ["general"]},
    {"name": "bob", "address": "bob@desk.test", "queues": ["general"]},
    {"name": "carol", "address": "carol@desk.test"},
]
# The words the nodes' logs use for a conflict between nodes and for taking work again.
# The features of issue 18 are still being built: adjust these to what their log lines say.
# a race lost to another node, its batch rolled back and run again (store/db.py retried)
CONFLICT_WORDS = ("lost a race",)
# what a retry did not resolve: the batch taken mail by mail, or an error line
RETRY_WORDS = ("one by one", " ERROR ")


def pg_available(url: str = PG_URL) -> bool:
    if not url:
        return False
    try:
        eng = create_engine(url)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition",
             every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def _env() -> dict[str, str]:
    """The checkout under test first on the path, whatever is installed."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


# -- the nodes -------------------------------------------------------------------------------

class Node:
    """One `maildesk serve` with its own data directory, port, outbox maildir and log."""

    def __init__(self, root: Path, index: int, db_url: str, overrides: dict[str, Any]) -> None:
        self.index, self.name = index, f"node{index}"
        self.dir = root / self.name
        self.data_dir = self.dir / "data"
        self.outbox = self.dir / "outbox"
        self.config = self.dir / "maildesk.yaml"
        self.log = self.dir / "maildesk.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "database": {"url": db_url},
            "storage": {"backend": "database"},
            "node": {"name": self.name},
            "smtp": {"host": "127.0.0.1", "port": self.port},
            "outbox": {"transport": "maildir", "maildir": str(self.outbox)},
            # many mails from one customer in a moment are this workload, not a loop; no
            # DNS lookups for DKIM keys (no mail here is signed)
            "desk": {"addresses": [DESK], "agents": AGENTS, "ack_window": 0,
                     "flood_limit": 1_000_000, "verify_dkim": False},
            "log": {"level": "info"},
        }
        self.settings = _merge(settings, overrides)
        self.config.write_text(yaml.safe_dump(self.settings))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        with self.log.open("ab") as out:     # the daemon has its own copy of the file
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maildesk", "--config", str(self.config), "serve"],
                stdout=out, stderr=out, env=_env(), cwd=self.dir)

    def listening(self) -> bool:
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} exited {self.proc.returncode}: {tail}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self, timeout: float = 60) -> Node:
        self.spawn()
        wait_for(self.listening, timeout, f"{self.name} to listen", every=0.05)
        return self

    def kill(self) -> None:
        """kill -9: no clean stop, no last words."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def restart(self, timeout: float = 60) -> Node:
        self.kill()
        return self.start(timeout)

    def peak_rss(self) -> int | None:
        """VmHWM in KiB while the process runs (read it just before stopping)."""
        if not self.alive:
            return None
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(m.group(1)) if m else None

    def log_lines(self, words: Iterable[str]) -> list[str]:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        words = [w.lower() for w in words]
        return [ln for ln in lines if any(w in ln.lower() for w in words)]


@dataclass
class Delivered:
    """A mail the desk wrote into one node's outbox maildir."""

    node: str
    path: Path
    outbox_id: int | None
    to: list[str]
    subject: str
    ticket: str | None
    reply_to: str | None
    message_id: str


def _addresses(value: object) -> list[str]:
    return [a.lower() for _n, a in getaddresses([str(value)]) if a] if value else []


class Cluster:
    """N nodes on one fresh PostgreSQL database; a context manager that cleans up."""

    def __init__(self, root: Path, n: int = 3, admin_url: str = PG_URL,
                 **overrides: Any) -> None:
        self.root, self.n, self.admin_url = root, n, admin_url
        self.overrides = overrides
        self.db_name = f"md_nodes_{secrets.token_hex(5)}"
        self.db_url = admin_url.rsplit("/", 1)[0] + "/" + self.db_name
        self.nodes: list[Node] = []
        self._engine: Engine | None = None

    # database and processes

    def __enter__(self) -> Cluster:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        finally:
            admin.dispose()
        self.nodes = [Node(self.root, i + 1, self.db_url, self.overrides)
                      for i in range(self.n)]
        return self

    def start(self, nodes: Sequence[Node] | None = None) -> Cluster:
        """The first node alone (it makes the schema), then the others together."""
        todo = [n for n in (self.nodes if nodes is None else nodes) if not n.alive]
        if not todo:
            return self
        if self.scalar("SELECT to_regclass('public.tickets') IS NULL"):
            todo[0].start()
            todo = todo[1:]
        for node in todo:
            node.spawn()
        for node in todo:
            wait_for(node.listening, 60, f"{node.name} to listen", every=0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            if node.alive:
                node.stop(10)
        if self._engine is not None:
            self._engine.dispose()
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    # the database, for the checks

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_size=2)
        return self._engine

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as c:
            return list(c.execute(text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as c:
            return c.execute(text(sql), params).scalar()

    def queued(self) -> int:
        """Inbound mail not yet taken by any node's worker."""
        if self.scalar("SELECT to_regclass('public.inbound') IS NULL"):
            return 0
        return int(self.scalar("SELECT count(*) FROM inbound WHERE state IN "
                               "('queued', 'released')"))

    def wait_drained(self, timeout: float = 120) -> float:
        """Until no inbound mail is queued; the seconds it took."""
        start = time.monotonic()
        wait_for(lambda: self.queued() == 0, timeout,
                 f"the inbound queue to drain ({self.queued()} still queued)", every=0.2)
        return time.monotonic() - start

    def outbox_due(self) -> int:
        """Outgoing mail being sent or due now (a deferred mail waits for its next try)."""
        return int(self.scalar("SELECT count(*) FROM outbox WHERE status = 'sending' OR "
                               "(status = 'queued' AND next_attempt_at <= now())"))

    def wait_outbox(self, timeout: float = 60) -> bool:
        """Until the outbox has nothing due; False (not an error) on timeout."""
        try:
            wait_for(lambda: self.outbox_due() == 0, timeout, "the outbox", every=0.3)
            return True
        except AssertionError:
            return False

    def keys(self) -> list[bytes]:
        """The desk's reply-token keys in the database, newest generation first."""
        if self.scalar("SELECT to_regclass('public.desk_keys') IS NULL"):
            return []
        return [str(r[0]).encode() for r in self.rows(
            "SELECT secret FROM desk_keys ORDER BY generation DESC")]

    def node_keys(self) -> dict[str, bytes]:
        """Each node's own secret.key, where one was made (before issue 18: one per node)."""
        out = {}
        for node in self.nodes:
            path = node.data_dir / "secret.key"
            if path.exists():
                out[node.name] = path.read_bytes().strip()
        return out

    # what the desk sent

    def delivered(self) -> list[Delivered]:
        parser = BytesHeaderParser(policy=policy.default)
        out = []
        for node in self.nodes:
            for sub in ("new", "cur"):
                folder = node.outbox / sub
                if not folder.is_dir():
                    continue
                for path in folder.iterdir():
                    try:
                        with path.open("rb") as f:
                            head = parser.parse(f)
                    except OSError:
                        continue
                    m = re.match(r"outbox(\d+)_", path.name)
                    reply_to = _addresses(head.get("Reply-To"))
                    out.append(Delivered(
                        node=node.name, path=path, outbox_id=int(m.group(1)) if m else None,
                        to=_addresses(head.get("To")), subject=str(head.get("Subject", "")),
                        ticket=str(head["X-Maildesk-Ticket"]) if head.get(
                            "X-Maildesk-Ticket") else None,
                        reply_to=reply_to[0] if reply_to else None,
                        message_id=str(head.get("Message-ID", "")).strip()))
        return out

    def notifications(self, agents: Iterable[str] | None = None
                      ) -> dict[tuple[str, str], str]:
        """(ticket ref, agent address) -> the Reply-To of a mail the desk sent that agent
        about that ticket: the agent's reply address, as their mail client would answer."""
        who = {a["address"] for a in AGENTS} if agents is None else set(agents)
        out: dict[tuple[str, str], str] = {}
        for d in self.delivered():
            if d.ticket and d.reply_to and len(d.to) == 1 and d.to[0] in who \
                    and "+" in d.reply_to:
                out[(d.ticket.upper(), d.to[0])] = d.reply_to
        return out

    def reply_addresses(self, ref: str, agent: str) -> set[str]:
        """Every reply address the desk has given agent for ticket ref, in any mail it
        delivered to them (after a key rotation: old and new)."""
        return {d.reply_to for d in self.delivered()
                if d.ticket and d.ticket.upper() == ref.upper() and d.to == [agent]
                and d.reply_to and "+" in d.reply_to}

    def computed_address(self, ref: str, person: str, purpose: str = "reply"
                         ) -> tuple[str, str] | None:
        """A reply address made from the desk's newest key, and where the key came from:
        for a notification that never reached the agent."""
        keys = self.keys()
        if keys:
            return token_address(keys[0], DESK, ref, person, purpose), "desk_keys"
        for name, key in self.node_keys().items():
            return token_address(key, DESK, ref, person, purpose), f"{name}/secret.key"
        return None

    def log_counts(self, words: Iterable[str]) -> dict[str, int]:
        words = list(words)
        return {n.name: len(n.log_lines(words)) for n in self.nodes}


# -- mail and the clients that send it --------------------------------------------------------

@dataclass
class Letter:
    """One mail to send: its bytes, envelope, kind, and the node to try first (None: the
    next in round-robin order)."""

    message_id: str
    sender: str
    rcpt: str
    raw: bytes
    kind: str
    first: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sent:
    letter: Letter
    node: str | None = None        # which node said 250
    latency: float | None = None   # seconds from the end of DATA to the 250
    refused: str | None = None     # a 5xx: final
    tries: list[str] = field(default_factory=list)   # node: what went wrong, per failed try
    at: float = 0.0                # monotonic time of the 250

    @property
    def accepted(self) -> bool:
        return self.node is not None


def letter(sender: str, subject: str, body: str, *, kind: str, to: str = DESK,
           name: str | None = None, in_reply_to: str | None = None,
           references: Sequence[str] = (), first: int | None = None,
           **meta: Any) -> Letter:
    """A plain mail as a mail client writes it (CRLF line ends, as SMTP carries it)."""
    m = EmailMessage()
    m["From"] = f"{name} <{sender}>" if name else sender
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = format_datetime(datetime.now(timezone.utc))
    mid = make_msgid(domain=sender.rsplit("@", 1)[1])
    m["Message-ID"] = mid
    if in_reply_to:
        m["In-Reply-To"] = in_reply_to
    if references:
        m["References"] = " ".join(references)
    m.set_content(body)
    return Letter(message_id=mid, sender=sender, rcpt=to, raw=m.as_bytes(policy=policy.SMTP),
                  kind=kind, first=first, meta=meta)


def _data(raw: bytes) -> bytes:
    """DATA's payload: CRLF lines, dots doubled at line starts, the final dot line."""
    raw = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    raw = re.sub(rb"(?m)^\.", b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


class _Refused(Exception):
    pass


class Client:
    """One SMTP client (a thread's): a connection per node, kept open between mails as an
    MTA keeps them, dropped after any trouble."""

    def __init__(self, nodes: Sequence[Node], timeout: float = 30) -> None:
        self.nodes, self.timeout = nodes, timeout
        self.conns: dict[int, smtplib.SMTP] = {}

    def close(self) -> None:
        for s in self.conns.values():
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                s.close()
        self.conns.clear()

    def _drop(self, i: int) -> None:
        s = self.conns.pop(i, None)
        if s is not None:
            s.close()

    def _attempt(self, i: int, mail: Letter) -> tuple[int, str, float | None]:
        """One transaction on node i: (code, text, seconds from DATA's end to the reply)."""
        s = self.conns.get(i)
        if s is None:
            s = smtplib.SMTP("127.0.0.1", self.nodes[i].port, timeout=self.timeout)
            self.conns[i] = s
            s.ehlo("client.test")
        code, msg = s.mail(mail.sender)
        if code == 250:
            code, msg = s.rcpt(mail.rcpt)
        if code in (250, 251):
            s.putcmd("data")
            code, msg = s.getreply()
            if code == 354:
                s.send(_data(mail.raw))
                start = time.perf_counter()
                code, msg = s.getreply()
                return code, msg.decode(errors="replace"), time.perf_counter() - start
        return code, msg.decode(errors="replace"), None

    def deliver(self, mail: Letter, start: int, deadline: float) -> Sent:
        """Try node start, then the next, ... until one says 250 or 5xx, or the deadline."""
        sent = Sent(mail)
        i, failed_in_a_row, pause = start % len(self.nodes), 0, 0.1
        while time.monotonic() < deadline:
            node = self.nodes[i]
            reused = i in self.conns
            try:
                code, msg, latency = self._attempt(i, mail)
            except (smtplib.SMTPException, OSError) as e:
                self._drop(i)
                sent.tries.append(f"{node.name}: {type(e).__name__}: {e}"[:200])
                if reused:          # a connection that went stale while idle: once more
                    continue
                code, msg, latency = 0, "", None
            else:
                if code == 250:
                    sent.node, sent.latency, sent.at = node.name, latency, time.monotonic()
                    return sent
                self._drop(i)
                sent.tries.append(f"{node.name}: {code} {msg}"[:200])
                if code >= 500:
                    sent.refused = f"{code} {msg}"
                    return sent
            i = (i + 1) % len(self.nodes)
            failed_in_a_row += 1
            if failed_in_a_row % len(self.nodes) == 0:      # a round of refusals: back off
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
        sent.tries.append("deadline passed")
        return sent


class Pace:
    """At most `rate` mails a second over all clients (None: as fast as they go)."""

    def __init__(self, rate: float | None) -> None:
        self.rate, self.next, self.lock = rate, time.monotonic(), threading.Lock()

    def wait(self) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + 1 / self.rate
        if at > now:
            time.sleep(at - now)


def send_all(nodes: Sequence[Node], mails: Sequence[Letter], clients: int = 12,
             timeout: float = 300, rate: float | None = None) -> list[Sent]:
    """Send every mail from `clients` threads, mail i first to node i mod N (or its own
    first node); the results in the mails' order."""
    todo: SimpleQueue[int] = SimpleQueue()
    for i in range(len(mails)):
        todo.put(i)
    results: list[Sent | None] = [None] * len(mails)
    deadline = time.monotonic() + timeout
    pace = Pace(rate)

    def work() -> None:
        client = Client(nodes)
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except Empty:
                    return
                pace.wait()
                mail = mails[i]
                try:
                    results[i] = client.deliver(
                        mail, i if mail.first is None else mail.first, deadline)
                except Exception as e:  # noqa: BLE001 - a client bug must not hang the test
                    results[i] = Sent(mail, tries=[f"client: {type(e).__name__}: {e}"])
        finally:
            client.close()

    threads = [threading.Thread(target=work, name=f"client{k}") for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else Sent(m, tries=["never sent"])
            for r, m in zip(results, mails)]


def send_at(nodes: Sequence[Node], schedule: Sequence[tuple[float, Letter]],
            timeout: float = 300) -> list[Sent]:
    """Each mail at its moment (seconds from now), from a client of its own, to its own first
    node: agent A writes to node 1 while agent B writes to node 2 about the same ticket."""
    results: list[Sent | None] = [None] * len(schedule)
    start = time.monotonic()
    deadline = start + timeout

    def work(i: int, at: float, mail: Letter) -> None:
        time.sleep(max(0.0, start + at - time.monotonic()))
        client = Client(nodes)
        try:
            results[i] = client.deliver(mail, mail.first or 0, deadline)
        except Exception as e:  # noqa: BLE001 - a client bug must not hang the test
            results[i] = Sent(mail, tries=[f"client: {type(e).__name__}: {e}"])
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(i, at, mail), name=f"at{i}")
               for i, (at, mail) in enumerate(schedule)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r if r is not None else Sent(m, tries=["never sent"])
            for r, (_at, m) in zip(results, schedule)]


def p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
