"""A per-behaviour correction of predicted rates, learnt from a backtest (``deploysim calibrate``).

Method: a **shrunk log-ratio bias**. For behaviour b with backtest cells i = 1..m, the
log error is ``d_i = log(actual_i / predicted_i)`` (Jeffreys-smoothed rates). The bias is
the mean of d shrunk towards 0 by ``prior_cells`` pseudo-cells of no bias:
``bias_b = sum(d_i) / (m + prior_cells)``; the corrected prediction is ``p * exp(bias_b)``.
Honesty about the correction's own error: the corrected interval is the raw interval
times ``exp(bias_b)``, widened by ``exp(+-z * s_b)`` where ``s_b`` is the residual spread of
the log errors after correction (pooled over behaviours when b has fewer than 2 cells,
with its own scatter added in quadrature otherwise, never narrower than the pooled one).
A behaviour the backtest never saw gets factor 1 and the pooled spread.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scipy.stats import norm

DEFAULT_PRIOR_CELLS = 1.0
METHOD = "shrunk log-ratio bias: bias = sum(log(actual/predicted)) / (cells + prior_cells)"


class CalibrationError(ValueError):
    pass


@dataclass
class BehaviourCorrection:
    log_bias: float
    factor: float
    cells: int
    residual_sd_log: float


@dataclass
class Calibration:
    behaviours: dict[str, BehaviourCorrection]
    pooled_sd_log: float
    prior_cells: float = DEFAULT_PRIOR_CELLS
    confidence: float = 0.95
    method: str = METHOD
    extra: dict[str, Any] = field(default_factory=dict)

    def correction(self, behaviour: str) -> BehaviourCorrection:
        return self.behaviours.get(behaviour) or BehaviourCorrection(0.0, 1.0, 0, self.pooled_sd_log)

    def apply(self, behaviour: str, rate: float | None, low: float | None,
              high: float | None) -> dict[str, Any]:
        """The calibrated rate and its (wider) interval; the raw values stay beside it."""
        c = self.correction(behaviour)
        if rate is None:
            return {"rate": None, "low": None, "high": None, "factor": c.factor, "cells": c.cells}
        spread = math.exp(float(norm.ppf(0.5 + self.confidence / 2)) * c.residual_sd_log)
        return {
            "rate": min(rate * c.factor, 1.0),
            "low": max(0.0, (low if low is not None else rate) * c.factor / spread),
            "high": min(1.0, (high if high is not None else rate) * c.factor * spread),
            "factor": c.factor, "cells": c.cells, "residual_sd_log": c.residual_sd_log,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "prior_cells": self.prior_cells, "confidence": self.confidence,
                "pooled_residual_sd_log": self.pooled_sd_log,
                "behaviours": {b: asdict(c) for b, c in sorted(self.behaviours.items())}, **self.extra}


def fit_calibration(cells: Iterable[tuple[str, float, float]], prior_cells: float = DEFAULT_PRIOR_CELLS,
                    confidence: float = 0.95) -> Calibration:
    """Fit from ``(behaviour, predicted, actual)`` triples of positive (smoothed) rates."""
    logs: dict[str, list[float]] = {}
    for behaviour, predicted, actual in cells:
        if predicted <= 0 or actual <= 0:
            raise CalibrationError("calibration needs positive (smoothed) rates")
        logs.setdefault(behaviour, []).append(math.log(actual / predicted))
    biases = {b: sum(d) / (len(d) + prior_cells) for b, d in logs.items()}
    residuals = [x - biases[b] for b, d in logs.items() for x in d]
    pooled = float(np.sqrt(np.mean(np.square(residuals)))) if residuals else 0.0
    out = {}
    for b, d in logs.items():
        own = float(np.std(np.asarray(d) - biases[b], ddof=1)) if len(d) >= 2 else 0.0
        out[b] = BehaviourCorrection(biases[b], math.exp(biases[b]), len(d), max(pooled, own))
    return Calibration(out, pooled, prior_cells, confidence)


def load_calibration(path: Path) -> Calibration:
    """A ``calibration.json`` written by ``deploysim calibrate``; errors name the file and field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    try:
        behaviours = {b: BehaviourCorrection(float(c["log_bias"]), float(c["factor"]), int(c["cells"]),
                                             float(c["residual_sd_log"]))
                      for b, c in raw["behaviours"].items()}
        return Calibration(behaviours, float(raw["pooled_residual_sd_log"]), float(raw.get("prior_cells", 1.0)),
                           float(raw.get("confidence", 0.95)), str(raw.get("method", METHOD)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CalibrationError(f"{path}: not a calibration file (field {exc})") from None
