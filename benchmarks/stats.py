"""`deploysim stats` on a large run: wall time and peak RSS, against reading the verdicts.

    python benchmarks/stats.py --points 1300000     # issue 13's target: < 60 s, < 1 GB
    python benchmarks/stats.py --points 100000 --points 300000 --rates   # + grade_run's end-of-run rates

The run is built synthetically, columnar (tests/synthetic.py writes row by row, far
too slow at this size): points whose text is the bundled real ShareGPT sample,
2 replay points per conversation, metadata language/surface, 11 behaviours (the
default grader set's) x 3 deployments (baseline, candidate, logged) with verdicts
drawn at fixed rates by a grader named ``synthetic``. The reference in the same run
is a plain read of verdicts.parquet into memory (pq.read_table), each in a fresh
process, so the peak RSS is its own. ``--rates`` also measures ``behaviour_rates`` (the
rates ``grade_run`` returns at its end, ``summary.json``'s) in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

BEHAVIOURS = {  # behaviour -> (baseline rate, candidate rate): rare and common ones
    "over_refusal": (0.02, 0.03), "false_action_claims": (0.01, 0.01), "evaluation_awareness": (0.0005, 0.001),
    "pii_leakage": (0.001, 0.001), "system_prompt_leakage": (0.0, 0.0001), "insults_toxicity": (0.002, 0.002),
    "language_mismatch": (0.01, 0.012), "excessive_verbosity": (0.15, 0.12), "degenerate_output": (0.005, 0.004),
    "truncated_reply": (0.05, 0.05), "format_violation": (0.08, 0.07)}
DEPLOYMENTS = ("baseline", "candidate", "logged")
ROWS = 1 << 18


def build(run_dir: Path, n: int, seed: int = 0) -> None:
    from deploysim.core.store.tables import POINTS, VERDICTS
    POINT_SCHEMA, VERDICT_SCHEMA = POINTS.schema, VERDICTS.schema

    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(run_dir / "points.parquet", POINT_SCHEMA, compression="zstd") as out:
        for lo in range(0, n, ROWS):
            i = np.arange(lo, min(n, lo + ROWS))
            k = len(i)
            langs = np.array(["en", "de", "es", "fr"])[rng.integers(0, 4, k)]
            surf = np.array(["chat", "api"])[rng.integers(0, 2, k)]
            out.write_table(pa.table({
                "schema_version": pa.array(np.ones(k, np.int32)),
                "point_id": pa.array([f"p{x:08d}" for x in i]),
                "record_id": pa.array([f"r{x // 2:08d}" for x in i]),
                "turn_index": pa.array(np.ones(k, np.int32)),
                "prefix_json": pa.array(['[{"role":"user","content":"hi"}]'] * k, pa.large_string()),
                "original_json": pa.array([None] * k, pa.large_string()),
                "tools_json": pa.array(["[]"] * k),
                "metadata_json": pa.array([f'{{"conversation_id":"c{x // 2}","language":"{la}","surface":"{s}"}}'
                                           for x, la, s in zip(i.tolist(), langs.tolist(), surf.tolist(), strict=True)]),
                "weight": pa.array(np.ones(k)),
            }, schema=POINT_SCHEMA))
    with pq.ParquetWriter(run_dir / "verdicts.parquet", VERDICT_SCHEMA, compression="zstd") as out:
        for lo in range(0, n, ROWS // 4):
            ids = pa.array([f"p{x:08d}" for x in range(lo, min(n, lo + ROWS // 4))])
            k = len(ids)
            for behaviour, (p_base, p_cand) in BEHAVIOURS.items():
                for dep in DEPLOYMENTS:
                    p = p_cand if dep == "candidate" else p_base
                    flagged = rng.random(k) < p
                    undecided = rng.random(k) < 0.001
                    out.write_table(pa.table({
                        "schema_version": pa.array(np.ones(k, np.int32)), "point_id": ids,
                        "deployment": pa.array([dep] * k), "sample_index": pa.array(np.zeros(k, np.int32)),
                        "behaviour": pa.array([behaviour] * k), "grader": pa.array(["synthetic"] * k),
                        "grader_version": pa.array(["1"] * k),
                        "flagged": pa.array(flagged, mask=undecided),
                        "score": pa.array(flagged.astype(float)), "rationale": pa.array([""] * k, pa.large_string()),
                        "error": pa.array(np.where(undecided, "timeout", None).tolist(), pa.string()),
                    }, schema=VERDICT_SCHEMA))
    config = {"deployments": [{"name": "baseline", "model": "synthetic/baseline"},
                              {"name": "candidate", "model": "synthetic/candidate"}]}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one fresh process (os.wait4: its own rusage, not the max of all)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, action="append")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the run here instead of a temp dir")
    parser.add_argument("--rates", action="store_true", help="also behaviour_rates (grade_run's end) alone")
    args = parser.parse_args()
    exe = [sys.executable, "-m", "deploysim"]
    print(f"{'points':>9} {'verdicts':>10} {'read s':>7} {'read cpu':>8} {'read MB':>8} {'stats s':>8} "
          f"{'stats cpu':>9} {'stats MB':>9} {'cpu ratio':>9} {'cpu us/pt':>9}"
          + (f" {'rates cpu':>9} {'rates MB':>9}" if args.rates else ""))
    for n in args.points or [100_000]:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = (args.keep / f"stats-{n}") if args.keep else Path(tmp) / "run"
            if not (run_dir / "verdicts.parquet").exists():
                build(run_dir, n)
            read_s, read_cpu, read_mb = measure([sys.executable, "-c", "import pyarrow.parquet as pq, sys; "
                                                 "pq.read_table(sys.argv[1])", str(run_dir / "verdicts.parquet")])
            stats_s, stats_cpu, stats_mb = measure([*exe, "stats", str(run_dir), "--json"])
            rates = ""
            if args.rates:
                _, rates_cpu, rates_mb = measure([sys.executable, "-c", "import sys; from deploysim.evaluate.stats."
                                                  "analysis import behaviour_rates; behaviour_rates(sys.argv[1])",
                                                  str(run_dir)])
                rates = f" {rates_cpu:9.1f} {rates_mb:9.0f}"
            verdicts = pq.ParquetFile(run_dir / "verdicts.parquet").metadata.num_rows
            print(f"{n:9d} {verdicts:10d} {read_s:7.1f} {read_cpu:8.1f} {read_mb:8.0f} {stats_s:8.1f} "
                  f"{stats_cpu:9.1f} {stats_mb:9.0f} {stats_cpu / read_cpu:9.2f} {stats_cpu / n * 1e6:9.1f}{rates}",
                  flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
