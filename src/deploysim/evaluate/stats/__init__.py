"""Statistics: weighted, clustered rates; paired comparisons; multiple testing; grader-error correction.

Names load on first use: scipy and statsmodels take a second to import, and CLI commands
that never compute a statistic should not wait for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    "BehaviourStats": "analysis", "RunStats": "analysis", "SegmentRow": "analysis", "analyse_run": "analysis",
    "behaviour_rates": "analysis",
    "CorrectedRate": "correction", "GraderValidation": "correction", "corrected_rate": "correction",
    "load_validation": "correction", "rogan_gladen": "correction",
    "adjust_pvalues": "multiple",
    "DOWN": "paired", "NO_CHANGE": "paired", "UP": "paired", "PairedComparison": "paired", "compare_paired": "paired",
    "RateEstimate": "rates", "cluster_rate_interval": "rates", "weighted_rate": "rates", "wilson": "rates",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(f"deploysim.evaluate.stats.{_HOME[name]}"), name)
    raise AttributeError(f"module 'deploysim.evaluate.stats' has no attribute {name!r}")
