"""summary.json: counts that reconcile (DESIGN rule 3), tokens, cache use and timing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from deploysim.models import DeploymentCaller
from deploysim.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from deploysim.config import SimConfig
    from deploysim.engine.local import InputCounts


def build_summary(root: Path, config: SimConfig, counts: InputCounts, callers: dict[str, DeploymentCaller],
                  started: float, skipped_done: int) -> dict[str, Any]:
    table = pq.read_table(
        root / "generations.parquet",
        columns=["deployment", "error", "cached", "prompt_tokens", "completion_tokens", "latency_s",
                 "prompt_truncated"],
    )
    deployments: dict[str, Any] = {}
    for deployment in config.deployments:
        rows = table.filter(pc.equal(table["deployment"], deployment.name))
        errors = rows.filter(pc.is_valid(rows["error"]))
        ok = rows.filter(pc.is_null(rows["error"]))
        stats = callers[deployment.name].stats
        latencies = ok.filter(pc.invert(ok["cached"]))["latency_s"]
        deployments[deployment.name] = {
            "model": deployment.model,
            "system_prompt": deployment.system_prompt,
            "expected": counts.points * deployment.samples,
            "generations_ok": ok.num_rows,
            "generations_error": errors.num_rows,
            "errors_by_message": _value_counts(errors["error"]),
            "served_from_cache": int(pc.sum(ok["cached"]).as_py() or 0),
            "prompt_truncated": int(pc.sum(ok["prompt_truncated"]).as_py() or 0),
            "prompt_tokens": int(pc.sum(ok["prompt_tokens"]).as_py() or 0),
            "completion_tokens": int(pc.sum(ok["completion_tokens"]).as_py() or 0),
            "latency_p50_s": _quantile(latencies, 0.5),
            "latency_p95_s": _quantile(latencies, 0.95),
            "this_attempt": {
                "calls_sent": stats.calls,
                "retries": stats.retries,
                "cache_hits": stats.cache_hits,
                "cache_misses": stats.cache_misses,
            },
        }
    logged = table.filter(pc.equal(table["deployment"], "logged")).num_rows
    checks = {
        "records_read == records_accepted + records_rejected": counts.records_read
        == counts.records_accepted + counts.records_rejected,
        **{
            f"{name}: points == generations_ok + generations_error": d["expected"]
            == d["generations_ok"] + d["generations_error"]
            for name, d in deployments.items()
        },
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "complete",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(time.time() - started, 2),
        "records_read": counts.records_read,
        "records_accepted": counts.records_accepted,
        "records_rejected": counts.records_rejected,
        "records_sampled": counts.records_sampled,
        "rejects_by_reason": counts.rejects_by_reason,
        "points": counts.points,
        "resumed_calls_skipped": skipped_done,
        "logged": {"with_reply": logged, "without_reply": counts.points - logged},
        "deployments": deployments,
        "reconciles": all(checks.values()),
        "checks": checks,
    }


def _value_counts(column: Any) -> dict[str, int]:
    if len(column) == 0:
        return {}
    return {str(v["values"]): int(v["counts"]) for v in pc.value_counts(column).to_pylist()}


def _quantile(column: Any, q: float) -> float | None:
    if len(column) == 0:
        return None
    return round(float(pc.quantile(column, q=q)[0].as_py()), 4)
