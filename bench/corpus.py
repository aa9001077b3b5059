#!/usr/bin/env python3
"""Real mail from other projects' test suites (`../shared/corpus`) through `maildesk ingest`.

    python3 bench/corpus.py [--corpus ../shared/corpus] [--out BENCHMARKS.md]

Two desks: one takes the whole corpus as ONE import (the parse-ahead path),
the other file by file. For each it counts the mails read, what became of
them (ticket, follow-up, held with a verdict, duplicate, quarantined), the
quarantine's reasons, tracebacks, and subjects that came out with U+FFFD or
as cp1252 mojibake of CJK text. Writes the figures to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, update

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
CODECS = ("gb18030", "shift_jis", "big5", "euc_kr", "euc_jp", "utf-8")


def mojibake(text: str) -> bool:
    """Legacy CJK bytes shown as cp1252 (or Latin-1) letters: they re-encode to bytes that a
    CJK codec reads as CJK."""
    high = sum(1 for c in text if "\u0080" <= c <= "\u00ff")
    if CJK.search(text) or high < 2 or high < 0.3 * len(text.replace(" ", "")):
        return False
    for legacy in ("cp1252", "latin-1"):
        try:
            data = text.encode(legacy)
        except UnicodeEncodeError:
            continue
        for codec in CODECS:
            try:
                if len(CJK.findall(data.decode(codec))) >= 2:
                    return True
            except UnicodeDecodeError:
                pass
    return False


def files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file()
                  and p.name not in ("INDEX.tsv", "SOURCES.md"))


def desk(tmp: Path, name: str) -> Path:
    cfg = tmp / name / "maildesk.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n")
    return cfg


def ingest(cfg: Path, paths: list[Path]) -> tuple[int, str, float]:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "maildesk", "--config", str(cfg), "ingest",
                        "--no-progress", "--format", "json", *map(str, paths)],
                       capture_output=True, text=True, timeout=1800)
    return r.returncode, r.stderr, time.perf_counter() - start


EACH = """
import collections, contextlib, io, json, sys, traceback
from maildesk.cli.main import cli
cfg, paths = sys.argv[1], sys.argv[2:]
codes, tracebacks = collections.Counter(), 0
for p in paths:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(["--config", cfg, "ingest", "--no-progress", p], standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    codes[code] += 1
    tracebacks += err.getvalue().count("Traceback")
print(json.dumps({"exits": codes, "tracebacks": tracebacks}))
"""


def file_by_file(cfg: Path, paths: list[Path]) -> dict[str, object]:
    """Each file its own `maildesk ingest`, run in one process to spare 850 start-ups."""
    r = subprocess.run([sys.executable, "-c", EACH, str(cfg), *map(str, paths)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"file-by-file run failed: {r.stderr[-2000:]}")
    result: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    return result


def figures(cfg: Path) -> dict[str, object]:
    with sqlite3.connect(cfg.parent / "data" / "maildesk.db") as c:
        states = dict(c.execute("SELECT state, count(*) FROM inbound GROUP BY state"))
        reasons = collections.Counter(
            re.sub(r"\d+", "N", (r or "")[:70]) for (r,) in
            c.execute("SELECT reason FROM inbound WHERE state = 'quarantined'"))
        subjects = [s for (s,) in c.execute("SELECT subject FROM messages WHERE direction='in'")]
    return {"states": states, "read": sum(states.values()),
            "quarantine_reasons": dict(reasons.most_common()),
            "subjects": len(subjects),
            "replacement_char": sum("\ufffd" in s for s in subjects),
            "mojibake": sum(mojibake(s) for s in subjects)}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = ap.parse_args()
    paths = files(args.corpus)
    tmp = Path(tempfile.mkdtemp(prefix="maildesk-corpus-"))
    one = desk(tmp, "one")
    code, err, seconds = ingest(one, paths)
    result: dict[str, object] = {
        "files": len(paths),
        "one_import": {"exit": code, "seconds": round(seconds, 1),
                       "tracebacks": err.count("Traceback"), **figures(one)}}
    each = desk(tmp, "each")
    result["file_by_file"] = {**file_by_file(each, paths), **figures(each)}
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    one, each = result["one_import"], result["file_by_file"]
    assert isinstance(one, dict) and isinstance(each, dict)

    def row(name: str, r: dict[str, object]) -> str:
        states = r["states"]
        assert isinstance(states, dict)
        held = ", ".join(f"{k} {v}" for k, v in sorted(states.items())
                         if k not in ("ticketed", "duplicate", "quarantined"))
        return (f"| {name} | {r['read']} | {states.get('ticketed', 0)} | "
                f"{states.get('duplicate', 0)} | {held or '-'} | {states.get('quarantined', 0)} "
                f"| {r['tracebacks']} | {r['replacement_char']} | {r['mojibake']} |")
    reasons = each["quarantine_reasons"]
    assert isinstance(reasons, dict)
    section = (
        f"## Real mail: the shared corpus (`python3 bench/corpus.py`)\n\n"
        f"Machine: {machine()}. {len(paths)} files from the test suites of 12 mail projects "
        f"(`../shared/corpus/SOURCES.md`), as one `maildesk ingest` (exit {one['exit']}, "
        f"{one['seconds']} s) and file by file (exit codes {each['exits']}).\n\n"
        f"| run | mails read | ticketed | duplicates | held by verdict | quarantined | "
        f"tracebacks | subjects with U+FFFD | CJK mojibake subjects |\n"
        f"|---|---:|---:|---:|---|---:|---:|---:|---:|\n"
        f"{row('one import', one)}\n{row('file by file', each)}\n\n"
        f"Quarantined, why: {json.dumps(reasons, ensure_ascii=False) if reasons else 'none'}."
        f"\n")
    update(args.out, "## Real mail: the shared corpus", section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
