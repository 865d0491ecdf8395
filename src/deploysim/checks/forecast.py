"""The forecast workload: per-point elicitation probabilities of a run -> Gumbel-tail forecasts (docs/forecast.md).

p_i comes from ``--samples K`` verdicts or from target-prefix log-probabilities (appended to
``RUN/forecast/targets-<hash>.jsonl``, so scoring resumes); the statistics are ``evaluate.stats.forecast``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from deploysim.core.models import ModelCallError, get_model
from deploysim.core.schema import Deployment
from deploysim.core.store import RunDirError, read_points
from deploysim.evaluate.stats import forecast as F

LOGGED = "logged"


@dataclass
class Elicitation:
    """One deployment's p_i over the run's points (log p; -inf where p = 0)."""

    deployment: str
    logp: np.ndarray
    #: (flagged per point, K) when p came from K graded samples; None for targets.
    counts: tuple[np.ndarray, int] | None
    points_without_p: int = 0


def _deployments(run_dir: Path) -> list[Deployment]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no config.yaml; is this a run directory?")
    raw = yaml.safe_load(path.read_text()) or {}
    return [Deployment.model_validate(d) for d in raw.get("deployments", [])]


def _pick(names: list[str], wanted: list[str] | None) -> list[str]:
    if not wanted:
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise F.ForecastError(f"deployment {unknown[0]!r} has no elicitation data in this run; "
                              f"known: {', '.join(names) or 'none'}")
    return [n for n in names if n in wanted]


def from_verdicts(run_dir: Path, behaviour: str, wanted: list[str] | None = None) -> list[Elicitation]:
    """p_i = flagged / K per point from the run's verdicts (K = the deployment's ``samples``)."""
    from deploysim.evaluate.stats.data import load_run

    data = load_run(run_dir)
    if behaviour not in data.outcomes:
        known = ", ".join(data.behaviours) or "none"
        raise F.ForecastError(f"{run_dir}: behaviour {behaviour!r} has no verdicts in this run "
                              f"(graded behaviours: {known}); grade it first: deploysim grade {run_dir}")
    samples = {d.name: d.samples for d in _deployments(run_dir)}
    outcomes = data.outcomes[behaviour]
    names = [d for d in data.deployments if d in outcomes and d != LOGGED]
    result = []
    for name in _pick(names, wanted):
        column = outcomes[name]
        decided = ~np.isnan(column)
        if not decided.any():
            raise F.ForecastError(f"{run_dir}: behaviour {behaviour!r} has no usable verdicts for {name!r}")
        k = samples.get(name, 1)
        flagged = np.round(column[decided] * k)
        result.append(Elicitation(name, F.logp_of_counts(flagged, k), (flagged, k), int((~decided).sum())))
    return result


def read_targets(prefix: str | None, path: Path | None) -> list[str]:
    """The target strings: one ``--target-prefix``, or one per non-empty line of ``--target-file``."""
    if prefix is not None and path is not None:
        raise F.ForecastError("give --target-prefix or --target-file, not both")
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise F.ForecastError(f"{path}: cannot read the target file ({type(exc).__name__})") from None
        targets = [line for line in lines if line.strip()]
        if not targets:
            raise F.ForecastError(f"{path}: the target file holds no target (one per line)")
    else:
        targets = [prefix or ""]
        if not targets[0]:
            raise F.ForecastError("--target-prefix is empty")
    # A target that extends another is already counted by the shorter one: keep the shorter.
    kept = [t for t in dict.fromkeys(targets) if not any(o != t and t.startswith(o) for o in targets)]
    return kept


def _target_key(deployment: Deployment, targets: list[str]) -> str:
    ident = orjson.dumps({"model": deployment.model, "system": deployment.system_prompt,
                          "text": deployment.system_prompt_text, "targets": targets})
    return hashlib.sha256(ident).hexdigest()[:16]


def from_targets(run_dir: Path, targets: list[str], wanted: list[str] | None = None,
                 show_progress: bool = True) -> list[Elicitation]:
    """p_i = P(reply begins with one of ``targets``) per point and deployment, scored (and saved) now."""
    deployments = {d.name: d for d in _deployments(run_dir)}
    if not (run_dir / "points.parquet").is_file():
        raise RunDirError(f"{run_dir}: no points.parquet; is this a finished run directory?")
    points = list(read_points(run_dir))
    if not points:
        raise F.ForecastError(f"{run_dir}: the run has no replay points")
    return [asyncio.run(_score(run_dir, deployments[name], points, targets, show_progress))
            for name in _pick(list(deployments), wanted)]


async def _score(run_dir: Path, deployment: Deployment, points: list[Any], targets: list[str],
                 show_progress: bool) -> Elicitation:
    client = get_model(deployment.model)
    if not hasattr(client, "target_logprobs"):
        raise F.ForecastError(f"{deployment.model} ({deployment.name}) gives no token log-probabilities, so it "
                              "cannot score a target prefix; make the run with --samples K and grade it instead")
    path = run_dir / "forecast" / f"targets-{_target_key(deployment, targets)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, float] = {}
    if path.is_file():
        for line in path.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by a kill: scored again
            done[row["point_id"]] = row["logp"]
    todo = [p for p in points if p.point_id not in done]
    semaphore = asyncio.Semaphore(max(1, deployment.concurrency))
    started, finished = time.time(), 0

    async def one(point: Any, out: Any) -> None:
        nonlocal finished
        messages = deployment.apply_system_prompt(point.prefix)
        async with semaphore:
            values = await client.target_logprobs(messages, targets)
        logp = float(np.logaddexp.reduce(values)) if len(values) > 1 else float(values[0])
        done[point.point_id] = logp
        out.write(orjson.dumps({"point_id": point.point_id, "logp": logp}) + b"\n")
        out.flush()
        finished += 1
        if show_progress and (finished % 50 == 0 or finished == len(todo)):
            rate = finished / max(time.time() - started, 1e-9)
            print(f"forecast: {deployment.name} scored {finished}/{len(todo)} points ({rate:.2f}/s)",
                  file=sys.stderr, flush=True)

    try:
        with path.open("ab") as out:
            for start in range(0, len(todo), 256):
                await asyncio.gather(*(one(p, out) for p in todo[start:start + 256]))
    except ModelCallError as exc:
        raise F.ForecastError(f"{deployment.name}: {exc}") from None
    finally:
        await client.aclose()
    return Elicitation(deployment.name, np.array([done[p.point_id] for p in points]), None)


def volume_grid(volumes: list[int], n: int) -> list[int]:
    """The asked volumes plus every power of ten between the sample size and the largest of them."""
    top = max(volumes)
    decades = [10**j for j in range(int(math.log10(n)) + 1, int(math.log10(top)) + 1) if n < 10**j < top]
    return sorted(set(volumes) | set(decades))


def forecast_run(run_dir: Path, *, behaviour: str | None, volumes: list[int], top_k: int = F.DEFAULT_TOP_K,
                 targets: list[str] | None = None, deployments: list[str] | None = None,
                 validate: bool = False, validate_fraction: float = 0.1, validate_repeats: int = 20,
                 replicates: int = 1000, confidence: float = 0.95, seed: int = 0,
                 show_progress: bool = True) -> dict[str, Any]:
    """Gather p_i, fit and forecast per deployment; the dict that becomes ``forecast.json``."""
    run_dir = Path(run_dir)
    if not volumes:
        raise F.ForecastError("give at least one --volume N")
    if targets:
        elicited = from_targets(run_dir, targets, deployments, show_progress)
        method: dict[str, Any] = {"method": "target", "targets": targets}
        name = behaviour or "target:" + " | ".join(targets)
    else:
        if not behaviour:
            raise F.ForecastError("give --behaviour B (graded in the run) or --target-prefix TEXT")
        elicited = from_verdicts(run_dir, behaviour, deployments)
        method = {"method": "samples", "samples_per_point": {e.deployment: e.counts[1] for e in elicited
                                                             if e.counts is not None}}
        name = behaviour
    out: dict[str, Any] = {"run": str(run_dir), "behaviour": name, "elicitation": method, "top_k": top_k,
                           "confidence": confidence, "forecast": {}, "points": {}}
    if validate:
        out["validation"] = {}
    problems = []
    for e in elicited:
        n = e.logp.size
        out["points"][e.deployment] = {"with_p": n, "without_p": e.points_without_p,
                                       "p_zero": int(np.isneginf(e.logp).sum())}
        try:
            F.check_volumes(volumes, n)
            if e.counts is not None and not np.isfinite(e.logp).any():
                draws = n * e.counts[1]
                bound = F.zero_upper_bound(draws, confidence)
                raise F.ForecastError(
                    f"all {n} elicitation probabilities are 0 ({draws} replies, none flagged): no tail to fit. "
                    f"The per-reply rate is below {bound:.3g} ({confidence:.0%} upper bound); at volume "
                    f"{max(volumes)} expect fewer than {bound * max(volumes):.3g} flagged replies")
            grid = volume_grid(volumes, n)
            result = F.forecast(e.logp, grid, top_k, replicates=replicates, confidence=confidence, seed=seed,
                                counts=e.counts)
            out["forecast"][e.deployment] = result.to_dict()
            out["forecast"][e.deployment]["asked_volumes"] = sorted(volumes)
            out["forecast"][e.deployment]["plot"] = _plot_points(e.logp, result)
            if validate:
                out["validation"][e.deployment] = F.validate(e.logp, top_k, fraction=validate_fraction,
                                                             repeats=validate_repeats, seed=seed)
        except F.ForecastError as exc:
            problems.append(f"{e.deployment}: {exc}")
    if problems:
        raise F.ForecastError("; ".join(problems))
    return out


def _plot_points(logp: np.ndarray, result: F.Forecast, limit: int = 300) -> dict[str, Any]:
    """What the plot needs: the top points' (psi, log S), the fitted line, the forecast points."""
    psi = np.sort(F.psi_of_logp(logp))[::-1]
    psi = psi[np.isfinite(psi)][:limit]
    n = logp.size
    ys = F.log_survival_positions(n, psi.size)
    return {"empirical": [[float(x), float(y)] for x, y in zip(psi, ys, strict=True)],
            "forecast": [[float(result.fit.psi_at_volume(v)), float(-math.log(v))] for v in result.volumes]}


def write_outputs(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    from deploysim.evaluate.report.forecast import forecast_html

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "forecast.json", out_dir / "forecast.html"
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    html_path.write_text(forecast_html(result), encoding="utf-8")
    return json_path, html_path
