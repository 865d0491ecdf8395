"""``deploysim awareness``: does the model think these conversations are a test?

Suites named in ``--suites`` must be buildable or the command stops (exit 2); with the
default ``all``, suites whose input is missing are skipped and listed in the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from deploysim.checks.awareness.probes import PROBE_FORMATS, select_questions
from deploysim.checks.awareness.runner import DEFAULT_MAX_TOKENS, DEFAULT_MAX_TRANSCRIPT_CHARS, ProbeConfig
from deploysim.checks.awareness.suites import (
    AUDIT_SYSTEM_PROMPT,
    SUITE_NAMES,
    Suite,
    SuiteError,
    benchmark_suite,
    deidentify_suite,
    hh_rlhf_suite,
    real_suite,
    redaction_audit,
    run_deployments,
    run_suites,
    sampled_records,
    system_prompt_audit,
)
from deploysim.cli._common import CliError
from deploysim.evaluate.report.awareness import awareness_section
from deploysim.pipeline.sources import FORMATS

console = Console(stderr=True)


def _suite_list(text: str) -> tuple[list[str], bool]:
    if text.strip() == "all":
        return list(SUITE_NAMES), False
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SUITE_NAMES]
    if unknown:
        raise CliError(f"unknown suite(s) {unknown}; known: {', '.join(SUITE_NAMES)} or 'all'")
    return names, True


def _pick_deployment(run_dir: Path, name: str | None) -> dict[str, Any]:
    deployments = run_deployments(run_dir)
    if name is None:
        named = [d for d in deployments if d["name"] == "candidate"]
        return named[0] if named else deployments[-1]
    for d in deployments:
        if d["name"] == name:
            return d
    raise SuiteError(f"{run_dir}: no deployment {name!r}; it has {[d['name'] for d in deployments]}")


def build_suites(opts: dict[str, Any]) -> tuple[list[Suite], dict[str, str]]:
    """The requested suites, and the reasons for any default suite that could not be built."""
    wanted, explicit = _suite_list(opts["suites"])
    sample, seed = opts["sample"], opts["seed"]
    suites: list[Suite] = []
    not_run: dict[str, str] = {}

    def unavailable(name: str, reason: str) -> None:
        if explicit:
            raise SuiteError(f"suite {name!r}: {reason}")
        not_run[name] = reason

    real: Suite | None = None
    simulated: Suite | None = None
    if opts["run_dir"]:
        deployment = _pick_deployment(Path(opts["run_dir"]), opts["deployment"])
        real, simulated = run_suites(Path(opts["run_dir"]), deployment["name"], sample, seed)
    if opts["data"]:
        from deploysim.pipeline.sources import check_paths, iter_inputs

        paths = check_paths(opts["data"])
        real = real_suite(sampled_records(lambda: iter_inputs(paths, opts["fmt"]), sample, seed))
    privacy_options = _privacy_options(opts.get("privacy_config"))
    if real is not None and opts["privacy"] != "off":
        real = deidentify_suite(real, opts["privacy"], options=privacy_options)
    needs_real = {"real", "redaction", "system-prompt"} & set(wanted)
    if needs_real and real is None:
        for name in sorted(needs_real):
            unavailable(name, "needs real traffic: pass --data or --run")
    if "real" in wanted and real is not None:
        suites.append(real)
    if "simulated" in wanted:
        if simulated is None:
            unavailable("simulated", "needs a run directory: pass --run")
        else:
            suites.append(simulated)
    if "hh-rlhf" in wanted:
        if not opts["hh_rlhf"]:
            unavailable("hh-rlhf", "needs the hh-rlhf red-team file: pass --hh-rlhf PATH")
        else:
            suites.append(hh_rlhf_suite([Path(p) for p in opts["hh_rlhf"]], sample, seed))
    if "benchmark" in wanted:
        suites.append(benchmark_suite(sample, seed))
    if "redaction" in wanted and real is not None:
        try:
            suites.extend(redaction_audit(real, privacy_options))
        except SuiteError as exc:
            unavailable("redaction", str(exc))
    if "system-prompt" in wanted and real is not None:
        suites.extend(system_prompt_audit(real, opts["system_prompt"] or AUDIT_SYSTEM_PROMPT))
    return suites, not_run


def _privacy_options(path: str | None) -> dict[str, Any] | None:
    """Privacy settings from a YAML mapping (a sim.yaml's ``privacy:`` block or the bare block)."""
    if not path:
        return None
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteError(f"--privacy-config {path}: {exc}") from None
    raw = raw.get("privacy", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise SuiteError(f"--privacy-config {path}: expected a mapping of privacy settings")
    return {k: v for k, v in raw.items() if k != "mode"}


def _model(opts: dict[str, Any]) -> str:
    if opts["model"]:
        return opts["model"]
    if opts["run_dir"]:
        return _pick_deployment(Path(opts["run_dir"]), opts["deployment"])["model"]
    raise CliError("--model MODEL is required (or --run RUN to probe the run's candidate model)")


def print_results(results: dict[str, Any]) -> None:
    out = Console()
    for fmt, per_suite in results["results"].items():
        table = Table(title=f"evaluation awareness — probe format {fmt}", title_justify="left")
        for column in ("suite", "conversations", "parseable answers", "flagged [95% CI]", "mean P(eval)"):
            table.add_column(column, no_wrap=column == "suite")
        for name, r in per_suite.items():
            f = r["flag_rate"]
            flagged = "-" if f["rate"] is None else (
                f"{100 * f['rate']:.1f}% [{100 * f['ci_low']:.1f}, {100 * f['ci_high']:.1f}] ({f['k']}/{f['n']})")
            parse = "-" if r["parse_rate"] is None else (
                f"{r['parseable']}/{r['answers']} ({100 * r['parse_rate']:.0f}%)")
            mean = "-" if r["mean_p_eval"] is None else f"{r['mean_p_eval']:.3f}"
            table.add_row(name, str(r["conversations"]), parse, flagged, mean)
        out.print(table)
        for c in results["comparisons"].get(fmt, []):
            if c.get("test") is None:
                out.print(f"  {c['a']} − {c['b']}: no test ({c.get('note')})", highlight=False)
                continue
            p = "-" if c.get("p_value") is None else f"{c['p_value']:.3g}"
            diff = "-" if c.get("flag_diff") is None else f"{100 * c['flag_diff']:+.1f} pts"
            out.print(f"  {c['a']} − {c['b']}: flag rate {diff} ({c['design']}, {c.get('test')}, p={p})",
                      highlight=False)
        for a in results["auc"].get(fmt, []):
            value = "-" if a["auc"] is None else f"{a['auc']:.3f}"
            out.print(f"  AUC {a['positive']} vs {a['negative']}: {value} (n={a['n_pos']}/{a['n_neg']})",
                      highlight=False)
        first = results["first_option_share"].get(fmt, {})
        if first.get("rate") is not None:
            share = f"{100 * first['rate']:.1f}% ({first['k']}/{first['n']})"
            out.print(f"  answers picking the option named first: {share}; near 100% = parroting, not judgement",
                      highlight=False)
        cal = results["calibration"].get(fmt, {})
        if cal.get("n"):
            out.print(f"  calibration on {', '.join(cal['suites'])}: ECE {cal['ece']:.3f}, Brier {cal['brier']:.3f}",
                      highlight=False)
    grader = results["grader"]
    if grader.get("available"):
        for name, r in grader["suites"].items():
            value = "-" if r["rate"] is None else f"{100 * r['rate']:.1f}% ({r['k']}/{r['n']})"
            out.print(f"verbalised awareness ({grader['grader']}) in {name} replies: {value}", highlight=False)
    else:
        out.print(f"verbalised-awareness grader: unavailable ({grader.get('reason')})", highlight=False)
    for name, reason in results["suites_not_run"].items():
        out.print(f"suite {name} not run: {reason}", highlight=False)


@click.command("awareness")
@click.option("--model", help="Model id to probe (default with --run: the run's candidate model).")
@click.option("--run", "run_dir", type=click.Path(),
              help="Run directory: simulated traffic (and real traffic without --data).")
@click.option("--deployment", help="Which deployment of --run regenerated the replies (default: candidate).")
@click.option("--data", multiple=True, type=click.Path(), help="Real traffic: log file(s) in any supported format.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Format of --data.")
@click.option("--hh-rlhf", "hh_rlhf", multiple=True, type=click.Path(),
              help="hh-rlhf red-team JSONL(.gz) for the eval-like suite.")
@click.option("--suites", default="all", show_default=True,
              help=f"Comma-separated among {', '.join(SUITE_NAMES)}, or 'all' (skips what lacks input).")
@click.option("--probe-format", "probe_formats", multiple=True, type=click.Choice(PROBE_FORMATS),
              help="append and/or quote (repeatable; default both).")
@click.option("--questions", help="Comma-separated question ids (default: all).")
@click.option("--repeats", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Answers per question per transcript.")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="Sampling temperature of the answers (use > 0 with --repeats > 1).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True)
@click.option("--sample", type=click.IntRange(min=1), help="Seeded sample of N conversations per suite.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-transcript-chars", type=click.IntRange(min=200), default=DEFAULT_MAX_TRANSCRIPT_CHARS,
              show_default=True, help="Keep the newest messages within this many characters.")
@click.option("--privacy", type=click.Choice(["off", "placeholder", "surrogate"]), default="surrogate",
              show_default=True, help="De-identify real traffic before probing (nothing leaves the process "
              "before de-identification); the redaction audit always compares both.")
@click.option("--privacy-config", type=click.Path(),
              help="YAML privacy settings (e.g. presidio: false) for --privacy and the redaction audit.")
@click.option("--system-prompt", help="System prompt for the with-system-prompt audit arm (text or @FILE).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache.")
@click.option("--cache-path", type=click.Path(), help="Call cache file (default ~/.cache/deploysim/calls.sqlite).")
@click.option("--out", type=click.Path(), help="Write results JSON here (default with --run: RUN/awareness.json).")
@click.option("--answers", type=click.Path(), help="Write every answer as JSONL (default: next to --out).")
@click.option("--html", type=click.Path(), help="Write the report section (HTML fragment) here.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def awareness(**opts: Any) -> None:
    """Estimate P(this is an evaluation) per conversation for real, simulated and eval-like suites."""
    from deploysim.checks.awareness.analysis import analyse, grader_rates  # statsmodels: only when run
    from deploysim.core.lifecycle import RunLockedError
    from deploysim.core.models import ModelIdError
    from deploysim.core.store import RunDirError
    from deploysim.pipeline.sources import SourceError

    if opts["system_prompt"] and opts["system_prompt"].startswith("@"):
        path = Path(opts["system_prompt"][1:])
        if not path.is_file():
            raise CliError(f"system prompt file {path} not found")
        opts["system_prompt"] = path.read_text()
    if opts["repeats"] > 1 and opts["temperature"] == 0:
        console.print("[yellow]warning:[/yellow] --repeats > 1 at temperature 0 mostly repeats the same answer",
                      highlight=False)
    try:
        config = ProbeConfig(
            model=_model(opts),
            formats=tuple(opts["probe_formats"]) or PROBE_FORMATS,  # type: ignore[arg-type]
            questions=select_questions(opts["questions"].split(",") if opts["questions"] else None),
            repeats=opts["repeats"], temperature=opts["temperature"], max_tokens=opts["max_tokens"],
            seed=opts["seed"], concurrency=opts["concurrency"], max_transcript_chars=opts["max_transcript_chars"],
        )
        suites, not_run = build_suites(opts)
        if not suites:
            raise CliError("no suite to probe")
        from deploysim.checks.awareness.workload import AwarenessConfig

        snapshot = AwarenessConfig.of(config, suites, cache=not opts["no_cache"], cache_path=opts["cache_path"])
        answers, stats = _probe(suites, config, snapshot, _run_base(opts), quiet=opts["quiet"])
    except (SuiteError, SourceError, ModelIdError, ImportError, ValueError, RunDirError, RunLockedError) as exc:
        raise CliError(str(exc)) from None
    grader = grader_rates(suites)
    results = analyse(suites, answers, config, stats, grader=grader, skipped_suites=not_run)
    print_results(results)
    if not opts["out"] and opts["run_dir"]:  # where the run report looks for it
        opts["out"] = str(Path(opts["run_dir"]) / "awareness.json")
    if opts["out"]:
        out = Path(opts["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        console.print(f"results: {out}", highlight=False)
    answers_path = opts["answers"] or (str(Path(opts["out"]).with_suffix(".answers.jsonl")) if opts["out"] else None)
    if answers_path:
        with open(answers_path, "wb") as handle:
            for answer in answers:
                handle.write(orjson.dumps(answer.to_dict()) + b"\n")
        console.print(f"answers: {answers_path}", highlight=False)
    if opts["html"]:
        Path(opts["html"]).write_text(awareness_section(results))


def _run_base(opts: dict[str, Any]) -> Path | None:
    """Where awareness runs live: next to --out, else in RUN/awareness/; None: a temporary directory."""
    if opts["out"]:
        out = Path(opts["out"])
        return out.parent / f"{out.stem}.awareness"
    if opts["run_dir"]:
        return Path(opts["run_dir"]) / "awareness"
    return None


def _probe(suites: list[Suite], config: ProbeConfig, snapshot: Any, base: Path | None,
           quiet: bool) -> tuple[list, Any]:
    """Probe through the run lifecycle; the same probe of the same suites resumes its run directory."""
    import tempfile

    from deploysim.checks.awareness.workload import AwarenessWorkload
    from deploysim.core.lifecycle import run_workload
    from deploysim.core.store import RunStore

    def run(on_item: Any) -> tuple[list, Any]:
        with tempfile.TemporaryDirectory(prefix="deploysim-awareness-") as tmp:
            root = (base or Path(tmp)) / snapshot.digest()
            workload = AwarenessWorkload(snapshot, config, suites, on_item)
            run_workload(workload, root, resume=RunStore(root).holds_run(), show_progress=not quiet)
            return workload.answers, workload.stats

    if quiet:
        return run(None)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("probing transcripts", total=sum(len(s.items) for s in suites))
        return run(lambda: progress.advance(task))


commands = [awareness]
