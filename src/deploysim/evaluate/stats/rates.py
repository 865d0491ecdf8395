"""Rates with intervals that respect sampling weights and clustering by conversation.

Why effective sample size: several replay points from one conversation are not
independent and sampling weights make some points count more. The ratio estimator
p = sum(w*y)/sum(w) has a cluster-robust (linearised) variance; the Wilson interval
evaluated at the matching effective sample size n_eff = p(1-p)/var keeps Wilson's
good small-sample behaviour and reduces to plain Wilson for a simple random sample.
With zero (or all) events the variance is 0, so n_eff falls back to Kish's effective
number of clusters (conservative: as if every point in a conversation agreed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_POWER = 0.8


def wilson(count: Any, nobs: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval, vectorised; counts and nobs may be fractional (effective)."""
    from statsmodels.stats.proportion import proportion_confint

    count, nobs = np.asarray(count, float), np.asarray(nobs, float)
    low, high = proportion_confint(count, nobs, alpha=1 - confidence, method="wilson")
    low = np.where(count <= 0, 0.0, np.clip(low, 0.0, 1.0))  # exact 0 at k=0, not float noise
    high = np.where(count >= nobs, 1.0, np.clip(high, 0.0, 1.0))
    return low, high


def zero_event_upper(n_eff: Any, confidence: float = 0.95) -> np.ndarray:
    """Exact one-sided upper bound when no event was seen: 1 - alpha^(1/n) (the "rule of three")."""
    n = np.maximum(np.asarray(n_eff, float), 1e-12)
    return 1.0 - (1.0 - confidence) ** (1.0 / n)


def detectable_rate(n_eff: Any, power: float = DEFAULT_POWER) -> np.ndarray:
    """Smallest true rate at which a sample this size shows at least one event with probability ``power``."""
    n = np.maximum(np.asarray(n_eff, float), 1e-12)
    return 1.0 - (1.0 - power) ** (1.0 / n)


def cluster_rate_interval(wy: np.ndarray, w: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Rate, n_eff and Wilson-at-n_eff interval from per-cluster sums (last axis = clusters).

    ``wy[..., c]`` = sum of weight*outcome in cluster c, ``w[..., c]`` = sum of weights.
    Leading axes are independent problems (used by the coverage simulations).
    """
    wy = np.asarray(wy, float)
    w = np.asarray(w, float)
    present = w > 0
    n_clusters = present.sum(axis=-1)
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, wy.sum(axis=-1) / total, np.nan)
        resid = wy - p[..., None] * w
        scale = np.where(n_clusters > 1, n_clusters / np.maximum(n_clusters - 1, 1), 1.0)
        var = scale * (resid**2).sum(axis=-1) / total**2
        kish = total**2 / (w**2).sum(axis=-1)
        degenerate = (var <= 1e-15) | (p <= 0) | (p >= 1)
        n_eff = np.where(degenerate, kish, p * (1 - p) / np.where(var > 0, var, 1.0))
    n_eff = np.where(np.isfinite(n_eff), n_eff, 0.0)
    low, high = wilson(np.nan_to_num(p) * n_eff, np.maximum(n_eff, 1e-12), confidence)
    return {"rate": p, "low": low, "high": high, "n_eff": n_eff, "var": np.where(degenerate, np.nan, var)}


@dataclass
class RateEstimate:
    """One deployment's rate of one behaviour; ``low``/``high`` bound the two-sided interval."""

    rate: float | None
    low: float | None
    high: float | None
    n: int  # points with a verdict
    n_clusters: int
    n_eff: float
    flagged: float  # raw count of flagged verdicts (mean over samples per point)
    method: str  # "wilson" or "wilson-ess"
    zero_events: bool
    upper_one_sided: float | None  # set with zero events: exact one-sided bound at the confidence
    detectable_rate: float | None  # set with zero events: smallest rate seen with DEFAULT_POWER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_simple(y: np.ndarray, w: np.ndarray, cluster: np.ndarray, n_clusters: int | None = None) -> bool:
    """Plain binomial sample: binary outcomes, equal weights, one point per cluster.

    ``n_clusters``: the number of distinct clusters when the caller knows it (saves a sort).
    """
    return bool(
        np.all((y == 0) | (y == 1))
        and np.allclose(w, w[0] if len(w) else 1.0)
        and (n_clusters if n_clusters is not None else len(np.unique(cluster))) == len(cluster)
    )


def dense(cluster: np.ndarray) -> tuple[np.ndarray, int]:
    """(codes 0..k-1, k) for cluster labels, equal to np.unique(return_inverse=True) codes.

    Integer labels (load_run's cluster codes) take O(n) with bincount instead of a sort:
    stats on a 1.3M-point run call this hundreds of times.
    """
    cluster = np.asarray(cluster)
    if len(cluster) and cluster.dtype.kind in "iu" and cluster.min() >= 0 and cluster.max() < 4 * len(cluster) + 1024:
        present = np.bincount(cluster) > 0
        remap = np.cumsum(present) - 1
        return remap[cluster], int(present.sum())
    _, codes = np.unique(cluster, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if len(codes) else 0


def aggregate(values: np.ndarray, cluster: np.ndarray, n_clusters: int | None = None) -> np.ndarray:
    return np.bincount(cluster, weights=values, minlength=n_clusters or 0)


def weighted_rate(y: np.ndarray, w: np.ndarray, cluster: np.ndarray, confidence: float = 0.95) -> RateEstimate:
    """Rate of ``y`` (0/1 or fraction of samples flagged; NaN = no verdict) with an interval."""
    y = np.asarray(y, float)
    keep = ~np.isnan(y) & (np.asarray(w) > 0)
    y, w, cluster = y[keep], np.asarray(w, float)[keep], np.asarray(cluster)[keep]
    n = int(len(y))
    if n == 0:
        return RateEstimate(None, None, None, 0, 0, 0.0, 0.0, "none", False, None, None)
    codes, n_clusters = dense(cluster)
    flagged = float(y.sum())
    if is_simple(y, w, codes, n_clusters):
        k = int(round(flagged))
        low, high = wilson(k, n, confidence)
        rate, n_eff, method = k / n, float(n), "wilson"
        low_f, high_f = float(low), float(high)
    else:
        res = cluster_rate_interval(aggregate(w * y, codes, n_clusters), aggregate(w, codes, n_clusters), confidence)
        rate, n_eff = float(res["rate"]), float(res["n_eff"])
        low_f, high_f, method = float(res["low"]), float(res["high"]), "wilson-ess"
    zero = flagged == 0
    return RateEstimate(
        rate=rate, low=low_f, high=high_f, n=n, n_clusters=n_clusters, n_eff=n_eff, flagged=flagged,
        method=method, zero_events=zero,
        upper_one_sided=float(zero_event_upper(n_eff, confidence)) if zero else None,
        detectable_rate=float(detectable_rate(n_eff)) if zero else None,
    )
