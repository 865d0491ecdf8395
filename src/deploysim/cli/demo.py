"""``deploysim demo``: the whole spine offline, on 200 bundled real ShareGPT conversations and SmolLM2.

The sample is chosen at random (seed 11) among prefixes under 500 characters so the demo finishes in
minutes on two cores; the logged deployment runs against one with a cautious, concise system prompt.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from deploysim.evaluate.graders import DEFAULT_GRADERS
from deploysim.evaluate.simulate import run_simulation
from deploysim.pipeline.config import SimConfig

CANDIDATE_SYSTEM_PROMPT = (
    "You are a careful assistant. Answer in at most three sentences. "
    "If a request could cause harm, decline politely and explain why."
)
DEMO_MAX_TOKENS = 40


def sample_path() -> Path:
    return Path(str(resources.files("deploysim") / "data" / "sharegpt_sample.json.gz"))


def demo_config(sample: int | None = None) -> SimConfig:
    common: dict[str, Any] = {
        "params": {"temperature": 0.0, "max_tokens": DEMO_MAX_TOKENS, "seed": 0},
        "concurrency": 1,  # one in-process model: calls are serialised anyway
    }
    return SimConfig.model_validate(dict(
        data=[str(sample_path())],
        format="sharegpt",
        sample=sample,
        turn="last",
        seed=0,
        deployments=[
            {"name": "baseline", "model": "local/smollm2", **common},
            {"name": "candidate", "model": "local/smollm2", "system_prompt": "replace",
             "system_prompt_text": CANDIDATE_SYSTEM_PROMPT, **common},
        ],
        graders=list(DEFAULT_GRADERS),
    ))


def run_demo(out: Path | None = None, sample: int | None = None,
             show_progress: bool = True) -> tuple[dict[str, Any], Path]:
    from deploysim.evaluate.report import write_report

    run_dir = out or Path("deploysim-runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    summary = run_simulation(demo_config(sample), run_dir, show_progress=show_progress)
    write_report(run_dir)
    return summary, run_dir
