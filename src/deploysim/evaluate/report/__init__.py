"""Report: self-contained HTML report, local viewer, run comparison.

Loaded lazily: the report pulls in the statistics stack, which the CLI should not pay
for on every command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deploysim.evaluate.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'deploysim.evaluate.report' has no attribute {name!r}")
