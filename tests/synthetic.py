"""Run directories with known behaviour rates, built from the bundled real conversations.

For tests, benchmarks and demos of the statistics, gate and report: the conversation
text is real (the bundled ShareGPT sample), the verdicts are drawn at chosen rates
by a grader named ``synthetic`` so nobody mistakes them for a real grader's output.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from deploysim.core.schema import Message, ReplayPoint, Verdict
from deploysim.core.store import GENERATIONS, POINTS, write_verdicts

LANGUAGES = ("en", "de", "es", "fr")
SURFACES = ("chat", "api")


def bundled_conversations() -> list[dict]:
    path = resources.files("deploysim") / "data" / "sharegpt_sample.json.gz"
    with gzip.open(str(path), "rt", encoding="utf-8") as handle:
        return json.load(handle)


def _messages(conv: dict) -> list[Message]:
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return [Message(role=roles.get(t.get("from"), "user"), content=t.get("value") or "")  # type: ignore[arg-type]
            for t in conv.get("conversations", [])]


def _point_row(point: ReplayPoint) -> dict:
    """A row of POINTS.schema (written here so tests do not depend on the store's internals)."""
    return {
        "schema_version": point.schema_version, "point_id": point.point_id, "record_id": point.record_id,
        "turn_index": point.turn_index,
        "prefix_json": orjson.dumps([m.model_dump(exclude_defaults=True) for m in point.prefix]).decode(),
        "original_json": orjson.dumps(point.original.model_dump(exclude_defaults=True)).decode()
        if point.original else None,
        "tools_json": "[]", "metadata_json": orjson.dumps(point.metadata).decode(), "weight": point.weight,
    }


def build_run(run_dir: Path, behaviours: dict[str, tuple[float, float]], n_points: int = 400, seed: int = 0,
              points_per_conversation: int = 1, weights: Sequence[float] | None = None, agreement: float = 0.8,
              logged: bool = True, payloads: Sequence[str] = (), max_chars: int = 1500,
              undecided_rate: float = 0.0) -> Path:
    """Write points/generations/verdicts/config for ``n_points`` replay points.

    ``behaviours`` maps name -> (baseline rate, candidate rate); ``logged`` verdicts use the
    baseline rate. ``agreement`` is the chance a point's two verdicts share one uniform draw
    (paired data are positively correlated). ``payloads`` are planted round-robin in user
    prompts, replies, rationales and metadata, for escaping tests.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    convs = [c for c in bundled_conversations() if len(c.get("conversations", [])) >= 2]
    n_convs = max(1, n_points // points_per_conversation)
    payload_iter = iter(list(payloads) * 4)

    def plant(text: str) -> str:
        extra = next(payload_iter, None)
        return text if extra is None else f"{text}\n{extra}"

    point_rows, gen_rows, verdicts = [], [], []
    for i in range(n_points):
        conv_index = min(i // points_per_conversation, n_convs - 1)
        conv = convs[conv_index % len(convs)]
        messages = _messages(conv)
        cut = max((k for k, m in enumerate(messages) if m.role == "assistant"), default=len(messages) - 1)
        prefix = [m.model_copy(update={"content": (m.content or "")[:max_chars]}) for m in messages[:cut]] or [
            Message(role="user", content="")]
        prefix[-1] = prefix[-1].model_copy(update={"content": plant(prefix[-1].content or "")})
        original = messages[cut].content or ""
        conversation_id = f"{conv.get('id', conv_index)}#{conv_index}"
        point = ReplayPoint(
            point_id=f"p{i:06d}", record_id=f"{conversation_id}/{i % points_per_conversation}", turn_index=cut,
            prefix=prefix, original=Message(role="assistant", content=plant(original[:max_chars])),
            metadata={"conversation_id": conversation_id, "language": str(rng.choice(LANGUAGES)),
                      "surface": plant(str(rng.choice(SURFACES))) if payloads and i < 3 else str(rng.choice(SURFACES))},
            weight=float(weights[i]) if weights is not None else 1.0,
        )
        point_rows.append(_point_row(point))
        replies = {"baseline": original[: max_chars // 2], "candidate": " ".join(original.split(". ")[:2])[:max_chars]}
        for dep, text in replies.items():
            gen_rows.append({"schema_version": 1, "point_id": point.point_id, "deployment": dep, "sample_index": 0,
                             "text": plant(text), "tool_calls_json": "[]", "finish_reason": "stop",
                             "prompt_tokens": 10, "completion_tokens": 10, "latency_s": 0.1, "error": None,
                             "attempts": 1, "cached": False, "prompt_truncated": False})
        for behaviour, (p_base, p_cand) in behaviours.items():
            shared = rng.random()
            own = rng.random(3)
            draws = {"baseline": (shared if rng.random() < agreement else own[0], p_base),
                     "candidate": (shared if rng.random() < agreement else own[1], p_cand)}
            if logged:
                draws["logged"] = (shared if rng.random() < agreement else own[2], p_base)
            for dep, (u, p) in draws.items():
                if undecided_rate and rng.random() < undecided_rate:
                    verdicts.append(Verdict(point_id=point.point_id, deployment=dep, behaviour=behaviour,
                                            grader="synthetic", error="grader timed out"))
                    continue
                flagged = bool(u < p)
                verdicts.append(Verdict(
                    point_id=point.point_id, deployment=dep, behaviour=behaviour, grader="synthetic",
                    flagged=flagged, score=float(u),
                    rationale=plant(f"synthetic verdict: u={u:.3f} {'<' if flagged else '>='} rate {p}")))
    pq.write_table(pa.Table.from_pylist(point_rows, schema=POINTS.schema), run_dir / "points.parquet")
    pq.write_table(pa.Table.from_pylist(gen_rows, schema=GENERATIONS.schema), run_dir / "generations.parquet")
    write_verdicts(run_dir, verdicts)
    config = {"deployments": [{"name": "baseline", "model": "synthetic/baseline"},
                              {"name": "candidate", "model": "synthetic/candidate"}], "seed": seed}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "summary.json").write_text(json.dumps({"points": n_points, "synthetic": True}))
    return run_dir
