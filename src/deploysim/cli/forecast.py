"""``deploysim forecast``: forecast rare behaviours at production volume from a run (Jones et al. 2025)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from deploysim.cli._common import CliError, output_console


def _sci(x: float) -> str:
    return f"{x:.3g}"


@click.command("forecast")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--behaviour", help="Graded behaviour whose p_i = flagged/K comes from a run made with --samples K.")
@click.option("--target-prefix", help="Score P(reply begins with TEXT) per point from token log-probabilities.")
@click.option("--target-file", type=click.Path(dir_okay=False), help="Targets, one per line (their union).")
@click.option("--volume", "volumes", multiple=True, required=True, type=click.IntRange(min=1),
              help="Deployment volume N in queries (repeatable); powers of ten up to it are added.")
@click.option("--top-k", type=click.IntRange(min=2), default=10, show_default=True,
              help="Order statistics the tail line is fitted on.")
@click.option("--deployment", "deployments", multiple=True, help="Only these deployments (default: all).")
@click.option("--validate", is_flag=True, help="Also fit on random subsets and forecast the whole run's top.")
@click.option("--validate-fraction", type=click.FloatRange(0.001, 1.0), default=0.1, show_default=True)
@click.option("--validate-repeats", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=50), default=1000, show_default=True,
              help="Bootstrap replicates over queries for the intervals.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default RUN/forecast).")
@click.option("--quiet", is_flag=True, help="No scoring progress.")
def forecast_cmd(run: str, behaviour: str | None, target_prefix: str | None, target_file: str | None,
                 volumes: tuple[int, ...], top_k: int, deployments: tuple[str, ...], validate: bool,
                 validate_fraction: float, validate_repeats: int, bootstrap: int, confidence: float, seed: int,
                 out: str | None, quiet: bool) -> None:
    """Forecast the worst-query probability and the expected count of a behaviour at volume N.

    Writes OUT/forecast.json and OUT/forecast.html (offline). Exit 2 when the data cannot
    support a forecast (all p = 0, fewer points than --top-k, no verdicts, volume below the
    sample size, a model without log-probabilities); the message says why.
    """
    from deploysim.checks.forecast import forecast_run, read_targets, write_outputs
    from deploysim.core.models import ModelIdError
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.stats.forecast import ForecastError

    try:
        targets = None
        if target_prefix is not None or target_file is not None:
            targets = read_targets(target_prefix, Path(target_file) if target_file else None)
        result = forecast_run(Path(run), behaviour=behaviour, volumes=list(volumes), top_k=top_k, targets=targets,
                              deployments=list(deployments) or None, validate=validate,
                              validate_fraction=validate_fraction, validate_repeats=validate_repeats,
                              replicates=bootstrap, confidence=confidence, seed=seed, show_progress=not quiet)
        json_path, html_path = write_outputs(result, Path(out) if out else Path(run) / "forecast")
    except (ForecastError, RunDirError, ModelIdError, ImportError) as exc:
        raise CliError(str(exc)) from None
    print_forecast(result)
    click.echo(f"forecast: {json_path}\nplot: {html_path}")


def print_forecast(result: dict[str, Any]) -> None:
    from rich.table import Table

    console = output_console()
    level = f"{result['confidence']:.0%}"
    table = Table(title=f"forecast: {result['behaviour']} (top-k {result['top_k']}, {level} bootstrap intervals)",
                  title_justify="left")
    for column in ("deployment", "volume", "worst-query p", "expected count", "fit R²"):
        table.add_column(column)
    for name, f in result["forecast"].items():
        for row in f["per_volume"]:
            lo, hi = row["worst_query_p_interval"]
            clo, chi = row["expected_count_interval"]
            table.add_row(name, f"{row['volume']:,}", f"{_sci(row['worst_query_p'])} [{_sci(lo)}, {_sci(hi)}]",
                          f"{_sci(row['expected_count'])} [{_sci(clo)}, {_sci(chi)}]", f"{f['fit']['r2']:.3f}")
    console.print(table)
    for name, f in result["forecast"].items():
        for warning in f["diagnostics"].get("warnings", []):
            console.print(f"[yellow]warning[/yellow] {name}: {warning}", highlight=False)
    for name, v in (result.get("validation") or {}).items():
        console.print(
            f"validation {name}: fitted on {v['subset_points']} of {v['points']} points x {v['repeats']} subsets; "
            f"worst-query p at {v['volume']:,}: forecast {_sci(v['forecast_worst_query_p'])} (median), observed "
            f"{_sci(v['observed_worst_query_p'])}; error {v['error_orders_of_magnitude']:+.2f} orders of magnitude "
            f"(median |error| {v['abs_error_orders_of_magnitude']:.2f})", highlight=False)


commands = [forecast_cmd]
