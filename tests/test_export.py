"""``deploysim export``: Inspect eval logs (read back with inspect-ai's own reader) and flat JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.core.store import read_generations, read_points, read_verdicts

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def graded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    result = CliRunner().invoke(main, ["run", "--data", str(FIX / "sources" / "openai_chat.jsonl"), "--data",
                                       str(FIX / "formats" / "langsmith_runs.jsonl"), "--candidate", "instant/echo",
                                       "--baseline", "instant/echo", "--no-cache", "--quiet", "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["grade", str(run), "--graders", "refusal,action_claims"])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.slow  # importing inspect-ai alone takes seconds
def test_inspect_export_round_trips_through_inspect_ais_reader(graded_run: Path, tmp_path: Path) -> None:
    log_module = pytest.importorskip("inspect_ai.log")
    result = CliRunner().invoke(main, ["export", str(graded_run), "--format", "inspect", "--out",
                                       str(tmp_path / "sim.json")])
    assert result.exit_code == 0, result.output
    points = {p.point_id: p for p in read_points(graded_run)}
    gens = list(read_generations(graded_run))
    verdicts = [v for v in read_verdicts(graded_run) if v.flagged is not None]
    assert verdicts
    for deployment in ("baseline", "candidate", "logged"):
        log = log_module.read_eval_log(str(tmp_path / f"sim-{deployment}.json"))
        mine = {g.point_id: g for g in gens if g.deployment == deployment}
        assert log.status == "success" and len(log.samples) == len(mine) == len(points)
        assert log.eval.model == ("logged/production" if deployment == "logged" else "instant/echo")
        for sample in log.samples:
            point, gen = points[sample.id], mine[sample.id]
            assert [m.role for m in sample.input] == [m.role for m in point.prefix]
            assert sample.output.completion == (gen.text or "")
            expected = {v.behaviour: int(v.flagged) for v in verdicts
                        if v.point_id == sample.id and v.deployment == deployment}
            assert {k: s.value for k, s in sample.scores.items()} == expected
            logged_calls = [(c.id, c.name) for m in point.prefix for c in m.tool_calls]
            read_calls = [(c.id, c.function) for m in sample.input if m.role == "assistant" for c in m.tool_calls or []]
            assert read_calls == logged_calls
            assert sample.metadata["record_id"] == point.record_id
        with_tools = [s for s in log.samples if points[s.id].record_id == "run-llm-1"]
        assert with_tools and with_tools[0].input[3].tool_call_id == "call_ls_1"


def test_jsonl_export_one_row_per_reply(graded_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    result = CliRunner().invoke(main, ["export", str(graded_run), "--format", "jsonl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    gens = list(read_generations(graded_run))
    assert len(rows) == len(gens) and {r["deployment"] for r in rows} == {"baseline", "candidate", "logged"}
    flagged = {(v.point_id, v.deployment, v.behaviour) for v in read_verdicts(graded_run) if v.flagged}
    for row in rows:
        for key, value in row.items():
            if key.startswith("flag."):
                assert value == ((row["point_id"], row["deployment"], key[5:]) in flagged)


def test_export_of_a_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--format", "jsonl", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "points.parquet" in result.output and "Traceback" not in result.output
