"""Forecasting rare behaviours: the Gumbel-tail statistics on synthetic data with a known tail,
the validation mode against a hand computation, bad input, and the CLI on a sampled run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy import integrate, stats

from deploysim.cli.main import main
from deploysim.core.schema import Verdict
from deploysim.core.store import write_verdicts
from deploysim.evaluate.stats import forecast as F
from tests.synthetic import build_run

# psi = MU + Exponential(rate LAM): S(psi) = exp(-LAM (psi - MU)) exactly, so the true
# worst-query p at volume N is exp(-exp(-(MU + log N / LAM))).
MU, LAM = -6.0, 2.0


def true_worst(volume: float) -> float:
    return math.exp(-math.exp(-(MU + math.log(volume) / LAM)))


def exact_tail_logp(n: int, rng: np.random.Generator) -> np.ndarray:
    return F.logp_of_psi(MU + rng.exponential(1 / LAM, n))


def test_psi_transform_round_trips_and_keeps_tiny_p() -> None:
    p = np.array([1e-300, 1e-9, 0.01, 0.5, 0.99])
    psi = F.psi_of_logp(np.log(p))
    assert np.allclose(F.p_of_psi(psi), p, rtol=1e-9)
    assert np.all(np.diff(psi) > 0)  # monotone in p
    assert F.psi_of_logp(-np.inf) == -np.inf


def test_forecast_covers_the_known_tail_in_most_repeats() -> None:
    """1,000 points, forecast at 100,000 (100x beyond the data), 60 repeats.

    Measured (this test, and 100 repeats in the README): the 95% bootstrap interval holds the
    true worst-query p in 81% of repeats at top-k 10 (89% at top-k 30); median error 0.03
    orders of magnitude. The percentile bootstrap of extreme order statistics under-covers.
    """
    rng = np.random.default_rng(1)
    n, volume, truth = 1000, 100_000, true_worst(100_000)
    hits, errors = 0, []
    for r in range(60):
        result = F.forecast(exact_tail_logp(n, rng), [volume], 10, replicates=300, seed=r)
        low, high = result.worst_query_p_interval[0]
        hits += low <= truth <= high
        errors.append(math.log10(result.worst_query_p[0] / truth))
    coverage = hits / 60
    assert coverage >= 0.7, coverage
    assert abs(float(np.median(errors))) < 0.15
    # and the forecast really extrapolates: the truth lies far beyond anything observed at n
    assert truth > 30 * true_worst(n)


def test_expected_count_matches_the_analytic_mean_of_an_exact_tail() -> None:
    # E[p] under psi = MU + Exp(LAM), by numerical integration; the fitted body + tail estimate it.
    mean_p = integrate.quad(lambda x: math.exp(-math.exp(-x)) * LAM * math.exp(-LAM * (x - MU)), MU, 40)[0]
    rng = np.random.default_rng(7)
    estimates = [F.forecast(exact_tail_logp(5000, rng), [10**6], 20, replicates=50).expected_count[0] / 10**6
                 for _ in range(20)]
    assert abs(math.log10(float(np.median(estimates)) / mean_p)) < 0.1


def test_tail_mean_closed_form_equals_the_integral() -> None:
    slope, intercept, psi_k = -1.7, -9.0, -2.5
    numeric = integrate.quad(lambda x: math.exp(-math.exp(-x)) * -slope * math.exp(slope * x + intercept),
                             psi_k, 60)[0]
    assert F.tail_mean(slope, intercept, psi_k) == pytest.approx(numeric, rel=1e-6)


def test_plotting_positions_are_the_expected_log_survival_of_order_statistics() -> None:
    # The j-th largest of n has survival ~ Beta(j, n + 1 - j); E[log] = digamma(j) - digamma(n + 1).
    n = 50
    for j in (1, 3):
        expected = integrate.quad(lambda u, j=j: math.log(u) * stats.beta.pdf(u, j, n + 1 - j), 0, 1)[0]
        assert F.log_survival_positions(n, 3)[j - 1] == pytest.approx(expected, rel=1e-6)


def test_validation_error_matches_a_hand_computation() -> None:
    # 16 points; the subset is 4 of them, its top two at psi = -1 and -2 (top-k = 2).
    # Plotting positions for m = 4: digamma(1) - digamma(5) and digamma(2) - digamma(5), so the
    # slope is (digamma(1) - digamma(2)) / (-1 - (-2)) = -1 (digamma(2) = digamma(1) + 1).
    # Intercept: y1 = slope * psi1 + b -> b = digamma(1) - digamma(5) - 1.
    # Forecast at volume 16: psi* = (-log 16 - b) / slope = log 16 + b.
    psi = np.array([-1.0, -2.0, -3.0, -4.0] + [-2.5] * 11 + [0.5])  # the whole set's max: psi = 0.5
    logp = F.logp_of_psi(psi)
    digamma1 = -0.5772156649015329
    digamma5 = digamma1 + 1 + 1 / 2 + 1 / 3 + 1 / 4
    b = digamma1 - digamma5 - 1
    psi_star = math.log(16) + b
    forecast_p = math.exp(-math.exp(-psi_star))
    observed_p = math.exp(-math.exp(-0.5))
    result = F.validate_subset(logp, [0, 1, 2, 3], top_k=2)
    assert result["forecast_worst_query_p"] == pytest.approx(forecast_p, rel=1e-12)
    assert result["observed_worst_query_p"] == pytest.approx(observed_p, rel=1e-12)
    assert result["error_orders_of_magnitude"] == pytest.approx(math.log10(forecast_p / observed_p), rel=1e-12)


def test_validate_reports_over_repeats_and_volumes() -> None:
    logp = exact_tail_logp(2000, np.random.default_rng(3))
    v = F.validate(logp, 10, fraction=0.1, repeats=15, seed=0)
    assert v["subset_points"] == 200 and v["volume"] == 2000 and v["repeats"] == 15
    assert v["per_volume"][-1]["volume"] == 2000 and len(v["per_volume"][-1]["errors_orders_of_magnitude"]) == 15
    assert v["observed_worst_query_p"] == pytest.approx(float(np.exp(logp.max())))
    whole = v["per_volume"][-1]
    assert v["error_orders_of_magnitude"] == pytest.approx(float(np.median(whole["errors_orders_of_magnitude"])))
    assert whole["forecast_worst_query_p_range"][0] <= v["forecast_worst_query_p"]


@pytest.mark.parametrize(("logp", "top_k", "volumes", "message"), [
    (np.full(100, -np.inf), 10, [1000], "all 100 elicitation probabilities are 0"),
    (np.log(np.full(5, 0.1)), 10, [1000], "fewer than top-k = 10"),
    (np.r_[np.log([0.1, 0.2, 0.3]), np.full(50, -np.inf)], 10, [1000], "only 3 of 53 points have p > 0"),
    (np.log(np.full(50, 0.2)), 10, [1000], "all equal"),
    (np.log(np.linspace(0.01, 0.5, 50)), 10, [20], "volume 20 is below the 50 points"),
])
def test_bad_input_gets_a_clear_error(logp: np.ndarray, top_k: int, volumes: list[int], message: str) -> None:
    with pytest.raises(F.ForecastError, match=message):
        F.forecast(logp, volumes, top_k, replicates=50)


def test_sample_estimate_uses_jeffreys_intervals() -> None:
    est = F.sample_estimate([0, 3, 10], 10)
    assert list(est["p"]) == [0.0, 0.3, 1.0]
    assert est["low"][0] == 0 and est["high"][2] == 1
    assert est["low"][1] == pytest.approx(stats.beta.ppf(0.025, 3.5, 7.5))
    assert 0 < est["high"][0] < 0.25


# --- the CLI on a run made with --samples K --------------------------------------------------------

def sampled_run(tmp_path: Path, n: int = 400, k: int = 8, seed: int = 0, zero: bool = False) -> Path:
    """A run whose points have K graded samples each, flagged with p_i from an exact Gumbel tail."""
    run = build_run(tmp_path / "run", {}, n_points=n, seed=seed, logged=False)
    rng = np.random.default_rng(seed)
    verdicts = []
    for dep, shift in (("baseline", 0.0), ("candidate", 0.5)):
        p = np.zeros(n) if zero else F.p_of_psi(-3.0 + shift + rng.exponential(1.0, n))
        for i in range(n):
            for s in range(k):
                verdicts.append(Verdict(point_id=f"p{i:06d}", deployment=dep, sample_index=s, behaviour="harm",
                                        grader="synthetic", flagged=bool(rng.random() < p[i])))
    write_verdicts(run, verdicts)
    config = yaml.safe_load((run / "config.yaml").read_text())
    for d in config["deployments"]:
        d["samples"] = k
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_cli_forecast_writes_json_and_an_offline_page(tmp_path: Path) -> None:
    run = sampled_run(tmp_path)
    out = tmp_path / "fc"
    result = CliRunner().invoke(main, ["forecast", str(run), "--behaviour", "harm", "--volume", "100000",
                                       "--bootstrap", "100", "--validate", "--validate-repeats", "5",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "forecast.json").read_text())
    assert set(data["forecast"]) == {"baseline", "candidate"}
    assert data["elicitation"] == {"method": "samples", "samples_per_point": {"baseline": 8, "candidate": 8}}
    rows = data["forecast"]["candidate"]["per_volume"]
    assert [r["volume"] for r in rows] == [1000, 10000, 100000]
    for r in rows:
        lo, hi = r["worst_query_p_interval"]
        assert 0 < lo <= hi <= 1 and r["expected_count"] > 0
    assert rows[-1]["worst_query_p"] >= rows[0]["worst_query_p"]
    # the candidate's tail is shifted up by construction
    assert data["forecast"]["candidate"]["fit"]["mean_p"] > data["forecast"]["baseline"]["fit"]["mean_p"]
    v = data["validation"]["candidate"]
    assert v["volume"] == 400 and v["subset_points"] == 40 and "error_orders_of_magnitude" in v
    page = (out / "forecast.html").read_text()
    assert "Content-Security-Policy" in page and "<svg" in page and "<script" not in page
    assert "http://" not in page and "https://" not in page


def test_cli_bad_inputs_exit_2_with_a_message(tmp_path: Path) -> None:
    run = sampled_run(tmp_path, n=60, zero=True)
    runner = CliRunner()
    cases = [
        (["--behaviour", "harm", "--volume", "1000"], "none flagged"),
        (["--behaviour", "harm", "--volume", "1000"], "below 0.00622"),  # 1 - 0.05^(1/480)
        (["--behaviour", "nope", "--volume", "1000"], "behaviour 'nope' has no verdicts"),
        (["--behaviour", "harm", "--volume", "10"], "volume 10 is below the 60 points"),
        (["--volume", "1000"], "give --behaviour"),
    ]
    for args, message in cases:
        result = runner.invoke(main, ["forecast", str(run), *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    few = sampled_run(tmp_path / "few", n=8)
    result = runner.invoke(main, ["forecast", str(few), "--behaviour", "harm", "--volume", "1000"])
    assert result.exit_code == 2 and "fewer than top-k = 10" in result.output


def test_a_model_without_logprobs_gets_a_clear_error(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", {}, n_points=20)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["deployments"] = [{"name": "candidate", "model": "instant/echo"}]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["forecast", str(run), "--target-prefix", "I'm sorry", "--volume", "1000"])
    assert result.exit_code == 2
    assert "gives no token log-probabilities" in result.output


def test_targets_that_extend_another_are_dropped(tmp_path: Path) -> None:
    from deploysim.checks.forecast import read_targets

    path = tmp_path / "t.txt"
    path.write_text("I'm sorry\n\nI cannot\nI'm sorry, but\nI cannot\n")
    assert read_targets(None, path) == ["I'm sorry", "I cannot"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(F.ForecastError, match="holds no target"):
        read_targets(None, tmp_path / "empty.txt")


def test_run_samples_writes_k_replies_per_point(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    sources = Path(__file__).parent / "fixtures" / "sources"
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--data", str(sources / "openai_chat.jsonl"), "--candidate",
                                       "instant/echo", "--samples", "3", "--no-presidio", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "generations.parquet").to_pylist()
    candidate = [r for r in rows if r["deployment"] == "candidate"]
    points = {r["point_id"] for r in candidate}
    assert len(candidate) == 3 * len(points) and {r["sample_index"] for r in candidate} == {0, 1, 2}
    assert yaml.safe_load((out / "config.yaml").read_text().split("\n", 1)[1])["deployments"][0]["samples"] == 3


def test_completions_logprobs_are_summed_over_exactly_the_target_tokens() -> None:
    from deploysim.core.models import ModelCallError
    from deploysim.core.models.openai_api import _target_tail_logprob

    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    tokens = ["<|im_start|>", "user", "\n", "hi", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n",
              "I", "'m", " sorry", " for"]
    values = [None, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -0.25, -1.5, -0.5, -2.0, -0.75]
    scored = prompt + "I'm sorry"
    assert _target_tail_logprob(tokens, values, scored + " for", scored, "I'm sorry", "m", 1) == -4.0
    assert _target_tail_logprob(tokens, values, scored + " for", scored, "I'm sorry", "m", None) == -4.0
    # no generated token (the model stopped): the target ends the list
    assert _target_tail_logprob(tokens[:-1], values[:-1], scored, scored, "I'm sorry", "m", 0) == -4.0
    merged = [*tokens[:8], "\nI", "'m", " sorry", " for"]
    with pytest.raises(ModelCallError, match="merges them into one token"):
        _target_tail_logprob(merged, values[:12], scored + " for", scored, "I'm sorry", "m", 1)


def test_diagnostics_warn_when_the_tail_is_not_a_line() -> None:
    rng = np.random.default_rng(5)
    clean = F.forecast(exact_tail_logp(3000, rng), [10**5], 20, replicates=50).diagnostics
    assert clean["warnings"] == [] and 0.9 < clean["slope_spread"] < 1.5
    # a tail made of two populations: steep below, a flat cluster of 10 high points on top
    psi = np.r_[MU + rng.exponential(1 / LAM, 2990), np.full(5, -0.5), np.full(5, 0.5)]
    bent = F.forecast(F.logp_of_psi(psi), [10**5], 20, replicates=50).diagnostics
    assert bent["slope_spread"] > 1.5 and any("depends on k" in w for w in bent["warnings"])
    assert any("distinct values" in w for w in bent["warnings"])
