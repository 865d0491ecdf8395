"""``deploysim rollout``, ``backtest``, ``calibrate`` and ``plan``: predictions you can check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from deploysim.cli._common import CliError, output_console

EXIT_NOT_RECONCILED = 1


@click.command("rollout")
@click.option("--data", multiple=True, type=click.Path(), help="Conversations to roll out (any source format).")
@click.option("--format", "fmt", default="auto", show_default=True)
@click.option("--model", help="Model id of the deployment, e.g. local/smollm2.")
@click.option("--system-prompt", help="The deployment's system prompt text, or @FILE (replaces the logged one).")
@click.option("--users", default="logged", show_default=True,
              help="'logged' keeps the logged user turns verbatim; a model id simulates the user.")
@click.option("--max-user-turns", type=click.IntRange(min=1), help="Cut each conversation to its first N user turns.")
@click.option("--sample", type=click.IntRange(min=1), help="A seeded uniform sample of N conversations.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--config", "config_path", type=click.Path(), help="A sim.yaml with exactly one deployment instead.")
@click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default="surrogate",
              show_default=True)
@click.option("--no-presidio", is_flag=True, help="Built-in recognizers only.")
@click.option("--no-cache", is_flag=True)
@click.option("--out", type=click.Path(), help="Rollout directory to create.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Finish an interrupted rollout directory.")
def rollout_cmd(**opts: Any) -> None:
    """Counterfactual production: regenerate every assistant turn of each conversation, in order.

    Writes DIR/rollout.jsonl (openai format, per-message provenance in metadata), which
    every source reads, and DIR/summary.json with reconciled counts.
    """
    from deploysim.core.models import ModelIdError
    from deploysim.core.schema import GenerationParams
    from deploysim.core.store import RunDirError
    from deploysim.pipeline.config import ConfigError, load_config, validate_config
    from deploysim.core.lifecycle import RunLockedError
    from deploysim.pipeline.rollout import RolloutError, run_rollout
    from deploysim.pipeline.sources import SourceError

    resume = opts["resume_dir"]
    out = Path(resume or opts["out"] or "")
    try:
        if resume:
            if not (out / "config.yaml").is_file():
                raise CliError(f"{out}: not a rollout directory (no config.yaml)")
            config = load_config(out / "config.yaml")
            previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
            users = previous.get("users", opts["users"])
            max_turns = previous.get("max_user_turns", opts["max_user_turns"])
        else:
            if not opts["out"]:
                raise CliError("--out DIR is required (or --resume DIR)")
            if (out / "config.yaml").exists():
                raise CliError(f"{out} already holds a rollout; use --resume {out} to finish it, or pick another --out")
            if opts["config_path"]:
                config = load_config(Path(opts["config_path"]))
            else:
                if not opts["data"] or not opts["model"]:
                    raise CliError("--data and --model are required (or --config)")
                from deploysim.cli.main import _system_prompt

                deployment: dict[str, Any] = {
                    "name": "rollout", "model": opts["model"], "concurrency": opts["concurrency"],
                    "params": {"temperature": opts["temperature"], "max_tokens": opts["max_tokens"]}}
                prompt = _system_prompt(opts["system_prompt"])
                if prompt is not None:
                    deployment.update(system_prompt="replace", system_prompt_text=prompt)
                config = validate_config({
                    "data": list(opts["data"]), "format": opts["fmt"], "sample": opts["sample"], "seed": opts["seed"],
                    "deployments": [deployment], "cache": not opts["no_cache"],
                    "privacy": {"mode": opts["privacy"], **({"presidio": False} if opts["no_presidio"] else {})}},
                    "command-line options")
            users, max_turns = opts["users"], opts["max_user_turns"]
        summary = run_rollout(config, out, users=users, max_user_turns=max_turns,
                              simulator_params=GenerationParams(temperature=opts["temperature"],
                                                                max_tokens=opts["max_tokens"]),
                              resume=bool(resume))
    except (ConfigError, SourceError, ModelIdError, RolloutError, RunLockedError, RunDirError, ImportError) as exc:
        raise CliError(str(exc))
    console = output_console()
    console.print(f"rollout: {summary['conversations_written']} conversations written, "
                  f"{summary['conversations_errored']} errored, {summary['records_rejected']} rejected; "
                  f"{summary['assistant_turns']} assistant turns, {summary['simulated_user_turns']} simulated user "
                  f"turns; reconciled: {summary['reconciled']}", highlight=False)
    console.print(f"output: {out / 'rollout.jsonl'}", highlight=False)
    if not summary["reconciled"]:
        sys.exit(EXIT_NOT_RECONCILED)


def _metrics_table(result: dict[str, Any]) -> Table:
    table = Table(title="backtest", title_justify="left")
    for col in ("method", "direction right", "95% CI", "median error", "95% CI", "within 2x", "within 10x", "cells"):
        table.add_column(col)
    methods = [("deploysim", result["metrics"])] + list(result["baselines"].items())
    for name, m in methods:
        dl, dh = m["direction_accuracy_interval"]
        el, eh = m["median_multiplicative_error_interval"]
        table.add_row(
            name,
            "-" if m["direction_accuracy"] is None else
            f"{m['direction_accuracy']:.0%} ({m['direction_right']}/{m['direction_cells']})",
            "-" if dl is None else f"[{dl:.0%}, {dh:.0%}]",
            "-" if m["median_multiplicative_error"] is None else f"{m['median_multiplicative_error']:.2f}x",
            "-" if el is None else f"[{el:.2f}x, {eh:.2f}x]",
            "-" if m["within_2x"] is None else f"{m['within_2x']:.0%}",
            "-" if m["within_10x"] is None else f"{m['within_10x']:.0%}", str(m["cells"]))
    return table


@click.command("backtest")
@click.option("--history", "history_path", required=True, type=click.Path(), help="Release history YAML.")
@click.option("--out", required=True, type=click.Path(), help="Backtest directory (resumable).")
@click.option("--suite", type=click.Path(), help="Hard-prompt suite (any source format) for the suite baseline.")
@click.option("--pairs", type=click.Choice(["consecutive", "all"]), default="consecutive", show_default=True)
@click.option("--min-change", type=click.FloatRange(min=1.0, min_open=True), default=1.5, show_default=True,
              help="Direction is judged on cells whose production rate moved by at least this factor.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print backtest.json's metrics and baselines as JSON.")
def backtest_cmd(history_path: str, out: str, suite: str | None, pairs: str, min_change: float,
                 confidence: float, as_json: bool) -> None:
    """Score predictions against what each next release's production showed.

    \b
    Writes OUT/backtest.json and OUT/backtest.html; every pair is an ordinary run
    directory under OUT/pairs, each release's production under OUT/production.
    """
    from deploysim.checks.backtest import BacktestError, run_backtest
    from deploysim.core.models import ModelIdError
    from deploysim.core.store import RunDirError
    from deploysim.pipeline.config import ConfigError
    from deploysim.core.lifecycle import RunLockedError
    from deploysim.pipeline.sources import SourceError

    err = output_console(stderr=True)
    try:
        result = run_backtest(Path(history_path), Path(out), suite=Path(suite) if suite else None, pairs=pairs,
                              min_change=min_change, confidence=confidence,
                              log=lambda m: err.print(m, highlight=False))
    except (BacktestError, ConfigError, SourceError, ModelIdError, RunDirError, RunLockedError) as exc:
        raise CliError(str(exc))
    if as_json:
        click.echo(json.dumps({"metrics": result["metrics"], "baselines": result["baselines"]}, indent=1))
        return
    console = output_console()
    console.print(_metrics_table(result))
    console.print(f"{len(result['cells'])} cells; {Path(out) / 'backtest.json'}; {Path(out) / 'backtest.html'}",
                  highlight=False)


@click.command("calibrate")
@click.argument("backtest_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="calibration.json to write.")
@click.option("--prior-cells", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Shrinkage: pseudo-cells of zero bias per behaviour.")
def calibrate_cmd(backtest_dir: str, out: str, prior_cells: float) -> None:
    """Learn a per-behaviour correction from a backtest; report its leave-one-release-out effect."""
    from deploysim.checks.backtest import BacktestError
    from deploysim.checks.calibrate import calibrate
    from deploysim.evaluate.stats.calibration import CalibrationError

    try:
        calibration = calibrate(Path(backtest_dir), Path(out), prior_cells)
    except (BacktestError, CalibrationError) as exc:
        raise CliError(str(exc))
    console = output_console()
    table = Table(title="calibration (shrunk log-ratio bias)", title_justify="left")
    for col in ("behaviour", "cells", "factor", "residual sd (log)"):
        table.add_column(col)
    for name, c in sorted(calibration.behaviours.items()):
        table.add_row(name, str(c.cells), f"{c.factor:.2f}x", f"{c.residual_sd_log:.2f}")
    console.print(table)
    loro = calibration.extra["leave_one_release_out"]
    for label in ("raw", "calibrated"):
        m = loro[label]
        med, ev = m["median_multiplicative_error"], m["median_multiplicative_error_with_events"]
        acc = m["direction_accuracy"]
        console.print(f"leave-one-release-out {label}: median error {'-' if med is None else f'{med:.2f}x'} "
                      f"({'-' if ev is None else f'{ev:.2f}x'} on the {m['cells'] - m['both_zero_cells']} cells "
                      f"with events), direction {'-' if acc is None else f'{acc:.0%}'} over {m['cells']} "
                      "held-out cells", highlight=False)
    console.print(f"written: {out}", highlight=False)


@click.command("plan")
@click.option("--rate", required=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="The behaviour's current rate, e.g. 1e-4.")
@click.option("--ratio", required=True, type=click.FloatRange(min=0, min_open=True),
              help="The change to detect, e.g. 1.5 (or 0.5 for a halving).")
@click.option("--power", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True)
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95, show_default=True)
@click.option("--discordance", type=click.FloatRange(0, 1),
              help="Share of points where exactly one deployment is flagged (paired); default: independent verdicts.")
@click.option("--json", "as_json", is_flag=True)
def plan_cmd(rate: float, ratio: float, power: float, confidence: float, discordance: float | None,
             as_json: bool) -> None:
    """How many replay points a study needs to detect RATE -> RATE x RATIO."""
    from deploysim.evaluate.stats.floor import plan_study

    try:
        plan = plan_study(rate, ratio, confidence, power, discordance)
    except ValueError as exc:
        raise CliError(str(exc))
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=1))
        return
    console = output_console()
    console.print(f"to detect {rate:g} -> {rate * ratio:g} ({ratio:g}x) at {confidence:.0%} confidence "
                  f"(two-sided) with {power:.0%} power:", highlight=False)
    console.print(f"  paired (both deployments answer the same points; McNemar): {plan.paired_points:,} points"
                  + ("" if discordance is not None else " (independent verdicts assumed: an upper bound)"),
                  highlight=False)
    console.print(f"  unpaired (two independent samples): {plan.unpaired_per_deployment:,} points per deployment",
                  highlight=False)
    console.print(f"  to see even one event at rate {rate:g}: {plan.points_to_see_one_event:,} points",
                  highlight=False)


commands = [rollout_cmd, backtest_cmd, calibrate_cmd, plan_cmd]
