"""``deploysim agents run|simulate-tools`` and ``deploysim realism``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deploysim.agents.toolsim.resolver import AFFORDANCES
from deploysim.cli._common import CliError


def _common(f):  # noqa: ANN001, ANN202
    options = [
        click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
                     help="trajectory file(s): tau-bench JSON, OpenAI tool-calling JSONL, mini-swe-agent / SWE-agent / "
                          "OpenHands trajectories, ..."),
        click.option("--simulator", default=None, help="model id answering tool calls nothing else can answer"),
        click.option("--affordances", default="all", show_default=True,
                     help=f"all, none, or a comma list of: {', '.join(AFFORDANCES)}"),
        click.option("--connectors", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML with connectors: (json:, repository:) and tools: (read/write/shell lists)"),
        click.option("--repo", type=click.Path(exists=True, file_okay=False), default=None,
                     help="checkout at the logged commit: answers read-only shell commands of coding agents "
                          "(cat, grep, ls, ...) from git objects; nothing is ever executed"),
        click.option("--tools", "tools_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="tool specs (OpenAI JSON list) for trajectories that carry none (else inferred from calls)"),
        click.option("--limit", type=int, default=None, help="only the first N trajectories"),
        click.option("--simulator-max-tokens", type=int, default=384, show_default=True),
        click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default="surrogate",
                     show_default=True, help="de-identify trajectories (and connector answers) before any call"),
        click.option("--presidio/--no-presidio", default=None, help="names/places via Presidio (default: auto)"),
        click.option("--no-cache", is_flag=True, help="do not use the call cache"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _privacy(mode: str, presidio: bool | None) -> dict:
    cfg: dict = {"mode": mode}
    if presidio is not None:
        cfg["presidio"] = presidio
    return cfg


@click.group("agents")
def agents() -> None:
    """Agentic replay: the candidate drives real trajectories while tool calls are simulated."""


@agents.command("run")
@_common
@click.option("--candidate", default=None, help="model id of the candidate agent (required unless --resume)")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--turns", type=click.Choice(["first-tool", "first", "all"]), default="first-tool", show_default=True,
              help="which agent turn(s) of each trajectory to replay")
@click.option("--max-steps", type=int, default=8, show_default=True)
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--tool-format", type=click.Choice(["auto", "native", "prompt"]), default="auto", show_default=True,
              help="auto: prompt-based <tool_call> format for local models, native tool calling otherwise")
@click.option("--tool-choice", type=click.Choice(["auto", "required-first", "as-logged"]), default="auto",
              show_default=True,
              help="required-first: the candidate's first step must call a tool (forced tool use, as native APIs "
                   "offer; for small local models that rarely call tools unprompted), later steps choose freely; "
                   "as-logged: forced only in turns where the logged agent's first step called a tool")
@click.option("--concurrency", type=int, default=2, show_default=True)
@click.option("--timeout-s", type=float, default=600.0, show_default=True,
              help="per model call, including the wait behind a shared local model")
@click.option("--resume", is_flag=True, help="finish the run in --out (its config.yaml wins)")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False), default=None,
              help="policy text (e.g. tau-airline's policy.md): adds the agent_policy grader, an LLM judge of "
                   "policy violations in each turn (needs --judge)")
@click.option("--judge", default=None, help="judge model id for --policy (e.g. openai/gpt-4.1-mini)")
def run_cmd(data, simulator, affordances, connectors, repo, tools_file, limit, simulator_max_tokens, privacy, presidio,
            no_cache, candidate, out, turns, max_steps, max_tokens, tool_format, tool_choice, concurrency, timeout_s,
            resume, policy, judge) -> None:  # noqa: ANN001
    """Replay agent turns with the candidate; write transcripts, verdicts and a reconciled summary."""
    from deploysim.agents.run import AgentRunConfig, run_agents
    from deploysim.core.lifecycle import RunLockedError, exit_code
    from deploysim.core.store import RunDirError

    if not candidate and not resume:
        raise click.UsageError("--candidate is required")
    if policy and not judge:
        raise click.UsageError("--policy needs --judge MODEL: the agent_policy grader is an LLM judge")
    if judge and not policy:
        raise click.UsageError("--judge is only used with --policy FILE (the policy the judge grades against)")
    config = AgentRunConfig(data=list(data), candidate=candidate or "", simulator=simulator, affordances=affordances,
                            connectors=connectors, repo=repo, tools_file=tools_file, turns=turns, limit=limit, max_steps=max_steps,
                            max_tokens=max_tokens, simulator_max_tokens=simulator_max_tokens, tool_format=tool_format,
                            tool_choice=tool_choice,
                            privacy=_privacy(privacy, presidio), cache=not no_cache, concurrency=concurrency,
                            judge=judge, policy=policy, timeout_s=timeout_s)
    try:
        summary = run_agents(config, Path(out), resume=resume)
    except (FileExistsError, FileNotFoundError, ValueError, RunDirError, RunLockedError) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"episodes {summary['episodes']}: done {summary['episodes_done']}, "
               f"errored {summary['episodes_errored']} ({summary['episodes_by_status']})")
    click.echo(f"tool calls {summary['tool_calls']} by source: {summary['tool_calls_by_source']}")
    for behaviour, by_dep in sorted(summary["behaviour_rates"].items()):
        click.echo(f"  {behaviour}: " + ", ".join(f"{d} {v['flagged']}/{v['n']}"
                                                  + (f" ({v['errors']} errors)" if v.get("errors") else "")
                                                  for d, v in sorted(by_dep.items())))
    click.echo(f"reconciled: {summary['reconciled']}  -> {out}/summary.json")
    sys.exit(exit_code(summary))


@agents.command("simulate-tools")
@_common
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSONL: one row per logged call")
def simulate_tools_cmd(data, simulator, affordances, connectors, repo, tools_file, limit, simulator_max_tokens, privacy,
                       presidio, no_cache, out) -> None:  # noqa: ANN001
    """Teacher forcing: answer the logged agent's own calls (never from its own log); real vs simulated rows."""
    from deploysim.agents.run import AgentRunConfig
    from deploysim.checks.realism.teacher import simulate_tools

    config = AgentRunConfig(data=list(data), candidate="none", simulator=simulator, affordances=affordances,
                            connectors=connectors, repo=repo, tools_file=tools_file, limit=limit,
                            simulator_max_tokens=simulator_max_tokens,
                            privacy=_privacy(privacy, presidio), cache=not no_cache)
    result = simulate_tools(config, Path(out))
    click.echo(f"{result['calls']} calls, affordances {result['affordances']}: by source {result['by_source']}"
               f" -> {out}")


@click.command("realism")
@click.option("--real", "real", required=True, type=click.Path(exists=True, dir_okay=False),
              help="trajectory file (logged outputs) or a simulate-tools JSONL (its 'real' column)")
@click.option("--simulated", "simulated", required=True, type=click.Path(exists=True, dir_okay=False),
              help="simulate-tools JSONL (its 'simulated' column)")
@click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default="surrogate",
              show_default=True, help="how trajectory files given to --real are de-identified (match the simulation)")
@click.option("--presidio/--no-presidio", default=None)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def realism_cmd(real, simulated, privacy, presidio, folds, seed, as_json) -> None:  # noqa: ANN001
    """Classifier two-sample test: held-out accuracy telling real from simulated tool outputs (50% = chance)."""
    import orjson

    from deploysim.checks.realism import c2st
    from deploysim.checks.realism.load import load_outputs
    from deploysim.pipeline.privacy import build_deidentifier

    deid = build_deidentifier(_privacy(privacy, presidio))
    real_out = load_outputs(real, "real", deid)
    sim_out = load_outputs(simulated, "simulated")
    keys = sorted(set(real_out) & set(sim_out))
    if keys:  # paired: the same calls on both sides
        real_items = [(k, real_out[k]) for k in keys]
        sim_items = [(k, sim_out[k]) for k in keys]
    else:
        real_items, sim_items = list(real_out.items()), list(sim_out.items())
    result = c2st([t for _, t in real_items], [t for _, t in sim_items], [k[0] for k, _ in real_items],
                  [k[0] for k, _ in sim_items], folds=folds, seed=seed)
    if as_json:
        click.echo(orjson.dumps(result.as_dict() | {"paired": bool(keys)}, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"real {result.n_real}, simulated {result.n_simulated} ({'paired calls' if keys else 'unpaired'}), "
               f"{result.folds}-fold grouped by trajectory")
    click.echo(f"discriminator accuracy {result.accuracy:.3f}  95% CI [{result.ci_low:.3f}, {result.ci_high:.3f}] "
               f"(Clopper-Pearson; Wilson [{result.wilson_low:.3f}, {result.wilson_high:.3f}])  "
               f"p = {result.p_value:.3g} (exact binomial vs 0.5)")


commands = [agents, realism_cmd]
