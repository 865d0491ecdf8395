"""``deploysim ingest``: registered by deploysim.cli.main through the module-level ``commands`` list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploysim.cli._common import CliError
from deploysim.pipeline.sources import FORMATS, SourceError


def _caps(values: tuple[str, ...]) -> dict[str, int]:
    caps: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name or not number.isdigit() or int(number) < 1:
            raise click.BadParameter(f"expected FIELD=N with N >= 1, got {value!r}", param_hint="--cap-per")
        caps[name] = int(number)
    return caps


def _fields(values: tuple[str, ...]) -> list[str]:
    return [f.strip() for value in values for f in value.split(",") if f.strip()]


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(),
              help="Dataset to write (.parquet); `deploysim run --data` reads it.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default="surrogate",
              show_default=True, help="Replace personal data with realistic fakes, <EMAIL_1> markers, or nothing.")
@click.option("--no-presidio", is_flag=True, help="Built-in recognizers only (no names/places/organisations).")
@click.option("--mapping", "mapping_path", type=click.Path(),
              help="Also write original -> replacement here (JSONL, mode 0600). Never written otherwise.")
@click.option("--strata", multiple=True, help="Metadata field(s) to stratify by (repeat or comma-separate).")
@click.option("--allocation", type=click.Choice(["proportional", "equal"]), default="proportional", show_default=True)
@click.option("--sample", type=click.IntRange(min=1), help="Keep N records (per the strata allocation).")
@click.option("--cap-per", "cap_per", multiple=True, help="At most N records per value of a field, e.g. user_id=5.")
@click.option("--dedupe", is_flag=True, help="Drop near-duplicate conversations (MinHash LSH on user text).")
@click.option("--dedupe-threshold", type=click.FloatRange(0.01, 1.0), default=0.8, show_default=True,
              help="Estimated Jaccard similarity above which two records are duplicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and surrogate seed.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for de-identification (default: all cores).")
def ingest_cmd(paths: tuple[str, ...], out: str, fmt: str, privacy: str, no_presidio: bool, mapping_path: str | None,
               strata: tuple[str, ...], allocation: str, sample: int | None, cap_per: tuple[str, ...], dedupe: bool,
               dedupe_threshold: float, seed: int, workers: int | None) -> None:
    """De-identify, sample and de-duplicate logs once into a dataset for `deploysim run --data`."""
    from deploysim.pipeline.privacy import PrivacyError
    from deploysim.pipeline.privacy.ingest import ingest
    from deploysim.pipeline.sampling import SamplingPlan

    try:
        plan = SamplingPlan(n=sample, strata=_fields(strata), allocation=allocation,  # type: ignore[arg-type]
                            caps=_caps(cap_per), dedupe=dedupe, dedupe_threshold=dedupe_threshold, seed=seed)
        privacy_cfg = {"mode": privacy, "seed": seed, "mapping_path": mapping_path}
        if no_presidio:
            privacy_cfg["presidio"] = False
        summary = ingest(list(paths), Path(out), fmt=fmt, privacy=privacy_cfg, plan=plan, workers=workers)
    except (SourceError, PrivacyError, ValueError) as exc:
        raise CliError(str(exc)) from None
    click.echo(
        f"records read {summary['records_read']} = accepted {summary['records_accepted']} + rejected "
        f"{summary['records_rejected']}; duplicates removed {summary['duplicates_removed']}, capped "
        f"{summary['capped_removed']}, sampled out {summary['sampled_out']}; written {summary['records_written']}"
    )
    replaced = summary["privacy"]["replaced"]
    if replaced:
        click.echo("replaced: " + ", ".join(f"{k} {v}" for k, v in sorted(replaced.items())))
    for stratum, row in summary["strata"].items():
        click.echo(f"  stratum {stratum or '(all)'}: {row['sampled']} of {row['population']} "
                   f"(weight {row['weight']:.3g})")
    click.echo(f"dataset: {summary['dataset']}  (rejects: {summary['rejects']})")
    sys.exit(0 if summary["reconciles"] else 1)


commands = [ingest_cmd]
