"""How good were the predictions? Smoothing, multiplicative error, direction and their aggregates.

Used by ``deploysim backtest`` (predicted vs production) and ``deploysim calibrate``.

* **Smoothing** (stated, never silent): a rate is smoothed by the Jeffreys posterior mean
  ``(k + 1/2) / (n + 1)`` before any ratio is taken, so a zero count gives a small
  positive rate instead of a division by zero. Zero cells are kept and reported as zero.
* **Multiplicative error**: ``max(p/a, a/p)`` on smoothed rates; 1.0 is perfect. When the
  prediction and production both saw zero events the error is 1.0 by definition (they agree
  at the resolution the samples have): smoothing two zero counts of different sample sizes
  would otherwise turn the ratio of sample sizes into an "error". Such cells are counted
  (``both_zero_cells``) and kept in every aggregate.
* **Direction**: judged only on cells whose actual change ``a_B / a_A`` is at least
  ``min_change`` (or at most ``1/min_change``); a prediction is right when its predicted
  change points the same way. A predicted change of exactly 1 calls no direction and
  counts as wrong (the "previous release" baseline always predicts 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_MIN_CHANGE = 1.5
DEFAULT_BOOT = 2000
SMOOTHING = "jeffreys: (k + 0.5) / (n + 1)"


def jeffreys(flagged: float, n: float) -> float:
    """The Jeffreys-smoothed rate; ``flagged`` and ``n`` may be weighted (fractional)."""
    if n < 0 or flagged < 0 or flagged > n:
        raise ValueError(f"need 0 <= flagged <= n, got flagged={flagged}, n={n}")
    return (flagged + 0.5) / (n + 1.0)


def multiplicative_error(predicted: float, actual: float) -> float:
    """``max(p/a, a/p)`` for positive (smoothed) rates."""
    if predicted <= 0 or actual <= 0:
        raise ValueError("multiplicative error needs positive rates: smooth them first")
    return max(predicted / actual, actual / predicted)


def change_direction(ratio: float, threshold: float = 1.0) -> int:
    """+1 up, -1 down, 0 when ``ratio`` is within ``[1/threshold, threshold]`` (exclusive of the ends)."""
    if ratio >= threshold and ratio > 1:
        return 1
    if ratio <= 1 / threshold and ratio < 1:
        return -1
    return 0


@dataclass
class Forecast:
    """One method's prediction for one cell: the rate it predicts and the change it implies."""

    rate: float  # smoothed predicted rate of release B
    change: float  # predicted r_B / r_A


def score_cell(forecast: Forecast, actual: float, actual_change: float,
               min_change: float = DEFAULT_MIN_CHANGE, both_zero: bool = False) -> dict[str, Any]:
    """Error and, where the actual change is big enough, whether the direction was right.

    ``both_zero``: the prediction and production both counted zero events (error 1.0).
    """
    moved = change_direction(actual_change, min_change)
    called = change_direction(forecast.change)
    return {
        "predicted": forecast.rate,
        "predicted_change": forecast.change,
        "both_zero": both_zero,
        "multiplicative_error": 1.0 if both_zero else multiplicative_error(forecast.rate, actual),
        "direction_cell": moved != 0,
        "direction_right": (called == moved) if moved != 0 else None,
    }


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    if n == 0:
        return None, None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def median_interval(values: Sequence[float], confidence: float = 0.95, n_boot: int = DEFAULT_BOOT,
                    seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the median (cells resampled with replacement)."""
    x = np.asarray(values, float)
    if len(x) == 0:
        return None, None
    if len(x) == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(x), (n_boot, len(x)))], axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(medians, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarise(scores: Iterable[dict[str, Any]], confidence: float = 0.95, n_boot: int = DEFAULT_BOOT,
              seed: int = 0) -> dict[str, Any]:
    """The aggregates of one method over cells scored by :func:`score_cell`."""
    scores = list(scores)
    errors = [s["multiplicative_error"] for s in scores]
    with_events = [s["multiplicative_error"] for s in scores if not s.get("both_zero")]
    judged = [s["direction_right"] for s in scores if s["direction_cell"]]
    right = sum(bool(j) for j in judged)
    low, high = wilson_interval(right, len(judged), confidence)
    med_low, med_high = median_interval(errors, confidence, n_boot, seed)
    return {
        "cells": len(scores),
        "both_zero_cells": sum(bool(s.get("both_zero")) for s in scores),
        "direction_cells": len(judged),
        "direction_right": right,
        "direction_accuracy": right / len(judged) if judged else None,
        "direction_accuracy_interval": [low, high],
        "median_multiplicative_error": float(np.median(errors)) if errors else None,
        "median_multiplicative_error_interval": [med_low, med_high],
        "within_2x": float(np.mean([e <= 2 for e in errors])) if errors else None,
        "within_10x": float(np.mean([e <= 10 for e in errors])) if errors else None,
        "max_multiplicative_error": max(errors) if errors else None,
        # the same, over the cells where the prediction or production saw at least one event
        "median_multiplicative_error_with_events": float(np.median(with_events)) if with_events else None,
        "median_multiplicative_error_with_events_interval": list(median_interval(with_events, confidence, n_boot,
                                                                                 seed)),
        "within_2x_with_events": float(np.mean([e <= 2 for e in with_events])) if with_events else None,
    }


def log_ratio(a: float, b: float) -> float:
    return math.log(a / b)
