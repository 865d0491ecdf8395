"""Ingest throughput and peak memory: records/s for built-in and Presidio de-identification, peak RSS at scale.

The real ShareGPT sample (../shared/data/sharegpt, else the bundled sample) is scaled
up by copying conversations with new ids, parsed by the real ShareGPT parser, then run
through ``deploysim.pipeline.privacy.ingest.ingest`` into a Parquet dataset. Each measurement
runs in a fresh child process so peak RSS is its own. The reference in the same run is
plain reading: the same pipeline with privacy off.

    python benchmarks/ingest.py                       # 100k and 1.3M built-in, 100k reference, 300 Presidio
    python benchmarks/ingest.py --counts 20000 --presidio-count 50   # quick
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "sharegpt" / "conversations.json.gz"
BUNDLED = Path(__file__).resolve().parents[1] / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, count: int, progress_every: int) -> None:
    from deploysim.pipeline.privacy.ingest import ingest
    from deploysim.core.schema import Record, Reject
    from deploysim.pipeline.sources._base import SourceContext
    from deploysim.pipeline.sources import parser as source_parser

    source = REAL if REAL.is_file() else BUNDLED
    with gzip.open(source) as handle:
        raw = json.load(handle)
    parser = source_parser("sharegpt")

    def records() -> Iterator[Record | Reject]:
        for i in range(count):
            value = dict(raw[i % len(raw)], id=f"{raw[i % len(raw)].get('id', 'x')}-copy{i // len(raw)}")
            ctx = SourceContext("scaled.json", i, f"scaled.json:{i}")
            try:
                yield from parser.parse(value, ctx)
            except ValueError as exc:
                yield Reject(source_file="scaled.json", line=i, reason=str(exc)[:80])

    privacy = {"mode": "off"} if mode == "read" else {"mode": "surrogate", "presidio": mode == "presidio"}
    done = 0
    started = time.time()

    def tick() -> None:
        nonlocal done
        done += 1
        if progress_every and done % progress_every == 0:
            print(json.dumps({"progress": done, "peak_rss_mb": round(peak_rss_mb(), 1),
                              "records_per_s": round(done / (time.time() - started), 1)}), flush=True)

    if mode == "presidio":
        from deploysim.pipeline.privacy.presidio_adapter import analyzer

        analyzer()  # load time is not throughput
        started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        summary = ingest([], Path(tmp) / "out.parquet", privacy=privacy, open_inputs=records, on_record=tick)
    seconds = time.time() - started
    print(json.dumps({"mode": mode, "records": summary["records_written"], "seconds": round(seconds, 1),
                      "records_per_s": round(summary["records_written"] / seconds, 1),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "replaced": summary["privacy"]["replaced"],
                      "source": source.name}), flush=True)


def measure(mode: str, count: int, progress_every: int, log: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(count), "--progress-every", str(progress_every)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    last: dict = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if log is not None:
            with open(log, "a") as handle:
                handle.write(line)
        last = json.loads(line)
    if proc.wait() != 0:
        raise SystemExit(f"{mode} {count}: child failed")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_300_000])
    parser.add_argument("--presidio-count", type=int, default=300)
    parser.add_argument("--progress-every", type=int, default=50_000)
    parser.add_argument("--log", type=Path, help="Append every progress line here (RSS along the way).")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.progress_every)
        return
    small = min(args.counts)
    reference = measure("read", small, args.progress_every, args.log)
    print(f"reference (read + write, privacy off), {small:,} records: {reference['records_per_s']:,.0f} rec/s, "
          f"peak RSS {reference['peak_rss_mb']:.0f} MB", flush=True)
    results = {}
    for count in args.counts:
        results[count] = measure("builtin", count, args.progress_every, args.log)
        r = results[count]
        print(f"built-in surrogates, {count:,} records: {r['records_per_s']:,.0f} rec/s "
              f"({r['records_per_s'] / reference['records_per_s']:.2f}x reference), peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
    big, base = max(results), min(results)
    if big != base:
        ratio = results[big]["peak_rss_mb"] / results[base]["peak_rss_mb"]
        print(f"peak RSS {big:,} / {base:,} records: {ratio:.3f} ({'within' if ratio <= 1.2 else 'OVER'} 20%)")
    if args.presidio_count:
        try:
            p = measure("presidio", args.presidio_count, 0, args.log)
        except SystemExit as exc:
            print(f"presidio: not measured ({exc})")
        else:
            print(f"built-in + Presidio surrogates, {args.presidio_count:,} records: {p['records_per_s']:,.1f} rec/s "
                  f"({p['records_per_s'] / reference['records_per_s']:.4f}x reference), peak RSS "
                  f"{p['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
