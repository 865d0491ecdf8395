"""``deploysim stats`` and ``deploysim gate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the statistics stack (scipy, statsmodels) loads when a command runs
    from deploysim.evaluate.stats.analysis import RunStats
from deploysim.cli._common import CliError, output_console
from deploysim.core.schema import LOGGED
from deploysim.evaluate.stats.format import interval, num, pct, pp, pvalue


def _run_stats(run: str, **kwargs: object) -> RunStats:
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.stats.analysis import analyse_run
    from deploysim.evaluate.stats.correction import ValidationError
    from deploysim.evaluate.stats.calibration import CalibrationError

    try:
        return analyse_run(Path(run), **kwargs)  # type: ignore[arg-type]
    except (RunDirError, ValidationError, CalibrationError, ValueError) as exc:
        raise CliError(str(exc)) from None


def print_stats(stats: RunStats, console: Console | None = None) -> None:
    console = console or output_console()
    rates = Table(title=f"rates ({stats.n_points} points, {stats.n_clusters} conversations, "
                        f"{stats.confidence:.0%} intervals)", title_justify="left")
    rates.add_column("behaviour")
    rates.add_column("grader")
    for dep in stats.deployments:
        rates.add_column(dep)
    for name, b in stats.behaviours.items():
        cells = []
        for dep in stats.deployments:
            r = b.rates.get(dep)
            if r is None or r.rate is None:
                cells.append("-")
                continue
            text = f"{pct(r.rate)} {interval(r.low, r.high)}"
            if r.zero_events:
                text += f" (≤{pct(r.upper_one_sided)} one-sided; detectable ≥{pct(r.detectable_rate)})"
            cal = b.calibrated.get(dep)
            if cal is not None and cal["rate"] is not None:
                text += f"\ncalibrated {pct(cal['rate'])} {interval(cal['low'], cal['high'])} (x{cal['factor']:.2f})"
            floor = b.floor.get(dep)
            if floor is not None and floor["min_rate"] is not None:
                ratio = floor["min_ratio"]
                text += (f"\nfloor: rate ≥{pct(floor['min_rate'])}, ratio ≥"
                         f"{'-' if ratio is None else num(ratio)}")
            corr = b.corrected.get(dep)
            if corr is not None and corr.rate is not None:
                text += f"\ncorrected {pct(corr.rate)} {interval(corr.low, corr.high)}"
            cells.append(text)
        rates.add_row(name, b.grader, *cells)
    console.print(rates)
    for reference in (stats.baseline, LOGGED):
        comps = [c for c in stats.comparisons if c.reference == reference]
        if not comps:
            continue
        table = Table(title=f"{stats.candidate} vs {reference} (paired; {stats.multiple_testing}-adjusted)",
                      title_justify="left")
        for col in ("behaviour", "ratio", "difference", "discordant", "p", "p adj", "direction"):
            table.add_column(col)
        for c in comps:
            table.add_row(c.behaviour, f"{num(c.ratio)} {interval(c.ratio_low, c.ratio_high, num)}",
                          f"{pp(c.diff)} {interval(c.diff_low, c.diff_high, pp)}",
                          f"{c.only_reference}/{c.only_subject}", f"{pvalue(c.p_value)} ({c.p_method})",
                          pvalue(c.p_adjusted), c.direction)
        console.print(table)
    for note in stats.notes:
        console.print(f"note: {note}", highlight=False)


@click.command("stats")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print every number as JSON.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95, show_default=True)
@click.option("--multiple-testing", type=click.Choice(["holm", "bh", "none"]), default="holm", show_default=True,
              help="Across behaviours: Holm (family-wise) or Benjamini-Hochberg (false discovery rate).")
@click.option("--validation", type=click.Path(exists=True, dir_okay=False),
              help="grader_validation.json (default: the run's own, if any).")
@click.option("--segment", "segments", multiple=True, help="Metadata field to break down by (repeatable).")
@click.option("--baseline", help="Reference deployment (default: 'baseline').")
@click.option("--candidate", help="Deployment under test (default: 'candidate').")
@click.option("--boot", type=click.IntRange(min=100), default=2000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--power", type=click.FloatRange(0.5, 0.999), default=0.8, show_default=True,
              help="Power of the detection floor (smallest detectable rate and ratio).")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="calibration.json from `deploysim calibrate`: show calibrated predictions beside the raw ones.")
def stats_cmd(run: str, as_json: bool, confidence: float, multiple_testing: str, validation: str | None,
              segments: tuple[str, ...], baseline: str | None, candidate: str | None, boot: int, seed: int,
              power: float, calibration: str | None) -> None:
    """Behaviour rates per deployment and paired changes, with intervals and detection floors."""
    stats = _run_stats(run, confidence=confidence, multiple_testing=multiple_testing,
                       validation=Path(validation) if validation else None,
                       segment_by=list(segments) if segments else None, n_boot=boot, seed=seed,
                       baseline=baseline, candidate=candidate, power=power,
                       calibration=Path(calibration) if calibration else None)
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2, default=str))
    else:
        print_stats(stats)


@click.command("gate")
@click.argument("run", type=click.Path())
@click.option("--policy", required=True, type=click.Path(), help="gate.yaml with per-behaviour rules.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="calibration.json: show the calibrated rate beside the raw one (the outcome stays on the raw).")
def gate_cmd(run: str, policy: str, as_json: bool, calibration: str | None) -> None:
    """Gate a run on a policy.

    \b
    Exit codes: 0 pass; 3 fail; 4 inconclusive (more data needed); 5 error
    (policy or run unreadable, or a rule names what the run lacks).
    """
    from deploysim.evaluate.gate import evaluate_gate

    result = evaluate_gate(Path(run), Path(policy), calibration=Path(calibration) if calibration else None)
    if as_json:
        click.echo(result.to_json())
    else:
        console = output_console()
        table = Table(title=f"gate: {result.verdict.upper()}", title_justify="left")
        for col in ("behaviour", "check", "threshold", "estimate", "interval", "outcome", "why"):
            table.add_column(col)
        if calibration:
            table.add_column("calibrated")
        for c in result.checks:
            fmt = num if c.check == "max_ratio" else pct
            row = [c.behaviour, c.check, fmt(c.threshold), fmt(c.estimate), interval(c.low, c.high, fmt),
                   c.outcome, c.reason]
            if calibration:
                cal = c.calibrated
                row.append("-" if not cal or cal["rate"] is None else
                           f"{pct(cal['rate'])} {interval(cal['low'], cal['high'])}")
            table.add_row(*row)
        console.print(table)
        for error in result.errors:
            console.print(f"[red]error:[/red] {error}", highlight=False)
    sys.exit(result.exit_code)


# gate exit codes (0, 3, 4, 5) stay clear of run's 1 and 2: tests/test_gate.py checks it

commands = [stats_cmd, gate_cmd]
