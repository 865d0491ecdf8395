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
    assert detected.accuracy > 0.95 and detected.p_value < 1e-6 and detected.ci_low > 0.9
    chance = c2st(real, same, groups, groups)
    assert 0.3 < chance.accuracy < 0.7 and chance.p_value > 0.01
    assert chance.ci_low < chance.accuracy < chance.ci_high and chance.n == 160 and chance.folds == 5


def test_realism_cli_pairs_real_and_simulated_rows(tmp_path: Path) -> None:
    from deploysim.cli.main import main

    rows = []
    for r in range(6):
        for c in range(6):
            real = f'{{"reservation_id": "R{r}{c}", "cabin": "economy"}}'
            rows.append({"record_id": f"t{r}", "call_index": c, "tool": "get_reservation_details",
                         "arguments": f'{{"reservation_id": "R{r}{c}"}}', "real": real,
                         "simulated": "I am a simulated tool output placeholder", "source": "simulator",
                         "error": None})
    sim = tmp_path / "sim.jsonl"
    sim.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    result = CliRunner().invoke(main, ["realism", "--real", str(sim), "--simulated", str(sim), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["paired"] and out["n_real"] == out["n_simulated"] == 36 and out["accuracy"] > 0.9
    text = CliRunner().invoke(main, ["realism", "--real", str(sim), "--simulated", str(sim)]).output
    assert "discriminator accuracy" in text and "p = " in text and "95% CI" in text


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
