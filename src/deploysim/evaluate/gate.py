"""Release gate: a YAML policy over a run's statistics -> pass (0) / fail (3) / inconclusive (4) / error (5).

The whole interval under the threshold passes, the whole interval above fails, one straddling it is
inconclusive (docs/report.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deploysim.evaluate.stats.analysis import RunStats, analyse_run
from deploysim.pipeline.config import read_yaml, validation_problems

PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"
EXIT_CODES = {PASS: 0, FAIL: 3, INCONCLUSIVE: 4, ERROR: 5}
_SEVERITY = {PASS: 0, INCONCLUSIVE: 1, FAIL: 2, ERROR: 3}


class GatePolicyError(ValueError):
    pass


class GateRule(BaseModel):
    """One behaviour's limits; several limits in one rule are all checked."""

    model_config = ConfigDict(extra="forbid")

    behaviour: str
    max_ratio: float | None = Field(None, gt=0, description="candidate rate / reference rate")
    max_rate: float | None = Field(None, ge=0, le=1, description="candidate's absolute rate")
    max_increase: float | None = Field(None, description="candidate - reference, absolute")
    confidence: float | None = Field(None, gt=0.5, lt=1)
    reference: str | None = Field(None, description="deployment compared with; default the run's baseline")
    corrected: bool = Field(False, description="max_rate on the grader-error-corrected rate")
    min_points: int = Field(0, ge=0, description="fewer paired points than this: inconclusive")

    @model_validator(mode="after")
    def _has_a_limit(self) -> GateRule:
        if self.max_ratio is None and self.max_rate is None and self.max_increase is None:
            raise ValueError(f"rule for {self.behaviour!r} sets none of max_ratio, max_rate, max_increase")
        return self


class GatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[GateRule] = Field(min_length=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    multiple_testing: Literal["holm", "bh", "none"] = "holm"


def load_policy(path: Path) -> GatePolicy:
    raw = read_yaml(path, "gate policy", GatePolicyError)
    try:
        return GatePolicy.model_validate(raw)
    except ValidationError as exc:
        raise GatePolicyError(f"{path}: invalid policy: {validation_problems(exc)}") from exc


@dataclass
class CheckResult:
    behaviour: str
    check: str  # max_ratio / max_rate / max_increase
    threshold: float
    confidence: float
    reference: str | None
    estimate: float | str | None  # "inf" for an unbounded ratio (JSON has no infinity)
    low: float | str | None
    high: float | str | None
    outcome: str
    reason: str
    #: with ``--calibration``: the calibrated candidate rate and its wider interval, shown beside
    #: the raw estimate (the outcome is still decided on the raw one)
    calibrated: dict[str, Any] | None = None


@dataclass
class GateResult:
    verdict: str
    checks: list[CheckResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_dir: str = ""
    policy: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "run_dir": self.run_dir, "policy": self.policy,
                "checks": [asdict(c) for c in self.checks], "errors": self.errors}

    def to_json(self) -> str:
        """The result as JSON text (what ``deploysim gate --json`` prints)."""
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)


def _decide(low: float | None, high: float | None, threshold: float) -> tuple[str, str]:
    if low is not None and low > threshold:
        return FAIL, f"whole interval above {threshold:g}"
    if high is not None and math.isfinite(high) and high <= threshold:
        return PASS, f"whole interval at or below {threshold:g}"
    if high is None and low is None:
        return INCONCLUSIVE, "no estimate"
    return INCONCLUSIVE, f"interval contains {threshold:g}: more data needed"


def _json_safe(x: float | None) -> float | str | None:
    if x is None or math.isnan(x):
        return None
    return x if math.isfinite(x) else "inf"


def check_rule(rule: GateRule, stats: RunStats) -> list[CheckResult]:
    conf = stats.confidence
    reference = rule.reference or stats.baseline
    out: list[CheckResult] = []

    def err(check: str, threshold: float, reason: str) -> None:
        out.append(CheckResult(rule.behaviour, check, threshold, conf, reference, None, None, None, ERROR, reason))

    behaviour = stats.behaviours.get(rule.behaviour)
    if behaviour is None:
        err("behaviour", 0, f"the run has no verdicts for behaviour {rule.behaviour!r} "
            f"(has: {', '.join(sorted(stats.behaviours)) or 'none'})")
        return out
    if rule.max_rate is not None:
        rate = behaviour.rates.get(stats.candidate or "")
        if rule.corrected:
            corr = behaviour.corrected.get(stats.candidate or "")
            if corr is None or corr.rate is None:
                err("max_rate", rule.max_rate, "no grader validation for this behaviour: no corrected rate")
            else:
                outcome, why = _decide(corr.low, corr.high, rule.max_rate)
                out.append(CheckResult(rule.behaviour, "max_rate", rule.max_rate, conf, None, corr.rate, corr.low,
                                       corr.high, outcome, f"corrected rate: {why}"))
        elif rate is None or rate.rate is None:
            err("max_rate", rule.max_rate, f"no verdicts for deployment {stats.candidate!r}")
        elif rate.n < rule.min_points:
            out.append(CheckResult(rule.behaviour, "max_rate", rule.max_rate, conf, None, rate.rate, rate.low,
                                   rate.high, INCONCLUSIVE, f"{rate.n} points < min_points {rule.min_points}"))
        else:
            outcome, why = _decide(rate.low, rate.high, rule.max_rate)
            out.append(CheckResult(rule.behaviour, "max_rate", rule.max_rate, conf, None, rate.rate, rate.low,
                                   rate.high, outcome, why, behaviour.calibrated.get(stats.candidate or "")))
    for check, threshold in (("max_ratio", rule.max_ratio), ("max_increase", rule.max_increase)):
        if threshold is None:
            continue
        comp = stats.comparison(rule.behaviour, reference=reference)
        if comp is None:
            err(check, threshold, f"no paired comparison of {stats.candidate!r} with {reference!r} "
                f"for {rule.behaviour!r} (deployments: {', '.join(stats.deployments)})")
            continue
        if check == "max_ratio":
            est, low, high = comp.ratio, comp.ratio_low, comp.ratio_high
        else:
            est, low, high = comp.diff, comp.diff_low, comp.diff_high
        if comp.n_pairs < max(rule.min_points, 1):
            outcome, why = INCONCLUSIVE, f"{comp.n_pairs} paired points < min_points {max(rule.min_points, 1)}"
        elif check == "max_ratio" and high is None and low is None:
            outcome, why = INCONCLUSIVE, "no events in either deployment: the ratio is undefined (use max_increase)"
        else:
            outcome, why = _decide(low, high, threshold)
        out.append(CheckResult(rule.behaviour, check, threshold, conf, reference, _json_safe(est), _json_safe(low),
                               _json_safe(high), outcome, why))
    return out


def evaluate_policy(run_dir: Path, policy: GatePolicy, n_boot: int = 2000, seed: int = 0,
                    calibration: Path | None = None) -> GateResult:
    result = GateResult(PASS, run_dir=str(run_dir))
    by_conf: dict[float, RunStats] = {}
    for rule in policy.rules:
        conf = rule.confidence or policy.confidence
        if conf not in by_conf:
            by_conf[conf] = analyse_run(Path(run_dir), confidence=conf, multiple_testing=policy.multiple_testing,
                                        segment_by=[], n_boot=n_boot, seed=seed, calibration=calibration)
        result.checks.extend(check_rule(rule, by_conf[conf]))
    result.verdict = max((c.outcome for c in result.checks), key=_SEVERITY.__getitem__, default=PASS)
    result.errors = [f"{c.behaviour}: {c.reason}" for c in result.checks if c.outcome == ERROR]
    return result


def evaluate_gate(run_dir: Path, policy_path: Path, n_boot: int = 2000, seed: int = 0,
                  calibration: Path | None = None) -> GateResult:
    """Gate a finished run on a policy file; never raises for a bad policy or run (verdict "error", exit 5)."""
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.stats.calibration import CalibrationError
    from deploysim.evaluate.stats.correction import ValidationError as GraderValidationError

    try:
        policy = load_policy(policy_path)
        result = evaluate_policy(run_dir, policy, n_boot=n_boot, seed=seed, calibration=calibration)
    except (GatePolicyError, RunDirError, GraderValidationError, CalibrationError, OSError) as exc:
        return GateResult(ERROR, errors=[str(exc)], run_dir=str(run_dir), policy=str(policy_path))
    result.policy = str(policy_path)
    return result
