"""Forecast rare behaviours from per-query elicitation probabilities (Jones et al. 2025, arXiv 2502.16797).

Each replay point i has an elicitation probability p_i (from K graded samples, or from the
probability of a target reply). With ``psi = -log(-log p)`` the upper tail of psi's
distribution is, under a Gumbel-type (exponential) tail, a straight line on the log
survival scale: ``log S(psi) = slope * psi + intercept`` with ``slope < 0``. The line is
fitted by least squares on the top-k order statistics, placed at their expected log
survival (``digamma(j) - digamma(n + 1)`` for the j-th largest of n; the paper's
``log(j / n)`` biases the slope flat). Then, at deployment volume N:

* **worst-query probability**: the psi with ``S(psi) = 1/N`` -- the largest p among N
  queries (the mode of its distribution) -- back through ``p = exp(-exp(-psi))``;
* **expected count**: ``N * E[p]``, the expected number of flagged replies when each of N
  queries is answered once; E[p] takes the points below the top k as observed and the
  fitted tail above them (a closed form with the incomplete gamma function).

Intervals come from a bootstrap over queries (with a binomial redraw of each point's
flagged count when p came from K samples). Everything works on ``log p``, so targets with
p = 1e-300 do not underflow. Only numpy and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats

DEFAULT_TOP_K = 10
#: log p never reaches 0 (p = 1 has psi = +inf): the largest usable p is 1 - 1e-12.
LOGP_CEILING = -1e-12


class ForecastError(ValueError):
    """The data cannot support a forecast; the message says why and what would."""


def psi_of_logp(logp: Any) -> np.ndarray:
    """psi = -log(-log p), from log p; p = 0 (log p = -inf) gives psi = -inf."""
    logp = np.minimum(np.asarray(logp, dtype=float), LOGP_CEILING)
    with np.errstate(divide="ignore"):
        return -np.log(-logp)


def logp_of_psi(psi: Any) -> np.ndarray:
    return -np.exp(-np.asarray(psi, dtype=float))


def p_of_psi(psi: Any) -> np.ndarray:
    return np.exp(logp_of_psi(psi))


def zero_upper_bound(n_draws: int, confidence: float = 0.95) -> float:
    """Upper bound on a per-reply rate after 0 flagged in ``n_draws`` independent replies."""
    return float(1 - (1 - confidence) ** (1 / n_draws))


@dataclass
class TailFit:
    """The fitted line ``log S(psi) = slope * psi + intercept`` on the top k of n points."""

    slope: float
    intercept: float
    n: int
    k: int
    r2: float
    psi_top: np.ndarray = field(repr=False)
    #: E[p] over the points below the top k, as observed, times their share (n - k) / n.
    body_mean: float = 0.0

    def psi_at_volume(self, volume: Any) -> np.ndarray:
        return (-np.log(np.asarray(volume, dtype=float)) - self.intercept) / self.slope

    def worst_query_p(self, volume: Any) -> np.ndarray:
        """The largest elicitation probability expected among ``volume`` queries."""
        return p_of_psi(self.psi_at_volume(volume))

    def mean_p(self) -> float:
        """E[p]: observed below the k-th largest psi, fitted tail above it."""
        return self.body_mean + tail_mean(self.slope, self.intercept, float(self.psi_top[-1]))

    def expected_count(self, volume: Any) -> np.ndarray:
        return np.asarray(volume, dtype=float) * self.mean_p()

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "n": self.n, "top_k": self.k, "r2": self.r2,
                "psi_top": [float(x) for x in self.psi_top], "mean_p": self.mean_p()}


def tail_mean(slope: float, intercept: float, psi_k: float) -> float:
    """The integral of p over the fitted tail above ``psi_k``: E[p; psi > psi_k].

    With density ``-slope * exp(slope * psi + intercept)`` and u = exp(-psi) the integral is
    ``-slope * e^intercept * lower_gamma(-slope, exp(-psi_k))``.
    """
    s = -slope
    u_k = float(np.exp(-psi_k))
    with np.errstate(divide="ignore", over="ignore", under="ignore"):
        log_value = np.log(s) + intercept + special.gammaln(s) + np.log(special.gammainc(s, u_k))
    return float(np.exp(log_value)) if np.isfinite(log_value) else 0.0


def log_survival_positions(n: int, k: int) -> np.ndarray:
    """E[log S] at the j-th largest of n points, j = 1..k: digamma(j) - digamma(n + 1).

    The survival of the j-th largest is the j-th smallest of n uniforms, whose log has this
    mean exactly; the naive ``log(j / n)`` sits 0.58 too high at j = 1 and flattens the line
    (forecasts then overshoot by ~0.3 orders of magnitude, measured on an exact tail).
    """
    j = np.arange(1, k + 1)
    return special.digamma(j) - special.digamma(n + 1)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y = a x + b along the last axis; also R^2 (nan where x has no spread)."""
    xm, ym = x.mean(axis=-1, keepdims=True), y.mean(axis=-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=-1)
    sxy = ((x - xm) * (y - ym)).sum(axis=-1)
    syy = ((y - ym) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sxx > 0, sxy / sxx, np.nan)
        b = ym[..., 0] - a * xm[..., 0]
        r2 = np.where((sxx > 0) & (syy > 0), sxy**2 / (sxx * syy), np.nan)
    return a, b, r2


def fit_tail(logp: Any, top_k: int = DEFAULT_TOP_K) -> TailFit:
    """Fit the Gumbel tail on the top ``top_k`` of the points' log p; clear errors when it cannot."""
    logp = np.asarray(logp, dtype=float)
    n = logp.size
    if top_k < 2:
        raise ForecastError(f"top-k must be at least 2 to fit a line, got {top_k}")
    if n < top_k:
        raise ForecastError(f"{n} points with an elicitation probability: fewer than top-k = {top_k}; "
                            "replay more points or lower --top-k")
    psi = np.sort(psi_of_logp(logp))[::-1]
    top = psi[:top_k]
    positive = int(np.isfinite(psi).sum())
    if positive == 0:
        raise ForecastError(f"all {n} elicitation probabilities are 0: nothing to fit")
    if positive < top_k:
        raise ForecastError(f"only {positive} of {n} points have p > 0, fewer than top-k = {top_k}; "
                            "draw more samples per point (--samples) or lower --top-k")
    y = log_survival_positions(n, top_k)
    slope, intercept, r2 = (float(v) for v in _line(top, y))
    if not np.isfinite(slope) or slope >= 0:
        raise ForecastError(f"the top {top_k} values of psi are all equal (p = {float(p_of_psi(top[0])):.3g}): "
                            "no tail to fit; draw more samples per point or raise --top-k")
    body = p_of_psi(psi[top_k:])
    return TailFit(slope=slope, intercept=intercept, n=n, k=top_k, r2=r2, psi_top=top,
                   body_mean=float(body.sum() / n))


def _bootstrap_fits(logp: np.ndarray, top_k: int, replicates: int, rng: np.random.Generator,
                    counts: tuple[np.ndarray, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope, intercept and E[p] of ``replicates`` refits on resampled queries (nan where a refit fails)."""
    n = logp.size
    slopes = np.full(replicates, np.nan)
    intercepts = np.full(replicates, np.nan)
    means = np.full(replicates, np.nan)
    y = log_survival_positions(n, top_k)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        idx = rng.integers(0, n, size=(size, n))
        if counts is not None:  # the point's own sampling noise: redraw its flagged count
            flagged, k_samples = counts
            draws = rng.binomial(k_samples, flagged[idx] / k_samples)
            with np.errstate(divide="ignore"):
                lp = np.log(np.clip(draws / k_samples, 0, 1 - 0.5 / k_samples))
        else:
            lp = logp[idx]
        psi = -np.sort(-psi_of_logp(lp), axis=1)
        top = psi[:, :top_k]
        a, b, _ = _line(np.where(np.isfinite(top), top, np.nan), np.broadcast_to(y, top.shape))
        ok = np.isfinite(top).all(axis=1) & np.isfinite(a) & (a < 0)
        body = p_of_psi(psi[:, top_k:]).sum(axis=1) / n
        for j in np.flatnonzero(ok):
            slopes[start + j], intercepts[start + j] = a[j], b[j]
            means[start + j] = body[j] + tail_mean(float(a[j]), float(b[j]), float(top[j, -1]))
    return slopes, intercepts, means


@dataclass
class Forecast:
    fit: TailFit
    volumes: list[int]
    worst_query_p: list[float]
    worst_query_p_interval: list[tuple[float, float]]
    expected_count: list[float]
    expected_count_interval: list[tuple[float, float]]
    confidence: float
    replicates: int
    failed_replicates: int
    observed_max_p: float
    observed_mean_p: float
    diagnostics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {"volume": v, "worst_query_p": w, "worst_query_p_interval": list(wi),
             "expected_count": e, "expected_count_interval": list(ei)}
            for v, w, wi, e, ei in zip(self.volumes, self.worst_query_p, self.worst_query_p_interval,
                                       self.expected_count, self.expected_count_interval, strict=True)
        ]
        return {"per_volume": rows, "confidence": self.confidence, "bootstrap_replicates": self.replicates,
                "bootstrap_failed": self.failed_replicates, "observed_max_p": self.observed_max_p,
                "observed_mean_p": self.observed_mean_p, "fit": self.fit.to_dict(), "diagnostics": self.diagnostics}


def check_volumes(volumes: list[int], n: int) -> None:
    low = [v for v in volumes if v < n]
    if low:
        raise ForecastError(f"volume {low[0]} is below the {n} points already measured: a forecast is for "
                            "volumes larger than the sample (read smaller ones off the run directly)")


def diagnostics(logp: np.ndarray, fit: TailFit) -> dict[str, Any]:
    """How far to trust the line: R^2, slope stability across k, and the spread of the top psi."""
    out: dict[str, Any] = {"r2": fit.r2, "points": fit.n, "points_p_zero": int(np.isneginf(logp).sum())}
    stability: dict[str, float | None] = {}
    for k in sorted({max(2, fit.k // 2), fit.k * 2}):
        try:
            stability[str(k)] = fit_tail(logp, k).slope
        except ForecastError:
            stability[str(k)] = None
    out["slope_by_top_k"] = {str(fit.k): fit.slope, **stability}
    slopes = [abs(s) for s in out["slope_by_top_k"].values() if s is not None]
    out["slope_spread"] = float(max(slopes) / min(slopes)) if len(slopes) > 1 else None
    out["distinct_top_values"] = int(np.unique(np.round(fit.psi_top, 12)).size)
    warnings = []
    if out["distinct_top_values"] < fit.k:
        warnings.append(f"the top {fit.k} hold only {out['distinct_top_values']} distinct values (ties: with K "
                        "samples p moves in steps of 1/K); draw more samples per point")
    if fit.r2 < 0.9:
        warnings.append(f"the top {fit.k} are not on a line (R² {fit.r2:.2f}): the Gumbel-tail assumption is "
                        "doubtful here")
    if out["slope_spread"] is not None and out["slope_spread"] > 1.5:
        warnings.append(f"the slope changes {out['slope_spread']:.1f}x between top-k values: the forecast depends "
                        "on k")
    out["warnings"] = warnings
    return out


def forecast(logp: Any, volumes: list[int], top_k: int = DEFAULT_TOP_K, *, replicates: int = 1000,
             confidence: float = 0.95, seed: int = 0, counts: tuple[Any, int] | None = None) -> Forecast:
    """Fit the tail and forecast ``volumes``; ``counts = (flagged per point, K)`` when p came from sampling."""
    logp = np.asarray(logp, dtype=float)
    fit = fit_tail(logp, top_k)
    check_volumes(volumes, fit.n)
    rng = np.random.default_rng(seed)
    count_arrays = (np.asarray(counts[0], dtype=float), int(counts[1])) if counts is not None else None
    slopes, intercepts, means = _bootstrap_fits(logp, top_k, replicates, rng, count_arrays)
    ok = np.isfinite(slopes)
    alpha = (1 - confidence) / 2
    v = np.asarray(volumes, dtype=float)
    worst_boot = p_of_psi((-np.log(v)[None, :] - intercepts[ok, None]) / slopes[ok, None])
    count_boot = means[ok, None] * v[None, :]

    def interval(samples: np.ndarray) -> list[tuple[float, float]]:
        if samples.shape[0] == 0:
            return [(float("nan"), float("nan"))] * len(volumes)
        lo, hi = np.quantile(samples, [alpha, 1 - alpha], axis=0)
        return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]

    found = diagnostics(logp, fit)
    failed = int((~ok).sum())
    if failed > 0.05 * replicates:
        found["warnings"].append(f"{failed} of {replicates} bootstrap refits failed (ties or too few p > 0): the "
                                 "intervals rest on the rest")
    return Forecast(
        fit=fit, volumes=list(volumes), worst_query_p=[float(x) for x in fit.worst_query_p(v)],
        worst_query_p_interval=interval(worst_boot), expected_count=[float(x) for x in fit.expected_count(v)],
        expected_count_interval=interval(count_boot), confidence=confidence, replicates=replicates,
        failed_replicates=failed, observed_max_p=float(np.exp(np.max(logp))),
        observed_mean_p=float(np.mean(np.exp(logp))), diagnostics=found,
    )


def observed_worst(logp: np.ndarray, volume: int) -> float:
    """The whole set's empirical quantile at S = 1/volume: its ceil(n/volume)-th largest p."""
    rank = max(1, int(np.ceil(logp.size / volume)))
    return float(np.exp(np.sort(logp)[::-1][rank - 1]))


def validate_subset(logp: Any, subset: Any, top_k: int, volume: int | None = None) -> dict[str, float]:
    """Fit on ``subset`` only, forecast the worst-query p at ``volume`` (default: all points), compare."""
    logp = np.asarray(logp, dtype=float)
    volume = logp.size if volume is None else volume
    fit = fit_tail(logp[np.asarray(subset)], top_k)
    predicted = float(fit.worst_query_p(volume))
    observed = observed_worst(logp, volume)
    return {"volume": volume, "forecast_worst_query_p": predicted, "observed_worst_query_p": observed,
            "error_orders_of_magnitude": float(np.log10(predicted) - np.log10(observed))}


def validate(logp: Any, top_k: int = DEFAULT_TOP_K, *, fraction: float = 0.1, repeats: int = 20,
             seed: int = 0) -> dict[str, Any]:
    """Fit on random subsets of ``fraction`` of the points; forecast the whole set's top quantiles."""
    logp = np.asarray(logp, dtype=float)
    n = logp.size
    m = int(round(fraction * n))
    if m < top_k:
        raise ForecastError(f"a {fraction:.0%} subset of {n} points has {m} points, fewer than top-k = {top_k}; "
                            "raise --validate-fraction or lower --top-k")
    rng = np.random.default_rng(seed)
    grid = sorted({int(x) for x in np.unique(np.geomspace(m, n, num=4).round())} - {m} | {n})
    trials: list[dict[str, Any]] = []
    failures: list[str] = []
    for _ in range(repeats):
        subset = rng.choice(n, size=m, replace=False)
        try:
            trials.append({"volumes": [validate_subset(logp, subset, top_k, v) for v in grid]})
        except ForecastError as exc:
            failures.append(str(exc))
    if not trials:
        raise ForecastError(f"no {m}-point subset could be fitted: {failures[0]}")
    per_volume = []
    for j, volume in enumerate(grid):
        errors = np.array([t["volumes"][j]["error_orders_of_magnitude"] for t in trials])
        forecasts = np.array([t["volumes"][j]["forecast_worst_query_p"] for t in trials])
        per_volume.append({
            "volume": volume, "observed_worst_query_p": observed_worst(logp, volume),
            "forecast_worst_query_p_median": float(np.median(forecasts)),
            "forecast_worst_query_p_range": [float(forecasts.min()), float(forecasts.max())],
            "error_orders_of_magnitude_median": float(np.median(errors)),
            "abs_error_orders_of_magnitude_median": float(np.median(np.abs(errors))),
            "within_one_order": float(np.mean(np.abs(errors) <= 1)),
            "errors_orders_of_magnitude": [float(e) for e in errors],
        })
    whole = per_volume[-1]
    return {
        "subset_points": m, "subset_fraction": fraction, "points": n, "top_k": top_k, "repeats": repeats,
        "failed_repeats": len(failures), "failure_reasons": sorted(set(failures))[:3],
        "volume": n, "forecast_worst_query_p": whole["forecast_worst_query_p_median"],
        "observed_worst_query_p": whole["observed_worst_query_p"],
        "error_orders_of_magnitude": whole["error_orders_of_magnitude_median"],
        "abs_error_orders_of_magnitude": whole["abs_error_orders_of_magnitude_median"],
        "per_volume": per_volume,
    }


def sample_estimate(flagged: Any, draws: int, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Per-point p = flagged / K with a Jeffreys interval (Beta(1/2, 1/2) prior)."""
    flagged = np.asarray(flagged, dtype=float)
    alpha = 1 - confidence
    low = np.where(flagged > 0, stats.beta.ppf(alpha / 2, flagged + 0.5, draws - flagged + 0.5), 0.0)
    high = np.where(flagged < draws, stats.beta.ppf(1 - alpha / 2, flagged + 0.5, draws - flagged + 0.5), 1.0)
    return {"p": flagged / draws, "low": low, "high": high}


def logp_of_counts(flagged: Any, draws: int) -> np.ndarray:
    """log(flagged / K), with p = 1 held just below 1 (1 - 1/(2K)) so psi stays finite."""
    p = np.clip(np.asarray(flagged, dtype=float) / draws, 0, 1 - 0.5 / draws)
    with np.errstate(divide="ignore"):
        return np.log(p)
