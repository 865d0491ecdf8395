"""One call from a run directory to every number the gate and the report show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploysim.evaluate.stats.calibration import Calibration, load_calibration
from deploysim.evaluate.stats.correction import CorrectedRate, GraderValidation, corrected_rate, load_validation
from deploysim.evaluate.stats.data import LOGGED, Metadata, RunData, load_run
from deploysim.evaluate.stats.floor import DEFAULT_POWER, detection_floor
from deploysim.evaluate.stats.paired import DEFAULT_BOOT, PairedComparison, call_directions, compare_paired
from deploysim.evaluate.stats.rates import RateEstimate, aggregate, weighted_rate

MAX_SEGMENT_VALUES = 12
SEGMENT_BOOT = 500
MISSING, OTHER = "(missing)", "(other)"
_NOT_SEGMENTS = {"conversation_id", "id", "record_id", "weight", "sample_weight"}


@dataclass
class BehaviourStats:
    behaviour: str
    grader: str
    rates: dict[str, RateEstimate]
    corrected: dict[str, CorrectedRate] = field(default_factory=dict)
    undecided: dict[str, int] = field(default_factory=dict)
    #: per deployment: the smallest rate and ratio this sample could detect (see stats.floor)
    floor: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: per deployment: the prediction corrected by a calibration file (see stats.calibration)
    calibrated: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "behaviour": self.behaviour, "grader": self.grader,
            "rates": {d: r.to_dict() for d, r in self.rates.items()},
            "corrected": {d: c.to_dict() for d, c in self.corrected.items()},
            "undecided": self.undecided, "floor": self.floor, "calibrated": self.calibrated,
        }


@dataclass
class SegmentRow:
    field: str
    value: str
    n_points: int
    behaviour: str
    rates: dict[str, RateEstimate]
    comparison: PairedComparison | None

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "n_points": self.n_points, "behaviour": self.behaviour,
                "rates": {d: r.to_dict() for d, r in self.rates.items()},
                "comparison": self.comparison.to_dict() if self.comparison else None}


@dataclass
class RunStats:
    run_dir: str
    confidence: float
    multiple_testing: str
    baseline: str | None
    candidate: str | None
    deployments: list[str]
    n_points: int
    n_clusters: int
    weighted: bool
    behaviours: dict[str, BehaviourStats]
    comparisons: list[PairedComparison]
    segments: dict[str, list[SegmentRow]]
    notes: list[str]

    def comparison(self, behaviour: str, reference: str | None = None,
                   subject: str | None = None) -> PairedComparison | None:
        reference = reference or self.baseline
        subject = subject or self.candidate
        for comp in self.comparisons:
            if comp.behaviour == behaviour and comp.reference == reference and comp.subject == subject:
                return comp
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir, "confidence": self.confidence, "multiple_testing": self.multiple_testing,
            "baseline": self.baseline, "candidate": self.candidate, "deployments": self.deployments,
            "n_points": self.n_points, "n_clusters": self.n_clusters, "weighted": self.weighted,
            "behaviours": {b: s.to_dict() for b, s in self.behaviours.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "segments": {f: [r.to_dict() for r in rows] for f, rows in self.segments.items()},
            "notes": self.notes,
        }


def _roles(deployments: list[str], baseline: str | None, candidate: str | None) -> tuple[str | None, str | None]:
    replayed = [d for d in deployments if d != LOGGED]
    if candidate is None:
        candidate = "candidate" if "candidate" in replayed else (replayed[-1] if replayed else None)
    if baseline is None:
        if "baseline" in replayed and candidate != "baseline":
            baseline = "baseline"
        else:
            others = [d for d in replayed if d != candidate]
            baseline = others[0] if others else None
    return baseline, candidate


def segment_fields(metadata: Metadata | list[dict[str, Any]], max_values: int = 50) -> list[str]:
    """Metadata fields worth a breakdown: scalar, with 2..max_values distinct values."""
    if not isinstance(metadata, Metadata):
        metadata = Metadata(metadata)
    return metadata.fields(max_values, _NOT_SEGMENTS)


def segment_labels(metadata: Metadata | list[dict[str, Any]], name: str,
                   max_values: int = MAX_SEGMENT_VALUES) -> np.ndarray:
    if not isinstance(metadata, Metadata):
        metadata = Metadata(metadata)
    codes, distinct = metadata.values(name)
    names = [str(v) for v in distinct]
    # one label per distinct string (values 1 and "1" are one label, as before)
    label_of = {n: i for i, n in reversed(list(enumerate(names)))}
    code_label = np.array([label_of[n] for n in names] + [-1], np.int64)  # index -1 -> missing
    labels_code = code_label[codes]
    # the top values by count, ties in order of first appearance (as Counter.most_common)
    present, first, count = np.unique(labels_code, return_index=True, return_counts=True)
    ranked = sorted(zip(present.tolist(), first.tolist(), count.tolist(), strict=True), key=lambda t: (-t[2], t[1]))
    top = {MISSING if k == -1 else names[k] for k, _, _ in ranked[:max_values]}
    table = np.array([n if n in top else OTHER for n in names] + [MISSING if MISSING in top else OTHER], dtype=object)
    return table[labels_code]


def _checks(run_dir: Path, validation: Path | dict[str, GraderValidation] | None) -> dict[str, GraderValidation]:
    if validation is None and (run_dir / "grader_validation.json").is_file():
        validation = run_dir / "grader_validation.json"
    return load_validation(validation) if isinstance(validation, Path | str) else (validation or {})


def behaviour_rates(run_dir: Path, graders: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """summary.json's rates, by the estimator and grader choice of ``stats``, the report and the gate.

    ``{deployment: {behaviour: {flagged, graded, errors, rate, grader}}}``: ``rate`` is the
    weighted, per-point rate the gate reads (validated grader, else the one with the most
    verdicts); ``flagged``/``graded``/``errors`` count verdicts (errors are never "not
    flagged"). A behaviour's other graders are keyed ``behaviour[grader]``, rated alike.
    """
    run_dir = Path(run_dir)
    checks = _checks(run_dir, None)
    data = load_run(run_dir, {b: v.grader for b, v in checks.items() if v.grader}, graders, count_verdicts=True)
    columns = {(b, data.graders[b]): by_dep for b, by_dep in data.outcomes.items()} | data.others
    rates: dict[str, dict[str, dict[str, Any]]] = {}
    for (dep, beh, grd), (k, clear, errors) in sorted(data.verdict_counts.items()):
        by_dep = columns.get((beh, grd))
        y = by_dep.get(dep) if by_dep is not None else None
        rate = weighted_rate(y, data.weights, data.clusters).rate if y is not None else None
        rates.setdefault(dep, {})[beh if data.graders.get(beh) == grd else f"{beh}[{grd}]"] = {
            "flagged": k, "graded": k + clear, "errors": errors,
            "rate": round(rate, 6) if rate is not None else None, "grader": grd}
    return rates


def analyse_run(run_dir: Path, confidence: float = 0.95, multiple_testing: str = "holm",
                validation: Path | dict[str, GraderValidation] | None = None,
                segment_by: list[str] | None = None, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                baseline: str | None = None, candidate: str | None = None, power: float = DEFAULT_POWER,
                calibration: Path | Calibration | None = None) -> RunStats:
    """Rates, paired comparisons (candidate vs baseline and vs logged), corrections and segments.

    ``validation`` defaults to ``RUN/grader_validation.json`` when present. ``segment_by``
    None means every metadata field with 2-50 distinct values. ``power`` sets the detection
    floor's power; ``calibration`` (a ``deploysim calibrate`` file) adds calibrated predictions.
    """
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = load_calibration(Path(calibration))
    run_dir = Path(run_dir)
    checks = _checks(run_dir, validation)
    data = load_run(run_dir, {b: v.grader for b, v in checks.items() if v.grader})
    baseline, candidate = _roles(data.deployments, baseline, candidate)
    notes = list(data.notes)
    behaviours: dict[str, BehaviourStats] = {}
    for behaviour in data.behaviours:
        by_dep = data.outcomes[behaviour]
        stats = BehaviourStats(behaviour, data.graders[behaviour], {}, undecided=data.errors[behaviour])
        for dep in data.deployments:
            if dep not in by_dep:
                continue
            y = by_dep[dep]
            stats.rates[dep] = rate = weighted_rate(y, data.weights, data.clusters, confidence)
            if rate.rate is not None:
                stats.floor[dep] = detection_floor(rate.rate * rate.n_eff, rate.n_eff, confidence, power)
                if calibration is not None and dep != LOGGED:
                    stats.calibrated[dep] = calibration.apply(behaviour, rate.rate, rate.low, rate.high)
            check = checks.get(behaviour)
            if check is not None:
                if check.grader and check.grader != stats.grader:
                    notes.append(f"{behaviour}: validation is for grader {check.grader!r}, not {stats.grader!r}")
                else:
                    keep = ~np.isnan(y)
                    wc = aggregate(data.weights * keep, data.clusters, data.n_clusters)
                    wyc = aggregate(np.where(keep, data.weights * np.nan_to_num(y), 0.0), data.clusters,
                                    data.n_clusters)
                    nz = wc > 0
                    stats.corrected[dep] = corrected_rate(wc[nz], wyc[nz], check, confidence, n_boot, seed)
        behaviours[behaviour] = stats
    comparisons = _comparisons(data, data.behaviours, baseline, candidate, np.ones(len(data.weights), bool),
                               confidence, multiple_testing, n_boot, seed)
    if candidate is None:
        notes.append("no replayed deployment has verdicts: nothing to compare")
    elif baseline is None:
        notes.append(f"no baseline deployment: {candidate} is compared with {LOGGED} only")
    fields = segment_fields(data.metadata) if segment_by is None else segment_by
    segments = {name: _segments(data, name, baseline, candidate, confidence, multiple_testing,
                                min(n_boot, SEGMENT_BOOT), seed) for name in fields}
    return RunStats(
        run_dir=str(run_dir), confidence=confidence, multiple_testing=multiple_testing, baseline=baseline,
        candidate=candidate, deployments=data.deployments, n_points=len(data.weights), n_clusters=data.n_clusters,
        weighted=bool(len(data.weights) and not np.allclose(data.weights, data.weights[0])),
        behaviours=behaviours, comparisons=comparisons, segments=segments, notes=notes,
    )


def _comparisons(data: RunData, behaviours: list[str], baseline: str | None, candidate: str | None,
                 mask: np.ndarray, confidence: float, method: str, n_boot: int, seed: int,
                 segment: str | None = None) -> list[PairedComparison]:
    """Candidate vs baseline and candidate vs logged; p-values adjusted within each family."""
    out: list[PairedComparison] = []
    for reference in (baseline, LOGGED):
        family = []
        for behaviour in behaviours:
            by_dep = data.outcomes[behaviour]
            if reference is None or candidate is None or reference not in by_dep or candidate not in by_dep:
                continue
            comp = compare_paired(behaviour, reference, candidate, by_dep[reference][mask], by_dep[candidate][mask],
                                  data.weights[mask], data.clusters[mask], confidence, n_boot, seed)
            comp.segment = segment
            family.append(comp)
        out.extend(call_directions(family, confidence, method))
    return out


def _segments(data: RunData, name: str, baseline: str | None, candidate: str | None, confidence: float,
              method: str, n_boot: int, seed: int) -> list[SegmentRow]:
    labels = segment_labels(data.metadata, name)
    values = sorted(set(labels), key=lambda v: (v in (MISSING, OTHER), v))
    masks = {value: labels == value for value in values}
    cells: dict[tuple[str, str], SegmentRow] = {}
    for behaviour in data.behaviours:  # each outcome column is built once per behaviour, not once per value
        by_dep = data.outcomes[behaviour]
        columns = {d: by_dep[d] for d in data.deployments if d in by_dep}
        for value, mask in masks.items():
            w, clusters = data.weights[mask], data.clusters[mask]
            rates = {d: weighted_rate(y[mask], w, clusters, confidence) for d, y in columns.items()}
            comp = None
            if baseline and candidate and baseline in columns and candidate in columns:
                comp = compare_paired(behaviour, baseline, candidate, columns[baseline][mask],
                                      columns[candidate][mask], w, clusters, confidence, n_boot, seed)
                comp.segment = f"{name}={value}"
            cells[value, behaviour] = SegmentRow(name, str(value), int(mask.sum()), behaviour, rates, comp)
        del columns
    rows = [cells[value, behaviour] for value in values for behaviour in data.behaviours]
    call_directions([r.comparison for r in rows if r.comparison is not None], confidence, method)
    return rows
