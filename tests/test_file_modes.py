"""What maildesk writes holds mail and secrets (the outbox holds agents' reply tokens), so it is
the desk user's alone, whatever the umask it was started with (issue 15, finding 7)."""
from __future__ import annotations

import os
import smtplib
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, mail, run_cli, wait_for


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask of a login shell or a unit without UMask=: new files readable by all."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_data_directory_and_reports_are_private(
        umask_022: None, daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)                        # as `install -d` or an older maildesk left it
    d = daemon()
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("ana@customer.test", ["support@localhost"], mail())
    wait_for(lambda: list((data / "outbox" / "new").glob("*")), what="the acknowledgement")
    report = tmp_path / "report.csv"
    r = run_cli("report", "--format", "csv", "--out", str(report), config=d.config)
    assert r.returncode == 0, r.stderr.decode()

    files = {p.relative_to(data).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in data.rglob("*")}
    names = set(files)
    assert {"maildesk.db", "maildesk.db-wal", "maildesk.db-shm"} <= names
    assert any(n.startswith("outbox/new/") for n in names)
    assert any(n.startswith("blobs/packs/") and n.endswith(".pack") for n in names)
    assert {n: oct(m) for n, m in files.items() if m & 0o077} == {}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(report.stat().st_mode) & 0o077 == 0
    said = [line for line in d.log.read_text().splitlines() if "open to other users" in line]
    assert len(said) == 1 and "was mode 0755" in said[0] and "now 0700" in said[0], said
