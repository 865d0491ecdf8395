"""C2ST discriminator and the realism command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import orjson
from click.testing import CliRunner

from deploysim.checks.realism import c2st

FIX = Path(__file__).parent / "fixtures" / "agents"


def _texts(n: int, seed: int, template: str) -> list[str]:
    rng = random.Random(seed)
    return [template.format(a=rng.randint(0, 999), b=rng.choice(["SFO", "JFK", "LAX", "SEA"])) for _ in range(n)]


def test_c2st_detects_a_tell_and_not_noise() -> None:
    real = _texts(80, 1, '{{"flight": "HAT{a}", "origin": "{b}"}}')
    tell = _texts(80, 2, 'Output: {{"flight": "<FLIGHT_{a}>", "origin": "{b}"}}')
    same = _texts(80, 3, '{{"flight": "HAT{a}", "origin": "{b}"}}')
    groups = [f"g{i % 20}" for i in range(80)]
    detected = c2st(real, tell, groups, groups)
    # 20 trajectories: the cluster-robust p is far less extreme than an independent-outputs binomial (1e-40)
    assert detected.accuracy > 0.95 and detected.p_value < 1e-3 and detected.ci_low > 0.9
    assert detected.clusters == 20 and detected.ci_method.startswith("cluster bootstrap")
    chance = c2st(real, same, groups, groups)
    assert 0.3 < chance.accuracy < 0.7 and chance.p_value > 0.01
    assert chance.ci_low < chance.accuracy < chance.ci_high and chance.n == 160 and chance.folds == 5


def _sim_rows(simulated, holdout: str = "task", trajectories: int = 12) -> list[dict]:
    """Teacher-forced rows of two tools; ``simulated(r, c, real)`` gives the simulated column."""
    rows = []
    for r in range(trajectories):
        for c in range(6):
            if c % 2:
                tool, args, real = "get_item", f'{{"item_id": "R{r}{c}"}}', f'{{"item_id": "R{r}{c}", "kind": "basic"}}'
            else:
                tool, args, real = "log_event", f'{{"note": "n{c}"}}', f"Event n{c} logged at step {c}"
            rows.append({"record_id": f"t{r}", "task": f"task_id={r % 6}", "holdout": holdout, "call_index": c,
                         "tool": tool, "arguments": args, "real": real, "simulated": simulated(r, c, real),
                         "source": "simulator", "error": None})
    return rows


def test_realism_cli_reports_both_controls_and_refuses_a_weaker_holdout(tmp_path: Path) -> None:
    from deploysim.cli.main import main

    sim = tmp_path / "sim.jsonl"
    sim.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _sim_rows(lambda r, c, real: "simulated placeholder")))
    result = CliRunner().invoke(main, ["realism", "--simulated", str(sim), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)["c2st"]
    assert out["n"] == 144 and out["clusters"] == 12 and out["accuracy"] > 0.9
    assert out["ci_low"] <= out["accuracy"] <= out["ci_high"]
    assert out["positive_control"]["ok"] and out["positive_control"]["accuracy"] >= 0.75
    # every call has another trajectory's real output of the same call (log_event n0 in t0..t11)
    assert out["negative_control"]["ok"] and out["negative_control"]["ci_low"] <= 0.5 <= out["negative_control"]["ci_high"]
    assert set(out["by_tool"]) == {"get_item", "log_event"} and set(out["by_source"]) == {"simulator"}
    text = CliRunner().invoke(main, ["realism", "--simulated", str(sim)]).output
    assert "discriminator accuracy" in text and "positive control" in text and "caught" in text
    weak = tmp_path / "weak.jsonl"
    weak.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _sim_rows(lambda r, c, real: real, "trajectory")))
    refused = CliRunner().invoke(main, ["realism", "--simulated", str(weak)])
    assert refused.exit_code == 2 and "holdout trajectory" in refused.output and "Traceback" not in refused.output
    assert CliRunner().invoke(main, ["realism", "--simulated", str(weak), "--holdout", "trajectory"]).exit_code == 0


def test_realism_says_when_the_positive_control_is_not_caught(tmp_path: Path) -> None:
    """A discriminator that cannot tell shuffled outputs of other tools makes the realism number meaningless."""
    from deploysim.checks.realism.protocol import Unit, c2st_controls, meaningless_reason

    # every output is the same text whatever the tool: shuffling across tools changes nothing, so
    # the positive control cannot be caught and the report must say the number means nothing
    units = [Unit(f"t{r}", c, f"tool{c % 3}", "{}", "ok", "ok", "simulator") for r in range(10) for c in range(6)]
    controls = c2st_controls(units, units)
    assert controls["positive_control"]["ok"] is False
    assert "meaningless" in meaningless_reason(controls)
    assert controls["negative_control"]["ok"] is True  # identical real outputs of the same calls: chance


def test_teacher_forcing_never_replays_the_call_itself(tmp_path: Path) -> None:
    from deploysim.agents.run import AgentRunConfig
    from deploysim.checks.realism.teacher import simulate_tools

    out = tmp_path / "sim.jsonl"
    config = AgentRunConfig(data=[str(FIX / "tau_trajectories.json.gz")], candidate="none", simulator=None,
                            affordances="all", connectors=str(FIX / "tau_airline_connectors.yaml"),
                            privacy={"mode": "off"})
    result = simulate_tools(config, out)
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert result["calls"] == len(rows) > 0
    assert "replay" not in {r["source"] for r in rows}
    connector = [r for r in rows if r["source"] == "connector"]
    assert connector and all(r["simulated"] for r in connector)
    # no simulator configured: unanswerable calls are errors, never invented
    assert all(r["simulated"] is None for r in rows if r["error"])
    again = simulate_tools(config, out)  # resumable: the journal already holds every trajectory
    assert again["by_source"] == result["by_source"]
