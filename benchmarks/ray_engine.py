"""The Ray engine against the local engine: the same 100k points on this machine's cores (issue 13 item 5).

Both engines replay the same records (the bundled real ShareGPT sample, replicated with new
ids) against the FAKE ``instant/echo`` model, once with de-identification off (the harness
alone) and once with the built-in de-identifier on (``privacy: surrogate`` without Presidio,
the stage Ray spreads over the cores). Each run is a fresh process; the Ray runs start a
local Ray with ``--cpus`` CPUs (default: all), as ``deploysim run --engine ray`` does.

    python benchmarks/ray_engine.py                  # 100k points
    python benchmarks/ray_engine.py --sizes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import make_input  # noqa: E402


def worker(engine: str, privacy: str, data: Path, out: Path, cpus: int) -> None:
    from deploysim.pipeline.config import SimConfig
    from deploysim import run_simulation

    if engine == "ray":
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    config = SimConfig(
        data=[str(data)], engine=engine,
        deployments=[{"name": "candidate", "model": "instant/echo", "concurrency": 8}],
        privacy={"mode": "off"} if privacy == "off" else {"mode": "surrogate", "presidio": False},
        cache_path=str(out.parent / f"{out.name}.sqlite"),
    )
    started = time.perf_counter()
    summary = run_simulation(config, out, show_progress=False)
    seconds = time.perf_counter() - started
    assert summary["reconciles"], summary["checks"]
    print(json.dumps({"points": summary["points"], "seconds": seconds}))


def measure(engine: str, privacy: str, data: Path, out: Path, cpus: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--worker", engine, privacy, str(data), str(out), str(cpus)],
                            stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"worker {engine}/{privacy} failed")
    result = json.loads(output.strip().splitlines()[-1])
    result["driver_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, privacy, data, out, cpus = args.worker
        worker(engine, privacy, Path(data), Path(out), int(cpus))
        return
    print(f"{'points':>8} {'de-identification':>18} {'local pts/s':>12} {'ray pts/s':>10} {'ray/local':>9} "
          f"{'driver RSS local':>16} {'driver RSS ray':>14}")
    with tempfile.TemporaryDirectory(prefix="deploysim-ray-bench-") as tmp:
        for n in args.sizes:
            data = Path(tmp) / f"records-{n}.jsonl"
            make_input(data, n)
            for privacy in ("off", "built-in"):
                local = measure("local", privacy, data, Path(tmp) / f"local-{privacy}-{n}", args.cpus)
                on_ray = measure("ray", privacy, data, Path(tmp) / f"ray-{privacy}-{n}", args.cpus)
                assert local["points"] == on_ray["points"]
                rate = local["points"] / local["seconds"], on_ray["points"] / on_ray["seconds"]
                print(f"{local['points']:>8} {privacy:>18} {rate[0]:>12.0f} {rate[1]:>10.0f} {rate[1] / rate[0]:>9.2f} "
                      f"{local['driver_rss_mb']:>15.0f}M {on_ray['driver_rss_mb']:>13.0f}M", flush=True)
    print(f"on {args.cpus} CPU(s); Ray's worker processes are not in the driver's RSS")


if __name__ == "__main__":
    main()
