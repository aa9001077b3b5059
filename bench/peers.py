#!/usr/bin/env python3
"""Against the peers, paired: maildesk, Roundup and django-helpdesk on the shared workload.

    python3 bench/peers.py [--n 3000] [--rounds 3] [--skip roundup-cheap,...]

Each round runs, one after the other on this machine, a bare mail-parser parse
of the mbox (bench/ingest.py's), `maildesk ingest` into a fresh data
directory, Roundup 2.6.0 (`roundup-mailgw TRACKER mailbox MBOX`, classic
template, SQLite) as shipped and with PBKDF2 cut to its minimum of 1,000
rounds (`password_pbkdf2_default_rounds`), and django-helpdesk 2.6.1
(`python -m django get_email`, the same command as `manage.py get_email`,
SQLite, a queue reading the eml/ directory). Every run is a whole process
timed by run_child, from a fresh copy of a database set up before the clock
starts. The ratios are taken per round, so the machine's drift between rounds
cancels, and their medians are reported.

The peers are installed from PyPI, each in its own venv under
~/.cache/maildesk-bench/peers/, only when missing. A peer that cannot be set
up is skipped with the reason printed and written into the report.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import GEN, ROOT, machine, publish, run_child
from ingest import BARE, ingest

CACHE = Path.home() / ".cache" / "maildesk-bench" / "peers"
ROUNDUP = "roundup==2.6.0"
HELPDESK = "django-helpdesk==2.6.1"
ADMIN_PASSWORD = "bench-admin"

# The smallest Django project django-helpdesk's mail reader runs in: teams mode off (it would
# need pinax-teams), outgoing mail kept in memory (composed, not sent).
SETTINGS = """
SECRET_KEY = "bench"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sites",
                  "django.contrib.humanize", "rest_framework", "helpdesk"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {db!r}}}}}
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "APP_DIRS": True, "OPTIONS": {{"context_processors": []}}}}]
SITE_ID = 1
USE_TZ = True
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = "support@example.com"
HELPDESK_TEAMS_MODE_ENABLED = False
MEDIA_ROOT = {media!r}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

QUEUE = """
from helpdesk.models import Queue
Queue.objects.create(title="Bench", slug="bench", email_address="support@example.com",
                     email_box_type="local", email_box_local_dir={inbox!r},
                     allow_email_submission=True)
"""


@dataclass
class Peer:
    """A system timed against maildesk: how to run it once and what it made."""
    name: str
    label: str
    short: str
    work: Path
    run: Callable[[], tuple[float, int]]
    made: Callable[[], tuple[int, str]]
    secs: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    tickets: list[int] = field(default_factory=list)


def venv(name: str, spec: str, probe: str) -> Path:
    """The peer's venv under the cache, made and filled from PyPI only when missing."""
    home = CACHE / name
    py = home / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", probe],
                                         capture_output=True).returncode != 0:
        print(f"installing {spec} into {home}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", spec], check=True)
    return home / "bin"


def generate(tmp: Path, n: int, name: str, tag: str) -> Path:
    """The shared workload with the subject tag one system recognises."""
    work = tmp / f"workload-{name}"
    subprocess.run([sys.executable, str(GEN), "--n", str(n), "--out", str(work),
                    "--tag-format", tag], check=True, stdout=subprocess.DEVNULL)
    return work


def threading(work: Path, ticket_of: dict[str, int]) -> str:
    """Replies on the same ticket as their thread's first message, by the manifest."""
    recs = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    roots = {r["idx"]: r["message_id"] for r in recs}
    replies = [r for r in recs if r["kind"] != "new"]
    right = sum(1 for r in replies if ticket_of.get(r["message_id"]) is not None
                and ticket_of.get(r["message_id"]) == ticket_of.get(roots[r["thread_root"]]))
    return f"{right} of {len(replies)} replies on their thread's ticket"


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def cpu_of(f: Callable[[], Any]) -> tuple[Any, float]:
    """f's result and the CPU seconds (user + system) of the child processes it waited for:
    a child's figure counts its own reaped children, so run_child's launcher reports the
    whole process tree. CPU time moves less than wall time when others load the machine."""
    before = os.times()
    result = f()
    after = os.times()
    return result, (after.children_user + after.children_system
                    - before.children_user - before.children_system)


def checked(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """run_child's seconds and peak RSS, or the command's stderr tail as the error."""
    secs, rss, _out, err, code = run_child(cmd, cwd, env)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} exited {code}: {err.decode(errors='replace')[-400:]}")
    return secs, rss


def roundup(tmp: Path, work: Path, rounds: int | None) -> Peer:
    """Roundup's classic tracker on SQLite, unknown senders registered by mail (as a desk
    must), mail written to a file instead of sent; rounds: the PBKDF2 rounds, None as
    shipped."""
    bin_ = venv("roundup", ROUNDUP, "import roundup; assert roundup.__version__ == '2.6.0'")
    name = "roundup" if rounds is None else "roundup-cheap"
    template = tmp / f"{name}-template"
    subprocess.run([str(bin_ / "roundup-admin"), "-i", str(template), "install", "classic",
                    "sqlite"], check=True, stdout=subprocess.DEVNULL)
    cfg = template / "config.ini"
    text = cfg.read_text()
    text = text.replace("#web = NO DEFAULT", "web = http://localhost:8080/bench/", 1)
    text = text.replace("#domain = NO DEFAULT", "domain = example.com", 1)
    text = re.sub(r"(?m)^debug = $", "debug = sent.mbox", text, count=1)
    if rounds is not None:
        text = re.sub(r"(?m)^password_pbkdf2_default_rounds = \d+$",
                      f"password_pbkdf2_default_rounds = {rounds}", text)
    cfg.write_text(text)
    schema = template / "schema.py"
    schema.write_text(schema.read_text().replace(
        "#db.security.addPermissionToRole('Anonymous', 'Email Access')",
        "db.security.addPermissionToRole('Anonymous', 'Email Access')"))
    subprocess.run([str(bin_ / "roundup-admin"), "-i", str(template), "initialise",
                    ADMIN_PASSWORD], check=True, stdout=subprocess.DEVNULL)
    tracker, mbox = tmp / f"{name}-run", tmp / f"{name}-run.mbox"

    def run() -> tuple[float, int]:
        # roundup-mailgw empties the mailbox it reads: a fresh copy each run
        shutil.rmtree(tracker, ignore_errors=True)
        shutil.copytree(template, tracker)
        shutil.copyfile(work / "mbox", mbox)
        return checked([str(bin_ / "roundup-mailgw"), str(tracker), "mailbox", str(mbox)], tmp)

    def made() -> tuple[int, str]:
        db = tracker / "db" / "db"
        issues = query(db, "SELECT count(*) FROM _issue WHERE __retired__ = 0")[0][0]
        where: dict[str, int] = dict(query(db, "SELECT m._messageid, im.nodeid FROM _msg m "
                                               "JOIN issue_messages im ON im.linkid = m.id"))
        return int(issues), threading(work, where)

    label = ("Roundup 2.6.0, as shipped (PBKDF2 250,000 rounds per new sender)"
             if rounds is None else
             f"Roundup 2.6.0, `password_pbkdf2_default_rounds = {rounds}` (its minimum)")
    short = "Roundup as shipped" if rounds is None else "Roundup with cheap hashing"
    return Peer(name, label, short, work, run, made)


def helpdesk(tmp: Path, work: Path) -> Peer:
    """django-helpdesk in a minimal Django project on SQLite, migrated once into a template
    database, one queue reading a local directory."""
    probe = "import importlib.metadata as m; assert m.version('django-helpdesk') == '2.6.1'"
    bin_ = venv("django-helpdesk", HELPDESK, probe)
    proj = tmp / "helpdesk"
    proj.mkdir()
    db, inbox = proj / "helpdesk.db", proj / "inbox"
    (proj / "benchsettings.py").write_text(SETTINGS.format(db=str(db),
                                                           media=str(proj / "media")))
    env = {**os.environ, "PYTHONPATH": str(proj), "DJANGO_SETTINGS_MODULE": "benchsettings"}
    django = [str(bin_ / "python"), "-m", "django"]
    subprocess.run([*django, "migrate", "-v0"], cwd=proj, env=env, check=True)
    subprocess.run([*django, "shell", "-c", QUEUE.format(inbox=str(inbox))], cwd=proj,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    template = proj / "template.db"
    shutil.copyfile(db, template)
    version = subprocess.run([str(bin_ / "python"), "-c", "import django; print("
                              "django.get_version())"], capture_output=True, text=True,
                             check=True).stdout.strip()

    def run() -> tuple[float, int]:
        # get_email deletes each file it took: a fresh copy each run
        shutil.copyfile(template, db)
        shutil.rmtree(inbox, ignore_errors=True)
        shutil.copytree(work / "eml", inbox)
        return checked([*django, "get_email"], proj, env)

    def made() -> tuple[int, str]:
        tickets = query(db, "SELECT count(*) FROM helpdesk_ticket")[0][0]
        where: dict[str, int] = dict(query(db, "SELECT message_id, ticket_id FROM "
                                               "helpdesk_followup WHERE message_id IS NOT NULL"))
        left = len(list(inbox.iterdir()))
        return int(tickets), (threading(work, where)
                              + f", {left} mails left unread")

    return Peer("helpdesk", f"django-helpdesk 2.6.1 (Django {version}), `get_email`",
                "django-helpdesk", work, run, made)


def verdict(peers: list[Peer], md_secs: list[float], md_cpu: list[float]) -> str:
    """The paragraph under the table: the paired ratios in words, and what they hide."""
    med = statistics.median
    said = []
    for p in peers:
        wall = [s / t for s, t in zip(p.secs, md_secs)]
        cpu = [c / t for c, t in zip(p.cpu, md_cpu)]
        said.append(f"{med(wall):.1f} times the rate of {p.short} (per round "
                    f"{min(wall):.1f}-{max(wall):.1f}), which spends {med(cpu):.1f} times "
                    f"maildesk's CPU per mail (per round {min(cpu):.1f}-{max(cpu):.1f})")
    idle = ", ".join(f"{p.short} {100 - 100 * med(p.cpu) / med(p.secs):.0f} %"
                     for p in peers)
    return ((f"Paired round by round, maildesk ingests at {'; '.join(said)}. " if said else "")
            + "The machine's two cores are shared with other work, which comes and goes "
            "within a round: hence the per-round spread, and CPU time, which such load "
            "touches less than wall time, beside it. Share of the wall time not spent on a "
            f"CPU: maildesk {100 - 100 * med(md_cpu) / med(md_secs):.0f} % (two processes: "
            f"its CPU time can exceed its wall time), {idle}: waiting for the cores or "
            "the disk, which this script does not tell apart (PEERS.md found the peers "
            "CPU-bound, with cheap fsync, on a quieter machine). "
            "Roundup registers each new sender and hashes a password for it (and, says "
            "PEERS.md, reopens its database for each message); the cheap-hashing row shows "
            "what is left without the hashing. django-helpdesk reads the directory in "
            "`os.listdir` order, not by date, so a reply read before the first message of "
            "its thread opens a ticket of its own: its ticket count above the number of "
            "threads is that. Outgoing mail: maildesk "
            "composes and stores an acknowledgement per ticket; Roundup writes what it sends "
            "to a file (`[mail] debug`), django-helpdesk hands it to Django's in-memory mail "
            "backend.")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated: roundup, roundup-cheap, "
                                                "helpdesk")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-peers-"))
    ours = generate(tmp, args.n, "maildesk", "[MD-{n}]")
    counts = json.loads((ours / "workload.json").read_text())
    builders: list[tuple[str, Callable[[], Peer]]] = [
        ("roundup", lambda: roundup(tmp, generate(tmp, args.n, "roundup", "[issue{n}]"),
                                    None)),
        ("roundup-cheap", lambda: roundup(tmp, tmp / "workload-roundup", 1000)),
        ("helpdesk", lambda: helpdesk(tmp, generate(tmp, args.n, "helpdesk",
                                                    "[bench-{n}]"))),
    ]
    peers: list[Peer] = []
    skipped: list[str] = []
    for name, build in builders:
        if name in skip or (name == "roundup-cheap" and "roundup" in skip):
            continue
        try:
            peers.append(build())
        except (subprocess.CalledProcessError, OSError, AssertionError) as e:
            skipped.append(f"{name}: set-up failed ({e})")
            print(f"skipped {skipped[-1]}", flush=True)

    md_secs: list[float] = []
    md_cpu: list[float] = []
    md_rss: list[int] = []
    bare: list[float] = []
    bare_cpu: list[float] = []
    md_check = ""
    for i in range(args.rounds):
        (tb, _rb, _o, _e, _c), cb = cpu_of(
            lambda: run_child([sys.executable, "-c", BARE, str(ours / "mbox")], tmp))
        bare.append(tb)
        bare_cpu.append(cb)
        (t, r, md_check), c = cpu_of(lambda: ingest(tmp, ours, counts, None))
        md_secs.append(t)
        md_cpu.append(c)
        md_rss.append(r)
        line = [f"round {i + 1}: bare parse {args.n / tb:.0f} msgs/s, "
                f"maildesk {args.n / t:.0f} msgs/s ({r / 1024:.0f} MiB, "
                f"{c / args.n * 1000:.1f} ms CPU/msg)"]
        for p in list(peers):
            try:
                (s, rss), c = cpu_of(p.run)
            except RuntimeError as e:
                skipped.append(f"{p.name}: run failed in round {i + 1} ({e})")
                print(f"skipped {skipped[-1]}", flush=True)
                peers.remove(p)
                continue
            p.secs.append(s)
            p.cpu.append(c)
            p.rss.append(rss)
            made, check = p.made()
            p.tickets.append(made)
            p.checks.append(check)
            line.append(f"{p.name} {args.n / s:.1f} msgs/s ({rss / 1024:.0f} MiB, "
                        f"{c / args.n * 1000:.1f} ms CPU/msg, "
                        f"{made} tickets; {check})")
        print("; ".join(line), flush=True)

    md_tickets = query(tmp / "data" / "maildesk.db", "SELECT count(*) FROM tickets")[0][0]
    threads = counts["new_requests"]
    med = statistics.median

    def row(label: str, secs: list[float], cpu: list[float], rss: str, tickets: str) -> str:
        share = med([b / s for b, s in zip(bare, secs)])
        wall = med([s / t for s, t in zip(secs, md_secs)])
        work = med([c / t for c, t in zip(cpu, md_cpu)])
        return (f"| {label} | {args.n / med(secs):.1f} | {med(secs):.1f} | "
                f"{med(cpu) / args.n * 1000:.1f} | {rss} | {share * 100:.1f} % | "
                f"{wall:.1f}x | {work:.1f}x | {tickets} |\n")

    table = ("| system | msgs/s | seconds | CPU ms/msg | peak RSS | share of a bare parse's "
             "speed | maildesk's speed over it | maildesk's CPU per mail under it | "
             "tickets (threads) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
             + row("`maildesk ingest`", md_secs, md_cpu, f"{med(md_rss) / 1024:.0f} MiB",
                   f"{md_tickets} ({threads}); {md_check}"))
    for p in peers:
        table += row(p.label, p.secs, p.cpu, f"{med(p.rss) / 1024:.0f} MiB",
                     f"{p.tickets[-1]} ({threads}); {p.checks[-1]}")
    table += (f"| bare mail-parser parse, no storage | {args.n / med(bare):.0f} | "
              f"{med(bare):.1f} | {med(bare_cpu) / args.n * 1000:.1f} | - | 100 % | - | - "
              f"| - |\n")
    notes = "".join(f"Skipped {s}.\n" for s in skipped)
    section = (
        f"## Against the peers, paired (`python3 bench/peers.py --n {args.n} "
        f"--rounds {args.rounds}`)\n\n"
        f"Machine: {machine()}. {args.n} mixed messages of the shared workload "
        f"(`../shared/bench/gen_workload.py`, each system's own subject tag); "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''}, each running every system "
        f"one after the other, whole process, from a fresh database copied from one set up "
        f"before the clock starts. "
        f"Absolute figures are medians of the runs; CPU is user + system time of the whole "
        f"process tree. The three ratio columns are medians of the per-round ratios (the "
        f"system's msgs/s over the bare parse's, maildesk's msgs/s over the system's, the "
        f"system's CPU time over maildesk's, in the same round).\n\n"
        + table + "\n" + notes
        + "Runs (msgs/s): maildesk "
        + ", ".join(f"{args.n / x:.0f}" for x in md_secs)
        + "".join(f"; {p.name} " + ", ".join(f"{args.n / x:.1f}" for x in p.secs)
                  for p in peers)
        + ".\n\n" + verdict(peers, md_secs, md_cpu) + "\n")
    publish(args.out, "## Against the peers", section, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
