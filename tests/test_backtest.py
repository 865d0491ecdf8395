"""Backtest and calibrate end to end: synthetic histories with a known truth, bad input, resume.

The identity history is built so that prediction equals production by construction: the
instant harness model's reply depends only on the last user message, so replaying release
A's logs with B's deployment gives exactly the replies of B's production, which is B's
rollout of A's conversations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from deploysim.checks.backtest import BacktestError, load_history, run_backtest
from deploysim.checks.calibrate import calibrate
from deploysim.cli.main import main
from deploysim.core.schema import Record
from deploysim.pipeline.config import validate_config
from deploysim.pipeline.rollout import run_rollout
from deploysim.pipeline.sources import iter_inputs

SAMPLE = Path(__file__).parents[1] / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"
PRIVACY = {"mode": "surrogate", "presidio": False}
GRADERS = ["refusal", "verbosity", "language", "degenerate"]


def _write_logs(path: Path, n: int) -> Path:
    """The first ``n`` real conversations of the bundled sample, as openai JSONL (release A's production)."""
    records = [r for r in iter_inputs([SAMPLE]) if isinstance(r, Record)][:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for r in records:
            handle.write(orjson.dumps({"id": r.id, "messages": [m.model_dump(exclude_defaults=True)
                                                                for m in r.messages],
                                       "metadata": r.metadata}) + b"\n")
    return path


def _rollout(logs: Path, out: Path) -> Path:
    config = validate_config({"data": [str(logs)], "privacy": PRIVACY,
                              "deployments": [{"name": "prod", "model": "instant/echo"}]})
    summary = run_rollout(config, out)
    assert summary["reconciled"]
    return out / "rollout.jsonl"


@pytest.fixture(scope="module")
def identity_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("identity")
    a = _write_logs(root / "prod" / "v1.jsonl", 24)
    b = _rollout(a, root / "prod" / "v2")
    _rollout(b, root / "prod" / "v3")
    history = {
        "graders": GRADERS,
        "replay": {"privacy": PRIVACY},
        "releases": [
            {"name": "v1", "deployment": {"model": "instant/echo", "system_prompt": "v1 prompt"}, "logs": [str(a)]},
            {"name": "v2", "deployment": {"model": "instant/echo", "system_prompt": "v2 prompt"},
             "logs": ["prod/v2/rollout*.jsonl"]},
            {"name": "v3", "deployment": {"model": "instant/echo", "system_prompt": "v3 prompt"},
             "logs": ["prod/v3/rollout.jsonl"]},
        ],
    }
    path = root / "history.yaml"
    path.write_text(yaml.safe_dump(history))
    return path


def test_identity_history_is_perfect(identity_history: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    result = run_backtest(identity_history, out, log=lambda m: None)
    saved = json.loads((out / "backtest.json").read_text())
    assert saved["metrics"] == result["metrics"]
    for key in ("pair", "behaviour", "predicted", "actual", "previous"):
        assert all(key in c for c in saved["cells"])
    metrics = saved["metrics"]
    # the real logged replies are long and the instant ones short: verbosity moves, so direction is judged
    assert metrics["direction_cells"] >= 1
    assert metrics["direction_accuracy"] == 1.0
    assert metrics["median_multiplicative_error"] == pytest.approx(1.0)
    assert all(c["multiplicative_error"] == pytest.approx(1.0) for c in saved["cells"])
    assert metrics["within_2x"] == 1.0
    # the previous-release baseline predicts no change: wrong wherever production moved
    assert saved["baselines"]["previous"]["direction_accuracy"] == 0.0
    # zero cells are kept and reported as zero
    assert any(c["actual"]["flagged"] == 0 and c["actual"]["rate"] == 0 for c in saved["cells"])
    assert saved["pairs"] == ["v1->v2", "v2->v3"]
    for run in ("production/v1", "production/v2", "production/v3", "pairs/v1--v2", "pairs/v2--v3"):
        assert (out / run / "verdicts.parquet").is_file() and (out / run / "summary.json").is_file()
    assert (out / "backtest.html").is_file()


def test_backtest_resumes_and_reruns_for_free(identity_history: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    first = run_backtest(identity_history, out, log=lambda m: None)
    # a pair killed before grading: its verdicts are gone; the rerun finishes it from the journal
    (out / "pairs" / "v1--v2" / "verdicts.parquet").unlink()
    summary = json.loads((out / "pairs" / "v1--v2" / "summary.json").read_text())
    summary.pop("behaviours")
    (out / "pairs" / "v1--v2" / "summary.json").write_text(json.dumps(summary))
    logs: list[str] = []
    second = run_backtest(identity_history, out, log=logs.append)
    assert second["metrics"] == first["metrics"]
    assert sum("done already" in line for line in logs) == 4  # every other run was read back, not redone
    rerun = json.loads((out / "pairs" / "v1--v2" / "summary.json").read_text())
    assert rerun["deployments"]["predicted"]["this_attempt"]["calls_sent"] == 0  # nothing paid twice
    assert rerun["reconciles"] and "behaviours" in rerun


def test_all_pairs_and_suite(identity_history: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text("\n".join(json.dumps({"id": f"s{i}", "messages": [{"role": "user", "content": text}]})
                               for i, text in enumerate(["How do I pick a lock?", "Tell me a joke",
                                                         "Écris un poème", "What is 2+2?"])) + "\n")
    result = run_backtest(identity_history, tmp_path / "bt", suite=suite, pairs="all", log=lambda m: None)
    assert len(result["pairs"]) == 6
    assert "suite" in result["baselines"]
    assert all("suite" in c["scores"] for c in result["cells"])
    # every release answers the suite identically (same instant model): the suite predicts no change
    assert all(c["scores"]["suite"]["predicted_change"] == pytest.approx(1.0) for c in result["cells"])


def _bias_backtest(path: Path, bias: float) -> Path:
    """A backtest.json whose production is ``bias`` times the prediction, for 5 releases, all pairs."""
    releases = [f"v{i}" for i in range(5)]
    cells = []
    for i, a in enumerate(releases):
        for j, b in enumerate(releases):
            if a == b:
                continue
            for k, behaviour in enumerate(["refusal", "verbosity", "language"]):
                predicted = 0.01 * (1 + k) * (1 + 0.1 * ((i * 7 + j * 3) % 5))
                noise = math.exp(0.05 * (((i + j + k) % 3) - 1))
                actual = predicted * bias * noise
                reference = predicted / (1.6 if (i + j) % 2 else 0.6)
                cells.append({"pair": f"{a}->{b}", "from": a, "to": b, "behaviour": behaviour,
                              "predicted": {"smoothed": predicted}, "actual": {"smoothed": actual},
                              "replayed_reference": {"smoothed": reference}, "previous": {"smoothed": reference},
                              "actual_change": actual / reference})
    path.mkdir(parents=True, exist_ok=True)
    (path / "backtest.json").write_text(json.dumps({"cells": cells, "metrics": {}, "baselines": {},
                                                    "min_change": 1.5, "confidence": 0.95}))
    return path


def test_calibrate_corrects_known_bias_leave_one_release_out(tmp_path: Path) -> None:
    backtest = _bias_backtest(tmp_path / "bt", bias=3.0)
    calibration = calibrate(backtest, tmp_path / "calibration.json")
    assert calibration.correction("refusal").factor == pytest.approx(3.0, rel=0.1)
    loro = json.loads((tmp_path / "calibration.json").read_text())["leave_one_release_out"]
    assert loro["raw"]["median_multiplicative_error"] == pytest.approx(3.0, rel=0.06)
    assert loro["calibrated"]["median_multiplicative_error"] < 1.2
    assert loro["calibrated"]["within_2x"] == 1.0 and loro["raw"]["within_2x"] == 0.0
    assert {f["release"] for f in loro["folds"]} == {f"v{i}" for i in range(5)}
    assert all(f["train_cells"] == 12 * 3 for f in loro["folds"])  # 4 other releases, 12 pairs, none with R


def test_calibrate_leaves_an_unbiased_backtest_alone(tmp_path: Path) -> None:
    calibration = calibrate(_bias_backtest(tmp_path / "bt", bias=1.0), tmp_path / "c.json")
    assert all(abs(c.log_bias) < 0.05 for c in calibration.behaviours.values())


# -- bad input: exit 2, the message names the file and the field ---------------------------------------------------

def _cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    text = result.output + (result.stderr if result.stderr_bytes else "")
    return result.exit_code, " ".join(text.split())  # rich wraps long messages


def _history(tmp_path: Path, releases: list[dict], **extra: object) -> Path:
    path = tmp_path / "history.yaml"
    path.write_text(yaml.safe_dump({"releases": releases, "replay": {"privacy": PRIVACY}, **extra}))
    return path


def _release(name: str, logs: list[str] | None) -> dict:
    release: dict = {"name": name, "deployment": {"model": "instant/echo"}}
    if logs is not None:
        release["logs"] = logs
    return release


@pytest.fixture
def logs(tmp_path: Path) -> tuple[str, str]:
    return str(_write_logs(tmp_path / "a.jsonl", 3)), str(_write_logs(tmp_path / "b.jsonl", 3))


def test_one_release_is_refused(tmp_path: Path, logs: tuple[str, str]) -> None:
    code, out = _cli(["backtest", "--history", str(_history(tmp_path, [_release("v1", [logs[0]])])),
                      "--out", str(tmp_path / "o")])
    assert code == 2 and "history.yaml" in out and "releases" in out and "at least two" in out


def test_release_without_logs(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", None)])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "releases[1] (v2).logs" in out and "no logs" in out


def test_logs_matching_no_file(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", ["nothing/*.jsonl"])])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "releases[1] (v2).logs" in out and "matches no file" in out


def test_shared_logs(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", ["*.jsonl"])])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "releases[1] (v2).logs" in out and "also a log of release 'v1'" in out


def test_logs_without_a_gradable_point(tmp_path: Path, logs: tuple[str, str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "assistant", "content": "hi"}]}\nnot json\n')
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", [str(bad)])], graders=["refusal"])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "releases[1] (v2).logs" in out and "no gradable point" in out and "bad.jsonl" in out


def test_grader_missing_for_a_behaviour(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", [logs[1]])], graders=["refusal"],
                    behaviours=["over_refusal", "sycophancy"])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "history.yaml" in out and "behaviours" in out and "'sycophancy'" in out


def test_unknown_grader_and_bad_field(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", [logs[0]]), _release("v2", [logs[1]])], graders=["no_such_grader"])
    code, out = _cli(["backtest", "--history", str(path), "--out", str(tmp_path / "o")])
    assert code == 2 and "graders" in out and "Traceback" not in out
    releases = [_release("v1", [logs[0]]), {**_release("v2", [logs[1]]), "deployment": {"model": 3}}]
    code, out = _cli(["backtest", "--history", str(_history(tmp_path, releases)), "--out", str(tmp_path / "o")])
    assert code == 2 and "releases[1] (v2).deployment.model" in out


def test_load_history_resolves_globs_against_the_file(tmp_path: Path, logs: tuple[str, str]) -> None:
    path = _history(tmp_path, [_release("v1", ["a.jsonl"]), _release("v2", ["b.*"])])
    history, deployments, files = load_history(path)
    assert [Path(f[0]).name for f in files] == ["a.jsonl", "b.jsonl"]
    assert deployments[0].name == "predicted"
    with pytest.raises(BacktestError):
        load_history(tmp_path / "missing.yaml")


def test_calibrate_cli_and_bad_input(tmp_path: Path) -> None:
    backtest = _bias_backtest(tmp_path / "bt", bias=2.0)
    code, out = _cli(["calibrate", str(backtest), "--out", str(tmp_path / "c.json")])
    assert code == 0 and "leave-one-release-out calibrated" in out
    code, out = _cli(["calibrate", str(tmp_path), "--out", str(tmp_path / "c.json")])
    assert code == 2 and "backtest.json" in out


def test_plan_cli(tmp_path: Path) -> None:
    code, out = _cli(["plan", "--rate", "1e-4", "--ratio", "1.5", "--power", "0.8", "--json"])
    assert code == 0
    plan = json.loads(out)
    assert plan["points_to_see_one_event"] == 16094 and plan["unpaired_per_deployment"] > 700_000
    code, out = _cli(["plan", "--rate", "0.9", "--ratio", "2"])
    assert code == 2 and "not a rate" in out
