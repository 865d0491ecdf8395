"""Grader-error correction: the Rogan-Gladen rate from a grader's validated sensitivity/specificity.

A grader with sensitivity se and specificity sp turns a true rate p into an observed
rate se*p + (1-sp)*(1-p); inverting gives p = (obs + sp - 1) / (se + sp - 1). The
interval propagates three uncertainties by bootstrap: the observed rate (cluster
bootstrap of the run) and se, sp (Beta posteriors from the validation counts, Jeffreys
prior), so a grader validated on 30 examples gives a honestly wide interval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploysim.evaluate.stats.paired import DEFAULT_BOOT, bootstrap_sums, percentile_interval


class ValidationError(ValueError):
    pass


@dataclass
class GraderValidation:
    behaviour: str
    grader: str
    sensitivity: float
    specificity: float
    n_positive: int
    n_negative: int


def load_validation(path: Path) -> dict[str, GraderValidation]:
    """``grader_validation.json``: ``{behaviour: {grader, sensitivity, specificity, n_positive, n_negative}}``."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read grader validation: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValidationError(f"{path}: expected an object keyed by behaviour")
    out: dict[str, GraderValidation] = {}
    for behaviour, item in raw.items():
        try:
            out[behaviour] = GraderValidation(
                behaviour=behaviour, grader=str(item.get("grader", "")),
                sensitivity=float(item["sensitivity"]), specificity=float(item["specificity"]),
                n_positive=int(item["n_positive"]), n_negative=int(item["n_negative"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValidationError(f"{path}: behaviour {behaviour!r}: {exc!r}") from exc
    return out


@dataclass
class CorrectedRate:
    rate: float | None
    low: float | None
    high: float | None
    sensitivity: float
    specificity: float
    grader: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rogan_gladen(observed: Any, sensitivity: Any, specificity: Any) -> np.ndarray:
    """Point estimate(s), clipped to [0, 1]; NaN where se + sp <= 1 (the grader is no better than chance)."""
    obs, se, sp = (np.asarray(v, float) for v in (observed, sensitivity, specificity))
    denom = se + sp - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(denom > 0, (obs + sp - 1) / denom, np.nan)
    return np.clip(p, 0.0, 1.0)


def corrected_rate(w: np.ndarray, wy: np.ndarray, validation: GraderValidation, confidence: float = 0.95,
                   n_boot: int = DEFAULT_BOOT, seed: int = 0) -> CorrectedRate:
    """Corrected rate from per-cluster sums of weights (w) and weight*outcome (wy)."""
    v = validation
    base = CorrectedRate(None, None, None, v.sensitivity, v.specificity, v.grader)
    if len(w) == 0 or w.sum() <= 0:
        base.note = "no verdicts"
        return base
    if v.sensitivity + v.specificity <= 1:
        base.note = "sensitivity + specificity <= 1: the grader is no better than chance; no correction"
        return base
    rng = np.random.default_rng(seed)
    observed = wy.sum() / w.sum()
    tw, twy = bootstrap_sums(rng, n_boot, w, wy)
    obs_reps = twy / tw
    se_reps = rng.beta(v.sensitivity * v.n_positive + 0.5, (1 - v.sensitivity) * v.n_positive + 0.5, n_boot)
    sp_reps = rng.beta(v.specificity * v.n_negative + 0.5, (1 - v.specificity) * v.n_negative + 0.5, n_boot)
    reps = rogan_gladen(obs_reps, se_reps, sp_reps)
    low, high = percentile_interval(reps, confidence)
    note = "" if observed >= 1 - v.specificity else "observed rate below the grader's false-positive rate: clipped to 0"
    return CorrectedRate(float(rogan_gladen(observed, v.sensitivity, v.specificity)), low, high,
                         v.sensitivity, v.specificity, v.grader, note)
