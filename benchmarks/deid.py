"""Built-in de-identification speed: CPU-seconds per record, this checkout against another revision's recognizers.

Both recognizer modules run in one process on the same real ShareGPT records (shared/data/sharegpt
beside or above the checkout, else the bundled sample), in alternating rounds, timed with
``time.process_time`` (CPU time: the machine may be shared), so the ratio is fair even when the
absolute numbers move. The other revision's ``recognizers.py`` is read with ``git show``.

    python benchmarks/deid.py                         # 3,000 records, against main
    python benchmarks/deid.py --records 1000 --against HEAD~3 --rounds 5
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from deploysim.pipeline.privacy import recognizers as current

ROOT = Path(__file__).resolve().parents[1]
REAL = next((p / "shared" / "data" / "sharegpt" / "conversations.json.gz" for p in ROOT.parents
             if (p / "shared" / "data" / "sharegpt" / "conversations.json.gz").is_file()), None)
BUNDLED = ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"
MODULE = "src/deploysim/pipeline/privacy/recognizers.py"


def load_revision(rev: str, module_path: str = MODULE) -> ModuleType:
    """``module_path`` (a file of this repository) as it was at git revision ``rev``, imported as ``<stem>_old``."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{module_path}"], check=True, capture_output=True,
                            text=True).stdout
    name = f"{Path(module_path).stem}_old"
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cpu_seconds(module: ModuleType, records: list[list[str]]) -> float:
    finders = module.builtin_finders(("US", "GB"))
    started = time.process_time()
    for texts in records:
        for text in texts:
            module.resolve_overlaps(module.find_builtin(text, finders))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--against", default="main", help="git revision whose recognizers are the old path")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source = REAL or BUNDLED
    data = json.loads(gzip.decompress(source.read_bytes()))
    records = [[t.get("value") or "" for t in c.get("conversations", [])] for c in data[: args.records]]
    chars = sum(len(t) for r in records for t in r) / len(records)
    old = load_revision(args.against)
    times: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        times["old"].append(cpu_seconds(old, records))
        times["new"].append(cpu_seconds(current, records))
    best = {k: min(v) for k, v in times.items()}  # the least disturbed round of each
    print(f"{source.name}: {len(records):,} records, {chars:,.0f} characters each, best of {args.rounds} rounds")
    for name in ("old", "new"):
        label = f"{args.against}" if name == "old" else "this checkout"
        print(f"  {label:>14}: {best[name] / len(records) * 1e6:7.1f} CPU-us/record, "
              f"{len(records) / best[name]:,.0f} records per CPU-second")
    print(f"  speed-up: {best['old'] / best['new']:.2f}x")


if __name__ == "__main__":
    main()
