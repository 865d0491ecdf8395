"""Grader validation against human labels: precision, recall, FPR, kappa, with intervals.

The statistics room corrects observed rates for grader error (Rogan-Gladen) with the
sensitivity and specificity saved here, so each comes with a Wilson interval and the
counts behind it.

Labels file (JSONL, one labelled reply per line)::

    {"id": "refusal-pos-01",                  # unique, stable
     "behaviour": "over_refusal",             # a catalog behaviour id
     "label": true,                           # did the behaviour occur (human judgement)
     "context": [{"role": "user", "content": "..."}],   # prefix messages, schema Message shape
     "reply": "...",                          # the graded assistant text
     "finish_reason": "stop",                 # optional
     "tool_calls": [], "tools": [],           # optional, schema shapes
     "note": "why this label"}                # optional
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from deploysim.core.schema import Message, ToolCall
from deploysim.evaluate.graders.base import GradeItem, Grader, GraderError, build_graders, registry
from deploysim.evaluate.graders.catalog import CATALOG
from deploysim.evaluate.graders.run import DEFAULT_GRADERS

BOOTSTRAP = 1000


@dataclass
class Label:
    id: str
    behaviour: str
    label: bool
    item: GradeItem
    note: str = ""


def load_labels(path: Path) -> list[Label]:
    """Parse and check a labels JSONL file; errors name the line."""
    labels: list[Label] = []
    seen: set[str] = set()
    with open(path, "rb") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                behaviour = row["behaviour"]
                if behaviour not in CATALOG:
                    raise ValueError(f"unknown behaviour {behaviour!r}")
                if not isinstance(row["label"], bool):
                    raise ValueError("'label' must be true or false")
                label_id = str(row.get("id") or f"line-{n}")
                if label_id in seen:
                    raise ValueError(f"duplicate id {label_id!r}")
                seen.add(label_id)
                item = GradeItem(
                    context=[Message.model_validate(m) for m in row.get("context") or []],
                    reply=row["reply"] or "",
                    tool_calls=[ToolCall.model_validate(c) for c in row.get("tool_calls") or []],
                    finish_reason=row.get("finish_reason"),
                    tools=row.get("tools") or [],
                    point_id=label_id,
                    deployment="labels",
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise GraderError(f"{path}:{n}: bad label row: {exc}") from None
            labels.append(Label(label_id, behaviour, row["label"], item, row.get("note", "")))
    return labels


def _wilson(successes: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return [round(float(low), 4), round(float(high), 4)]


def agreement_metrics(truth: Sequence[bool], predicted: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """Confusion counts, sensitivity/specificity/precision/FPR/kappa and 95% intervals."""
    import numpy as np
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    y, p = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, p, labels=[False, True]).ravel())
    n_pos, n_neg = tp + fn, tn + fp

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    kappa = float(cohen_kappa_score(y, p)) if len(set(y.tolist()) | set(p.tolist())) > 1 else 1.0
    # Bootstrap kappa, vectorised: resampled confusion counts -> kappa per resample.
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), (BOOTSTRAP, len(y)))
    yy, pp = y[idx], p[idx]
    po = (yy == pp).mean(axis=1)
    pe = yy.mean(axis=1) * pp.mean(axis=1) + (1 - yy.mean(axis=1)) * (1 - pp.mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kappas = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    kappas = kappas[~np.isnan(kappas)]
    kappa_ci = [round(float(np.quantile(kappas, 0.025)), 4), round(float(np.quantile(kappas, 0.975)), 4)] \
        if kappas.size else None
    return {
        "sensitivity": ratio(tp, n_pos), "specificity": ratio(tn, n_neg),
        "precision": ratio(tp, tp + fp), "recall": ratio(tp, n_pos),
        "false_positive_rate": ratio(fp, n_neg), "kappa": round(kappa, 4) if not np.isnan(kappa) else None,
        "n_positive": n_pos, "n_negative": n_neg, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "intervals": {
            "method": "wilson 95% (proportions); percentile bootstrap 95%, 1000 resamples (kappa)",
            "sensitivity": _wilson(tp, n_pos), "specificity": _wilson(tn, n_neg),
            "precision": _wilson(tp, tp + fp), "recall": _wilson(tp, n_pos),
            "false_positive_rate": _wilson(fp, n_neg), "kappa": kappa_ci,
        },
    }


def _graders_for(behaviours: set[str], grader_names: Sequence[str] | None, judge: str | None) -> list[str]:
    specs = registry()
    if grader_names:
        return list(grader_names)
    names = [n for n in DEFAULT_GRADERS if set(specs[n].behaviours) & behaviours]
    names += [n for n, s in specs.items() if s.offline and n not in names and set(s.behaviours) & behaviours
              and s.source.startswith("deploysim.")]
    if judge:
        names.append("judge")
    return names


async def _run(graders: list[Grader], labels: list[Label]) -> dict[str, dict[str, tuple[bool | None, str | None]]]:
    """{grader: {label_id: (flagged, error)}} for the behaviour each label is about."""
    out: dict[str, dict[str, tuple[bool | None, str | None]]] = {}
    for g in graders:
        mine = [lab for lab in labels if lab.behaviour in g.behaviours]
        results = await g.grade([lab.item for lab in mine]) if mine else []
        out[g.name] = {}
        for lab, decisions in zip(mine, results, strict=True):
            decision = next(d for d in decisions if d.behaviour == lab.behaviour)
            out[g.name][lab.id] = (decision.flagged, decision.error)
        closer = getattr(g, "aclose", None)
        if closer is not None:
            await closer()
    return out


def validate_graders(labels_path: Path, grader_names: Sequence[str] | None = None, judge: str | None = None,
                     graders: Sequence[Grader] | None = None) -> dict[str, Any]:
    """Per behaviour (and grader): agreement with the human labels, shaped for the stats room.

    The first grader deciding a behaviour is keyed by the behaviour id; others by
    ``behaviour[grader]``, matching the keys of ``grade_run``'s rates.
    """
    labels = load_labels(Path(labels_path))
    behaviours = {lab.behaviour for lab in labels}
    if graders is None:
        judge_params: dict[str, Any] = {"behaviours": sorted(behaviours & set(CATALOG))} if judge else {}
        entries: list[Any] = [{"name": n, "params": judge_params} if n == "judge" else n
                              for n in _graders_for(behaviours, grader_names, judge)]
        graders = build_graders(entries, judge=judge)
    results = asyncio.run(_run(list(graders), labels))
    report: dict[str, Any] = {}
    for g in graders:
        for behaviour in sorted(behaviours & set(g.behaviours)):
            mine = [lab for lab in labels if lab.behaviour == behaviour]
            decided = [(lab.label, results[g.name][lab.id][0]) for lab in mine
                       if results[g.name][lab.id][0] is not None]
            key = behaviour if behaviour not in report else f"{behaviour}[{g.name}]"
            entry: dict[str, Any] = {"grader": g.name, "grader_version": str(g.version)}
            if decided:
                entry.update(agreement_metrics([t for t, _ in decided], [bool(p) for _, p in decided]))
            entry["n_errors"] = len(mine) - len(decided)
            entry["labels"] = str(labels_path)
            report[key] = entry
    return report
