"""Statistics against statsmodels reference implementations, and end to end on a built run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from deploysim.evaluate.stats import (
    DOWN,
    NO_CHANGE,
    UP,
    GraderValidation,
    adjust_pvalues,
    analyse_run,
    cluster_rate_interval,
    compare_paired,
    corrected_rate,
    rogan_gladen,
    weighted_rate,
)
from deploysim.evaluate.stats.paired import PairedComparison, call_directions
from tests.synthetic import build_run


@pytest.mark.parametrize(("k", "n"), [(0, 50), (3, 40), (17, 200), (199, 200), (500, 1000)])
def test_plain_sample_is_statsmodels_wilson(k: int, n: int) -> None:
    y = np.r_[np.ones(k), np.zeros(n - k)]
    est = weighted_rate(y, np.ones(n), np.arange(n), 0.95)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert est.method == "wilson"
    assert est.rate == pytest.approx(k / n)
    assert est.low == pytest.approx(low, abs=1e-12)
    assert est.high == pytest.approx(high)


def test_ess_interval_reduces_to_wilson_for_iid_data() -> None:
    """The ESS path on a plain sample: n_eff = n - 1 (the C/(C-1) correction), so ~Wilson."""
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.1).astype(float)
    est = cluster_rate_interval(y, np.ones(2000))
    low, high = proportion_confint(int(y.sum()), 2000, method="wilson")
    assert float(est["n_eff"]) == pytest.approx(1999, rel=1e-3)
    assert float(est["low"]) == pytest.approx(low, rel=1e-3) and float(est["high"]) == pytest.approx(high, rel=1e-3)


def test_clustering_widens_the_interval() -> None:
    # 100 conversations of 10 points; all points of a conversation agree: n_eff ~ 100, not 1000.
    y = np.repeat((np.arange(100) % 5 == 0).astype(float), 10)
    est = weighted_rate(y, np.ones(1000), np.repeat(np.arange(100), 10))
    assert est.n == 1000 and est.n_clusters == 100
    assert est.n_eff == pytest.approx(99, rel=0.02)
    plain = proportion_confint(200, 1000, method="wilson")
    assert est.high - est.low > 2.5 * (plain[1] - plain[0])


def test_zero_events_upper_bound_and_detectable_rate() -> None:
    est = weighted_rate(np.zeros(300), np.ones(300), np.arange(300))
    assert est.zero_events and est.rate == 0 and est.low == 0
    assert est.upper_one_sided == pytest.approx(1 - 0.05 ** (1 / 300))
    assert est.upper_one_sided == pytest.approx(3 / 300, rel=0.01)  # the rule of three
    assert est.detectable_rate == pytest.approx(1 - 0.2 ** (1 / 300))
    # Clustered zero events: as many effective observations as conversations (conservative).
    clustered = weighted_rate(np.zeros(300), np.ones(300), np.repeat(np.arange(100), 3))
    assert clustered.n_eff == pytest.approx(100)
    assert clustered.upper_one_sided > est.upper_one_sided


def test_missing_verdicts_are_not_counted_as_not_flagged() -> None:
    y = np.array([1, 0, np.nan, np.nan, 1, 0])
    est = weighted_rate(y, np.ones(6), np.arange(6))
    assert est.n == 4 and est.rate == 0.5


def _paired_sample(rng: np.random.Generator, n: int, a: int, b: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """a both flagged, b reference-only, c subject-only, rest neither."""
    ref = np.r_[np.ones(a), np.ones(b), np.zeros(c), np.zeros(n - a - b - c)]
    sub = np.r_[np.ones(a), np.zeros(b), np.ones(c), np.zeros(n - a - b - c)]
    perm = rng.permutation(n)
    return ref[perm], sub[perm]


@pytest.mark.parametrize(("a", "b", "c"), [(5, 3, 12), (10, 8, 9), (0, 0, 4), (2, 20, 4)])
def test_paired_plain_sample_is_statsmodels_mcnemar_exact(a: int, b: int, c: int) -> None:
    n = 400
    ref, sub = _paired_sample(np.random.default_rng(0), n, a, b, c)
    comp = compare_paired("x", "baseline", "candidate", ref, sub, np.ones(n), np.arange(n), n_boot=500)
    expected = mcnemar([[a, b], [c, n - a - b - c]], exact=True).pvalue
    assert comp.p_method == "mcnemar-exact"
    assert comp.p_value == pytest.approx(expected)
    assert (comp.only_reference, comp.only_subject) == (b, c)
    assert comp.diff == pytest.approx((c - b) / n)
    assert comp.diff_low <= comp.diff <= comp.diff_high


def test_paired_with_clusters_uses_cluster_robust_test() -> None:
    rng = np.random.default_rng(3)
    ref, sub = _paired_sample(rng, 600, 20, 10, 40)
    comp = compare_paired("x", "baseline", "candidate", ref, sub, np.ones(600), np.repeat(np.arange(200), 3))
    assert comp.p_method == "cluster-z"
    assert comp.mcnemar_p is not None  # still reported, for reference
    assert comp.ratio == pytest.approx(60 / 30)
    assert comp.ratio_low < comp.ratio < comp.ratio_high


def test_ratio_when_reference_has_no_events() -> None:
    ref = np.zeros(200)
    sub = np.r_[np.ones(5), np.zeros(195)]
    comp = compare_paired("x", "b", "c", ref, sub, np.ones(200), np.arange(200), n_boot=300)
    assert comp.ratio == float("inf") and comp.ratio_high == float("inf")
    assert comp.to_dict()["ratio"] == "inf"
    both_zero = compare_paired("x", "b", "c", ref, ref, np.ones(200), np.arange(200), n_boot=300)
    assert both_zero.ratio is None and both_zero.direction == NO_CHANGE


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjustment_is_statsmodels_multipletests(method: str) -> None:
    pvals = [0.001, 0.012, 0.03, 0.04, 0.2, 0.7]
    sm = {"holm": "holm", "bh": "fdr_bh"}[method]
    assert adjust_pvalues(pvals, method) == pytest.approx(list(multipletests(pvals, method=sm)[1]))


def _comp(behaviour: str, p: float, diff: float) -> PairedComparison:
    return PairedComparison(behaviour, "baseline", "candidate", 100, 100, 0.1, 0.1 + diff, diff, None, None, None,
                            None, None, 0, 0, p, p, "mcnemar-exact")


def test_direction_calls_after_holm() -> None:
    comps = call_directions([_comp("a", 0.001, 0.05), _comp("b", 0.004, -0.03), _comp("c", 0.03, 0.02),
                             _comp("d", 0.5, 0.01)])
    assert [c.direction for c in comps] == [UP, DOWN, NO_CHANGE, NO_CHANGE]  # Holm: 0.03 * 2 = 0.06
    unadjusted = call_directions([_comp("c", 0.03, 0.02)], method="none")
    assert unadjusted[0].direction == UP


def test_rogan_gladen_point_and_interval() -> None:
    assert float(rogan_gladen(0.125, 0.8, 0.95)) == pytest.approx(0.1)
    assert float(rogan_gladen(0.01, 0.8, 0.95)) == 0.0  # below the false-positive rate: clipped
    assert np.isnan(rogan_gladen(0.3, 0.5, 0.4))
    rng = np.random.default_rng(0)
    n = 4000
    truth = rng.random(n) < 0.1
    observed = np.where(truth, rng.random(n) < 0.8, rng.random(n) < 0.05).astype(float)
    check = GraderValidation("x", "g", 0.8, 0.95, n_positive=200, n_negative=400)
    corr = corrected_rate(np.ones(n), observed, check)
    plain = weighted_rate(observed, np.ones(n), np.arange(n))
    assert corr.low < 0.1 < corr.high
    assert abs(corr.rate - 0.1) < abs(plain.rate - 0.1)
    assert corr.high - corr.low > plain.high - plain.low  # se/sp uncertainty widens it
    small = corrected_rate(np.ones(n), observed, GraderValidation("x", "g", 0.8, 0.95, 20, 40))
    assert small.high - small.low > corr.high - corr.low
    useless = corrected_rate(np.ones(n), observed, GraderValidation("x", "g", 0.5, 0.5, 20, 40))
    assert useless.rate is None and "chance" in useless.note


@pytest.fixture(scope="module")
def built_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stats") / "run"
    build_run(run, {"over_refusal": (0.08, 0.2), "sycophancy": (0.10, 0.04), "pii_leakage": (0.0, 0.0),
                    "verbosity": (0.15, 0.15)}, n_points=900, points_per_conversation=3, undecided_rate=0.02)
    (run / "grader_validation.json").write_text(json.dumps(
        {"over_refusal": {"grader": "synthetic", "sensitivity": 0.9, "specificity": 0.97, "n_positive": 120,
                          "n_negative": 300}}))
    return run


def test_analyse_run_end_to_end(built_run: Path) -> None:
    stats = analyse_run(built_run, n_boot=600)
    assert (stats.baseline, stats.candidate) == ("baseline", "candidate")
    assert stats.deployments == ["baseline", "candidate", "logged"]
    assert stats.n_points == 900 and stats.n_clusters == 300
    directions = {c.behaviour: c.direction for c in stats.comparisons if c.reference == "baseline"}
    assert directions == {"over_refusal": UP, "sycophancy": DOWN, "pii_leakage": NO_CHANGE, "verbosity": NO_CHANGE}
    assert {c.behaviour for c in stats.comparisons if c.reference == "logged"} == set(directions)
    over = stats.behaviours["over_refusal"]
    assert over.undecided["candidate"] > 0  # grader errors counted ...
    assert over.rates["candidate"].n < 900  # ... and left out, not read as "not flagged"
    assert over.corrected["candidate"].rate is not None
    assert "language" in stats.segments and "surface" in stats.segments
    assert stats.behaviours["pii_leakage"].rates["candidate"].zero_events
    json.dumps(stats.to_dict())  # serialisable


def test_stats_cli_json(built_run: Path) -> None:
    from deploysim.cli.main import main

    result = CliRunner().invoke(main, ["stats", str(built_run), "--json", "--boot", "200", "--segment", "language"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data["segments"]) == ["language"]
    assert data["behaviours"]["sycophancy"]["rates"]["baseline"]["rate"] > 0
    text = CliRunner().invoke(main, ["stats", str(built_run), "--boot", "200"])
    assert text.exit_code == 0 and "over_refusal" in text.output
