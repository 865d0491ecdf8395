"""A run directory as arrays: one row per replay point, one outcome column per (behaviour, deployment).

Outcome = fraction of a point's samples the grader flagged (0/1 with one sample);
NaN when the grader gave no usable verdict (errors are counted, never read as "not
flagged"). One grader per behaviour is analysed: the validated one when validation
results name it, else the one with the most verdicts (others are listed in notes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deploysim.core.schema import LOGGED
from deploysim.core.store import POINTS, VERDICTS, RunDirError, read_config


@dataclass
class RunData:
    run_dir: Path
    point_ids: pa.Array
    weights: np.ndarray
    clusters: np.ndarray  # int codes; cluster = metadata conversation_id, else record_id
    n_clusters: int
    metadata: list[dict[str, Any]]
    outcomes: dict[str, dict[str, np.ndarray]]  # behaviour -> deployment -> float per point (NaN = none)
    graders: dict[str, str]
    errors: dict[str, dict[str, int]]  # behaviour -> deployment -> verdicts without a decision
    deployments: list[str]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: Outcomes of the graders not analysed, by (behaviour, grader) -> deployment.
    others: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def behaviours(self) -> list[str]:
        return sorted(self.outcomes)


def cluster_of(record_id: str, metadata: dict[str, Any]) -> str:
    conv = metadata.get("conversation_id")
    return str(conv) if conv not in (None, "") else str(record_id)


def load_run(run_dir: Path, preferred_graders: dict[str, str] | None = None,
             graders: Sequence[str] | None = None) -> RunData:
    """Read points and verdicts of a finished run (verdicts.parquet is written by the graders).

    ``graders`` keeps only those graders' verdicts.
    """
    run_dir = Path(run_dir)
    points_path, verdicts_path = POINTS.path(run_dir), VERDICTS.path(run_dir)
    if not points_path.is_file():
        raise RunDirError(f"{run_dir}: no points.parquet; is this a finished run directory?")
    if not verdicts_path.is_file():
        raise RunDirError(f"{run_dir}: no verdicts.parquet; grade the run first")
    points = pq.read_table(points_path, columns=["point_id", "record_id", "metadata_json", "weight"])
    point_ids = points["point_id"].combine_chunks()
    metadata = [orjson.loads(m) if m else {} for m in points["metadata_json"].to_pylist()]
    record_ids = points["record_id"].to_pylist()
    _, clusters = np.unique(np.array([cluster_of(r, m) for r, m in zip(record_ids, metadata, strict=True)],
                                     dtype=object), return_inverse=True)
    weights = points["weight"].to_numpy(zero_copy_only=False).astype(float)
    bad = ~(np.isfinite(weights) & (weights >= 0))
    if bad.any():  # a NaN or infinite weight would make every rate and interval meaningless
        first = int(np.flatnonzero(bad)[0])
        raise RunDirError(f"{points_path}: {int(bad.sum())} point(s) have a weight that is not a finite number "
                          f">= 0 (first: point {point_ids[first]}, weight {weights[first]}); "
                          "fix the records' sampling_weight and run again")
    n = len(point_ids)

    verdicts = pq.read_table(verdicts_path, columns=["point_id", "deployment", "behaviour", "grader", "flagged"])
    if graders is not None:
        verdicts = verdicts.filter(pc.is_in(verdicts["grader"], pa.array(list(graders), pa.string())))
    config = read_config(run_dir)  # a run written by a newer deploysim is refused here, never misread
    notes: list[str] = []
    chosen = _choose_graders(verdicts, preferred_graders or {}, notes)
    others: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    outcomes: dict[str, dict[str, np.ndarray]] = {}
    errors: dict[str, dict[str, int]] = {}
    flagged = pc.cast(verdicts["flagged"], pa.float64())
    verdicts = verdicts.set_column(verdicts.schema.get_field_index("flagged"), "flagged", flagged)
    verdicts = verdicts.append_column("undecided", pc.cast(pc.is_null(flagged), pa.int64()))
    grouped = verdicts.group_by(["behaviour", "grader", "deployment", "point_id"]).aggregate(
        [("flagged", "mean"), ("undecided", "sum")])
    index = _positions(grouped["point_id"], point_ids)
    unknown = int(np.isnan(index).sum())
    if unknown:
        notes.append(f"{unknown} verdict groups name points not in points.parquet: ignored")
    beh = grouped["behaviour"].to_numpy(zero_copy_only=False)
    grd = grouped["grader"].to_numpy(zero_copy_only=False)
    dep = grouped["deployment"].to_numpy(zero_copy_only=False)
    mean = grouped["flagged_mean"].to_numpy(zero_copy_only=False).astype(float)
    undecided = grouped["undecided_sum"].to_numpy(zero_copy_only=False).astype(int)
    deployments: set[str] = set()
    for behaviour, grader in sorted(set(zip(beh.tolist(), grd.tolist(), strict=True))):
        mask = (beh == behaviour) & (grd == grader) & ~np.isnan(index)
        analysed = chosen.get(behaviour) == grader
        for d in np.unique(dep[mask]):
            m = mask & (dep == d)
            column = np.full(n, np.nan)
            column[index[m].astype(int)] = mean[m]
            if not analysed:
                others.setdefault((behaviour, grader), {})[str(d)] = column
                continue
            outcomes.setdefault(behaviour, {})[str(d)] = column
            errors.setdefault(behaviour, {})[str(d)] = int(undecided[m].sum())
            deployments.add(str(d))
    ordered = [d["name"] for d in config.get("deployments", []) if isinstance(d, dict) and d.get("name") in deployments]
    ordered += sorted(deployments - set(ordered) - {LOGGED})
    if LOGGED in deployments:
        ordered.append(LOGGED)
    return RunData(run_dir, point_ids, weights, clusters.astype(np.int64), int(clusters.max()) + 1 if n else 0,
                   metadata, outcomes, chosen, errors, ordered, config, notes, others)


def _positions(values: pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``value_set`` as floats, NaN where absent."""
    idx = pc.index_in(values, value_set=value_set)
    return pc.fill_null(pc.cast(idx, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)


def _choose_graders(verdicts: pa.Table, preferred: dict[str, str], notes: list[str]) -> dict[str, str]:
    counts = verdicts.group_by(["behaviour", "grader"]).aggregate([("point_id", "count")]).to_pylist()
    by_behaviour: dict[str, dict[str, int]] = {}
    for row in counts:
        by_behaviour.setdefault(row["behaviour"], {})[row["grader"]] = row["point_id_count"]
    chosen: dict[str, str] = {}
    for behaviour, graders in sorted(by_behaviour.items()):
        want = preferred.get(behaviour)
        pick = want if want in graders else sorted(graders, key=lambda g: (-graders[g], g))[0]
        chosen[behaviour] = pick
        others = sorted(set(graders) - {pick})
        if others:
            notes.append(f"{behaviour}: analysed grader {pick!r}; also graded by {', '.join(others)} (not shown)")
    return chosen
