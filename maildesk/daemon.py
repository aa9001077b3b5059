"""`maildesk serve`: the SMTP listener, the ingest and outbox workers, the IMAP pollers
and the scheduled jobs (SLA scan, auto-close, reminders; scheduler/); when turned on, the
rating pages (surveys/web.py) and the monitoring endpoints (monitor/web.py).

The SMTP listener is a process of its own (intake/listening.py), so that its
250s never wait for the workers' CPU; the workers are threads because the
store is synchronous. They wake on an event when there is new work (the
listener says so over its pipe) and poll every few seconds anyway, so mail
queued by another process (a pipe delivery, a second daemon on PostgreSQL)
is picked up too.

Under systemd (Type=notify) it says READY=1 once the SMTP listener is bound, and
pings the watchdog from the ingest worker's loop while its event loop and the
listener's turn too (maildesk/systemd.py).

SIGTERM and SIGINT stop cleanly: the listener stops accepting, open SMTP
transactions get `smtp.shutdown_grace` seconds to finish, the rest get 421,
and the workers finish the batch they hold (a batch is one transaction, so
an interrupted one simply runs again at the next start). SIGHUP re-reads the
configuration, templates and rules; a bad file is reported and the old one
kept. A changed rules file is picked up within seconds, the same way.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from .app import App, load_kb, load_rules, load_slas
from .config.load import ConfigError, load_settings
from .desk import StartupError
from .errors import error_line, expected
from .intake import imap, queued
from .intake.inbound import Envelope
from .intake.listening import TURN_EVERY, ListenerProcess, open_file_room
from .kb.library import Stamp, stamp
from .mail.parse import ParsedMail, Unread
from .monitor.health import threads_alive
from .monitor.metrics import Metrics
from .monitor.web import monitor_server
from .notify import delivery
from .notify.templates import Templates
from .pipeline import run
from .pipeline.driver import Summary
from .scheduler import service
from .store import nodes
from .store.db import shown_url
from .store.leadership import Leadership
from .surveys.web import rating_server
from .systemd import Notifier

log = logging.getLogger("maildesk")
POLL = 5.0
BATCH_BUDGET = 0.04  # seconds: a SQLite transaction of the worker's, while SMTP mail comes
SMTP_QUIET = 2.0     # seconds without a mail by SMTP after which whole batches are taken
KB_WATCH = 2.0     # seconds between looks at the articles' folder for changes
# Open files the daemon needs besides the rating pages' and monitoring connections:
# database, blobs, log, IMAP (the SMTP sessions are the listener process's own).
HEADROOM = 128


def _unlistenable(where: str, e: OSError) -> StartupError:
    """A port we cannot listen on. Taken (often by the daemon before this one, still
    stopping) or an address not up yet is temporary: systemd's Restart= tries again. A
    port below 1024 without the privilege is the configuration's to fix."""
    return StartupError(f"cannot listen on {where}: {e.strerror}",
                        temporary=e.errno != errno.EACCES)


def first_problem(e: Exception) -> str:
    """An error that lists problems a line each ("rules not loaded:" and each file:line:
    what) as its first problem and how many more: the log's line must stay one, and
    `maildesk rules check` or `config check` lists them all."""
    head, *problems = str(e).splitlines() or [type(e).__name__]
    if not problems:
        return head
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{head.rstrip(': ')}: {problems[0]}{more}"


class Worker(threading.Thread):
    """Runs `step` whenever woken, or every `poll` seconds; logs and survives errors.
    turned: called on every turn of the loop (the watchdog's ping), even one whose step
    failed: a database outage is not a hang, and restarting would not end it."""

    def __init__(self, name: str, step: Callable[[], float | None], poll: float = POLL,
                 turned: Callable[[], None] | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.poll = poll
        self.turned = turned
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()
            wait = self.poll
            try:
                wait = min(self.poll, self.step() or self.poll)
            except Exception as e:  # a database outage must not kill the worker
                log.error("%s: %s", self.name, error_line(e), exc_info=not expected(e))
            if self.turned is not None:
                self.turned()
            self.wake.wait(max(0.05, wait))

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()


class Daemon:
    def __init__(self, app: App, config_path: Path | None,
                 notifier: Notifier | None = None) -> None:
        self.app = app
        self.config_path = config_path
        self.notifier = notifier or Notifier({})
        # when the event loop (the SMTP listener) last turned, for the watchdog
        self._loop_turned = time.monotonic()
        self.transport = delivery.make_transport(app)
        self.outbox = Worker("outbox", self._deliver)
        every = self.notifier.every
        self.ingest = Worker("ingest", self._drain, min(POLL, every or POLL), self._watchdog)
        self.node = nodes.Node.of(app.settings)
        self.heartbeat = Worker("heartbeat", self._beat)
        # one for the process: its PostgreSQL locks share one connection
        self.leadership = Leadership(app.engine, app.settings.data_dir)
        self.metrics = Metrics(app.engine, app.settings.monitor.timeout)
        self.pollers = [imap.Poller(app, box, self._polled, self.outbox.wake.set,
                                    self.leadership)
                        for box in app.settings.imap]
        self._rule_mtimes = self._mtimes()
        self._kb_seen: Stamp | None = app.kb.stamp
        self._kb_next = 0.0
        self.scheduler: BackgroundScheduler | None = None
        self.listener: ListenerProcess | None = None

    def _fit_files(self) -> None:
        """Raise the open-file limit to what the rating pages' and the monitoring
        connections (when served) need, or say in one line that it cannot."""
        web, monitor = self.app.settings.surveys.web, self.app.settings.monitor
        open_file_room(HEADROOM + (web.max_connections if web.enabled else 0)
                       + (monitor.max_connections if monitor.enabled else 0))

    def _mtimes(self) -> dict[str, float]:
        out = {}
        for src in self.app.rules.sources or [str(p) for p in self.app.settings.rules]:
            try:
                out[src] = os.stat(src).st_mtime
            except OSError:
                out[src] = -1.0
        return out

    def _watch_rules(self) -> None:
        """A changed rules file goes live if it loads; if not, the running rules stay."""
        now = self._mtimes()
        if now == self._rule_mtimes:
            return
        self._rule_mtimes = now
        try:
            self.app.rules = load_rules(self.app.settings, self.app.templates)
        except StartupError as e:
            log.error("rules file changed but %s; keeping the %d running rules: fix it "
                      "(`maildesk rules check` lists every problem) and save it again",
                      first_problem(e), len(self.app.rules))
            return
        log.info("rules reloaded: %d rules from %s", len(self.app.rules),
                 ", ".join(self.app.rules.sources))

    def _watch_kb(self) -> None:
        """Changed articles go live if they all load; if not, the running ones stay and
        the log says why, once for each change. Looked at every KB_WATCH seconds at most:
        a large folder is thousands of stat() calls."""
        if time.monotonic() < self._kb_next:
            return
        self._kb_next = time.monotonic() + KB_WATCH
        now = stamp(self.app.settings.kb.folder)
        if now == self._kb_seen:
            return
        self._kb_seen = now
        try:
            self.app.kb = load_kb(self.app.settings, self.app.kb)
        except StartupError as e:
            log.error("articles changed but %s; the %d articles loaded before stay", e,
                      len(self.app.kb.articles))
            return
        log.info("knowledge base reloaded: %d articles, %d published, from %s",
                 len(self.app.kb.articles), len(self.app.kb.index), self.app.kb.folder)

    def _watchdog(self) -> None:
        """WATCHDOG=1 from the ingest worker, while the event loop turns too: if either
        hangs the pings stop, and systemd restarts the daemon (WatchdogSec=). A timer
        thread of its own would ping on while both were stuck."""
        every = self.notifier.every
        if every is None:
            return
        now = time.monotonic()
        listener = self.listener
        if now - self._loop_turned < every and (
                listener is None or now - listener.turned < every):
            self.notifier.ping()

    async def _turning(self, every: float) -> None:
        """The event loop's sign of life, every half watchdog interval."""
        while True:
            self._loop_turned = time.monotonic()
            await asyncio.sleep(every / 2)

    def _drain(self) -> None:
        self._watch_rules()
        self._watch_kb()
        began = time.monotonic()
        summary = run.drain(self.app, between=self._watchdog, budget=self._budget)
        self.metrics.batch("ingest", time.monotonic() - began, summary)
        if summary.new_tickets or summary.follow_ups or summary.refused:
            self.outbox.wake.set()
        if any(summary.as_dict().values()):
            log.info("ingest: %s", ", ".join(f"{k.replace('_', ' ')} {v}"
                                               for k, v in summary.as_dict().items() if v))

    def _budget(self) -> float | None:
        """How long the worker's next transaction may last: on SQLite, while SMTP mail
        comes, a sender's 250 waits for the one under way (pipeline/run.py drain()); with
        none for a while (a backlog drained after a restart, piped mail), whole batches."""
        listener = self.listener
        if listener is None or self.app.engine.dialect.name != "sqlite" or \
                time.monotonic() - listener.accepted_at > SMTP_QUIET:
            return None
        return BATCH_BUDGET

    def _listen_for_pipes(self) -> socket.socket | None:
        """The socket `ingest --queue` wakes the ingest worker through (intake/queued.py);
        None where another daemon of this data directory holds it (it drains the same
        queue) or the system has no abstract sockets: the worker's poll finds the mail."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(queued.wake_address(self.app.settings))
        except OSError as e:
            sock.close()
            log.info("queued pipe mail is picked up every %.0f s, not at once: %s",
                     self.ingest.poll, e.strerror)
            return None
        sock.setblocking(False)
        return sock

    def _woken(self, sock: socket.socket) -> None:
        """A pipe queued mail: the datagrams read (one look drains them all), the worker
        woken."""
        while True:
            try:
                sock.recv(64)
            except OSError:     # BlockingIOError: none left
                break
        self.ingest.wake.set()

    def _polled(self, items: list[tuple[bytes, Envelope]],
                parsed: list[ParsedMail | Unread] | None,
                also: Callable[[Connection], None]) -> Summary:
        """A poller's batch, stored and processed, and counted once it is committed."""
        began = time.monotonic()
        summary = run.ingest(self.app, items, parsed, also)
        self.metrics.batch("imap", time.monotonic() - began, summary)
        return summary

    def _workers(self) -> str:
        """The health check of this daemon's threads (GET /healthz)."""
        threads = {w.name: w.is_alive() for w in (self.ingest, self.outbox, self.heartbeat)}
        threads |= {f"imap:{p.box.name}": p.is_alive() for p in self.pollers}
        threads["scheduler"] = self.scheduler is not None and self.scheduler.running
        if self.listener is not None:
            threads["smtp"] = self.listener.alive()
        return threads_alive(threads)

    def _join(self) -> None:
        """Take this node's place among the desk's nodes, or StartupError if it must not."""
        try:
            with self.app.engine.begin() as conn:
                nodes.register(conn, self.node, datetime.now(timezone.utc))
        except nodes.NodeRefused as e:
            raise StartupError(str(e)) from None

    def _beat(self) -> float:
        """The heartbeat, and the keys as they are now (another node may have rotated)."""
        with self.app.engine.begin() as conn:
            nodes.beat(conn, self.node, self.leadership.held(), datetime.now(timezone.utc))
        self.app.refresh_keys()
        return nodes.HEARTBEAT

    def _leave(self) -> None:
        try:
            with self.app.engine.begin() as conn:
                nodes.stopped(conn, self.node, datetime.now(timezone.utc))
        except SQLAlchemyError as e:    # the database is gone: the heartbeat runs out
            log.warning("could not record this node's stop: %s", error_line(e))

    def _deliver(self) -> float | None:
        self.metrics.delivered(delivery.deliver_due(self.app, self.transport))
        due = delivery.next_due(self.app)
        if due is None:
            return None
        return (due - datetime.now(timezone.utc)).total_seconds()

    def reload(self) -> None:
        try:
            settings = load_settings(self.config_path)
            templates = Templates(settings.templates_dir)
            problems = templates.check()
            if problems:
                raise StartupError("; ".join(problems))
            rules = load_rules(settings, templates)
            slas = load_slas(settings, templates)
        except (ConfigError, StartupError) as e:
            log.error("reload refused, keeping the running configuration: %s",
                      first_problem(e))
            return
        # listeners, data_dir, database, where blobs live, the node's name and the log stay as
        # started: those need a restart, and the log says so when they changed
        kept = ("data_dir", "database", "smtp", "storage", "node", "log", "monitor")
        changed = [k for k in kept if getattr(settings, k) != getattr(self.app.settings, k)]
        if changed:
            log.warning("reload: %s changed, and take effect at the next start (systemctl "
                        "restart maildesk)", ", ".join(changed))
        self.app.settings = settings.model_copy(update={
            k: getattr(self.app.settings, k) for k in kept})
        self.app.templates = templates
        self.app.rules = rules
        self.app.slas = slas
        self._kb_seen, self._kb_next = None, 0.0   # the articles too, now, or the log says why
        self._watch_kb()
        self._rule_mtimes = self._mtimes()
        self.transport = delivery.make_transport(self.app)
        if self.listener is not None:       # the desk's addresses, the relays
            self.listener.reload()
        if self.scheduler is not None:      # intervals may have changed
            self.scheduler.shutdown(wait=False)
            self.scheduler = service.start(self.app, self.outbox.wake.set)
        log.info("configuration reloaded from %s", self.config_path or "the embedded default")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        s = self.app.settings
        say = self.notifier
        say.status("joining the desk's nodes")
        self._join()
        self.heartbeat.start()
        self._fit_files()
        if s.smtp.enabled:
            say.status(f"binding the SMTP listener to {s.smtp.host}:{s.smtp.port}")
            every = self.notifier.every
            self.listener = ListenerProcess(self.config_path, self.ingest.wake.set,
                                            every / 2 if every else TURN_EVERY)
            try:
                await self.listener.start()
            except OSError as e:
                await self.listener.stop(0)
                raise _unlistenable(f"{s.smtp.host}:{s.smtp.port}", e) from None
            ended = asyncio.create_task(self.listener.ended.wait())
            ended.add_done_callback(lambda _: stop.set())
        turning = None
        if self.notifier.every is not None:
            turning = asyncio.create_task(self._turning(self.notifier.every))
        self.ingest.start()
        woken = self._listen_for_pipes()
        if woken is not None:
            loop.add_reader(woken.fileno(), self._woken, woken)
        self.outbox.start()
        for p in self.pollers:
            p.start()
        self.scheduler = service.start(self.app, self.outbox.wake.set)
        try:
            ratings = rating_server(self.app) if s.surveys.web.enabled else None
        except OSError as e:
            raise _unlistenable(f"{s.surveys.web.host}:{s.surveys.web.port} (rating pages)",
                                e) from None
        if ratings is not None:
            ratings.start()
        try:
            monitor = monitor_server(lambda: self.app.settings, self.app.engine, self.metrics,
                                     self._workers) if s.monitor.enabled else None
        except OSError as e:
            raise _unlistenable(f"{s.monitor.host}:{s.monitor.port} (monitoring)", e) from None
        if monitor is not None:
            monitor.start()
        where = f"smtp://{s.smtp.host}:{s.smtp.port}" if self.listener else "no SMTP listener"
        outbox = (f"maildir {s.outbox_maildir}" if s.outbox.transport == "maildir"
                  else f"relay {s.outbox.relay.host}:{s.outbox.relay.port}")
        mailboxes = f"; imap: {', '.join(b.name for b in s.imap)}" if s.imap else ""
        log.info("maildesk listening on %s for %s; data in %s (%s); outbox: %s%s",
                 where, ", ".join(s.desk.addresses), s.data_dir,
                 shown_url(self.app.engine.url), outbox, mailboxes)
        say.ready(f"listening on {where}; database {shown_url(self.app.engine.url)}")
        await stop.wait()
        lost = self.listener is not None and self.listener.ended.is_set()
        if lost:
            log.error("the SMTP listener process ended unexpectedly; stopping, for systemd "
                      "to start maildesk again")
        log.info("stopping: no new connections")
        say.stopping("stopping: finishing the open SMTP sessions")
        if turning is not None:
            turning.cancel()
        if woken is not None:
            loop.remove_reader(woken.fileno())
            woken.close()
        if self.listener is not None:
            await self.listener.stop(s.smtp.shutdown_grace)
        if ratings is not None:
            await asyncio.to_thread(ratings.shutdown)
        if monitor is not None:
            await asyncio.to_thread(monitor.shutdown)
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.shutdown, True)
        threads: list[imap.Poller | Worker] = [*self.pollers, self.ingest, self.outbox,
                                               self.heartbeat]
        for w in threads:
            w.stop()
        for w in threads:
            await asyncio.to_thread(w.join, 30)
        self.leadership.close()
        self._leave()
        self.app.close()
        say.close()
        log.info("stopped")
        if lost:
            raise StartupError("the SMTP listener process ended unexpectedly", temporary=True)
