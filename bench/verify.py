#!/usr/bin/env python3
"""`maildesk blobs verify` on a desk made by importing the shared workload.

    python3 bench/verify.py [--n 10000] [--runs 3]

Imports the workload once with `maildesk ingest` (default pack size, so the
64 MiB pack limit is crossed), then times `blobs verify --format json` as a
whole process, `--runs` times, beside `sha256sum` of the same pack files (the
floor: reading and hashing the bytes with nothing else). The page cache is
warm in both. Checks that every run finds 0 damaged and 0 missing blobs, and
writes the medians to BENCHMARKS.md.
"""
from __future__ import annotations

import json
import statistics
import sys

from common import machine, prepare, publish, run_child


def main() -> int:
    args, tmp, work, counts = prepare(__doc__ or "", 10000, "maildesk-bench-verify-")
    cfg = tmp / "maildesk.yaml"
    cfg.write_text("data_dir: data\ndesk:\n  addresses: [support@example.com]\n")
    t_ingest, _r, out, err, code = run_child(
        [sys.executable, "-m", "maildesk", "--config", str(cfg), "ingest", "--no-progress",
         "--format", "json", str(work / "mbox")], tmp)
    if code != 0:
        sys.stderr.write(err.decode())
        return 1
    packs = sorted(str(p) for p in (tmp / "data" / "blobs" / "packs").glob("*.pack"))
    times, rss, floor = [], [], []
    result: dict[str, object] = {}
    for i in range(args.runs):
        t, r, out, err, code = run_child([sys.executable, "-m", "maildesk", "--config",
                                          str(cfg), "blobs", "verify", "--format", "json"], tmp)
        result = json.loads(out)
        if code != 0 or result["damaged"] or result["missing"]:
            sys.stderr.write(f"verify found damage (exit {code}): {str(result)[:500]}\n")
            return 1
        tf, _rf, _o, _e, _c = run_child(["sha256sum", *packs], tmp)
        times.append(t)
        rss.append(r)
        floor.append(tf)
        print(f"run {i + 1}: verify {t:.2f} s ({r / 1024:.0f} MiB), sha256sum {tf:.2f} s")
    checked = result["checked"]
    assert isinstance(checked, dict)
    mib = checked["bytes"] / 1024**2
    t, tf = statistics.median(times), statistics.median(floor)
    section = (
        f"## Blob verify: a desk of {args.n} imported mails "
        f"(`python3 bench/verify.py --n {args.n}`)\n\n"
        f"Machine: {machine()}. The workload imported once ({t_ingest:.0f} s, "
        f"{counts['new_requests']} tickets, {len(packs)} packs of up to 64 MiB); median of "
        f"{args.runs} runs, whole process (start-up included), page cache warm.\n\n"
        f"| | seconds | MiB/s | peak RSS |\n|---|---:|---:|---:|\n"
        f"| `maildesk blobs verify` ({checked['packed']:,} packed, {checked['loose']:,} loose "
        f"blobs, {mib:,.0f} MiB) | {t:.2f} | {mib / t:,.0f} | "
        f"{statistics.median(rss) / 1024:.0f} MiB |\n"
        f"| `sha256sum` of the same packs | {tf:.2f} | {mib / tf:,.0f} | - |\n\n"
        f"0 damaged and 0 missing in every run. Verify over the bare hash: {t / tf:.1f}x "
        f"(Python start-up, the index read, and looking for rows whose blob is missing).\n"
        f"Runs (s): {', '.join(f'{x:.2f}' for x in times)}.\n")
    publish(args.out, f"## Blob verify: a desk of {args.n} ", section, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
