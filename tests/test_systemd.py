"""systemd: `maildesk serve` speaks sd_notify (READY=1 once it takes mail, WATCHDOG=1 while
it works, STOPPING=1), and systemd/maildesk.service is valid and as hardened as the README
says. A bad configuration exits 78 from `serve` itself (test_cli.py, test_exit_codes.py),
which is what lets the unit's RestartPreventExitStatus= see it."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import mail

from maildesk.daemon import Daemon as Serve
from maildesk.daemon import Worker
from maildesk.systemd import Notifier, watchdog_every

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "maildesk.service"
README = ROOT / "README.md"
MOST = 2.5        # the exposure the unit must not exceed (`systemd-analyze security`)


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace, as systemd's own is: (socket, the
    NOTIFY_SOCKET value naming it)."""
    name = f"maildesk-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    yield sock, "@" + name
    sock.close()


def _messages(sock: socket.socket, until: Callable[[list[dict[str, str]]], bool],
              timeout: float, proc: subprocess.Popen[bytes] | None = None,
              each: Callable[[dict[str, str]], None] | None = None) -> list[dict[str, str]]:
    """The notifications received until `until` holds; each: checked as each arrives."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; got {got}")
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}; got {got}")
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        message = dict(line.split("=", 1) for line in data.decode().splitlines())
        message["at"] = str(time.monotonic())
        if each is not None:
            each(message)
        got.append(message)
    return got


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_serve_says_ready_once_the_port_accepts_pings_the_watchdog_and_says_stopping(
        desk_config: Callable[..., Path], listener: tuple[socket.socket, str],
        tmp_path: Path) -> None:
    sock, where = listener
    cfg = desk_config()
    port = yaml.safe_load(cfg.read_text())["smtp"]["port"]
    env = {**os.environ, "NOTIFY_SOCKET": where, "WATCHDOG_USEC": "2000000"}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "maildesk", "--config", str(cfg),
                                 "serve"], env=env, stdout=log, stderr=log)
    try:
        def port_open_at_ready(m: dict[str, str]) -> None:
            if "READY" in m:
                assert _accepts(port), "READY=1 before the SMTP port accepts connections"
        got = _messages(sock, lambda g: any("READY" in m for m in g), 60, proc,
                        port_open_at_ready)
        statuses = [m["STATUS"] for m in got if "STATUS" in m]
        assert statuses[0] == "opening the database and checking its schema", statuses
        assert f"binding the SMTP listener to 127.0.0.1:{port}" in statuses, statuses
        assert got[-1]["STATUS"].startswith(f"listening on smtp://127.0.0.1:{port}"), got

        # WATCHDOG=1 every second or so (half of WATCHDOG_USEC): never 2 s apart
        pings = _messages(sock, lambda g: sum("WATCHDOG" in m for m in g) >= 5, 15, proc)
        at = [float(m["at"]) for m in pings if "WATCHDOG" in m]
        assert max(b - a for a, b in zip(at, at[1:])) < 2.0, at
        # and on while it works: mail taken in, drained
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("ana@customer.test", ["support@localhost"],
                            mail().replace(b"\n", b"\r\n"))
        _messages(sock, lambda g: sum("WATCHDOG" in m for m in g) >= 2, 10, proc)

        proc.send_signal(signal.SIGTERM)
        stopping = _messages(sock, lambda g: any("STOPPING" in m for m in g), 30)
        assert stopping[-1]["STATUS"].startswith("stopping"), stopping
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_notify_socket_nothing_is_sent_and_serve_runs_as_before(
        daemon: Callable[..., Any]) -> None:
    """The `daemon` fixture's serve has no NOTIFY_SOCKET: it listens, and stops with 0."""
    d = daemon()
    assert "NOTIFY_SOCKET" not in os.environ
    assert d.stop() == 0


def test_the_notifier_reads_systemds_variables(tmp_path: Path) -> None:
    assert watchdog_every({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_every({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None, \
        "the watchdog is another process's"
    assert watchdog_every({"WATCHDOG_USEC": "60000000",
                           "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_every({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_every({}) is None
    assert Notifier({"WATCHDOG_USEC": "60000000"}).every is None, "no socket, no watchdog"
    Notifier({}).ready("nothing to tell")           # does nothing, raises nothing

    path = tmp_path / "notify"                      # a socket in the file system
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.status("a status\nwith a line break")
        assert sock.recv(4096) == b"STATUS=a status with a line break"
        notifier.close()
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.ready("nobody listens")                # a warning in the log, no exception
    notifier.ready("nobody listens")
    notifier.close()


def test_the_watchdog_stops_when_the_ingest_worker_or_the_event_loop_hangs(
        make_app: Callable[..., Any], listener: tuple[socket.socket, str]) -> None:
    """Pings come from the ingest worker's loop, and only while the event loop turns:
    a timer of its own would ping on while the desk took no mail in."""
    sock, where = listener
    serve = Serve(make_app(), None, Notifier({"NOTIFY_SOCKET": where,
                                              "WATCHDOG_USEC": "400000"}))
    assert serve.ingest.poll == pytest.approx(0.2), "the worker wakes in time to ping"

    def pings(seconds: float) -> int:
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            try:
                n += sock.recv(100) == b"WATCHDOG=1"
            except TimeoutError:
                pass
        return n

    def settled() -> None:
        """A ping sent before a change may still wait in the socket: let the worker see
        the change, then read away what came before it."""
        time.sleep(0.5)
        pings(0.05)

    stuck, free = threading.Event(), threading.Event()

    def step() -> None:
        serve._loop_turned = time.monotonic()       # the event loop turns meanwhile
        if stuck.is_set():
            free.wait(10)
    worker = Worker("ingest", step, serve.ingest.poll, serve._watchdog)
    worker.start()
    try:
        assert pings(1.0) >= 3
        stuck.set()
        settled()
        assert pings(1.0) == 0, "the worker hangs: no pings"
        free.set()
        stuck.clear()
        assert pings(1.0) >= 3
        serve._loop_turned = time.monotonic() - 60  # the event loop hangs
        worker.step = lambda: None
        settled()
        assert pings(1.0) == 0, "the event loop hangs: no pings"
    finally:
        free.set()
        worker.stop()
        worker.join(5)


def test_the_model_runs_where_memory_may_not_be_writable_and_executable(models: Path) -> None:
    """MemoryDenyWriteExecute=yes, as the kernel's PR_SET_MDWE has it (systemd 254 and
    later use it; 252 a seccomp filter to the same effect): torch's oneDNN cannot compile
    its kernels there ("could not create a primitive"); maildesk runs the model without
    it, to the same vectors."""
    code = textwrap.dedent(f"""
        import ctypes, sys
        from pathlib import Path
        from maildesk.ml.embeddings import Embedder, writable_code
        if sys.argv[1] == "mdwe":
            if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
                sys.exit(3)         # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: Linux 6.3
            assert not writable_code()
        v = Embedder(Path({str(models)!r})).encode(["the printer is jammed",
                                                    "the printer on floor 2 jams"])
        print(round(float(v[0] @ v[1]), 4))
    """)
    said = {}
    for how in ("mdwe", "free"):
        r = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                           timeout=300)
        if r.returncode == 3:
            pytest.skip("this kernel cannot deny writable executable memory (PR_SET_MDWE)")
        assert r.returncode == 0, r.stderr
        said[how] = float(r.stdout)
    assert said["mdwe"] == said["free"] > 0.5, said


# -- the unit ------------------------------------------------------------------------------

def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_the_unit_lets_serve_say_when_not_to_restart() -> None:
    """A bad configuration's 78 comes from the main process, the only one whose status
    RestartPreventExitStatus= reads: no ExecStartPre check to be restarted every 5 s."""
    unit = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert "ExecStartPre" not in settings and "ExecCondition" not in settings
    assert settings["ExecStart"].endswith("/maildesk serve")
    assert set(settings["RestartPreventExitStatus"].split()) == {"73", "78"}
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["StateDirectory"] == "maildesk"


def test_the_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify`, with ExecStart pointed at this venv's maildesk (the unit
    names /opt/maildesk/venv, which is not on a test machine)."""
    tool = _analyze()
    here = Path(sys.executable).parent / "maildesk"
    if not here.exists():
        pytest.skip(f"no maildesk script beside {sys.executable}")
    copy = tmp_path / "maildesk.service"
    copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={here}", UNIT.read_text(),
                           flags=re.M))
    r = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_the_units_exposure_is_low_and_the_docs_say_what_it_is() -> None:
    tool = _analyze()
    r = subprocess.run([tool, "security", "--offline=yes", str(UNIT)], capture_output=True,
                       text=True, timeout=60)
    if "offline" in r.stderr and r.returncode != 0:
        pytest.skip(f"this systemd-analyze cannot read a unit file: {r.stderr.strip()}")
    found = re.search(r"Overall exposure level for maildesk.service: (\d+\.\d) (\w+)",
                      r.stdout)
    assert found, r.stdout + r.stderr
    exposure = float(found[1])
    assert exposure <= MOST, r.stdout
    said = f"exposure {found[1]} {found[2]}"
    assert said in UNIT.read_text(), f"the unit's comment should say {said!r}"
    assert said in README.read_text(), f"the README should say {said!r}"
