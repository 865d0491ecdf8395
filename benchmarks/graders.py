"""Replies per second for each offline grader and for the default set together.

    python benchmarks/graders.py [--n 2000] [--presidio] [--workers 2]

Replies are the bundled real ShareGPT sample's logged replies (repeated to --n), in
batches as grade_run feeds them. Model loading is timed separately: it happens once.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time

from deploysim.cli.demo import sample_path
from deploysim.evaluate.graders import DEFAULT_GRADERS, GradeItem, create_grader
from deploysim.evaluate.graders.run import BATCH
from deploysim.core.schema import Message


def load_items(n: int) -> list[GradeItem]:
    data = json.loads(gzip.open(sample_path()).read())
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
    args = parser.parse_args()
    items = load_items(args.n)
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
