"""Presidio de-identification speed: records per CPU-second, this checkout against another revision's adapter.

Both Presidio adapters (this checkout's and, read with ``git show``, another revision's
``presidio_adapter.py``, each with its own spaCy pipeline) run in one process on the same real
ShareGPT records (shared/data/sharegpt beside or above the checkout, else the bundled sample), in
alternating rounds, timed with ``time.process_time`` (CPU time: the machine may be shared). The old
path is what de-identification did before: one text at a time. The new one is what ``ingest``
does: ``DEID_BATCH`` records' texts at once. Model loading is not timed. It also checks the spans:
the same outside code blocks, URLs and digit runs, and counts the old spans inside them that the new
path no longer finds. ``--workers N`` adds a whole ``ingest`` with Presidio in N processes (wall
time, and CPU time of this process and its workers).

    python benchmarks/presidio.py                          # 300 records, against main, 2 rounds
    python benchmarks/presidio.py --records 100 --rounds 1 --workers 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from deploysim.pipeline.privacy import presidio_adapter as current

from deploysim.pipeline.privacy.deidentify import PrivacyConfig
from deploysim.pipeline.privacy.ingest import DEID_BATCH

sys.path.insert(0, str(Path(__file__).parent))
import deid  # noqa: E402  (benchmarks/deid.py: load_revision)

ROOT = Path(__file__).resolve().parents[1]
REAL = next((p / "shared" / "data" / "sharegpt" / "conversations.json.gz" for p in ROOT.parents
             if (p / "shared" / "data" / "sharegpt" / "conversations.json.gz").is_file()), None)
BUNDLED = ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"
MODULE = "src/deploysim/pipeline/privacy/presidio_adapter.py"
CONFIG = PrivacyConfig()
Spans = list[list[tuple[int, int, str]]]


def load_revision(rev: str) -> ModuleType:
    return deid.load_revision(rev, MODULE)


def one_at_a_time(module: ModuleType, texts: list[str]) -> Spans:
    return [[(s.start, s.end, s.kind) for s in module.find_presidio(t, CONFIG.presidio_entities,
                                                                      CONFIG.presidio_min_score)] for t in texts]


def batched(texts: list[str]) -> Spans:
    found = current.find_presidio_many(texts, CONFIG.presidio_entities, CONFIG.presidio_min_score)
    return [[(s.start, s.end, s.kind) for s in spans] for spans in found]


def timed(run: Callable[[list[str]], Spans], records: list[list[str]], per_call: int) -> tuple[float, Spans]:
    spans: Spans = []
    started = time.process_time()
    for i in range(0, len(records), per_call):
        spans.extend(run([t for r in records[i: i + per_call] for t in r]))
    return time.process_time() - started, spans


def compare(texts: list[str], old: Spans, new: Spans) -> tuple[int, int, int]:
    """(changed spans outside skippable regions, old spans inside them, of those not found now)."""
    changed = inside = lost = 0
    for text, was, now in zip(texts, old, new):
        regions = [m.span() for m in current.NOT_NAMES.finditer(text)]
        for span in set(was) | set(now):
            if any(a < span[1] and span[0] < b for a, b in regions):
                inside += span in was
                lost += span in was and span not in now
            else:
                changed += (span in was) != (span in now)
    return changed, inside, lost


def ingest_run(records: int, workers: int) -> None:
    from deploysim.core.schema import Record, Reject
    from deploysim.pipeline.privacy.ingest import ingest
    from deploysim.pipeline.sources._base import SourceContext
    from deploysim.pipeline.sources import parser as source_parser

    raw = json.loads(gzip.decompress((REAL or BUNDLED).read_bytes()))
    parser = source_parser("sharegpt")

    def inputs():  # type: ignore[no-untyped-def]
        for i in range(records):
            value = dict(raw[i % len(raw)], id=f"{raw[i % len(raw)].get('id', 'x')}-copy{i // len(raw)}")
            try:
                yield from parser.parse(value, SourceContext("scaled.json", i, f"scaled.json:{i}"))
            except ValueError as exc:
                yield Reject(source_file="scaled.json", line=i, reason=str(exc)[:80])

    def children() -> float:  # workers count once reaped, which ingest does before it returns
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    current.analyzer()  # load time is not throughput
    cpu, wall = time.process_time() + children(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        summary = ingest([], Path(tmp) / "out.parquet", privacy={"presidio": True}, open_inputs=inputs,
                         workers=workers)
    wall = time.time() - wall
    cpu = time.process_time() + children() - cpu
    n = summary["records_written"]
    print(f"  ingest, Presidio on, {workers} worker(s): {n:,} records in {wall:.1f} s wall = {n / wall:.1f} records/s; "
          f"{cpu:.1f} CPU-s (this process + workers) = {n / cpu:.1f} records per CPU-second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--against", default="main", help="git revision whose presidio_adapter is the old path")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also time a whole ingest with N workers")
    args = parser.parse_args()
    source = REAL or BUNDLED
    data = json.loads(gzip.decompress(source.read_bytes()))
    records = [[t.get("value") or "" for t in c.get("conversations", [])] for c in data[: args.records]]
    records = [[t for t in r if any(c.isalpha() for c in t)] for r in records]  # what de-identification asks
    texts = [t for r in records for t in r]
    chars = sum(map(len, texts)) / len(records)
    old = load_revision(args.against)
    old.analyzer(), current.analyzer()
    times: dict[str, list[float]] = {"old": [], "new": []}
    spans: dict[str, Spans] = {}
    for _ in range(args.rounds):
        times["old"].append((result := timed(lambda t: one_at_a_time(old, t), records, 1))[0])
        spans["old"] = result[1]
        times["new"].append((result := timed(batched, records, DEID_BATCH))[0])
        spans["new"] = result[1]
    best = {k: min(v) for k, v in times.items()}  # the least disturbed round of each
    print(f"{source.name}: {len(records):,} records, {chars:,.0f} characters each, best of {args.rounds} rounds, "
          f"Presidio NER only (model load not timed)")
    labels = {"old": f"{args.against}, one text at a time", "new": f"this checkout, {DEID_BATCH} records a batch"}
    for name, label in labels.items():
        print(f"  {label:>38}: {len(records) / best[name]:6.2f} records per CPU-second "
              f"({best[name] / len(records) * 1e3:.0f} CPU-ms/record)")
    print(f"  speed-up: {best['old'] / best['new']:.2f}x")
    changed, inside, lost = compare(texts, spans["old"], spans["new"])
    total = sum(map(len, spans["old"]))
    print(f"  spans: {total:,} old; outside code/URL/digit runs {changed} changed; inside them {inside} old, "
          f"{lost} of those not found now")
    for workers in args.workers:
        ingest_run(args.records, workers)


if __name__ == "__main__":
    main()
