"""Human formatting of rates and intervals, shared by the terminal tables and the HTML report."""

from __future__ import annotations

import math
from typing import Any


def pct(x: float | str | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, str):  # "inf" from a JSON-safe gate check
        return x
    return f"{100 * x:.{digits}f}%"


def num(x: Any, digits: int = 2) -> str:
    if x is None or x == "inf":
        return "∞" if x == "inf" else "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def pvalue(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def interval(low: Any, high: Any, fmt: Any = pct) -> str:
    if low is None and high is None:
        return "-"
    return f"[{fmt(low)}, {fmt(high)}]"


def pp(x: float | None) -> str:
    """A difference of rates in percentage points."""
    if x is None:
        return "-"
    return f"{100 * x:+.2f} pp"
