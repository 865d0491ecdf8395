"""``deploysim report``, ``deploysim view`` and ``deploysim compare``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from deploysim.cli._common import CliError, output_console
from deploysim.evaluate.stats.format import interval, pct, pp


@click.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file to write (default RUN/report.html).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95, show_default=True)
@click.option("--multiple-testing", type=click.Choice(["holm", "bh", "none"]), default="holm", show_default=True)
@click.option("--validation", type=click.Path(exists=True, dir_okay=False), help="grader_validation.json.")
@click.option("--segment", "segments", multiple=True, help="Metadata field to break down by (repeatable).")
@click.option("--examples", type=click.IntRange(min=0), default=20, show_default=True,
              help="Examples per behaviour and kind (candidate only, baseline only, both).")
@click.option("--calibration", type=click.Path(dir_okay=False),
              help="calibration.json from `deploysim calibrate`: show calibrated predictions beside the raw ones.")
def report_cmd(run: str, out: str | None, confidence: float, multiple_testing: str, validation: str | None,
               segments: tuple[str, ...], examples: int, calibration: str | None) -> None:
    """Write one self-contained HTML report (works offline)."""
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.report.html import write_report
    from deploysim.evaluate.stats.calibration import CalibrationError
    from deploysim.evaluate.stats.correction import ValidationError

    try:
        path = write_report(Path(run), Path(out) if out else None, examples_per_category=examples,
                            confidence=confidence, multiple_testing=multiple_testing,
                            validation=Path(validation) if validation else None,
                            segment_by=list(segments) if segments else None,
                            calibration=Path(calibration) if calibration else None)
    except (RunDirError, ValidationError, CalibrationError, OSError) as exc:
        raise CliError(str(exc)) from None
    click.echo(str(path))


@click.command("view")
@click.argument("runs_dir", default="deploysim-runs", type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
def view_cmd(runs_dir: str, port: int) -> None:
    """Serve the runs under RUNS_DIR on http://127.0.0.1:PORT (never on other interfaces)."""
    from deploysim.evaluate.report.viewer import list_runs, make_server

    if not Path(runs_dir).is_dir():
        raise CliError(f"{runs_dir}: no such folder")
    server = make_server(Path(runs_dir), port)
    host, bound = str(server.server_address[0]), server.server_address[1]
    click.echo(f"serving {len(list_runs(Path(runs_dir)))} run(s) from {runs_dir} on http://{host}:{bound}/ "
               "(Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command("compare")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
@click.option("--confidence", type=click.FloatRange(0.5, 0.9999), default=0.95, show_default=True)
def compare_cmd(run_a: str, run_b: str, as_json: bool, confidence: float) -> None:
    """Diff two runs: configuration, and each behaviour's rate per deployment (B - A)."""
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.report.compare import compare_runs

    try:
        result = compare_runs(Path(run_a), Path(run_b), confidence)
    except RunDirError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    console = output_console()
    for line in result["differences"]:
        console.print(line, highlight=False)
    table = Table(title=f"B - A ({confidence:.0%} intervals, unpaired)", title_justify="left")
    for col in ("behaviour", "deployment", "A", "B", "B - A", "changed"):
        table.add_column(col)
    for r in result["rates"]:
        table.add_row(r["behaviour"], r["deployment"], pct(r["rate_a"]), pct(r["rate_b"]),
                      f"{pp(r['diff'])} {interval(r['low'], r['high'], pp)}", "yes" if r["changed"] else "no")
    console.print(table)


commands = [report_cmd, view_cmd, compare_cmd]
