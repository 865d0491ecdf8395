"""Nominal 95% intervals cover the true rate in 93-97% of 1,000 simulated runs.

Vectorised: each simulation's per-cluster sums are drawn at once ((runs, clusters)
arrays) and passed through the same interval code the run analysis uses.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from deploysim.evaluate.stats.paired import paired_bootstrap
from deploysim.evaluate.stats.rates import cluster_rate_interval, wilson

RUNS = 1000
LOW, HIGH = 0.93, 0.97


def _coverage(low: np.ndarray, high: np.ndarray, truth: float) -> float:
    return float(np.mean((low <= truth) & (truth <= high)))


@pytest.mark.parametrize(("n", "p"), [(400, 0.05), (2000, 0.01), (200, 0.3)])
def test_plain_sample_coverage(n: int, p: float) -> None:
    """Wilson's exact coverage oscillates with (n, p) (e.g. 0.961 at n=400, p=0.07); the simulation
    must agree with the exact binomial coverage, and both lie in the band here."""
    rng = np.random.default_rng(11)
    k = rng.binomial(n, p, RUNS)
    low, high = wilson(k, np.full(RUNS, n))
    cov = _coverage(low, high, p)
    ks = np.arange(n + 1)
    exact_low, exact_high = wilson(ks, np.full(n + 1, n))
    exact = float(binom.pmf(ks, n, p)[(exact_low <= p) & (p <= exact_high)].sum())
    print(f"plain n={n} p={p}: coverage {cov:.3f} (exact {exact:.4f})")
    assert LOW <= cov <= HIGH
    assert abs(cov - exact) < 0.02


def test_weighted_sample_coverage() -> None:
    """Stratified sample: rare stratum (30% of traffic, rate 15%) oversampled to half the sample."""
    rng = np.random.default_rng(12)
    n_each = 500
    truth = 0.7 * 0.02 + 0.3 * 0.15
    w = np.r_[np.full(n_each, 0.7 / 0.5), np.full(n_each, 0.3 / 0.5)]
    y = np.c_[rng.random((RUNS, n_each)) < 0.02, rng.random((RUNS, n_each)) < 0.15].astype(float)
    res = cluster_rate_interval(w * y, np.broadcast_to(w, y.shape))
    cov = _coverage(res["low"], res["high"], truth)
    unweighted = float(np.mean(np.abs(y.mean(axis=1) - truth) < 0.01))
    print(f"weighted: coverage {cov:.3f}, mean n_eff {res['n_eff'].mean():.0f} of {2 * n_each}")
    assert LOW <= cov <= HIGH
    assert unweighted < 0.2  # the unweighted mean is far off: weights matter here


def _clustered(rng: np.random.Generator, n_clusters: int, mean: float, icc: float,
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster flagged counts for conversations whose rate varies (Beta) around ``mean``."""
    a = mean * (1 / icc - 1)
    b = (1 - mean) * (1 / icc - 1)
    sizes = rng.integers(size[0], size[1] + 1, n_clusters)
    rates = rng.beta(a, b, (RUNS, n_clusters))
    return rng.binomial(np.broadcast_to(sizes, rates.shape), rates).astype(float), sizes.astype(float)


def test_clustered_sample_coverage() -> None:
    rng = np.random.default_rng(13)
    counts, sizes = _clustered(rng, 300, 0.1, 0.2, (1, 8))
    res = cluster_rate_interval(counts, np.broadcast_to(sizes, counts.shape))
    cov = _coverage(res["low"], res["high"], 0.1)
    naive_low, naive_high = wilson(counts.sum(axis=1), np.full(RUNS, sizes.sum()))
    naive = _coverage(naive_low, naive_high, 0.1)
    print(f"clustered: coverage {cov:.3f} (ignoring clusters: {naive:.3f}); "
          f"mean n_eff {res['n_eff'].mean():.0f} of {sizes.sum():.0f} points")
    assert LOW <= cov <= HIGH
    assert naive < 0.9  # the test can tell: ignoring clustering under-covers


def test_weighted_and_clustered_sample_coverage() -> None:
    """Two strata of conversations sampled equally; weights undo the oversampling of the risky one."""
    rng = np.random.default_rng(14)
    ca, sa = _clustered(rng, 150, 0.2, 0.15, (1, 6))
    cb, sb = _clustered(rng, 150, 0.05, 0.15, (1, 6))
    wa, wb = 0.5, 2.0
    truth = (wa * sa.sum() * 0.2 + wb * sb.sum() * 0.05) / (wa * sa.sum() + wb * sb.sum())
    wy = np.c_[wa * ca, wb * cb]
    w = np.broadcast_to(np.r_[wa * sa, wb * sb], wy.shape)
    res = cluster_rate_interval(wy, w)
    cov = _coverage(res["low"], res["high"], truth)
    print(f"weighted+clustered: truth {truth:.4f}, coverage {cov:.3f}")
    assert LOW <= cov <= HIGH


def test_paired_bootstrap_coverage() -> None:
    """Paired cluster bootstrap: the interval for candidate - baseline covers the true difference."""
    rng = np.random.default_rng(15)
    n_clusters, boot = 500, 400
    sizes = rng.integers(1, 5, n_clusters).astype(float)
    base_rate, cand_rate = 0.10, 0.14
    covered_diff = covered_ratio = 0
    for _ in range(RUNS):
        # Conversation-level propensity shared by both deployments (pairing), then each answer.
        u = rng.beta(1.0, 9.0, n_clusters)  # mean 0.1, varies by conversation
        a = rng.binomial(sizes.astype(int), u).astype(float)
        b = rng.binomial(sizes.astype(int), np.clip(u * cand_rate / base_rate, 0, 1)).astype(float)
        res = paired_bootstrap(sizes, a, b, 0.95, boot, rng)
        true_diff = cand_rate - base_rate
        covered_diff += res["diff_low"] <= true_diff <= res["diff_high"]
        covered_ratio += res["ratio_low"] <= cand_rate / base_rate <= res["ratio_high"]
    cov_d, cov_r = covered_diff / RUNS, covered_ratio / RUNS
    print(f"paired bootstrap: difference coverage {cov_d:.3f}, ratio coverage {cov_r:.3f}")
    assert LOW <= cov_d <= HIGH
    assert LOW <= cov_r <= HIGH
