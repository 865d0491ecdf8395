"""Multiple-comparison control across behaviours (statsmodels' multipletests)."""

from __future__ import annotations

from collections.abc import Sequence

METHODS = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh", "none": None}


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values: ``holm`` (family-wise error) or ``bh`` (false discovery rate); ``none`` keeps them."""
    if method not in METHODS:
        raise ValueError(f"unknown multiple-testing method {method!r}; use one of {sorted(METHODS)}")
    if not pvalues:
        return []
    sm_method = METHODS[method]
    if sm_method is None:
        return [float(p) for p in pvalues]
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), method=sm_method)[1]]
