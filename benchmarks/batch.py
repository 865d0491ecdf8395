"""Batch-API path overhead: a replay through a provider's batch API vs the same replay answered live.

Records are the bundled real ShareGPT sample, copied with new ids. Three runs of the
same points, in this one process:

- reference: ``instant/echo`` (a FAKE in-process model, answers instantly) answered
  live: what deploysim costs with no provider at all;
- batched: ``batch: true`` through tests/batch_server.py, the loopback fake of the
  OpenAI files + batches and Anthropic message-batches protocols (the real SDKs over
  HTTP on 127.0.0.1), split at an injected limit so several batches run, polling every
  0.2 s: plan, JSONL, upload, create, poll, download, map back, cache, journal;
- rerun: the batched run again from the call cache (nothing is sent).

The fake answers each batch at once (a real provider takes minutes to 24 h), so what
is measured is deploysim's own work per request and the HTTP transfers.

    python benchmarks/batch.py                    # 20,000 points, both providers
    python benchmarks/batch.py --points 2000 --provider openai
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_input(path: Path, n: int) -> None:
    from deploysim.cli.demo import sample_path

    sample = json.loads(gzip.decompress(sample_path().read_bytes()))
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    with open(path, "w") as out:
        for i in range(n):
            convo = sample[i % len(sample)]
            messages = [{"role": roles.get(t["from"], "user"), "content": t["value"]} for t in convo["conversations"]]
            messages = messages[:2] if len(messages) >= 2 else messages
            messages[0] = {**messages[0], "content": f"[{i}] {messages[0]['content']}"}  # every call distinct
            out.write(json.dumps({"id": f"b{i}", "messages": messages}) + "\n")


def run(config: dict[str, Any], out: Path) -> tuple[float, dict[str, Any]]:
    from deploysim.pipeline.config import validate_config
    from deploysim.evaluate.simulate import run_simulation

    started = time.perf_counter()
    summary = run_simulation(validate_config(config), out, show_progress=False)
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--provider", choices=["openai", "anthropic", "both"], default="both")
    parser.add_argument("--max-requests", type=int, default=5_000, help="injected per-batch limit (split)")
    args = parser.parse_args()

    from tests.batch_server import BatchServer

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["DEPLOYSIM_CACHE_DIR"] = str(tmp / "cache")
        data = tmp / "records.jsonl"
        make_input(data, args.points)
        base = {"data": [str(data)], "privacy": {"mode": "off"}, "turn": "last", "max_message_chars": 100_000}
        deployment = {"name": "candidate", "params": {"max_tokens": 16}}
        ref_s, ref = run({**base, "deployments": [{**deployment, "model": "instant/echo"}]}, tmp / "reference")
        points = ref["points"]
        rows = [("reference: instant/echo, live", ref_s, 1.0, "-")]
        providers = ["openai", "anthropic"] if args.provider == "both" else [args.provider]
        for provider in providers:
            with BatchServer(polls_to_finish=2) as server:
                if provider == "openai":
                    model = f"openai-compatible/echo@{server.openai_base_url}"
                else:
                    os.environ.update(ANTHROPIC_API_KEY="benchmark", ANTHROPIC_BASE_URL=server.root)
                    model = "anthropic/echo"
                config = {**base, "deployments": [{**deployment, "model": model, "batch": True}],
                          "batch": {"poll_s": 0.2, "poll_max_s": 0.2, "max_requests": args.max_requests}}
                batch_s, summary = run(config, tmp / f"batch-{provider}")
                d = summary["deployments"]["candidate"]
                assert d["generations_ok"] == points, d
                rows.append((f"{provider} batch API (loopback fake)", batch_s, batch_s / ref_s,
                             str(server.batches_created)))
                rerun_s, summary = run(config, tmp / f"rerun-{provider}")
                assert summary["deployments"]["candidate"]["served_from_cache"] == points
                rows.append((f"{provider} batch rerun, from cache", rerun_s, rerun_s / ref_s, "0 new"))
    print(f"{points} points, per-batch limit {args.max_requests}")
    print(f"| run | wall s | points/s | ratio to reference | batches |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, ratio, batches in rows:
        print(f"| {name} | {seconds:.2f} | {points / seconds:,.0f} | {ratio:.2f}x | {batches} |")


if __name__ == "__main__":
    main()
