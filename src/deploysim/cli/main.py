"""The ``deploysim`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploysim.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_RECONCILED,
    EXIT_OK,
    CliError,
    os_error_text,
    output_console,
)
from deploysim.core.models import ModelIdError
from deploysim.core.registry import REGISTRY, RegistryError
from deploysim.pipeline.config import ConfigError, SimConfig, load_config, validate_config
from deploysim.pipeline.replay import TURN_CHOICES
from deploysim.pipeline.sources import FORMATS, SourceError

console = Console(stderr=True)


class RegistryGroup(click.Group):
    """The top-level group: its own commands plus every ``deploysim.commands`` entry point, imported on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugged = REGISTRY.names("command")
        clash = sorted(set(plugged) & set(self.commands))
        if clash:
            raise RegistryError(f"command(s) {clash} are declared twice: built into deploysim and as entry points")
        return sorted([*self.commands, *plugged])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in REGISTRY.names("command"):
            return self.commands.get(cmd_name)
        command: click.Command = REGISTRY.get("command", cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """A Ctrl-C that no command handled itself (one landing while a command is still being
        imported or parsed) exits 130 with one line, never click's bare "Aborted!" with exit 1."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            before_run = ctx.invoked_subcommand == "run"  # run's own handler covers it once a run exists
            raise CliError(f"interrupted. {_resume_hint(None)}" if before_run else "interrupted.",
                           EXIT_INTERRUPTED) from None


@click.group(cls=RegistryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deploysim")
def main() -> None:
    """Deployment simulation: replay real traffic against a candidate model, before it ships.

    \b
    Exit codes: 0 done; 1 finished but counts do not reconcile;
    2 bad usage, config or input; 130 interrupted (resume with --resume).
    """
    from deploysim.cli import catch_interrupts

    catch_interrupts()  # started: each command handles Ctrl-C from here


def _system_prompt(text: str | None) -> str | None:
    if text is not None and text.startswith("@"):
        from deploysim.pipeline.config import read_text

        return read_text(Path(text[1:]), "system prompt file", ConfigError)
    return text


def _deployment(name: str, model: str, prompt: str | None, policy: str, opts: dict[str, Any]) -> dict[str, Any]:
    deployment: dict[str, Any] = {
        "name": name,
        "model": model,
        "params": {"temperature": opts["temperature"], "max_tokens": opts["max_tokens"]},
        "concurrency": opts["concurrency"],
        "timeout_s": opts["timeout"],
        "max_retries": opts["max_retries"],
        "requests_per_minute": opts["rpm"],
        "tokens_per_minute": opts["tpm"],
        "samples": opts["samples"],
    }
    text = _system_prompt(prompt)
    if text is not None:
        deployment["system_prompt"] = policy
        deployment["system_prompt_text"] = text
    return deployment


@main.command()
@click.option("--data", "data", multiple=True, type=click.Path(), help="Input file(s): .json/.jsonl/.parquet, .gz ok.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--candidate", help="Model id of the candidate deployment, e.g. local/smollm2.")
@click.option("--baseline", help="Model id of the baseline deployment (optional).")
@click.option("--candidate-system-prompt", help="System prompt text for the candidate, or @FILE.")
@click.option("--baseline-system-prompt", help="System prompt text for the baseline, or @FILE.")
@click.option("--system-prompt-policy", type=click.Choice(["replace", "prepend"]), default="replace",
              show_default=True, help="How a given system prompt treats the logged one.")
@click.option("--sample", type=click.IntRange(min=1), help="Replay a seeded uniform sample of N records.")
@click.option("--turn", type=click.Choice(TURN_CHOICES), default="last", show_default=True,
              help="Which assistant turn of each record to regenerate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Replies per point and deployment (sample index in the cache key); for deploysim forecast.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Calls in flight per deployment.")
@click.option("--rpm", type=float, help="Requests per minute per deployment.")
@click.option("--tpm", type=float, help="Tokens per minute per deployment (estimated before the call).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds per call.")
@click.option("--max-retries", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache.")
@click.option("--cache-path", type=click.Path(), help="Call cache file (default ~/.cache/deploysim/calls.sqlite).")
@click.option("--out", type=click.Path(), help="Run directory to create.")
@click.option("--config", "config_path", type=click.Path(), help="A sim.yaml instead of the options above.")
@click.option("--resume", "resume_dir", type=click.Path(), help="Finish an interrupted run directory.")
@click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default=None,
              help="De-identification before anything leaves the process [default: surrogate].")
@click.option("--no-presidio", is_flag=True, help="Built-in recognizers only (no names/places via Presidio).")
@click.option("--gate", "gate_policy", type=click.Path(), help="Gate the finished run on this policy YAML.")
@click.option("--no-grade", is_flag=True, help="Do not grade the replies (default: the offline grader set).")
@click.option("--batch", is_flag=True,
              help="Send every deployment's calls through its provider's batch API (openai/, openai-compatible/, "
                   "anthropic/): half price, results within 24 h; --resume re-attaches to batches in flight.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default=None,
              help="Where the pipeline runs: local asyncio (default) or Ray Data (the [ray] extra; docs/ray.md).")
@click.option("--ray-address", help="Ray cluster to run on (ray://host:10001, host:6379, auto); implies --engine ray.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(**opts: Any) -> None:
    """Replay logged conversations against deployments into a run directory, then grade the replies.

    With --gate the exit code is the gate's (0 pass, 3 fail, 4 inconclusive, 5 error).
    """
    resume_dir = opts["resume_dir"]
    out: Path | None = None
    try:  # before the main try: its except clauses name these classes (a Ctrl-C here left them unbound)
        from deploysim.core.lifecycle import RunLockedError, exit_code
        from deploysim.core.models.batch import BatchAPIError
        from deploysim.core.store import JournalError, RunDirError, read_manifest
        from deploysim.evaluate.simulate import run_simulation
        from deploysim.pipeline.engine.ray import RayClusterError
        from deploysim.pipeline.privacy import PrivacyError
    except KeyboardInterrupt:
        raise CliError(f"interrupted. {_resume_hint(None)}", EXIT_INTERRUPTED) from None
    try:
        if resume_dir:
            out = Path(resume_dir)
            if read_manifest(out).kind != "chat":  # a newer schema or another kind is refused, never misread
                raise CliError(f"{out}: not a chat run; resume it with its own command")
            if opts["batch"]:
                raise CliError(f"--resume finishes {out} as its config.yaml says (batch: true is recorded there); "
                               "drop --batch")
            config = _apply_engine_options(load_config(out / "config.yaml"), opts)
        else:
            config = _config_from_options(opts)
            if opts["batch"]:
                for deployment in config.deployments:
                    deployment.batch = True
            if not opts["out"]:
                raise CliError("--out DIR is required (or use --resume DIR)")
            out = Path(opts["out"])
            if (out / "config.yaml").exists():
                raise CliError(f"{out} already holds a run; use --resume {out} to finish it, or pick another --out")
        summary = run_simulation(config, out, resume=bool(resume_dir), show_progress=not opts["quiet"])
    except (ConfigError, SourceError, ModelIdError, ImportError, RunLockedError, RunDirError, PrivacyError,
            RayClusterError) as exc:
        raise CliError(str(exc)) from None
    except BatchAPIError as exc:  # the batches stay journaled: a resume re-attaches to them
        raise CliError(f"{exc}. {_resume_hint(out)}") from None
    except JournalError as exc:  # a full or read-only disk: nothing more was sent once it failed
        hint = _resume_hint(out, "free space or fix permissions")
        raise CliError(f"{exc.strerror}; stopped before sending more calls. {hint}") from None
    except OSError as exc:  # e.g. the grade step's own files on a full or read-only disk
        hint = _resume_hint(out, "free space or fix permissions")
        raise CliError(f"cannot write: {os_error_text(exc)}. {hint}") from None
    except KeyboardInterrupt:
        raise CliError(f"interrupted. {_resume_hint(out)}", EXIT_INTERRUPTED) from None
    print_summary(summary, out)
    code = exit_code(summary)  # the lifecycle's: 0 reconciled, 1 not
    if code or not opts["gate_policy"]:
        sys.exit(code)
    sys.exit(_gate(out, Path(opts["gate_policy"])))


def _resume_hint(out: Path | None, fix: str = "") -> str:
    """How to go on from a run that stopped: resume it if it exists, else say nothing was sent."""
    if out is not None and (out / "config.yaml").is_file():
        return f"{fix + ', then f' if fix else 'F'}inish with: deploysim run --resume {out}"
    return "The run had not started: nothing was sent."


def _gate(run_dir: Path, policy: Path) -> int:
    from deploysim.evaluate.gate import evaluate_gate

    result = evaluate_gate(run_dir, policy)
    (run_dir / "gate.json").write_text(result.to_json())
    Console(soft_wrap=True).print(f"gate: {result.verdict} ({run_dir / 'gate.json'})", highlight=False)
    return result.exit_code


def _config_from_options(opts: dict[str, Any]) -> SimConfig:
    if opts["config_path"]:
        config = load_config(Path(opts["config_path"]))
        if opts["no_cache"]:
            config.cache = False
        _apply_privacy_options(config.privacy, opts)
        if opts["no_grade"]:
            config.graders = None
        elif config.graders is None:
            config.graders = _default_graders()
        return _apply_engine_options(config, opts)
    if not opts["data"]:
        raise CliError("--data PATH is required (or --config sim.yaml)")
    if not opts["candidate"]:
        raise CliError("--candidate MODEL is required, e.g. --candidate local/smollm2")
    deployments = []
    if opts["baseline"]:
        deployments.append(_deployment("baseline", opts["baseline"], opts["baseline_system_prompt"],
                                       opts["system_prompt_policy"], opts))
    deployments.append(_deployment("candidate", opts["candidate"], opts["candidate_system_prompt"],
                                   opts["system_prompt_policy"], opts))
    raw = {
        "data": [str(Path(p).resolve()) for p in opts["data"]],
        "format": opts["fmt"],
        "sample": opts["sample"],
        "turn": opts["turn"],
        "seed": opts["seed"],
        "deployments": deployments,
        "cache": not opts["no_cache"],
        "cache_path": opts["cache_path"],
        "privacy": _apply_privacy_options({"mode": "surrogate"}, opts),
        "graders": None if opts["no_grade"] else _default_graders(),
    }
    return _apply_engine_options(validate_config(raw, "options"), opts)


def _apply_engine_options(config: SimConfig, opts: dict[str, Any]) -> SimConfig:
    if opts["engine"]:
        config.engine = opts["engine"]
    if opts["ray_address"]:
        if opts["engine"] == "local":
            raise CliError("--ray-address runs on a Ray cluster: it cannot go with --engine local")
        config.engine, config.ray_address = "ray", opts["ray_address"]
    return config


def _default_graders() -> list[str]:
    """The offline set (no network, no judge): ``run`` then ``report`` works without a grade step."""
    from deploysim.evaluate.graders import DEFAULT_GRADERS

    return list(DEFAULT_GRADERS)


def _apply_privacy_options(privacy: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    if opts["privacy"]:
        privacy["mode"] = opts["privacy"]
    if opts["no_presidio"]:
        privacy["presidio"] = False
    return privacy


def print_summary(summary: dict[str, Any], out: Path) -> None:
    table = Table(title="deploysim run", title_justify="left")
    for column in ("deployment", "model", "ok", "errors", "from cache", "tokens in/out", "p50 latency"):
        table.add_column(column)
    for name, d in summary["deployments"].items():
        p50 = d["latency_p50_s"]
        table.add_row(name, d["model"], str(d["generations_ok"]), str(d["generations_error"]),
                      str(d["served_from_cache"]), f"{d['prompt_tokens']}/{d['completion_tokens']}",
                      f"{p50:.2f}s" if p50 is not None else "-")
    out_console = output_console()
    out_console.print(table)
    for name, d in summary["deployments"].items():
        if "cost_usd" in d:
            out_console.print(f"{name}: cost ${d['cost_usd']:.4f} at {'batch' if 'batch' in d else 'live'} price "
                              f"(live ${d['cost_usd_live_price']:.4f}, batch ${d['cost_usd_batch_price']:.4f})",
                              highlight=False)
        if "batch" in d:
            b = d["batch"]
            line = (f"{name}: batch API: {b['requests']} requests, {b['served_from_cache']} from cache, "
                    f"{b['batches_submitted']} batch(es) submitted, {b['batches_reattached']} re-attached, "
                    f"{b['requests_resubmitted']} resubmitted")
            if b["batches_rejected"]:
                line += f"; [red]{b['batches_rejected']} rejected ({b['requests_rejected']} requests):[/red] " + \
                    escape("; ".join(b["rejections"][:3]))
            out_console.print(line, highlight=False)
    read = summary["records_read"]
    sampled = f", sampled {summary['records_sampled']}" if summary["records_sampled"] is not None else ""
    out_console.print(
        f"records read {read} = accepted {summary['records_accepted']} + rejected {summary['records_rejected']}"
        f"{sampled}; replay points {summary['points']}; logged replies {summary['logged']['with_reply']}",
        highlight=False,
    )
    if summary.get("behaviours"):
        from deploysim.cli.graders import print_behaviour_rates

        print_behaviour_rates(summary["behaviours"], out_console)
    if summary["records_rejected"]:
        out_console.print(f"rejects: {out / 'rejects.jsonl'}", highlight=False)
    if (out / "report.html").exists():
        out_console.print(f"report: {out / 'report.html'}", highlight=False)
    if not summary["reconciles"]:
        bad = [k for k, v in summary["checks"].items() if not v]
        out_console.print(f"[red]counts do not reconcile:[/red] {bad}")
    out_console.print(f"run directory: {out}", highlight=False)


@main.command()
@click.option("--out", type=click.Path(), help="Run directory (default: ./deploysim-runs/demo-<time>).")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Replay only N of the bundled records.")
@click.option("--quiet", is_flag=True)
def demo(out: str | None, sample: int | None, quiet: bool) -> None:
    """Replay the bundled real-conversation sample with two local SmolLM2 deployments (offline)."""
    from deploysim.cli.demo import run_demo

    try:
        summary, run_dir = run_demo(Path(out) if out else None, sample=sample, show_progress=not quiet)
    except (ModelIdError, ImportError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted", EXIT_INTERRUPTED) from None
    print_summary(summary, run_dir)
    from deploysim.core.lifecycle import exit_code

    sys.exit(exit_code(summary))


@main.command("check-data")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--show", type=int, default=10, show_default=True, help="How many rejects to print.")
def check_data(paths: tuple[str, ...], fmt: str, show: int) -> None:
    """Read input files without replaying: detected format, counts and rejects."""
    from deploysim.core.schema import Record, Reject
    from deploysim.pipeline.sources import SkippedInputs, detect_format, iter_inputs

    try:
        for path in paths:
            detected = detect_format(Path(path)) if fmt == "auto" else fmt
            accepted = rejected = 0
            shown: list[Reject] = []
            skipped = SkippedInputs()
            for item in iter_inputs([path], detected, skipped=skipped):
                if isinstance(item, Record):
                    accepted += 1
                else:
                    rejected += 1
                    if len(shown) < show:
                        shown.append(item)
            click.echo(f"{path}: format {detected}; records {accepted + rejected} = accepted {accepted} "
                       f"+ rejected {rejected}")
            for reason, count in skipped.by_reason.items():
                click.echo(f"  skipped {count}: {reason}")
            for reject in shown:
                where = f"{reject.source_file}:{reject.member or reject.line}"
                field = f" [{reject.field}]" if reject.field else ""
                rid = f" record {reject.record_id}" if reject.record_id else ""
                click.echo(f"  reject {where}{rid}{field}: {reject.reason}")
    except SourceError as exc:
        raise CliError(str(exc)) from None


@main.command("models")
def models_cmd() -> None:
    """Model providers and how to name their models."""
    from deploysim.core.models import providers

    for prefix, help_text in providers().items():
        click.echo(f"{prefix + '/':20} {help_text}")


if __name__ == "__main__":
    main()
