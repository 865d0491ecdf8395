"""What the built-in recognizers flag in real conversations, for reading false positives by hand.

    python benchmarks/privacy_spans.py --out spans.json                    # counts per kind; all spans saved
    python benchmarks/privacy_spans.py --out new.json --against old.json   # and the spans old.json lacks
    python benchmarks/privacy_spans.py --sample 100                        # a seeded sample to read

Reads the real ShareGPT conversations (shared/data/sharegpt beside the checkout or above it, else the bundled 200),
runs the built-in recognizers (default regions) on every turn, and saves each span with
60 characters of context either side. docs/privacy.md gives the figures read from it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path

from deploysim.pipeline.privacy import recognizers as rk

ROOT = Path(__file__).resolve().parents[1]
REAL = next((p / "shared" / "data" / "sharegpt" / "conversations.json.gz" for p in ROOT.parents
             if (p / "shared" / "data" / "sharegpt" / "conversations.json.gz").is_file()), ROOT / "missing")
BUNDLED = ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write every span (with context) here as JSON")
    parser.add_argument("--against", type=Path, help="an earlier --out file: print the spans it lacks")
    parser.add_argument("--sample", type=int, default=0, help="print a seeded random sample of N spans")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = REAL if REAL.is_file() else BUNDLED
    data = json.loads(gzip.decompress(source.read_bytes()))
    finders = rk.builtin_finders(("US", "GB"))
    spans, chars = [], 0
    for conv in data:
        for t, turn in enumerate(conv.get("conversations", [])):
            text = turn.get("value") or ""
            chars += len(text)
            for s in rk.resolve_overlaps(rk.find_builtin(text, finders)):
                context = text[max(0, s.start - 60): s.end + 60].replace("\n", " ")
                spans.append([conv["id"], t, s.start, s.end, s.kind, s.text(text), context])
    kinds = Counter(s[4] for s in spans)
    print(f"{source.name}: {len(data):,} conversations, {chars:,} characters, {len(spans)} spans flagged")
    print("  " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    if args.out:
        args.out.write_text(json.dumps(spans, ensure_ascii=False))
    if args.against:
        old = {tuple(s[:4]) for s in json.loads(args.against.read_text())}
        new = [s for s in spans if tuple(s[:4]) not in old]
        gone = len(old - {tuple(s[:4]) for s in spans})
        print(f"\n{len(new)} spans new against {args.against.name}, {gone} gone:")
        for s in new:
            print(f"  {s[4]:14} {s[5]!r:28} | {s[6]}")
    if args.sample:
        print(f"\nseeded sample of {args.sample}:")
        for s in random.Random(args.seed).sample(spans, min(args.sample, len(spans))):
            print(f"  {s[4]:14} {s[5]!r:28} | {s[6]}")


if __name__ == "__main__":
    main()
