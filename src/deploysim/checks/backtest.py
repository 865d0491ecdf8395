"""``deploysim backtest``: score deploysim's predictions against what production later showed (docs/backtest.md).

For each release pair A -> B: predicted (A's logs replayed with B's deployment, ``pairs/A--B``), actual
(B's production graded, ``production/B``), and the previous and suite baselines. Every run is an ordinary
run directory, skipped when finished and resumed when not.
"""

from __future__ import annotations

import glob
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploysim.core.schema import Deployment, SystemPromptPolicy
from deploysim.evaluate.stats.forecast_error import (
    DEFAULT_MIN_CHANGE,
    SMOOTHING,
    Forecast,
    jeffreys,
    score_cell,
    summarise,
)
from deploysim.pipeline.config import SimConfig, dump_config, read_yaml, validation_problems

RESULT = "backtest.json"
PREDICTED, LOGGED = "predicted", "logged"
POLICIES = ("keep", "replace", "prepend")


class BacktestError(ValueError):
    """A bad history or input: the message names the file and field (exit 2)."""


class ReplayOptions(BaseModel):
    """How each release's logs are read and replayed (the parts of a run config a history sets)."""

    model_config = ConfigDict(extra="forbid")
    format: str = "auto"
    turn: Literal["last", "random", "all"] = "all"
    sample: int | None = Field(default=None, ge=1)
    seed: int = 0
    privacy: dict[str, Any] = Field(default_factory=lambda: {"mode": "surrogate"})
    cache: bool = True
    cache_path: str | None = None


class Release(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    deployment: dict[str, Any]
    logs: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("release names are letters, digits, '-', '_' or '.'")
        return v

    @field_validator("logs", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class History(BaseModel):
    model_config = ConfigDict(extra="forbid")
    graders: list[str | dict[str, Any]] | None = None
    #: Behaviours the backtest must cover; each needs a grader (default: whatever the graders decide).
    behaviours: list[str] | None = None
    judge: str | None = None
    replay: ReplayOptions = Field(default_factory=ReplayOptions)
    releases: list[Release]


def _deployment(release: Release, where: str, base: Path) -> Deployment:
    raw = dict(release.deployment)
    raw["name"] = PREDICTED
    prompt = raw.get("system_prompt")
    if isinstance(prompt, str) and prompt not in POLICIES:  # the short form: system_prompt is the text
        raw["system_prompt"], raw["system_prompt_text"] = "replace", prompt
    if "system_prompt_file" in raw:
        path = base / raw.pop("system_prompt_file")
        if not path.is_file():
            raise BacktestError(f"{where}.deployment.system_prompt_file: {path} not found")
        raw["system_prompt_text"] = path.read_text()
        raw.setdefault("system_prompt", "replace")
    try:
        return Deployment.model_validate(raw)
    except ValidationError as exc:
        raise BacktestError(validation_problems(exc, f"{where}.deployment.")) from None


def load_history(path: Path) -> tuple[History, list[Deployment], list[list[str]]]:
    """The history, each release's deployment and its resolved log files; BacktestError on bad input."""
    path = Path(path)
    raw = read_yaml(path, "release history", BacktestError)
    if not isinstance(raw, dict):
        raise BacktestError(f"{path}: expected a mapping with 'releases'")
    try:
        history = History.model_validate(raw)
    except ValidationError as exc:
        raise BacktestError(f"{path}: {validation_problems(exc)}") from None
    if len(history.releases) < 2:
        raise BacktestError(f"{path}: releases: a backtest needs at least two releases, found "
                            f"{len(history.releases)}")
    names = [r.name for r in history.releases]
    if len(set(names)) != len(names):
        raise BacktestError(f"{path}: releases: names must be unique, got {names}")
    base = path.parent.resolve()
    deployments, files = [], []
    owner: dict[str, str] = {}
    for i, release in enumerate(history.releases):
        where = f"{path}: releases[{i}] ({release.name})"
        deployments.append(_deployment(release, where, base))
        if not release.logs:
            raise BacktestError(f"{where}.logs: no logs given")
        found: list[str] = []
        for pattern in release.logs:
            full = pattern if Path(pattern).is_absolute() else str(base / pattern)
            matched = sorted(p for p in glob.glob(full, recursive=True) if Path(p).is_file())
            if not matched:
                raise BacktestError(f"{where}.logs: {pattern!r} matches no file")
            found.extend(matched)
        for file in found:
            key = str(Path(file).resolve())
            if key in owner and owner[key] != release.name:
                raise BacktestError(f"{where}.logs: {file} is also a log of release {owner[key]!r}; "
                                    "each release needs its own production logs")
            owner[key] = release.name
        files.append(sorted(set(found)))
    return history, deployments, files


def _check_graders(history: History, where: Path) -> list[str | dict[str, Any]]:
    from deploysim.evaluate.graders import DEFAULT_GRADERS
    from deploysim.evaluate.graders.base import GraderError, build_graders

    entries = history.graders or list(DEFAULT_GRADERS)
    try:
        graders = build_graders(entries, judge=history.judge)
    except (GraderError, ValueError, KeyError) as exc:
        raise BacktestError(f"{where}: graders: {exc}") from None
    covered = {b for g in graders for b in g.behaviours}
    for behaviour in history.behaviours or []:
        if behaviour not in covered:
            raise BacktestError(f"{where}: behaviours: no grader decides {behaviour!r} "
                                f"(graders: {', '.join(g.name for g in graders)}); add one to 'graders'")
    return entries


def _run(config: SimConfig, out: Path, log: Any) -> dict[str, Any]:
    """Run or finish one ordinary run directory; a finished one is read back, not redone."""
    from deploysim.evaluate.simulate import run_simulation

    summary_path, config_path = out / "summary.json", out / "config.yaml"
    if config_path.is_file():
        written = config_path.read_text().split("\n", 1)[1]
        if written != dump_config(config):
            raise BacktestError(f"{out}: this run directory was made with another configuration; "
                                "use a new --out for a changed history")
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if "behaviours" in summary and (out / "verdicts.parquet").is_file():
                log(f"{out.name}: done already")
                return summary
    started = time.time()
    summary = run_simulation(config, out, resume=config_path.is_file(), show_progress=False)
    log(f"{out.name}: {summary.get('points', '?')} points in {time.time() - started:.0f}s")
    return summary


def _config(history: History, data: list[str], deployments: list[Deployment], graders: list[Any],
            turn: str | None = None, sample: int | None | Literal["history"] = "history",
            fmt: str | None = None) -> SimConfig:
    r = history.replay
    raw = {"data": data, "format": fmt or r.format, "turn": turn or r.turn,
           "sample": r.sample if sample == "history" else sample, "seed": r.seed,
           "privacy": r.privacy, "cache": r.cache, "cache_path": r.cache_path, "graders": graders,
           "judge": history.judge,
           # validated with a placeholder: a production run has no deployment, only what was logged
           "deployments": [d.model_dump() for d in deployments] or [{"name": "x", "model": "instant/x"}]}
    config = SimConfig.model_validate(raw)
    return config if deployments else config.model_copy(update={"deployments": []})


def _rates(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{deployment: {behaviour: rate dict}} with the statistics room's weighted, clustered estimator."""
    from deploysim.evaluate.stats.data import load_run
    from deploysim.evaluate.stats.rates import weighted_rate

    data = load_run(run_dir)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for behaviour in data.behaviours:
        for dep, y in data.outcomes[behaviour].items():
            r = weighted_rate(y, data.weights, data.clusters)
            if r.rate is None:
                continue
            # Jeffreys on the effective counts: a clustered sample counts for what it is worth
            out.setdefault(dep, {})[behaviour] = {
                "rate": r.rate, "low": r.low, "high": r.high, "n": r.n, "n_eff": r.n_eff, "flagged": r.flagged,
                "smoothed": jeffreys(min(r.rate * r.n_eff, r.n_eff), r.n_eff), "grader": data.graders[behaviour],
            }
    return out


def _suite_names(releases: list[Release]) -> dict[str, str]:
    return {r.name: "r_" + "".join(c if c.isalnum() or c in "_-" else "_" for c in r.name) for r in releases}


@dataclass
class PlannedRun:
    """One run directory of a backtest: what it is, its config, and whose logs it reads."""

    kind: Literal["production", "pair", "suite"]
    key: str  # release name, "A->B", or "suite"
    config: SimConfig
    out: Path
    reads: list[str]  # release names whose logs this run reads


def plan_backtest(history_path: Path, out: Path, *, suite: Path | None = None,
                  pairs: str = "consecutive") -> tuple[History, list[tuple[Release, Release]], list[PlannedRun]]:
    """Validate the history and list every run the backtest needs (nothing runs yet)."""
    history_path, out = Path(history_path), Path(out)
    history, deployments, files = load_history(history_path)
    graders = _check_graders(history, history_path)
    if suite is not None and not Path(suite).is_file():
        raise BacktestError(f"--suite: {suite} not found")
    releases = history.releases
    index = {r.name: i for i, r in enumerate(releases)}
    runs = [PlannedRun("production", r.name, _config(history, logs, [], graders, sample=None),
                       out / "production" / r.name, [r.name]) for r, logs in zip(releases, files, strict=True)]
    if pairs not in ("all", "consecutive"):
        raise BacktestError(f"--pairs: expected 'consecutive' or 'all', got {pairs!r}")
    chosen = list(itertools.permutations(releases, 2) if pairs == "all" else itertools.pairwise(releases))
    for a, b in chosen:
        runs.append(PlannedRun("pair", f"{a.name}->{b.name}",
                               _config(history, files[index[a.name]], [deployments[index[b.name]]], graders),
                               out / "pairs" / f"{a.name}--{b.name}", [a.name]))
    if suite is not None:
        names = _suite_names(releases)
        suite_deps = [d.model_copy(update={"name": names[r.name]}) for r, d in zip(releases, deployments,
                                                                                   strict=True)]
        runs.append(PlannedRun("suite", "suite", _config(history, [str(suite)], suite_deps, graders, turn="last",
                                                         sample=None, fmt="auto"), out / "suite", []))
    return history, chosen, runs


def execute(run: PlannedRun, log: Any = print) -> dict[str, Any]:
    """Run (or finish, or just read back) one planned run (the history script runs them one by one)."""
    return _run(run.config, run.out, log)


def run_backtest(history_path: Path, out: Path, *, suite: Path | None = None, pairs: str = "consecutive",
                 min_change: float = DEFAULT_MIN_CHANGE, confidence: float = 0.95, seed: int = 0,
                 log: Any = print) -> dict[str, Any]:
    """Build (or finish) every run of the backtest in ``out`` and write ``out/backtest.json``."""
    history_path, out = Path(history_path), Path(out)
    history, chosen, runs = plan_backtest(history_path, out, suite=suite, pairs=pairs)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    releases = history.releases
    production: dict[str, dict[str, dict[str, Any]]] = {}
    predicted: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    suite_rates: dict[str, dict[str, dict[str, Any]]] | None = None
    for run in runs:
        summary = _run(run.config, run.out, log)
        rates = _rates(run.out)
        if run.kind == "production":
            i = [r.name for r in releases].index(run.key)
            if not summary.get("points") or not rates.get(LOGGED):
                raise BacktestError(
                    f"{history_path}: releases[{i}] ({run.key}).logs: no gradable point in "
                    f"{', '.join(run.config.data)} ({summary.get('records_read', 0)} records read, "
                    f"{summary.get('records_rejected', 0)} rejected; see {run.out / 'rejects.jsonl'})")
            production[run.key] = rates[LOGGED]
        elif run.kind == "pair":
            predicted[run.key] = rates
        else:
            names = _suite_names(releases)
            suite_rates = {r.name: rates.get(names[r.name], {}) for r in releases}
    cells = build_cells(chosen, production, predicted, suite_rates, min_change)
    result = {
        "history": str(history_path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pairs": [f"{a.name}->{b.name}" for a, b in chosen],
        "releases": [{"name": r.name, "deployment": r.deployment, "logs": run.config.data}
                     for r, run in zip(releases, runs, strict=False)],
        "min_change": min_change,
        "smoothing": SMOOTHING,
        "confidence": confidence,
        "suite": str(suite) if suite else None,
        "runs": {run.key: str(run.out) for run in runs},
        "cells": cells,
        "metrics": summarise([c["scores"]["deploysim"] for c in cells], confidence, seed=seed),
        "baselines": {name: summarise([c["scores"][name] for c in cells if name in c["scores"]], confidence,
                                      seed=seed)
                      for name in (["previous"] + (["suite"] if suite is not None else []))},
        "duration_s": round(time.time() - started, 1),
    }
    (out / RESULT).write_text(json.dumps(result, indent=1, default=str))
    from deploysim.evaluate.report.backtest_page import write_backtest_page

    write_backtest_page(result, out / "backtest.html")
    return result


def build_cells(pairs: list[tuple[Release, Release]], production: dict[str, dict[str, dict[str, Any]]],
                predicted: dict[str, dict[str, dict[str, dict[str, Any]]]],
                suite: dict[str, dict[str, dict[str, Any]]] | None,
                min_change: float = DEFAULT_MIN_CHANGE) -> list[dict[str, Any]]:
    """One cell per (pair, behaviour), every behaviour production showed, zero counts included."""
    cells = []
    for a, b in pairs:
        key = f"{a.name}->{b.name}"
        run = predicted[key]
        for behaviour in sorted(production[b.name]):
            actual, previous = production[b.name][behaviour], production[a.name].get(behaviour)
            pred, ref = run.get(PREDICTED, {}).get(behaviour), run.get(LOGGED, {}).get(behaviour)
            if previous is None or pred is None or ref is None:
                raise BacktestError(f"pair {key}: behaviour {behaviour!r} has no verdicts in every run; "
                                    "grade all releases with the same graders")
            actual_change = actual["smoothed"] / previous["smoothed"]
            actual_zero = actual["flagged"] == 0
            scores = {
                "deploysim": score_cell(Forecast(pred["smoothed"], pred["smoothed"] / ref["smoothed"]),
                                        actual["smoothed"], actual_change, min_change,
                                        both_zero=actual_zero and pred["flagged"] == 0),
                "previous": score_cell(Forecast(previous["smoothed"], 1.0), actual["smoothed"], actual_change,
                                       min_change, both_zero=actual_zero and previous["flagged"] == 0),
            }
            cell = {"pair": key, "from": a.name, "to": b.name, "behaviour": behaviour,
                    "grader": actual["grader"], "predicted": pred, "replayed_reference": ref,
                    "actual": actual, "previous": previous, "actual_change": actual_change,
                    "direction_cell": scores["deploysim"]["direction_cell"]}
            if suite is not None:
                sa, sb = suite[a.name].get(behaviour), suite[b.name].get(behaviour)
                if sa is not None and sb is not None:
                    change = sb["smoothed"] / sa["smoothed"]
                    scores["suite"] = score_cell(
                        Forecast(previous["smoothed"] * change, change), actual["smoothed"], actual_change,
                        min_change, both_zero=actual_zero and previous["flagged"] == 0 and sb["flagged"] == 0)
                    cell["suite"] = {"from": sa, "to": sb}
            cell["scores"] = scores
            cell["multiplicative_error"] = scores["deploysim"]["multiplicative_error"]
            cells.append(cell)
    return cells


def read_backtest(path: Path) -> dict[str, Any]:
    """``backtest.json`` from a backtest directory (or the file itself)."""
    path = Path(path)
    file = path / RESULT if path.is_dir() else path
    if not file.is_file():
        raise BacktestError(f"{path}: no {RESULT}; run `deploysim backtest` first")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise BacktestError(f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    for key in ("cells", "metrics", "baselines"):
        if key not in data:
            raise BacktestError(f"{file}: missing {key!r}; not a backtest result")
    return data


__all__ = ["BacktestError", "History", "SystemPromptPolicy", "build_cells", "load_history", "read_backtest",
           "run_backtest"]
