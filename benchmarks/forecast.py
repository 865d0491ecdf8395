"""Forecast a rare refusal-onset behaviour of SmolLM2 on real prompts, and check it (issue 17).

Builds two runs from the shared data: hh-rlhf red-team first turns and real ShareGPT first
turns (at most 600 characters), replays them with ``local/smollm2`` (1-token replies: the run
only needs the points), scores each point's probability that the reply begins with a
refusal onset (``--target-file``), then forecasts with 10% subsets checked against the whole.

    python benchmarks/forecast.py --out /tmp/forecast-bench [--hh 1200 --sharegpt 400]

Needs /work/shared/data (or --data-dir) and the ``[local]`` extra. Everything it runs is a
``deploysim`` command, printed before it runs; the scores resume if the script is killed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import time
from pathlib import Path

TARGETS = ["I'm sorry", "I cannot", "I can't", "I apologize", "As an AI"]


def hh_records(path: Path, n: int, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    out = []
    for i, row in enumerate(rows):
        text = row["chosen"]
        if "\n\nHuman: " not in text or "\n\nAssistant:" not in text:
            continue
        human = text.split("\n\nHuman: ", 1)[1].split("\n\nAssistant:", 1)[0].strip()
        reply = text.split("\n\nAssistant:", 1)[1].split("\n\nHuman:", 1)[0].strip()
        if human and reply:
            out.append({"id": f"hh-{i}", "messages": [{"role": "user", "content": human},
                                                      {"role": "assistant", "content": reply}],
                        "metadata": {"source": "hh-rlhf"}})
    random.Random(seed).shuffle(out)
    return out[:n]


def sharegpt_records(path: Path, n: int, seed: int, max_chars: int = 600) -> list[dict]:
    out = []
    for chat in json.load(gzip.open(path, "rt")):
        turns = chat.get("conversations") or []
        if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            continue
        human, reply = (turns[0].get("value") or "").strip(), (turns[1].get("value") or "").strip()
        if 10 < len(human) <= max_chars and reply:
            out.append({"id": f"sg-{chat['id']}", "messages": [{"role": "user", "content": human},
                                                               {"role": "assistant", "content": reply}],
                        "metadata": {"source": "sharegpt"}})
    random.Random(seed).shuffle(out)
    return out[:n]


def sh(args: list[str]) -> None:
    print("$ " + " ".join(args), flush=True)
    started = time.time()
    subprocess.run(args, check=True)
    print(f"  ({time.time() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--hh", type=int, default=1200)
    parser.add_argument("--sharegpt", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=["all", "score", "fit", "table"], default="all")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    targets = out / "targets.txt"
    targets.write_text("\n".join(TARGETS) + "\n")
    deploysim = [sys.executable, "-m", "deploysim.cli"]
    suites = {
        "hh": hh_records(args.data_dir / "hh-rlhf-harmless/test.jsonl.gz", args.hh, args.seed),
        "sharegpt": sharegpt_records(args.data_dir / "sharegpt/conversations.json.gz", args.sharegpt, args.seed),
    }
    if args.stage == "table":
        table(out, list(suites))
        return
    for name, records in suites.items():
        run = out / f"run-{name}"
        if args.stage in ("all", "score"):
            data = out / f"{name}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in records))
            if not (run / "summary.json").is_file():
                if (run / "config.yaml").is_file():
                    sh([*deploysim, "run", "--resume", str(run), "--quiet"])
                else:
                    sh([*deploysim, "run", "--data", str(data), "--candidate", "local/smollm2", "--max-tokens", "1",
                        "--concurrency", "1", "--no-presidio", "--quiet", "--out", str(run)])
            # Scoring only (a huge volume so every deployment fits): the scores land in RUN/forecast/.
            sh([*deploysim, "forecast", str(run), "--target-file", str(targets), "--volume", "1000000",
                "--out", str(out / f"forecast-{name}"), "--validate"])
        if args.stage == "fit":
            sh([*deploysim, "forecast", str(run), "--target-file", str(targets), "--volume", "1000000",
                "--out", str(out / f"forecast-{name}"), "--validate"])
    print(f"wall time {time.time() - started:.0f} s", flush=True)
    table(out, list(suites))


def table(out: Path, suites: list[str], top_ks: tuple[int, ...] = (5, 10, 20)) -> None:
    """The README table, from the saved scores (no model call): per suite and for both together."""
    import numpy as np

    from deploysim.checks.forecast import from_targets, read_targets
    from deploysim.evaluate.stats import forecast as F

    targets = read_targets(None, out / "targets.txt")
    logps = {name: from_targets(out / f"run-{name}", targets, show_progress=False)[0].logp for name in suites}
    logps["both"] = np.concatenate([logps[name] for name in suites])
    print("| suite | points | observed max p | top-k | R² | 10% fit -> max p at all points (median of 20) | "
          "observed | error (orders of magnitude, median; range) | within 1 order | worst-query p at 10^6 [95%] "
          "| expected count at 10^6 [95%] |")
    print("|---" * 11 + "|")
    for name, logp in logps.items():
        for k in top_ks:
            f = F.forecast(logp, [10**6], k, replicates=1000, seed=0)
            v = F.validate(logp, k, fraction=0.1, repeats=20, seed=0)
            errors = v["per_volume"][-1]["errors_orders_of_magnitude"]
            lo, hi = f.worst_query_p_interval[0]
            clo, chi = f.expected_count_interval[0]
            print(f"| {name} | {logp.size} | {np.exp(logp.max()):.3g} | {k} | {f.fit.r2:.3f} | "
                  f"{v['forecast_worst_query_p']:.3g} | {v['observed_worst_query_p']:.3g} | "
                  f"{v['error_orders_of_magnitude']:+.2f} ({min(errors):+.2f} to {max(errors):+.2f}) | "
                  f"{100 * v['per_volume'][-1]['within_one_order']:.0f}% | {f.worst_query_p[0]:.3g} "
                  f"[{lo:.3g}, {hi:.3g}] | {f.expected_count[0]:.3g} [{clo:.3g}, {chi:.3g}] |", flush=True)
    for name, logp in logps.items():
        p = np.exp(logp)
        print(f"{name}: mean p {p.mean():.3g}; quantiles 50/90/99%: "
              + ", ".join(f"{q:.3g}" for q in np.quantile(p, [0.5, 0.9, 0.99])))


if __name__ == "__main__":
    main()
