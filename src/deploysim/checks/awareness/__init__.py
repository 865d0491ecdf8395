"""Evaluation awareness: does the model think the conversations it is shown are a test? (docs/awareness.md)

Importing this package stays light: statsmodels and scipy load only in ``checks.awareness.metrics``.
"""

from deploysim.checks.awareness.parse import ParsedAnswer, parse_answer
from deploysim.checks.awareness.probes import PROBE_FORMATS, QUESTIONS, Question, build_probe
from deploysim.evaluate.report.awareness import awareness_section

__all__ = ["PROBE_FORMATS", "QUESTIONS", "ParsedAnswer", "Question", "awareness_section", "build_probe",
           "parse_answer"]
