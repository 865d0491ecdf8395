"""``deploysim graders list|validate`` and ``deploysim grade RUN`` (registered by deploysim.cli.main)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploysim.cli._common import CliError, os_error_text, output_console
from deploysim.core.schema import LOGGED

err = Console(stderr=True)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def print_behaviour_rates(grading: dict[str, Any], console: Console | None = None) -> None:
    """Rates per behaviour (rows) and deployment (columns); errors shown, never hidden."""
    console = console or output_console()
    rates = grading.get("rates") or {}
    deployments = sorted(rates, key=lambda d: (d != LOGGED, d))
    behaviours = sorted({b for d in rates.values() for b in d})
    table = Table(title="behaviour rates (flagged / graded)", title_justify="left")
    table.add_column("behaviour", no_wrap=True)
    for dep in deployments:
        table.add_column(dep, justify="right", no_wrap=True)
    for beh in behaviours:
        cells = []
        for dep in deployments:
            r = rates[dep].get(beh)
            if r is None:
                cells.append("-")
                continue
            rate = f"{r['rate']:.1%}" if r["rate"] is not None else "n/a"
            cells.append(f"{rate} ({r['flagged']}/{r['graded']})" + (f" err {r['errors']}" if r["errors"] else ""))
        table.add_row(escape(beh), *cells)
    console.print(table)


@click.group("graders")
def graders_group() -> None:
    """Behaviour graders: list them, validate them against human labels."""


@graders_group.command("list")
@click.option("--behaviours", "show_behaviours", is_flag=True, help="List the behaviour catalog instead.")
def list_cmd(show_behaviours: bool) -> None:
    """Registered graders (built-in and plugins) and the behaviours they decide."""
    from deploysim.evaluate.graders import CATALOG, DEFAULT_GRADERS, registry

    console = output_console()
    if show_behaviours:
        table = Table(title="behaviour catalog", title_justify="left")
        for col in ("behaviour", "title", "graders"):
            table.add_column(col, no_wrap=col == "behaviour")
        for b in CATALOG.values():
            table.add_row(b.id, b.title, ", ".join(b.graders))
        console.print(table)
        return
    table = Table(title="graders", title_justify="left")
    for col in ("grader", "offline", "default", "behaviours", "source", "description"):
        table.add_column(col, no_wrap=col == "grader")
    for name, spec in registry().items():
        table.add_row(name, "yes" if spec.offline else "no (judge)", "yes" if name in DEFAULT_GRADERS else "",
                      ", ".join(spec.behaviours) if len(spec.behaviours) <= 3 else f"all {len(spec.behaviours)}",
                      spec.source, spec.description)
    console.print(table)


@graders_group.command("validate")
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled replies (JSONL; see docs/graders.md).")
@click.option("--graders", "grader_names", help="Comma-separated graders (default: offline graders that apply).")
@click.option("--judge", help="Also validate the LLM judge with this model id.")
@click.option("--out", default="grader_validation.json", show_default=True, type=click.Path(dir_okay=False))
def validate_cmd(labels_path: str, grader_names: str | None, judge: str | None, out: str) -> None:
    """Precision, recall, FPR and Cohen's kappa against human labels, with 95% intervals."""
    from deploysim.evaluate.graders.base import GraderError
    from deploysim.evaluate.graders.validate import validate_graders

    try:
        report = validate_graders(Path(labels_path), _split(grader_names), judge=judge)
    except (GraderError, ImportError, ValueError) as exc:
        raise CliError(str(exc)) from None
    Path(out).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    table = Table(title=f"grader validation ({labels_path})", title_justify="left")
    for col in ("behaviour", "grader", "precision", "recall", "FPR", "kappa", "pos/neg", "errors"):
        table.add_column(col, no_wrap=True)

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    for key, e in report.items():
        table.add_row(escape(key), e["grader"], fmt(e.get("precision")), fmt(e.get("recall")),
                      fmt(e.get("false_positive_rate")), fmt(e.get("kappa")),
                      f"{e.get('n_positive', 0)}/{e.get('n_negative', 0)}", str(e["n_errors"]))
    output_console().print(table)
    err.print(f"saved {out}", highlight=False)


@click.command("grade")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--graders", "grader_names", help="Comma-separated grader names or a graders YAML (default: offline set).")  # noqa: E501
@click.option("--judge", help="Model id for LLM-judge graders, e.g. openai/gpt-4.1-mini.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache (else: the run's setting).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for the offline graders (default: all cores).")
def grade_cmd(run_dir: str, grader_names: str | None, judge: str | None, no_cache: bool, quiet: bool,
              workers: int | None) -> None:
    """Grade a finished run directory (resumable) into verdicts.parquet and print behaviour rates."""
    from deploysim.core.models import ModelIdError
    from deploysim.core.store import RunDirError, RunStore
    from deploysim.evaluate.graders import GradeLockedError, GraderError, grade_run

    names = _split(grader_names)
    if judge and names is None:
        from deploysim.evaluate.graders import DEFAULT_GRADERS

        names = [*DEFAULT_GRADERS, "judge"]
    try:
        grading = grade_run(Path(run_dir), names, judge=judge, show_progress=not quiet, cache=not no_cache,
                            workers=workers)
    except (GraderError, ModelIdError, ImportError, RunDirError, GradeLockedError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # a read-only or full run directory
        raise CliError(f"cannot grade {run_dir}: {os_error_text(exc)}") from None
    except KeyboardInterrupt:
        raise CliError(f"interrupted; run the same command again to resume grading {run_dir}", 130) from None
    summary_path = Path(run_dir) / "summary.json"
    if summary_path.is_file():
        summary = orjson.loads(summary_path.read_bytes())
        summary["behaviours"] = grading
        RunStore(Path(run_dir)).write_json("summary.json", summary)
    print_behaviour_rates(grading)
    err.print(f"{grading['verdicts']} verdicts in {Path(run_dir) / 'verdicts.parquet'} "
              f"({grading['duration_s']}s)", highlight=False)


commands: list[click.Command] = [graders_group, grade_cmd]
