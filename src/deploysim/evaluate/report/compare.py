"""``deploysim compare RUN_A RUN_B``: how two runs' rates differ (unpaired: Newcombe's hybrid score interval)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploysim.evaluate.stats.analysis import RunStats, analyse_run
from deploysim.evaluate.stats.rates import RateEstimate


@dataclass
class RateDiff:
    behaviour: str
    deployment: str
    rate_a: float | None
    rate_b: float | None
    diff: float | None  # b - a
    low: float | None
    high: float | None
    changed: bool  # interval excludes 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def newcombe(a: RateEstimate, b: RateEstimate) -> tuple[float, float, float] | None:
    """b - a with Newcombe's hybrid score interval from the two rates' own intervals."""
    if None in (a.rate, a.low, a.high, b.rate, b.low, b.high):
        return None
    pa, la, ua = a.rate, a.low, a.high
    pb, lb, ub = b.rate, b.low, b.high
    d = pb - pa  # type: ignore[operator]
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)  # type: ignore[operator]
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)  # type: ignore[operator]
    return d, low, high


def compare_stats(a: RunStats, b: RunStats) -> list[RateDiff]:
    out = []
    for behaviour in sorted(set(a.behaviours) | set(b.behaviours)):
        ra = a.behaviours.get(behaviour)
        rb = b.behaviours.get(behaviour)
        deps = sorted(set(ra.rates if ra else {}) | set(rb.rates if rb else {}))
        for dep in deps:
            ea = ra.rates.get(dep) if ra else None
            eb = rb.rates.get(dep) if rb else None
            res = newcombe(ea, eb) if ea and eb else None
            diff, low, high = res if res else (None, None, None)
            out.append(RateDiff(behaviour, dep, ea.rate if ea else None, eb.rate if eb else None, diff, low, high,
                                changed=bool(res and (res[1] > 0 or res[2] < 0))))
    return out


def config_differences(a: RunStats, b: RunStats) -> list[str]:
    from deploysim.core.store import read_config

    ca, cb = read_config(Path(a.run_dir)), read_config(Path(b.run_dir))
    models_a = {d.get("name"): d.get("model") for d in ca.get("deployments", []) if isinstance(d, dict)}
    models_b = {d.get("name"): d.get("model") for d in cb.get("deployments", []) if isinstance(d, dict)}
    lines = []
    for name in sorted(set(models_a) | set(models_b), key=str):
        if models_a.get(name) != models_b.get(name):
            lines.append(f"deployment {name}: {models_a.get(name)} -> {models_b.get(name)}")
    for key in sorted((set(ca) | set(cb)) - {"deployments"}):
        if ca.get(key) != cb.get(key):
            lines.append(f"{key}: {ca.get(key)!r} -> {cb.get(key)!r}")
    lines.append(f"points: {a.n_points} -> {b.n_points}")
    return lines


def compare_runs(run_a: Path, run_b: Path, confidence: float = 0.95) -> dict[str, Any]:
    a = analyse_run(Path(run_a), confidence=confidence, segment_by=[])
    b = analyse_run(Path(run_b), confidence=confidence, segment_by=[])
    return {"run_a": str(run_a), "run_b": str(run_b), "confidence": confidence,
            "differences": config_differences(a, b), "rates": [d.to_dict() for d in compare_stats(a, b)],
            "direction_a": {c.behaviour: c.direction for c in a.comparisons if c.reference == a.baseline},
            "direction_b": {c.behaviour: c.direction for c in b.comparisons if c.reference == b.baseline}}
