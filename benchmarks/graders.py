"""Replies per second for each offline grader and for the default set together.

    python benchmarks/graders.py [--n 2000] [--presidio] [--workers 2] [--sample FILE]
    python benchmarks/graders.py --n 4000 --sample FILE --before OLD/src [--rounds 3]
    python benchmarks/graders.py --n 2000 --rows [--rounds 5]

Replies are a ShareGPT file's (user, assistant) turn pairs (default: the bundled real
sample, 216 pairs, repeated to --n; --sample takes another ShareGPT JSON file, gzipped or
not, whose pairs need not repeat), in batches as grade_run feeds them. Model loading is
timed separately: it happens once.

--before SRC measures the default set's CPU time per reply in fresh processes, alternately
with SRC's code (a src/ folder of another checkout, e.g. ``git archive`` of main) and this
checkout's, --rounds times each, and prints the best of each and their ratio per grader.

--rows measures building the journal rows from the default set's decisions: ``journal_rows``
against ``to_verdicts`` then ``model_dump`` (the reference), same decisions, CPU time, best of --rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deploysim.cli.demo import sample_path
from deploysim.evaluate.graders import DEFAULT_GRADERS, GradeItem, create_grader
from deploysim.evaluate.graders.run import BATCH
from deploysim.core.schema import Message


def load_items(n: int, sample: Path | None = None) -> list[GradeItem]:
    path = sample or sample_path()
    raw = path.read_bytes()
    data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    base: list[GradeItem] = []
    for conv in data:
        turns = conv["conversations"]
        for i in range(1, len(turns)):
            if turns[i]["from"] == "gpt" and turns[i - 1]["from"] == "human":
                base.append(GradeItem(context=[Message(role="user", content=turns[i - 1]["value"])],
                                      reply=turns[i]["value"], finish_reason="stop"))
    return [base[i % len(base)] for i in range(n)]


async def run(grader, items: list[GradeItem]) -> float:
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        await grader.grade(items[i:i + BATCH])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--presidio", action="store_true", help="also time pii_presidio (slow)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the pooled measurement")
    parser.add_argument("--sample", type=Path, help="a ShareGPT JSON file (default: the bundled sample)")
    parser.add_argument("--before", type=Path, help="a src/ folder of another checkout: CPU per reply, before/after")
    parser.add_argument("--rounds", type=int, default=3, help="--before: alternating rounds, best of each kept")
    parser.add_argument("--rows", action="store_true", help="CPU of the journal rows: journal_rows vs model_dump")
    parser.add_argument("--cpu-json", action="store_true", help=argparse.SUPPRESS)  # one --before measurement
    args = parser.parse_args()
    if args.cpu_json:
        print(json.dumps(asyncio.run(cpu_per_grader(load_items(args.n, args.sample)))))
        return
    if args.before is not None:
        before_after(args)
        return
    if args.rows:
        rows(load_items(args.n, args.sample), args.rounds)
        return
    items = load_items(args.n, args.sample)
    names = [*DEFAULT_GRADERS, *(["pii_presidio"] if args.presidio else [])]
    total = 0.0
    print(f"{'grader':20} {'load s':>8} {'replies/s':>10}")
    for name in names:
        t = time.perf_counter()
        grader = create_grader(name)
        load = time.perf_counter() - t
        seconds = asyncio.run(run(grader, items[: 300 if name == "pii_presidio" else len(items)]))
        n = 300 if name == "pii_presidio" else len(items)
        if name in DEFAULT_GRADERS:
            total += seconds
        print(f"{name:20} {load:8.2f} {n / seconds:10.0f}")
    print(f"{'default set':20} {'':8} {len(items) / total:10.0f}   ({len(DEFAULT_GRADERS)} graders, "
          f"{len(items)} replies, one process)")
    if args.workers > 1:
        pooled(items, args.workers)


async def cpu_per_grader(items: list[GradeItem]) -> dict[str, float]:
    """CPU seconds each default grader spends on ``items``, batch by batch as grade_run's loop calls them."""
    graders = [create_grader(name) for name in DEFAULT_GRADERS]
    spent = dict.fromkeys(DEFAULT_GRADERS, 0.0)
    for i in range(0, len(items), BATCH):
        batch = items[i:i + BATCH]
        for grader in graders:
            started = time.process_time()
            await grader.grade(batch)
            spent[grader.name] += time.process_time() - started
    return spent


def before_after(args: argparse.Namespace) -> None:
    """The default set's CPU per reply with --before's code and this checkout's, alternating fresh processes."""
    here = Path(__file__).resolve().parents[1] / "src"
    command = [sys.executable, __file__, "--n", str(args.n), "--cpu-json",
               *(["--sample", str(args.sample)] if args.sample else [])]
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    totals: dict[str, float] = {}
    ratios = []  # per round: neighbours' load drifts less within a round than across rounds
    for _ in range(args.rounds):
        pair = {}
        for side, src in (("before", args.before.resolve()), ("after", here)):
            done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"benchmarks/graders.py: the {side} measurement ({src}) failed:\n{done.stderr[-2000:]}")
            spent = json.loads(done.stdout.splitlines()[-1])
            for name, seconds in spent.items():
                best[side][name] = min(best[side].get(name, seconds), seconds)
            totals[side] = min(totals.get(side, float("inf")), sum(spent.values()))
            pair[side] = sum(spent.values())
        ratios.append(pair["before"] / pair["after"])
    print(f"{args.n} replies, best of {args.rounds} alternating rounds, CPU microseconds per reply")
    print(f"{'grader':20} {'before':>8} {'after':>8} {'after/before':>12}")
    for name in DEFAULT_GRADERS:
        b, a = best["before"][name], best["after"][name]
        print(f"{name:20} {b / args.n * 1e6:8.0f} {a / args.n * 1e6:8.0f} {a / b:12.2f}")
    b, a = totals["before"], totals["after"]
    print(f"{'default set':20} {b / args.n * 1e6:8.0f} {a / args.n * 1e6:8.0f} {a / b:12.2f}")
    print(f"replies per CPU-second, one process: before {args.n / b:,.0f}, after {args.n / a:,.0f} ({b / a:.2f}x)")
    print(f"speed-up per round (before CPU / after CPU): {', '.join(f'{r:.2f}x' for r in ratios)}; "
          f"median {sorted(ratios)[len(ratios) // 2]:.2f}x")


def rows(items: list[GradeItem], rounds: int) -> None:
    """CPU per reply of the journal rows for the default set's decisions on ``items``, both ways, same decisions."""
    from deploysim.evaluate.graders.base import journal_rows, to_verdicts

    graded = []
    for name in DEFAULT_GRADERS:
        grader = create_grader(name)
        graded.append((grader, [pair for i in range(0, len(items), BATCH) for pair in zip(
            items[i:i + BATCH], asyncio.run(grader.grade(items[i:i + BATCH])), strict=True)]))

    def reference() -> int:
        return sum(len([v.model_dump(mode="json") for item, decisions in pairs
                        for v in to_verdicts(g, item, decisions)]) for g, pairs in graded)

    def fast() -> int:
        return sum(len(journal_rows(g, pairs)) for g, pairs in graded)

    best = {}
    for _ in range(rounds):
        for name, build in (("model_dump", reference), ("journal_rows", fast)):
            started = time.process_time()
            count = build()
            best[name] = min(best.get(name, float("inf")), time.process_time() - started)
    print(f"{len(items)} replies, {count} rows ({count / len(items):.0f} per reply), best of {rounds}, CPU:")
    for name, seconds in best.items():
        print(f"{name:14} {seconds / len(items) * 1e6:8.1f} us per reply")
    print(f"journal_rows / model_dump: {best['journal_rows'] / best['model_dump']:.3f}")


def pooled(items: list[GradeItem], workers: int) -> None:
    """The default set as grade_run runs it: one process, then ``workers`` forked processes, same items.

    Wall time and CPU time (this process and its workers) are both shown: on a shared
    machine wall time also measures the neighbours.
    """
    import os

    from deploysim.evaluate.graders.run import _grade_batch, _Pool

    class Sink:  # the journal's role, minus the disk: grading alone is measured
        def append(self, row, flush=True):
            pass

        def flush(self):
            pass

    graders = [create_grader(name) for name in DEFAULT_GRADERS]
    results = {}
    for n_workers in (1, workers):
        pool = _Pool(graders, n_workers) if n_workers > 1 else None
        step = BATCH * n_workers
        wall, cpu = time.perf_counter(), os.times()
        for i in range(0, len(items), step):
            asyncio.run(_grade_batch(graders, items[i:i + step], set(), Sink(), pool))
        end = os.times()
        wall = time.perf_counter() - wall
        if pool is not None:
            pool.close()
            end = os.times()
        used = (end.user - cpu.user) + (end.system - cpu.system) + (end.children_user - cpu.children_user) + (
            end.children_system - cpu.children_system)
        results[n_workers] = (len(items) / wall, len(items) / used)
        print(f"{'default set, ' + str(n_workers) + ' proc':20} {'':8} {len(items) / wall:10.0f}   "
              f"(wall; {len(items) / used:.0f} replies per CPU-second)")
    print(f"{workers} processes vs 1 (wall): {results[workers][0] / results[1][0]:.2f}x")


if __name__ == "__main__":
    main()
