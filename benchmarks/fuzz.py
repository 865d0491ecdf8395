"""Hostile inputs, counted: mutated records in every format, and nesting bombs under a memory limit.

    python benchmarks/fuzz.py                    # 10,000 mutated records (about 33,000 in all)
    python benchmarks/fuzz.py --mutated 1000     # quick

Builds files from the bundled real data (tests/reliability/mutate.py: OpenAI chat JSONL,
ShareGPT and tau-bench JSON arrays, OTel span JSONL, OTLP/JSON exports; a fifth gzipped),
reads each with the sources, and prints records tried, crashes, losses (pristine records
neither accepted nor covered by a counted reject), unlocated or input-quoting rejects, and
peak RSS. Then reads 20k- and 100k-deep nesting bombs in a child process capped at half a
GiB over its start-up address space, and prints that child's peak RSS. Run from the repository
root with the package importable (PYTHONPATH=src or an editable install).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.mutate import FORMATS, Outcome, build_files, judge_file  # noqa: E402
from tests.reliability.test_depth_bombs import BOMB_CHILD, write_bomb  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutated", type=int, default=10_000, help="at least this many mutated records")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        files = build_files(Path(tmp) / "fuzz", args.mutated, seed=args.seed)
        built = time.perf_counter() - started
        total = Outcome()
        per_format: dict[str, Outcome] = {fmt: Outcome() for fmt in FORMATS}
        started = time.perf_counter()
        for file in files:
            outcome = judge_file(file)
            total.add(outcome)
            per_format[file.fmt].add(outcome)
        read_s = time.perf_counter() - started
        fuzz_peak = peak_rss_mb()
        bombs = [write_bomb(Path(tmp), c, d) for c in ("json", "jsonl", "otlp") for d in (20_000, 100_000)]
        proc = subprocess.run([sys.executable, "-c", BOMB_CHILD, *(str(b[0]) for b in bombs)],
                              capture_output=True, text=True, timeout=600)
    print(f"files {total.files} (generated in {built:.1f} s, read in {read_s:.1f} s)")
    print(f"records tried {total.records}: mutated {total.mutated}, pristine {total.records - total.mutated}")
    print(f"read: accepted {total.accepted}, rejected {total.rejected}")
    print(f"crashes {len(total.crashes)}; files refused {len(total.refused_files)}; "
          f"losses {len(total.losses)} (+{total.lost_after_damage} counted as unreadable after damage); "
          f"unlocated rejects {len(total.unlocated)}; rejects quoting input {len(total.quoted)}")
    print(f"peak RSS (this process, fuzz): {fuzz_peak:.0f} MB")
    print("\nformat       files  records  mutated  accepted  rejected  crashes  losses")
    for fmt, o in per_format.items():
        print(f"{fmt:12} {o.files:5} {o.records:8} {o.mutated:8} {o.accepted:9} {o.rejected:9} "
              f"{len(o.crashes):8} {len(o.losses):7}")
    print("\nmutation                 count  still accepted (harmless to the record)")
    for name, count in sorted(total.by_mutation.items()):
        print(f"{name:24} {count:5}  {total.mutated_accepted.get(name, 0):5}")
    for label, items in (("crash", total.crashes), ("refused", total.refused_files), ("loss", total.losses),
                         ("unlocated", total.unlocated), ("quoted", total.quoted)):
        for item in items[:5]:
            print(f"  {label}: {item}")
    if proc.returncode != 0:
        print(f"\nnesting bombs: the child failed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return 1
    result = json.loads(proc.stdout)
    located = all(len(bad) == 1 and "nested deeper" in bad[0][1] and good == expect
                  for (path, expect, _), (good, bad, _mb) in zip(bombs, (result["files"][str(b[0])] for b in bombs)))
    print(f"\nnesting bombs (20k and 100k deep; JSON array, JSONL, OTLP export): {len(bombs)} files, "
          f"each one located reject and the good records kept: {located}; "
          f"peak RSS of the capped child {result['peak_mb']} MB ({result['baseline_mb']} MB after its imports)")
    failed = total.crashes or total.refused_files or total.losses or total.unlocated or total.quoted or not located
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
