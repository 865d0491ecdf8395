"""Harness throughput and memory: replay points per second and peak RSS, 10k and 100k points.

The model is ``instant/echo``, a FAKE in-process model that answers instantly, so
what is measured is deploysim itself: reading, cutting points, cache lookups,
journaling every output and writing Parquet. The reference, measured in the same
run, is just reading the same records and cutting their points (no model, no
writes). Each measurement runs in a fresh process so peak RSS is its own.

    python benchmarks/harness.py            # 10k and 100k points
    python benchmarks/harness.py --sizes 10000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

TARGET_POINTS_PER_S = 5000
TARGET_RSS_MB = 300


def make_input(path: Path, n: int) -> None:
    """n records scaled up from the bundled real sample, copied with new ids."""
    from deploysim.cli.demo import sample_path

    sample = json.loads(gzip.decompress(sample_path().read_bytes()))
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    with open(path, "wb") as out:
        for i in range(n):
            convo = sample[i % len(sample)]
            messages = [{"role": roles.get(t["from"], "user"), "content": t["value"]} for t in convo["conversations"]]
            out.write(orjson.dumps({"id": f"bench-{i}", "messages": messages}) + b"\n")


def worker(mode: str, data: Path, out: Path) -> None:
    from deploysim.pipeline.config import SimConfig
    from deploysim import run_simulation
    from deploysim.pipeline.replay import replay_points
    from deploysim.core.schema import Record
    from deploysim.pipeline.sources import iter_inputs

    started = time.perf_counter()
    cpu_started = time.process_time()
    if mode == "read":
        points = sum(len(replay_points(r)) for r in iter_inputs([data]) if isinstance(r, Record))
    else:
        config = SimConfig(
            data=[str(data)],
            deployments=[{"name": "candidate", "model": "instant/echo", "concurrency": 8}],
            cache=mode == "run",
            privacy={"mode": "off"},  # the harness alone; benchmarks/ingest.py measures de-identification
            cache_path=str(out.parent / f"{out.name}.sqlite"),
        )
        points = run_simulation(config, out, show_progress=False)["points"]
    print(json.dumps({"points": points, "seconds": time.perf_counter() - started,
                      "cpu_seconds": time.process_time() - cpu_started}))


def measure(mode: str, data: Path, out: Path) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--worker", mode, str(data), str(out)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker {mode} failed")
    result = json.loads(output.strip().splitlines()[-1])
    result["rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploysim-bench-") as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"records-{n}.jsonl"
            make_input(data, n)
            read = measure("read", data, Path(tmp) / f"read-{n}")
            run = measure("run", data, Path(tmp) / f"run-{n}")
            nocache = measure("run-nocache", data, Path(tmp) / f"nocache-{n}")
            rows.append((n, read, run, nocache))
    print(f"{'points':>8} {'read pts/s':>11} {'run pts/s':>10} {'run/read':>8} {'no-cache pts/s':>14} "
          f"{'run pts/cpu-s':>13} {'RSS read':>9} {'RSS run':>8} {'RSS no-cache':>12}")
    for n, read, run, nocache in rows:
        rate = {k: v["points"] / v["seconds"] for k, v in (("read", read), ("run", run), ("nocache", nocache))}
        print(f"{n:>8} {rate['read']:>11.0f} {rate['run']:>10.0f} {rate['run'] / rate['read']:>8.2f} "
              f"{rate['nocache']:>14.0f} {run['points'] / run['cpu_seconds']:>13.0f} "
              f"{read['rss_mb']:>8.0f}M {run['rss_mb']:>7.0f}M {nocache['rss_mb']:>11.0f}M")
    if len(rows) > 1:
        first, last = rows[0][2]["rss_mb"], rows[-1][2]["rss_mb"]
        print(f"peak RSS of the run, {rows[-1][0]} vs {rows[0][0]} points: {last / first:.2f}x")
    print(f"targets: >= {TARGET_POINTS_PER_S} points/s with every output written; "
          f"peak RSS < {TARGET_RSS_MB} MB and flat with size")


if __name__ == "__main__":
    main()
