"""Hand-computed small cases: smoothing, multiplicative error, direction, aggregates, floor, plan, calibration."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize

from deploysim.evaluate.stats.calibration import fit_calibration
from deploysim.evaluate.stats.floor import (
    detection_floor,
    min_detectable_rate,
    min_detectable_ratio,
    paired_points,
    plan_study,
    points_to_see_one,
    unpaired_points,
)
from deploysim.evaluate.stats.forecast_error import (
    Forecast,
    change_direction,
    jeffreys,
    median_interval,
    multiplicative_error,
    score_cell,
    summarise,
)


def test_jeffreys_smoothing_by_hand() -> None:
    assert jeffreys(0, 9) == pytest.approx(0.05)  # 0.5 / 10: a zero count stays small and positive
    assert jeffreys(3, 9) == pytest.approx(0.35)  # 3.5 / 10
    assert jeffreys(9, 9) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        jeffreys(5, 3)


def test_multiplicative_error_is_symmetric() -> None:
    assert multiplicative_error(0.1, 0.05) == pytest.approx(2.0)
    assert multiplicative_error(0.05, 0.1) == pytest.approx(2.0)
    assert multiplicative_error(0.2, 0.2) == 1.0
    with pytest.raises(ValueError):
        multiplicative_error(0.0, 0.1)


def test_direction_threshold() -> None:
    assert change_direction(1.5, 1.5) == 1
    assert change_direction(1.49, 1.5) == 0
    assert change_direction(1 / 1.5, 1.5) == -1
    assert change_direction(0.7, 1.5) == 0
    assert change_direction(1.0) == 0  # no change called
    assert change_direction(1.01) == 1


def test_score_cell_direction_and_error() -> None:
    right = score_cell(Forecast(0.2, 2.0), actual=0.1, actual_change=3.0)
    assert right["multiplicative_error"] == pytest.approx(2.0)
    assert right["direction_cell"] is True and right["direction_right"] is True
    wrong = score_cell(Forecast(0.05, 0.5), actual=0.1, actual_change=3.0)
    assert wrong["direction_right"] is False
    small = score_cell(Forecast(0.05, 0.5), actual=0.1, actual_change=1.2)  # moved < 1.5x: not judged
    assert small["direction_cell"] is False and small["direction_right"] is None
    previous = score_cell(Forecast(0.1, 1.0), actual=0.05, actual_change=0.5)  # "no change" never right
    assert previous["direction_right"] is False


def test_both_zero_cells_agree_instead_of_comparing_sample_sizes() -> None:
    # 0/85 and 0/510 smoothed are 0.5/86 and 0.5/511: a 5.9x "error" that is only the sample sizes
    assert multiplicative_error(jeffreys(0, 85), jeffreys(0, 510)) == pytest.approx(511 / 86)
    cell = score_cell(Forecast(jeffreys(0, 85), 1.0), jeffreys(0, 510), 1.0, both_zero=True)
    assert cell["multiplicative_error"] == 1.0 and cell["both_zero"] is True
    m = summarise([cell, {**cell, "both_zero": False, "multiplicative_error": 3.0}], n_boot=100)
    assert m["both_zero_cells"] == 1
    assert m["median_multiplicative_error"] == pytest.approx(2.0)
    assert m["median_multiplicative_error_with_events"] == pytest.approx(3.0)


def test_summarise_by_hand() -> None:
    cells = [
        {"multiplicative_error": 1.0, "direction_cell": True, "direction_right": True},
        {"multiplicative_error": 2.0, "direction_cell": True, "direction_right": True},
        {"multiplicative_error": 4.0, "direction_cell": True, "direction_right": False},
        {"multiplicative_error": 20.0, "direction_cell": False, "direction_right": None},
    ]
    m = summarise(cells, n_boot=500)
    assert m["median_multiplicative_error"] == pytest.approx(3.0)  # median of 1, 2, 4, 20
    assert m["within_2x"] == pytest.approx(0.5)
    assert m["within_10x"] == pytest.approx(0.75)
    assert (m["direction_right"], m["direction_cells"]) == (2, 3)
    assert m["direction_accuracy"] == pytest.approx(2 / 3)
    low, high = proportion_confint(2, 3, alpha=0.05, method="wilson")
    assert m["direction_accuracy_interval"] == pytest.approx([low, high])
    e_low, e_high = m["median_multiplicative_error_interval"]
    assert 1.0 <= e_low <= 3.0 <= e_high <= 20.0
    assert summarise([])["direction_accuracy"] is None


def test_median_interval_degenerate() -> None:
    assert median_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
    assert median_interval([]) == (None, None)


def test_floor_by_hand() -> None:
    rate = min_detectable_rate(100, 0.8)
    assert (1 - rate) ** 100 == pytest.approx(0.2)  # P(no event in 100 points) = 1 - power
    assert min_detectable_rate(0) is None
    # the reference method's floor: ~1 in 200,000 with 1.3M points at 80% power is seen; 1e-7 is not
    assert min_detectable_rate(1.3e6) < 1 / 200_000 < 1e-5
    assert points_to_see_one(1e-4, 0.8) == 16094  # ceil(ln 0.2 / ln(1 - 1e-4)) = ceil(16093.6)


def test_plan_matches_statsmodels() -> None:
    n = unpaired_points(1e-4, 1.5, 0.95, 0.8)
    h = abs(proportion_effectsize(1.5e-4, 1e-4))
    expected = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    assert n == math.ceil(expected)
    # and by hand: Var(2 asin sqrt(p)) = 1/n per arm, so n = 2 (z_.975 + z_.8)^2 / h^2 per arm
    assert n == pytest.approx(2 * (1.959964 + 0.841621) ** 2 / h**2, rel=1e-4)


def test_paired_points_by_hand() -> None:
    # rate 0.1 -> 0.2, independent verdicts: psi = .1*.8 + .2*.9 = .26, delta = .1
    # n = (1.95996*sqrt(.26) + 0.84162*sqrt(.25))^2 / .01 = 201.7 -> 202
    assert paired_points(0.1, 2.0) == 202
    # correlated verdicts (fewer discordant points) need fewer points
    assert paired_points(0.1, 2.0, discordance=0.12) < 202
    with pytest.raises(ValueError):
        paired_points(0.1, 2.0, discordance=0.05)  # below |delta|: impossible
    plan = plan_study(1e-4, 1.5)
    assert plan.paired_points > 0 and plan.unpaired_per_deployment > plan.points_to_see_one_event


def test_min_detectable_ratio_inverts_plan() -> None:
    n = unpaired_points(0.05, 1.5)
    assert min_detectable_ratio(0.05, n) == pytest.approx(1.5, rel=0.01)
    assert min_detectable_ratio(0.05, n / 4) > 1.5  # a quarter of the points sees only bigger changes
    assert min_detectable_ratio(0.9, 5) == math.inf


def test_detection_floor_smooths_zero_counts() -> None:
    floor = detection_floor(0, 99)
    assert floor["min_rate"] == pytest.approx(min_detectable_rate(99))
    # the ratio is computed at the Jeffreys rate 0.5/100, not at 0
    assert floor["min_ratio"] == pytest.approx(min_detectable_ratio(0.005, 99))


def test_calibration_fit_by_hand() -> None:
    cells = [("refusal", 0.1, 0.2)] * 3 + [("verbosity", 0.4, 0.1)]
    unshrunk = fit_calibration(cells, prior_cells=0)
    assert unshrunk.correction("refusal").factor == pytest.approx(2.0)
    assert unshrunk.correction("verbosity").factor == pytest.approx(0.25)
    shrunk = fit_calibration(cells, prior_cells=1)
    assert shrunk.correction("refusal").log_bias == pytest.approx(3 * math.log(2) / 4)
    assert shrunk.correction("unseen").factor == 1.0
    applied = shrunk.apply("refusal", 0.1, 0.05, 0.2)
    assert applied["rate"] == pytest.approx(0.1 * 2 ** 0.75)
    # the calibrated interval is wider, in ratio terms, than the raw one
    assert applied["high"] / applied["low"] > 0.2 / 0.05


def test_run_statistics_carry_floor_and_calibration(tmp_path) -> None:
    """stats: every behaviour has a floor; with a calibration file the calibrated rate sits beside the raw one."""
    import json

    from deploysim.evaluate.gate import evaluate_gate
    from deploysim.evaluate.stats.analysis import analyse_run
    from tests.synthetic import build_run

    run = build_run(tmp_path / "run", {"over_refusal": (0.1, 0.2), "sycophancy": (0.0, 0.0)}, n_points=300)
    calibration = fit_calibration([("over_refusal", 0.1, 0.2), ("over_refusal", 0.2, 0.4),
                                   ("over_refusal", 0.05, 0.1)], prior_cells=0)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(calibration.to_dict()))
    stats = analyse_run(run, calibration=path, n_boot=200, segment_by=[])
    raw = stats.behaviours["over_refusal"].rates["candidate"]
    cal = stats.behaviours["over_refusal"].calibrated["candidate"]
    assert cal["rate"] == pytest.approx(raw.rate * 2.0)
    assert cal["low"] <= raw.low * 2.0 and cal["high"] >= raw.high * 2.0 - 1e-12
    assert "logged" not in stats.behaviours["over_refusal"].calibrated  # production is not a prediction
    floor = stats.behaviours["sycophancy"].floor["candidate"]
    assert floor["min_rate"] == pytest.approx(min_detectable_rate(300))
    assert stats.to_dict()["behaviours"]["over_refusal"]["floor"]["candidate"]["min_ratio"] > 1
    policy = tmp_path / "gate.yaml"
    policy.write_text("rules:\n  - behaviour: over_refusal\n    max_rate: 0.5\n")
    gated = evaluate_gate(run, policy, n_boot=200, calibration=path)
    assert gated.checks[0].calibrated["rate"] == pytest.approx(cal["rate"])
    assert gated.checks[0].outcome == "pass"  # decided on the raw interval
