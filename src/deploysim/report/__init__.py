"""Report: self-contained HTML report, local viewer, run comparison."""

from deploysim.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
