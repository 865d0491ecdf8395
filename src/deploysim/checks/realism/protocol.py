"""The realism protocol: discriminators, their controls and the breakdowns, from teacher-forced rows.

Input is what ``agents simulate-tools`` writes (one row per logged call: the real
output and the simulated one, paired, with the answer's source) plus, optionally,
more real outputs (other trials) for the negative control. Every number comes with a
trajectory-clustered interval.

Controls, for each discriminator:

- positive: a deliberately bad simulator (each call answered with a real output of a
  *different* tool, shuffled) must be caught: accuracy >= ``POSITIVE_MIN`` with the
  interval above 0.5. A discriminator that cannot catch it cannot vouch for realism,
  and the report says the realism number is meaningless.
- negative: real outputs against other real outputs of the same calls (another
  trial's output of the same tool with the same arguments) must sit at chance: the
  interval contains 0.5.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from deploysim.agents.toolsim.calls import canonical_args
from deploysim.checks.realism.c2st import c2st_predictions, clustered_accuracy
from deploysim.checks.realism.load import unit_text

#: The positive control counts as caught at this accuracy or more (and an interval above 0.5).
POSITIVE_MIN = 0.75
MIN_CONTROL_PAIRS = 10


@dataclass(frozen=True)
class Unit:
    """One logged call, teacher-forced: its real output and the simulated one."""

    record_id: str
    call_index: int
    tool: str
    arguments: str
    real: str
    simulated: str
    source: str
    task: str = ""

    def text(self, column: str) -> str:
        return unit_text(self.tool, self.arguments, getattr(self, column))


def load_units(path: str | Path) -> tuple[list[Unit], int]:
    """(answered units, calls the simulation could not answer) from a simulate-tools JSONL."""
    units, errors = [], 0
    with open(path, "rb") as handle:
        for line in handle:
            row = orjson.loads(line)
            if row.get("simulated") is None or row.get("real") is None:
                errors += 1
                continue
            units.append(Unit(row["record_id"], row["call_index"], row["tool"], row["arguments"], row["real"],
                              row["simulated"], row.get("source") or "simulator", row.get("task") or ""))
    return units, errors


def _summary(correct: np.ndarray, groups: np.ndarray, seed: int) -> dict[str, Any]:
    return clustered_accuracy(correct, groups, seed=seed).as_dict()


def discriminate(real: Sequence[str], simulated: Sequence[str], groups: Sequence[str], folds: int = 5,
                 seed: int = 0, fold_groups: Sequence[str] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """C2ST on paired texts: (summary with an interval clustered by ``groups`` (trajectories), per-text
    correctness [real..., simulated...]).

    ``fold_groups`` (tasks) keep every trial of a task in one fold: trials share near-identical real
    outputs, and a classifier that saw one trial's would otherwise recognise (or, in the negative
    control, anti-learn) the other's.
    """
    fg = list(fold_groups) if fold_groups is not None else list(groups)
    correct, _fold_labels, _k = c2st_predictions(real, simulated, fg, fg, folds=folds, seed=seed)
    return _summary(correct, np.array(list(groups) * 2), seed), correct


def _folds(units: Sequence[Unit]) -> list[str]:
    return [u.task or u.record_id for u in units]


def c2st_report(units: Sequence[Unit], folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Overall accuracy, per tool and per answer source (the same out-of-fold predictions), and a
    separate classifier on the simulator-answered calls only."""
    groups = [u.record_id for u in units]
    overall, correct = discriminate([u.text("real") for u in units], [u.text("simulated") for u in units], groups,
                                    folds, seed, _folds(units))
    n = len(units)
    both = np.concatenate([correct[:n, None], correct[n:, None]], axis=1)  # row i: (real i, simulated i)
    out: dict[str, Any] = overall | {"method": "C2ST: TF-IDF + logistic regression, folds grouped by trajectory"}
    for name, key in (("by_tool", lambda u: u.tool), ("by_source", lambda u: u.source)):
        table: dict[str, Any] = {}
        for value in sorted({key(u) for u in units}):
            rows = [i for i, u in enumerate(units) if key(u) == value]
            table[value] = _summary(both[rows].ravel(), np.repeat([groups[i] for i in rows], 2), seed)
        out[name] = table
    own = [u for u in units if u.source == "simulator"]
    if len({u.record_id for u in own}) >= 2 and len(own) >= 4:
        out["simulator_only"] = discriminate([u.text("real") for u in own], [u.text("simulated") for u in own],
                                             [u.record_id for u in own], folds, seed, _folds(own))[0]
    else:
        out["simulator_only"] = None
    return out


def positive_control(units: Sequence[Unit], pool: Sequence[Unit], seed: int = 0) -> list[Unit]:
    """Each call answered with a real output of another tool (random; another call's if there is one tool)."""
    rng = random.Random(seed)
    by_tool: dict[str, list[str]] = {}
    for u in pool:
        by_tool.setdefault(u.tool, []).append(u.real)
    out = []
    for u in units:
        others = [o for tool, outputs in by_tool.items() if tool != u.tool for o in outputs]
        if not others:
            others = [o for o in by_tool.get(u.tool, []) if o != u.real]
        if others:
            out.append(Unit(u.record_id, u.call_index, u.tool, u.arguments, u.real, rng.choice(others), "shuffled",
                            u.task))
    return out


def negative_control(units: Sequence[Unit], pool: Sequence[Unit], seed: int = 0) -> list[Unit]:
    """Each call paired with another trial's real output of the same call (same tool, same arguments).

    Partners come from the same task when tasks are known: the classifier's folds keep a task
    together, so a partner's own pair never sits in another fold with its labels swapped (which
    would push the control below chance by construction).
    """
    rng = random.Random(seed)
    by_call: dict[tuple[str, str], list[Unit]] = {}
    for u in pool:
        by_call.setdefault((u.tool, canonical_args(u.arguments)), []).append(u)
    out = []
    for u in units:
        partners = [p for p in by_call.get((u.tool, canonical_args(u.arguments)), [])
                    if p.record_id != u.record_id and (not u.task or p.task == u.task)]
        if partners:
            out.append(Unit(u.record_id, u.call_index, u.tool, u.arguments, u.real, rng.choice(partners).real,
                            "other-trial", u.task))
    return out


def control_verdict(kind: str, result: dict[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {"status": "too few pairs", "ok": None}
    if kind == "positive":
        ok = result["accuracy"] >= POSITIVE_MIN and result["ci_low"] > 0.5
        rule = f"caught: accuracy >= {POSITIVE_MIN} and interval above 0.5"
    else:
        ok = result["ci_low"] <= 0.5 <= result["ci_high"]
        rule = "at chance: interval contains 0.5"
    return result | {"ok": ok, "rule": rule}


def c2st_controls(units: Sequence[Unit], pool: Sequence[Unit], folds: int = 5, seed: int = 0) -> dict[str, Any]:
    out = {}
    for kind, build in (("positive", positive_control), ("negative", negative_control)):
        pairs = build(units, pool, seed)
        result = None
        if len(pairs) >= MIN_CONTROL_PAIRS and len({p.record_id for p in pairs}) >= 2:
            result = discriminate([p.text("real") for p in pairs], [p.text("simulated") for p in pairs],
                                  [p.record_id for p in pairs], folds, seed, _folds(pairs))[0]
        out[f"{kind}_control"] = control_verdict(kind, result)
    return out


def meaningless_reason(report: dict[str, Any]) -> str | None:
    """Why a discriminator's realism number cannot be trusted, or None."""
    positive = report.get("positive_control") or {}
    if positive.get("ok") is False:
        return (f"it did not catch the positive control (shuffled outputs of other tools: accuracy "
                f"{positive['accuracy']:.3f}, needs >= {POSITIVE_MIN} with the interval above 0.5), so its realism "
                f"number is meaningless")
    if positive.get("ok") is None:
        return "its positive control could not be run (too few calls), so its realism number is unchecked"
    return None


def real_pool(units: Sequence[Unit],
              extra: Iterable[tuple[tuple[str, int], tuple[str, str, str, str]]] = ()) -> list[Unit]:
    """Real outputs the controls draw from: the units' own plus ``extra``
    ((record, call), (tool, args, output, task))."""
    pool = list(units)
    seen = {(u.record_id, u.call_index) for u in units}
    for (record_id, index), (tool, arguments, output, task) in extra:
        if (record_id, index) not in seen:
            pool.append(Unit(record_id, index, tool, arguments, output, output, "real", task))
    return pool
