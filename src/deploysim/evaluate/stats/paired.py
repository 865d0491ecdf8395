"""Paired comparison of two deployments on the same replay points (DESIGN rule 6).

Baseline and candidate answer the same points, so the comparison resamples whole
conversations (clusters) with both answers attached: a paired cluster bootstrap for
the difference and ratio of rates. The test behind the direction call is McNemar's
exact test on discordant pairs for a plain sample (binary verdicts, equal weights,
one point per conversation); otherwise a cluster-robust paired z-test on the weighted
difference, since McNemar ignores weights and within-conversation correlation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from deploysim.evaluate.stats.rates import aggregate, dense, is_simple

UP, DOWN, NO_CHANGE = "up", "down", "no detectable change"
DEFAULT_BOOT = 2000
_CHUNK_CELLS = 4_000_000


@dataclass
class PairedComparison:
    """``subject`` against ``reference`` (e.g. candidate vs baseline) for one behaviour."""

    behaviour: str
    reference: str
    subject: str
    n_pairs: int
    n_clusters: int
    rate_reference: float | None
    rate_subject: float | None
    diff: float | None  # subject - reference
    diff_low: float | None
    diff_high: float | None
    ratio: float | None  # subject / reference; inf when the reference has no events
    ratio_low: float | None
    ratio_high: float | None
    only_reference: int  # discordant pairs: reference flagged, subject not
    only_subject: int
    mcnemar_p: float | None  # exact McNemar (binary verdicts only)
    p_value: float | None  # the p-value behind the direction call
    p_method: str
    p_adjusted: float | None = None
    direction: str = NO_CHANGE
    segment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("ratio", "ratio_low", "ratio_high"):
            if out[key] is not None and not np.isfinite(out[key]):
                out[key] = None if np.isnan(out[key]) else "inf"
        return out


#: Above this many clusters the bootstrap draws its replicates without resampling every cluster
#: (O(n_boot x clusters) is minutes at a million conversations): see _large_bootstrap_sums.
EXACT_MAX_CLUSTERS = 10_000
#: Clusters with an event up to which those are still resampled one by one in a large sample.
SPARSE_MAX_CLUSTERS = 5_000


def bootstrap_sums(rng: np.random.Generator, n_boot: int, *per_cluster: np.ndarray) -> list[np.ndarray]:
    """Cluster-bootstrap replicates of sums: for each array, ``n_boot`` resampled totals."""
    n_clusters = len(per_cluster[0])
    if n_clusters > EXACT_MAX_CLUSTERS:
        return _large_bootstrap_sums(rng, n_boot, *per_cluster)
    out: list[list[np.ndarray]] = [[] for _ in per_cluster]
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n_clusters, 1)))
    done = 0
    while done < n_boot:
        size = min(chunk, n_boot - done)
        picks = rng.integers(0, n_clusters, (size, n_clusters))  # clusters drawn with replacement
        for i, values in enumerate(per_cluster):
            out[i].append(np.asarray(values, float)[picks].sum(axis=1))
        done += size
    return [np.concatenate(parts) for parts in out]


def _large_bootstrap_sums(rng: np.random.Generator, n_boot: int, *per_cluster: np.ndarray) -> list[np.ndarray]:
    """The same replicates' distribution in O(clusters + n_boot x clusters-with-events).

    A bootstrap total is sum_c N_c v_c with N ~ Multinomial(C, 1/C). The first array
    (weights) is non-zero everywhere; the others (weighted outcomes) only in the s
    clusters with an event. Split the C draws: M ~ Binomial(C, s/C) land on event
    clusters and are resampled exactly, one by one; the other C - M draw weights
    from clusters without events, whose total is normal by the CLT at C > 50,000
    draws (exact when those weights are equal). When events are common too
    (s > 5,000), every total is drawn from the bootstrap's normal limit, the
    multivariate normal with mean C * mean(v) and covariance C * cov(v).
    """
    values = [np.asarray(v, float) for v in per_cluster]
    n_clusters = len(values[0])
    events = np.zeros(n_clusters, bool)
    for v in values[1:]:
        events |= v != 0
    s = int(events.sum())
    if s > SPARSE_MAX_CLUSTERS:
        stacked = np.vstack(values)
        mean = stacked.mean(axis=1)
        cov = np.atleast_2d(np.cov(stacked, bias=True))
        draws = rng.multivariate_normal(n_clusters * mean, n_clusters * cov, size=n_boot, method="eigh")
        return [draws[:, i] for i in range(len(values))]
    hit = [v[events] for v in values]
    quiet = values[0][~events]
    mu, sd = (float(quiet.mean()), float(quiet.std())) if len(quiet) else (0.0, 0.0)
    landed = rng.binomial(n_clusters, s / n_clusters, size=n_boot)
    out = [np.zeros(n_boot) for _ in values]
    for r, m in enumerate(landed.tolist()):
        picks = rng.integers(0, s, m) if s else np.zeros(0, np.int64)
        for i, v in enumerate(hit):
            out[i][r] = v[picks].sum()
    rest = n_clusters - landed
    out[0] += rest * mu + (rng.standard_normal(n_boot) * sd * np.sqrt(rest) if sd > 0 else 0.0)
    return out


def percentile_interval(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]
    if len(reps) == 0:
        return float("nan"), float("nan")
    alpha = 1 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(low), float(high)


def paired_bootstrap(w: np.ndarray, a: np.ndarray, b: np.ndarray, confidence: float = 0.95,
                     n_boot: int = DEFAULT_BOOT, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Percentile intervals for b-a and b/a, from per-cluster sums of weight (w), w*y_ref (a), w*y_sub (b)."""
    rng = rng or np.random.default_rng(0)
    tw, ta, tb = bootstrap_sums(rng, n_boot, w, a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (tb - ta) / tw
        ratio = tb / ta  # 0/0 -> nan (dropped), x/0 -> inf (kept: unbounded above)
    d_low, d_high = percentile_interval(diff, confidence)
    r_low, r_high = percentile_interval(ratio, confidence)
    return {"diff_low": d_low, "diff_high": d_high, "ratio_low": r_low, "ratio_high": r_high}


def cluster_z_pvalue(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p for "no difference" from the cluster-robust variance of the weighted difference."""
    total = w.sum()
    d = (b.sum() - a.sum()) / total
    resid = (b - a) - d * w
    c = len(w)
    var = (c / max(c - 1, 1)) * float((resid**2).sum()) / total**2
    if var <= 1e-18:
        return 1.0 if abs(d) < 1e-15 else 0.0
    return float(2 * norm.sf(abs(d) / np.sqrt(var)))


def mcnemar_exact(y_ref: np.ndarray, y_sub: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar p-value and the discordant counts (ref-only, subject-only)."""
    from statsmodels.stats.contingency_tables import mcnemar

    r, s = y_ref.astype(bool), y_sub.astype(bool)
    only_ref, only_sub = int((r & ~s).sum()), int((~r & s).sum())
    table = [[int((r & s).sum()), only_ref], [only_sub, int((~r & ~s).sum())]]
    return float(mcnemar(table, exact=True).pvalue), only_ref, only_sub


def compare_paired(behaviour: str, reference: str, subject: str, y_ref: np.ndarray, y_sub: np.ndarray,
                   w: np.ndarray, cluster: np.ndarray, confidence: float = 0.95, n_boot: int = DEFAULT_BOOT,
                   seed: int = 0) -> PairedComparison:
    """Compare on the points both deployments have a verdict for (NaN = none)."""
    y_ref, y_sub, w = np.asarray(y_ref, float), np.asarray(y_sub, float), np.asarray(w, float)
    keep = ~np.isnan(y_ref) & ~np.isnan(y_sub) & (w > 0)
    y_ref, y_sub, w, cluster = y_ref[keep], y_sub[keep], w[keep], np.asarray(cluster)[keep]
    n = int(len(w))
    if n == 0:
        return PairedComparison(behaviour, reference, subject, 0, 0, None, None, None, None, None, None, None,
                                None, 0, 0, None, None, "none")
    codes, c = dense(cluster)
    wc, ac, bc = aggregate(w, codes, c), aggregate(w * y_ref, codes, c), aggregate(w * y_sub, codes, c)
    rate_ref, rate_sub = float(ac.sum() / wc.sum()), float(bc.sum() / wc.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.float64(rate_sub) / np.float64(rate_ref))
    boot = paired_bootstrap(wc, ac, bc, confidence, n_boot, np.random.default_rng(seed))
    binary = bool(np.all(np.isin(y_ref, (0.0, 1.0))) and np.all(np.isin(y_sub, (0.0, 1.0))))
    mc_p: float | None = None
    only_ref = only_sub = 0
    if binary:
        mc_p, only_ref, only_sub = mcnemar_exact(y_ref, y_sub)
    if binary and is_simple(y_ref, w, codes, c):
        p_value, method = mc_p, "mcnemar-exact"
    else:
        p_value, method = cluster_z_pvalue(wc, ac, bc), "cluster-z"
    return PairedComparison(
        behaviour=behaviour, reference=reference, subject=subject, n_pairs=n, n_clusters=c,
        rate_reference=rate_ref, rate_subject=rate_sub, diff=rate_sub - rate_ref,
        diff_low=boot["diff_low"], diff_high=boot["diff_high"],
        ratio=None if np.isnan(ratio) else ratio,
        ratio_low=None if np.isnan(boot["ratio_low"]) else boot["ratio_low"],
        ratio_high=None if np.isnan(boot["ratio_high"]) else boot["ratio_high"],
        only_reference=only_ref, only_subject=only_sub, mcnemar_p=mc_p, p_value=p_value, p_method=method,
    )


def call_directions(comparisons: list[PairedComparison], confidence: float = 0.95,
                    method: str = "holm") -> list[PairedComparison]:
    """Adjust p-values across behaviours (Holm or Benjamini-Hochberg) and call each direction."""
    from deploysim.evaluate.stats.multiple import adjust_pvalues

    tested = [c for c in comparisons if c.p_value is not None]
    adjusted = adjust_pvalues([c.p_value for c in tested], method=method)  # type: ignore[misc]
    for comp, p_adj in zip(tested, adjusted, strict=True):
        comp.p_adjusted = p_adj
        if p_adj < 1 - confidence and comp.diff:
            comp.direction = UP if comp.diff > 0 else DOWN
        else:
            comp.direction = NO_CHANGE
    return comparisons
