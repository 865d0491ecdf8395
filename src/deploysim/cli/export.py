"""``deploysim export``: a run's replies and verdicts for Inspect View, spreadsheets and notebooks."""

from __future__ import annotations

from pathlib import Path

import click

from deploysim.cli._common import CliError
from deploysim.evaluate.export import EXPORT_FORMATS


@click.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True,
              help="inspect: one Inspect eval log per deployment (FILE-<deployment>.json); "
                   "jsonl: one flat row per reply")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output file (see --format)")
def export_cmd(run: str, fmt: str, out: str) -> None:
    """Export a finished run (RUN/points.parquet, generations.parquet, verdicts.parquet)."""
    from deploysim.core.store import RunDirError
    from deploysim.evaluate.export import export_inspect, export_jsonl

    try:
        if fmt == "jsonl":
            click.echo(f"{export_jsonl(Path(run), Path(out))} rows -> {out}")
        else:
            for path in export_inspect(Path(run), Path(out)):
                click.echo(f"inspect log -> {path}")
    except RunDirError as exc:
        raise CliError(str(exc)) from None


commands = [export_cmd]
