"""The pipeline end to end with the instant FAKE model (it measures the harness, not a model).

What is checked here is the harness itself: run-directory contents, reconciled
counts, rejects, sampling, cache, resume bookkeeping and the CLI contract.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.pipeline.config import SimConfig, load_config
from deploysim import run_simulation
from deploysim.core.store import RunStore, read_generations, read_points

SOURCES = Path(__file__).parent / "fixtures" / "sources"


def sim(tmp_path: Path, data: list[Path], **extra: object) -> SimConfig:
    return SimConfig(
        data=[str(p) for p in data],
        deployments=[{"name": "baseline", "model": "instant/echo"},
                     {"name": "candidate", "model": "instant/echo", "system_prompt": "replace",
                      "system_prompt_text": "Be terse."}],
        cache_path=str(tmp_path / "cache.sqlite"),
        **extra,
    )


def test_run_directory_holds_everything_and_counts_reconcile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                   '{"messages": [{"role": "ghost", "content": "boo"}]}\n{not json\n')
    data = sorted(SOURCES.glob("*.json*"))
    data.remove(SOURCES / "short_chats.jsonl")
    summary = run_simulation(sim(tmp_path, [*data, bad]), tmp_path / "run", show_progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "points.parquet", "generations.parquet", "rejects.jsonl", "summary.json",
                 "journal/generations.jsonl"):
        assert (run / name).exists(), name
    assert summary["records_read"] == 14 and summary["records_rejected"] == 2
    assert summary["records_read"] == summary["records_accepted"] + summary["records_rejected"]
    assert summary["reconciles"] and all(summary["checks"].values())
    assert summary["inputs_skipped"]  # the non-LLM OTel span is counted
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, "messages[0].role"), (3, None)]
    assert all(r["source_file"] == str(bad) for r in rejects)
    points = list(read_points(run))
    assert len(points) == summary["points"] == 12
    gens = list(read_generations(run))
    for name in ("baseline", "candidate"):
        mine = [g for g in gens if g.deployment == name]
        assert len(mine) == len(points) and all(g.ok and g.text for g in mine)
    logged = [g for g in gens if g.deployment == "logged"]
    assert len(logged) == summary["logged"]["with_reply"] == 11  # one OTel span had no reply
    # the candidate's system prompt policy reached the model (the fake echoes a digest of it)
    assert load_config(run / "config.yaml").deployments[1].system_prompt_text == "Be terse."


def test_sampling_is_seeded_uniform_and_weighted(tmp_path: Path) -> None:
    data = tmp_path / "many.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                                {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(200)))
    a = run_simulation(sim(tmp_path, [data], sample=25, seed=3), tmp_path / "a", show_progress=False)
    run_simulation(sim(tmp_path, [data], sample=25, seed=3), tmp_path / "b", show_progress=False)
    run_simulation(sim(tmp_path, [data], sample=25, seed=4), tmp_path / "c", show_progress=False)
    assert a["records_read"] == 200 and a["records_sampled"] == 25 and a["points"] == 25
    ids = {p: sorted(x.record_id for x in read_points(tmp_path / p)) for p in "abc"}
    assert ids["a"] == ids["b"] != ids["c"]
    assert {x.weight for x in read_points(tmp_path / "a")} == {200 / 25}


def test_second_run_is_served_from_cache_and_no_cache_bypasses(tmp_path: Path) -> None:
    data = [SOURCES / "sharegpt.json"]
    run_simulation(sim(tmp_path, data), tmp_path / "one", show_progress=False)
    again = run_simulation(sim(tmp_path, data), tmp_path / "two", show_progress=False)
    assert again["deployments"]["candidate"]["served_from_cache"] == 3
    assert again["deployments"]["candidate"]["this_attempt"]["calls_sent"] == 0
    fresh = run_simulation(sim(tmp_path, data, cache=False), tmp_path / "three", show_progress=False)
    assert fresh["deployments"]["candidate"]["this_attempt"]["calls_sent"] == 3


def test_resume_skips_journaled_calls_and_retries_errors(tmp_path: Path) -> None:
    data = [SOURCES / "sharegpt.json", SOURCES / "openai_chat.jsonl"]
    config = sim(tmp_path, data, cache=False)
    full = run_simulation(config, tmp_path / "run", show_progress=False)
    journal = tmp_path / "run" / "journal" / "generations.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    # keep the first 5 calls, turn one of them into an error, and cut the last line in half as a kill would
    kept = [json.loads(line) for line in lines[:5]]
    kept[1]["error"], kept[1]["text"] = "HTTP 503 from provider", None
    journal.write_bytes(b"".join(json.dumps(k).encode() + b"\n" for k in kept) + lines[5][: len(lines[5]) // 2])
    (tmp_path / "run" / "summary.json").unlink()
    resumed = run_simulation(config, tmp_path / "run", resume=True, show_progress=False)
    sent = sum(d["this_attempt"]["calls_sent"] for d in resumed["deployments"].values())
    kept_calls = sum(1 for k in kept if k["deployment"] != "logged" and not k["error"])
    assert sent == 2 * full["points"] - kept_calls  # only what was missing or had failed
    assert resumed["reconciles"] and resumed["resumed_calls_skipped"] == kept_calls
    rows = pq.read_table(tmp_path / "run" / "generations.parquet").to_pylist()
    assert not [r for r in rows if r["error"]]  # the error was retried and replaced
    assert len(rows) == 3 * full["points"]  # one row per (point, deployment), logged included


def test_run_lock_refuses_a_second_process(tmp_path: Path) -> None:
    import fcntl

    from deploysim.pipeline.engine import RunLockedError

    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunLockedError, match="another deploysim process"):
            run_simulation(sim(tmp_path, [SOURCES / "sharegpt.json"]), tmp_path / "run", show_progress=False)


def test_store_repairs_a_torn_journal_line(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    (tmp_path / "journal").mkdir()
    store.journal_path.write_bytes(b'{"point_id": "p", "deployment": "c", "sample_index": 0, "error": null}\n{"poi')
    store.open_attempt()
    store.close_attempt()
    assert store.journal_path.read_bytes().endswith(b"null}\n")
    assert store.done_keys() == {"p|c|0"}


def test_cli_contract_help_errors_and_config(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    for command in ("run", "demo", "check-data", "models"):
        assert command in result.output
    help_text = runner.invoke(main, ["run", "--help"]).output
    for option in ("--data", "--format", "--candidate", "--baseline", "--sample", "--turn", "--seed", "--out",
                   "--config", "--resume", "--no-cache"):
        assert option in help_text
    missing = runner.invoke(main, ["run", "--data", str(tmp_path / "nope.jsonl"), "--candidate", "instant/echo",
                                   "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output
    bad_model = runner.invoke(main, ["run", "--data", str(SOURCES / "sharegpt.json"), "--candidate", "gpt4",
                                     "--out", str(tmp_path / "y")])
    assert bad_model.exit_code == 2 and "<provider>/<model>" in bad_model.output
    (tmp_path / "sim.yaml").write_text(
        f"data: [{SOURCES / 'sharegpt.json'}]\nturn: all\ndeployments:\n"
        "  - {name: candidate, model: instant/echo, params: {max_tokens: 5}}\n"
        f"cache_path: {tmp_path / 'c.sqlite'}\n")
    ok = runner.invoke(main, ["run", "--config", str(tmp_path / "sim.yaml"), "--out", str(tmp_path / "cfg"),
                              "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "cfg" / "summary.json").read_text())["points"] == 4  # turn: all
    again = runner.invoke(main, ["run", "--config", str(tmp_path / "sim.yaml"), "--out", str(tmp_path / "cfg")])
    assert again.exit_code == 2 and "--resume" in again.output
    (tmp_path / "broken.yaml").write_text("deployments: [{name: x}]\ndata: []\n")
    broken = runner.invoke(main, ["run", "--config", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "z")])
    assert broken.exit_code == 2 and "deployments.0.model" in broken.output


def test_cli_run_subprocess_prints_summary_and_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "deploysim.cli.main", "run", "--data", str(SOURCES / "openai_chat.jsonl"),
         "--candidate", "instant/echo", "--baseline", "instant/echo", "--turn", "all", "--out", str(out),
         "--cache-path", str(tmp_path / "c.sqlite")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"run directory: {out}" in result.stdout
    assert "records read 3 = accepted 3 + rejected 0" in result.stdout
    assert "candidate" in result.stderr  # the progress bar, on stderr


def test_anthropic_is_imported_lazily_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploysim.core.models import get_model

    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ImportError, match=r"pip install 'deploysim\[anthropic\]'"):
        get_model("anthropic/claude-sonnet-4")


def test_anthropic_message_conversion_keeps_tool_turns() -> None:
    from deploysim.core.models.anthropic_api import to_anthropic
    from deploysim.core.schema import Message, ToolCall

    system, messages = to_anthropic([
        Message(role="system", content="sys"),
        Message(role="user", content="weather?"),
        Message(role="assistant", tool_calls=[ToolCall(id="t1", name="wx", arguments='{"city": "Oslo"}')]),
        Message(role="tool", tool_call_id="t1", content="rain"),
    ])
    assert system == "sys"
    assert messages[1]["content"][0] == {"type": "tool_use", "id": "t1", "name": "wx", "input": {"city": "Oslo"}}
    assert messages[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                        "content": "rain"}]}


def test_openai_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploysim.core.models import ModelIdError, get_model

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelIdError, match="OPENAI_API_KEY"):
        get_model("openai/gpt-4.1")


def test_run_with_graders_and_gate_sets_the_exit_code(tmp_path: Path) -> None:
    (tmp_path / "sim.yaml").write_text(
        f"data: [{SOURCES / 'openai_chat.jsonl'}, {SOURCES / 'sharegpt.json'}]\nturn: all\n"
        "deployments:\n  - {name: baseline, model: instant/echo}\n"
        "  - {name: candidate, model: instant/echo, system_prompt: replace, system_prompt_text: Be terse.}\n"
        "graders: [refusal, toxicity]\nprivacy: {mode: surrogate, presidio: false}\n"
        f"cache_path: {tmp_path / 'c.sqlite'}\n")
    (tmp_path / "pass.yaml").write_text("rules:\n  - {behaviour: over_refusal, max_rate: 1.0}\n")
    (tmp_path / "error.yaml").write_text("rules:\n  - {behaviour: no_such_behaviour, max_rate: 0.1}\n")
    runner = CliRunner()
    passed = runner.invoke(main, ["run", "--config", str(tmp_path / "sim.yaml"), "--out", str(tmp_path / "a"),
                                  "--gate", str(tmp_path / "pass.yaml"), "--quiet"])
    assert passed.exit_code == 0, passed.output
    assert json.loads((tmp_path / "a" / "gate.json").read_text())["verdict"] == "pass"
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["behaviours"]["rates"]["candidate"]["over_refusal"]["graded"] == summary["points"] == 9
    assert pq.read_table(tmp_path / "a" / "verdicts.parquet").num_rows > 0
    errored = runner.invoke(main, ["run", "--config", str(tmp_path / "sim.yaml"), "--out", str(tmp_path / "b"),
                                   "--gate", str(tmp_path / "error.yaml"), "--quiet"])
    assert errored.exit_code == 5 and "gate: error" in errored.output
