"""The whole pipeline at scale, stage by stage: wall time, CPU time and peak RSS per record.

    python benchmarks/pipeline.py --records 20000 --records 60000
    python benchmarks/pipeline.py --records 1300000          # issue 13's target: < 1 h, < 1 GB

Input: N records of real ShareGPT traffic, the bundled sample replicated with new ids
(JSONL, one conversation per line). Stages, each a ``deploysim`` command in a fresh
process (os.wait4 gives each its own peak RSS and CPU time):

    read     deploysim check-data DATA                     (the reference: a plain read)
    deid     deploysim ingest DATA --no-presidio           (built-in de-identification)
    replay   deploysim run --data DEID --sample N --baseline instant/echo --candidate instant/echo
             --privacy off --no-grade --no-cache           (sampling + replay, two deployments)
    grade    deploysim grade RUN                           (offline default graders, all cores)
    regrade  deploysim grade RUN again                     (resume: every verdict found done, then finalise)
    stats    deploysim stats RUN --json
    report   deploysim report RUN

``instant/echo`` is a FAKE in-process model that answers instantly, so what is measured
is deploysim. Ratios are to the plain read of the same size in the same run; "us/rec"
is CPU microseconds per record, whose growth between sizes shows a stage that is not
linear. On a shared machine wall time also measures the neighbours: CPU time is the
figure to compare.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

STAGES = ("read", "deid", "replay", "grade", "regrade", "stats", "report")


def make_input(path: Path, n: int) -> None:
    from deploysim.cli.demo import sample_path

    sample = json.loads(gzip.decompress(sample_path().read_bytes()))
    with open(path, "wb") as out:
        for i in range(n):
            conv = sample[i % len(sample)]
            out.write(orjson.dumps({"id": f"{conv.get('id', 'c')}-copy{i}",
                                    "conversations": conv["conversations"]}) + b"\n")


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s incl. the command's own children, peak RSS MB of the largest process)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:  # a crash (exit 1) must never be timed as a stage
        raise SystemExit(f"{' '.join(cmd)} failed ({status}):\n{err[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def grandchildren_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def run_size(n: int, work: Path, stages: tuple[str, ...] = STAGES,
             before: Path | None = None) -> dict[str, tuple[float, float, float]]:
    exe = [sys.executable, "-m", "deploysim"]
    data, deid, run = work / "data.jsonl", work / "deid.parquet", work / "run"
    make_input(data, n)
    commands = {
        "read": [*exe, "check-data", str(data)],
        "deid": [*exe, "ingest", str(data), "--out", str(deid), "--no-presidio", "--format", "sharegpt"],
        "replay": [*exe, "run", "--data", str(deid), "--sample", str(n), "--baseline", "instant/echo",
                   "--candidate", "instant/echo", "--privacy", "off", "--no-grade", "--no-cache",
                   "--concurrency", "64", "--out", str(run), "--quiet"],
        "grade": [*exe, "grade", str(run), "--quiet"],
        "regrade": [*exe, "grade", str(run), "--quiet"],
        "stats": [*exe, "stats", str(run), "--json"],
        "report": [*exe, "report", str(run), "--out", str(work / "report.html")],
    }
    out = {}

    def record(stage: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        wall, cpu, rss = measure(cmd, env)
        out[stage] = (wall, cpu, rss)
        print(f"  {n:>9} {stage:8} wall {wall:8.1f} s  cpu {cpu:8.1f} s  peak {rss:6.0f} MB", file=sys.stderr,
              flush=True)

    for stage in STAGES:
        if stage not in stages and stage != "read":  # the plain read is the reference: always measured
            continue
        if stage in ("grade", "regrade") and before is not None:  # the same stage with another checkout's code
            old = work / f"run-{stage}-before"
            if not old.exists():
                shutil.copytree(run, old)
            env = {**os.environ, "PYTHONPATH": str(before)}
            cmd = [c if c != str(run) else str(old) for c in commands[stage]]
            record(f"{stage}<", cmd, env)
        record(stage, commands[stage])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, action="append")
    parser.add_argument("--dir", type=Path, help="work here (kept) instead of a temp dir")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (read always); a stage needs those making its "
                        "input: replay needs deid, grade replay, stats and report grade")
    parser.add_argument("--before", type=Path, help="a src/ folder of another checkout: its grade and regrade "
                                                    "run too, on a copy of the same run (stages 'grade<', "
                                                    "'regrade<'), for a before/after in one run")
    args = parser.parse_args()
    sizes = args.records or [20_000, 60_000]
    stages = tuple(s for s in args.stages.split(",") if s)
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    results = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            results[n] = run_size(n, Path(tmp), stages, args.before)
    print(f"{'records':>9} {'stage':7} {'wall s':>8} {'cpu s':>8} {'cpu/read':>8} {'cpu us/rec':>10} {'peak MB':>8} "
          f"{'MB/read':>8}")
    for n, stages in results.items():
        read_cpu, read_rss = stages["read"][1], stages["read"][2]
        for stage, (wall, cpu, rss) in stages.items():
            print(f"{n:9d} {stage:8} {wall:8.1f} {cpu:8.1f} {cpu / read_cpu:8.2f} {cpu / n * 1e6:10.0f} {rss:8.0f} "
                  f"{rss / read_rss:8.2f}")
        ours = [s for stage, s in stages.items() if in_pipeline(stage)]
        total_wall = sum(s[0] for s in ours)
        total_cpu = sum(s[1] for s in ours)
        print(f"{n:9d} {'total':7} {total_wall:8.1f} {total_cpu:8.1f} {'':8} {total_cpu / n * 1e6:10.0f} "
              f"{max(s[2] for s in ours):8.0f}")
    if len(results) > 1:
        small, large = min(results), max(results)
        print(f"CPU per record, {large} vs {small} records (1.00 = linear):")
        for stage in results[small]:
            a, b = results[small][stage][1] / small, results[large][stage][1] / large
            print(f"  {stage:8} {b / a:5.2f}")
        print(f"peak RSS, {large} vs {small} records (MB; '<' = the --before code):")
        for stage in results[small]:
            a, b = results[small][stage][2], results[large][stage][2]
            print(f"  {stage:8} {a:7.0f} -> {b:7.0f}  (+{b - a:.0f} MB)")
        per_rec = sum(s[1] for stage, s in results[large].items() if in_pipeline(stage)) / large
        print(f"extrapolated to 1.3M records at {large}'s CPU per record: {per_rec * 1.3e6 / 3600:.2f} CPU-hours "
              f"({per_rec * 1.3e6 / 3600 / 2:.2f} h on 2 idle cores if every stage used both)")


def in_pipeline(stage: str) -> bool:
    """The stages one pipeline run goes through: not the --before code's, not the resumed regrade."""
    return not stage.endswith("<") and stage != "regrade"


if __name__ == "__main__":
    main()
