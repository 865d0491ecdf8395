"""``deploysim calibrate``: learn a per-behaviour correction from a backtest, scored honestly.

The correction (a shrunk log-ratio bias per behaviour; see
:mod:`deploysim.evaluate.stats.calibration`) is fitted on every cell and written to
``calibration.json``. The improvement it reports is **leave-one-release-out**: for each
release R, the correction is fitted on the cells whose pair does not involve R at all,
and scored on the cells that predict R. Raw and calibrated predictions are summarised on
exactly those held-out cells, so a correction that only memorises cannot look good.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploysim.checks.backtest import read_backtest
from deploysim.evaluate.stats.calibration import DEFAULT_PRIOR_CELLS, Calibration, fit_calibration
from deploysim.evaluate.stats.forecast_error import Forecast, score_cell, summarise


def _triples(cells: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return [(c["behaviour"], c["predicted"]["smoothed"], c["actual"]["smoothed"]) for c in cells]


def _scored(cell: dict[str, Any], factor: float, min_change: float) -> dict[str, Any]:
    predicted = cell["predicted"]["smoothed"] * factor
    # a zero count stays a zero count after a multiplicative correction: both-zero cells still agree
    both_zero = bool(cell.get("scores", {}).get("deploysim", {}).get("both_zero", False))
    return score_cell(Forecast(predicted, predicted / cell["replayed_reference"]["smoothed"]),
                      cell["actual"]["smoothed"], cell["actual_change"], min_change, both_zero=both_zero)


def leave_one_release_out(cells: list[dict[str, Any]], min_change: float, prior_cells: float = DEFAULT_PRIOR_CELLS,
                          confidence: float = 0.95) -> dict[str, Any]:
    """Raw vs calibrated on held-out cells, one fold per release that some pair predicts."""
    raw, calibrated, folds = [], [], []
    for release in sorted({c["to"] for c in cells}):
        train = [c for c in cells if release not in (c["from"], c["to"])]
        test = [c for c in cells if c["to"] == release]
        if not train or not test:
            folds.append({"release": release, "train_cells": len(train), "test_cells": len(test),
                          "note": "no training cells without this release: not scored"})
            continue
        fit = fit_calibration(_triples(train), prior_cells, confidence)
        fold_raw = [_scored(c, 1.0, min_change) for c in test]
        fold_cal = [_scored(c, fit.correction(c["behaviour"]).factor, min_change) for c in test]
        raw += fold_raw
        calibrated += fold_cal
        folds.append({"release": release, "train_cells": len(train), "test_cells": len(test),
                      "raw_median_error": summarise(fold_raw, confidence, n_boot=200)["median_multiplicative_error"],
                      "calibrated_median_error":
                          summarise(fold_cal, confidence, n_boot=200)["median_multiplicative_error"]})
    return {"raw": summarise(raw, confidence), "calibrated": summarise(calibrated, confidence), "folds": folds}


def calibrate(backtest_dir: Path, out: Path, prior_cells: float = DEFAULT_PRIOR_CELLS) -> Calibration:
    """Fit on every cell of ``backtest_dir``, evaluate leave-one-release-out, write ``out``."""
    result = read_backtest(Path(backtest_dir))
    cells = result["cells"]
    confidence = float(result.get("confidence", 0.95))
    calibration = fit_calibration(_triples(cells), prior_cells, confidence)
    calibration.extra = {
        "backtest": str(backtest_dir),
        "cells": len(cells),
        "leave_one_release_out": leave_one_release_out(cells, float(result.get("min_change", 1.5)), prior_cells,
                                                       confidence),
    }
    Path(out).write_text(json.dumps(calibration.to_dict(), indent=1))
    return calibration
