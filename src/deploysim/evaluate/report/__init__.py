"""Report: self-contained HTML report, local viewer, run comparison (loaded lazily: the statistics stack)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deploysim.evaluate.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'deploysim.evaluate.report' has no attribute {name!r}")
