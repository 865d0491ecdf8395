"""summary.json: counts that reconcile (DESIGN rule 3), tokens, cache use and timing."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deploysim.core.models import Model
from deploysim.core.schema import LOGGED, Deployment, redact_credentials
from deploysim.core.store import GENERATIONS

if TYPE_CHECKING:
    from deploysim.pipeline.config import SimConfig


@dataclass
class _Tally:
    ok: int = 0
    errors: int = 0
    cached: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors_by_message: Counter[str] = field(default_factory=Counter)
    latencies: list[np.ndarray] = field(default_factory=list)


def _tally(path: Path) -> dict[str, _Tally]:
    """Per-deployment counts from generations.parquet, batch by batch (memory stays flat)."""
    tallies: dict[str, _Tally] = {}
    columns = ["deployment", "error", "cached", "prompt_tokens", "completion_tokens", "latency_s", "prompt_truncated"]
    for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=65536, columns=columns):
        for name in pc.unique(batch["deployment"]).to_pylist():
            rows = batch.filter(pc.equal(batch["deployment"], name))
            tally = tallies.setdefault(name, _Tally())
            failed = pc.is_valid(rows["error"])
            ok = rows.filter(pc.invert(failed))
            tally.errors += rows.num_rows - ok.num_rows
            tally.ok += ok.num_rows
            tally.errors_by_message.update(rows.filter(failed)["error"].to_pylist())
            tally.cached += int(pc.sum(ok["cached"]).as_py() or 0)
            tally.truncated += int(pc.sum(ok["prompt_truncated"]).as_py() or 0)
            tally.prompt_tokens += int(pc.sum(ok["prompt_tokens"]).as_py() or 0)
            tally.completion_tokens += int(pc.sum(ok["completion_tokens"]).as_py() or 0)
            called = ok.filter(pc.invert(ok["cached"]))["latency_s"]
            # to_pylist, not to_numpy: pyarrow's numpy path imports pandas (half a second)
            tally.latencies.append(np.asarray(called.to_pylist(), dtype=np.float32))
    return tallies


def _quantile(parts: list[np.ndarray], q: float) -> float | None:
    values = np.concatenate(parts) if parts else np.array([])
    return round(float(np.quantile(values, q)), 4) if values.size else None


def _cost(deployment: Deployment, tally: _Tally) -> dict[str, Any]:
    """The replies' cost in USD at the deployment's list prices and, when batched, at the batch price."""
    if deployment.price_input_per_mtok is None and deployment.price_output_per_mtok is None:
        return {}
    from deploysim.core.models.batch import BATCH_DISCOUNT

    live = (tally.prompt_tokens * (deployment.price_input_per_mtok or 0.0)
            + tally.completion_tokens * (deployment.price_output_per_mtok or 0.0)) / 1e6
    cost = {"cost_usd_live_price": round(live, 6), "cost_usd_batch_price": round(live * BATCH_DISCOUNT, 6)}
    return {"cost_usd": cost["cost_usd_batch_price"] if deployment.batch else cost["cost_usd_live_price"], **cost}


@dataclass
class InputCounts:
    records_read: int = 0
    records_accepted: int = 0
    records_rejected: int = 0
    records_sampled: int | None = None
    points: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)


def build_summary(root: Path, config: SimConfig, counts: InputCounts, models: dict[str, Model],
                  started: float, skipped_done: int) -> dict[str, Any]:
    tallies = _tally(GENERATIONS.path(root))
    deployments: dict[str, Any] = {}
    for deployment in config.deployments:
        tally = tallies.get(deployment.name, _Tally())
        stats = models[deployment.name].stats
        deployments[deployment.name] = {
            "model": redact_credentials(deployment.model),
            "system_prompt": deployment.system_prompt,
            "expected": counts.points * deployment.samples,
            "generations_ok": tally.ok,
            "generations_error": tally.errors,
            "errors_by_message": dict(tally.errors_by_message),
            "served_from_cache": tally.cached,
            "prompt_truncated": tally.truncated,
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "latency_p50_s": _quantile(tally.latencies, 0.5),
            "latency_p95_s": _quantile(tally.latencies, 0.95),
            **_cost(deployment, tally),
            "this_attempt": {"calls_sent": stats.calls, "retries": stats.retries, "cache_hits": stats.cache_hits,
                             "cache_misses": stats.cache_misses},
        }
    logged = tallies[LOGGED].ok if LOGGED in tallies else 0
    checks = {"records_read == records_accepted + records_rejected":
              counts.records_read == counts.records_accepted + counts.records_rejected}
    checks |= {f"{name}: points == generations_ok + generations_error":
               d["expected"] == d["generations_ok"] + d["generations_error"] for name, d in deployments.items()}
    return {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 2),
        **asdict(counts),
        "resumed_calls_skipped": skipped_done,
        LOGGED: {"with_reply": logged, "without_reply": counts.points - logged},
        "deployments": deployments,
        "reconciles": all(checks.values()),
        "checks": checks,
    }
