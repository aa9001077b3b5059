"""What the benchmarks share: the workload, timing a child process, the machine, the report."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> Path:
    """The shared workload generator beside the checkout; a git worktree kept elsewhere
    (its .git a file naming the main checkout's) finds it beside the main checkout."""
    gen = ROOT.parent / "shared" / "bench" / "gen_workload.py"
    dotgit = ROOT / ".git"
    if not gen.exists() and dotgit.is_file():
        main = Path(dotgit.read_text().split("gitdir:", 1)[1].strip()).parents[2]
        gen = main.parent / "shared" / "bench" / "gen_workload.py"
    return gen


GEN = _generator()


def prepare(doc: str, default_n: int, prefix: str
            ) -> tuple[argparse.Namespace, Path, Path, dict[str, Any]]:
    """Arguments, a temporary folder, and the shared workload generated into it."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=default_n)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    work = tmp / "workload"
    subprocess.run([sys.executable, str(GEN), "--n", str(args.n), "--out", str(work),
                    "--tag-format", "[MD-{n}]"], check=True, stdout=subprocess.DEVNULL)
    return args, tmp, work, json.loads((work / "workload.json").read_text())


# What run_child starts a command through. Linux keeps a process's peak RSS across fork and
# exec, so the child of a large benchmark process (one holding a model) would report at least
# its parent's size; forked from this small launcher, the command reports its own.
_LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run_child(cmd: list[str], cwd: Path, env: dict[str, str] | None = None
              ) -> tuple[float, int, bytes, bytes, int]:
    """Seconds, peak RSS (KiB), stdout, stderr and exit code of cmd."""
    with tempfile.NamedTemporaryFile(prefix="maildesk-rss-") as rss:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, rss.name, *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                env=env)
        out = proc.stdout.read()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        _pid, status, _usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        peak = int(Path(rss.name).read_text() or 0)
    return elapsed, peak, out, err, os.waitstatus_to_exitcode(status)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def commit_of(tree: Path) -> str:
    """A checkout as a table names it: its commit, else its path."""
    out = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h"],
                         capture_output=True, text=True)
    return f"commit {out.stdout.strip()}" if out.returncode == 0 else str(tree)


def update(path: Path, key: str, section: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md, keep the others."""
    text = path.read_text() if path.exists() else "# maildesk benchmarks\n\n"
    parts = text.split("\n## ")
    kept = [parts[0].rstrip() + "\n"] + ["## " + p.rstrip() + "\n" for p in parts[1:]
                                         if not ("## " + p).startswith(key)]
    path.write_text("\n".join(kept + [section]))


def publish(out: Path, key: str, section: str, tmp: Path) -> None:
    """Write the section into BENCHMARKS.md, show it, and drop the generated data."""
    update(out, key, section)
    print(section)
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


def ticket_row(i: int, created: Any, status: str = "open", **more: Any) -> dict[str, Any]:
    """A ticket as the benchmarks generate them straight into the database."""
    return {"number": i, "ref": f"MD-{i}", "subject": f"case {i}",
            "requester": f"user{i % 5000}@customer{i % 300}.test", "requester_name": None,
            "cc": [], "status": status, "type": "incident", "priority": "P3",
            "impact": "medium", "urgency": "medium", "tags": [], "problem": None,
            "category": None, "queue": "general", "assignee": None, "linked_to": None,
            "created_at": created, "updated_at": created, **more}
