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
    return {"mode": mode} | ({} if presidio is None else {"presidio": presidio})


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
@click.option("--holdout", type=click.Choice(["task", "trajectory"]), default="task", show_default=True,
              help="no store answer, example or neighbour from the same task (other trials too) or trajectory")
def simulate_tools_cmd(data, simulator, affordances, connectors, repo, tools_file, limit, simulator_max_tokens, privacy,
                       presidio, no_cache, out, holdout) -> None:  # noqa: ANN001
    """Teacher forcing: answer the logged agent's own calls (never from its own log); real vs simulated rows."""
    from deploysim.agents.run import AgentRunConfig
    from deploysim.checks.realism.teacher import simulate_tools

    config = AgentRunConfig(data=list(data), candidate="none", simulator=simulator, affordances=affordances,
                            connectors=connectors, repo=repo, tools_file=tools_file, limit=limit,
                            simulator_max_tokens=simulator_max_tokens, holdout=holdout,
                            privacy=_privacy(privacy, presidio), cache=not no_cache)
    try:
        result = simulate_tools(config, Path(out))
    except ValueError as exc:  # a bad connectors file or affordance list: one clear line, exit 2
        raise CliError(str(exc)) from None
    click.echo(f"{result['calls']} calls, affordances {result['affordances']}: by source {result['by_source']}"
               f" -> {out}")


_HOLDOUT_RANK = {"none": 0, "trajectory": 1, "task": 2}


def _fmt(result: dict) -> str:
    return (f"{result['accuracy']:.3f} [{result['ci_low']:.3f}, {result['ci_high']:.3f}] "
            f"(n {result['n']}, {result['clusters']} trajectories)")


def _control_line(name: str, what: str, result: dict) -> str:
    if result.get("ok") is None:
        return f"  {name} control ({what}): {result.get('status', 'not run')}"
    verdict = {("positive", True): "caught", ("positive", False): "NOT CAUGHT",
               ("negative", True): "at chance", ("negative", False): "NOT at chance"}[(name, result["ok"])]
    return f"  {name} control ({what}): {_fmt(result)} {verdict}"


def _judge_counts(result: dict) -> str:
    win = result["simulator_win_rate"]
    return ((f"; simulator win rate {win:.3f}, picked A on {result['picked_a']}/{result['n']} (the real log is A "
             f"on about half)" if win is not None else "; no verdict parsed")
            + f", {result['errors']} errors ({result['truncated']} logs cut to fit the judge's context)")


@click.command("realism")
@click.option("--simulated", "simulated", required=True, type=click.Path(exists=True, dir_okay=False),
              help="simulate-tools JSONL: the real and the simulated output of every logged call")
@click.option("--real", "real", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="more real trajectories (other trials) for the negative control; a simulate-tools JSONL adds "
                   "its 'real' column")
@click.option("--holdout", type=click.Choice(["task", "trajectory"]), default="task", show_default=True,
              help="the holdout the simulation must have used: no store answer, example or neighbour from the same "
                   "task (or trajectory); rows made with a weaker one are refused")
@click.option("--judge", default=None, help="model id of the pairwise LLM judge (second discriminator)")
@click.option("--judge-limit", type=int, default=None, help="judge only the first N trajectories")
@click.option("--judge-calls", type=int, default=8, show_default=True,
              help="calls per trajectory shown to the judge (compact view)")
@click.option("--privacy", type=click.Choice(["surrogate", "placeholder", "off"]), default="surrogate",
              show_default=True, help="how trajectory files given to --real are de-identified (match the simulation)")
@click.option("--presidio/--no-presidio", default=None)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-cache", is_flag=True, help="do not use the call cache (judge calls)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def realism_cmd(simulated, real, holdout, judge, judge_limit, judge_calls, privacy, presidio, folds, seed, no_cache,
                as_json) -> None:  # noqa: ANN001
    """Can a discriminator tell simulated tool outputs from real ones? (C2ST, optional pairwise judge; 0.5 = chance)

    Each discriminator comes with a positive control (shuffled outputs of other tools: must be
    caught) and a negative control (another trial's real output of the same call: must sit at
    chance); intervals are clustered by trajectory.
    """
    import orjson

    from deploysim.checks.realism.load import _is_sim_jsonl, load_calls
    from deploysim.checks.realism.protocol import c2st_controls, c2st_report, load_units, meaningless_reason, real_pool

    if not _is_sim_jsonl(Path(simulated)):
        raise CliError(f"--simulated {simulated}: not a simulate-tools JSONL (rows with 'simulated' and "
                       f"'call_index'); make one with `deploysim agents simulate-tools`")
    rows = [orjson.loads(line) for line in Path(simulated).read_bytes().splitlines() if line.strip()]
    used = {str(r.get("holdout") or "trajectory") for r in rows}
    weaker = sorted(h for h in used if _HOLDOUT_RANK.get(h, 0) < _HOLDOUT_RANK[holdout])
    if weaker:
        raise CliError(f"--simulated {simulated}: rows were simulated with holdout {', '.join(weaker)}, weaker than "
                       f"--holdout {holdout}; re-run `deploysim agents simulate-tools --holdout {holdout}`")
    units, unanswered = load_units(simulated)
    if len({u.record_id for u in units}) < 2 or len(units) < 4:
        raise CliError(f"--simulated {simulated}: {len(units)} answered calls in "
                       f"{len({u.record_id for u in units})} trajectories; need at least 4 calls in 2 trajectories")
    extra: dict = {}
    if real:
        from deploysim.pipeline.privacy import build_deidentifier

        deid = build_deidentifier(_privacy(privacy, presidio))
        for path in real:
            if _is_sim_jsonl(Path(path)):
                extra.update({(u.record_id, u.call_index): (u.tool, u.arguments, u.real, u.task)
                              for u in load_units(path)[0]})
            else:
                extra.update(load_calls(path, deid))
    pool = real_pool(units, extra.items())
    report: dict = {"holdout": holdout, "calls": len(units) + unanswered, "answered": len(units),
                    "unanswered": unanswered, "trajectories": len({u.record_id for u in units}),
                    "by_source": {s: sum(u.source == s for u in units) for s in sorted({u.source for u in units})}}
    c2st_out = c2st_report(units, folds=folds, seed=seed) | c2st_controls(units, pool, folds=folds, seed=seed)
    c2st_out["meaningless"] = meaningless_reason(c2st_out)
    report["c2st"] = c2st_out
    if judge:
        from deploysim.checks.realism.pairwise import pairwise_report

        keep = list(dict.fromkeys(u.record_id for u in units))[:judge_limit] if judge_limit else None
        judged = [u for u in units if keep is None or u.record_id in keep]
        try:
            judge_out = pairwise_report(judge, judged, pool, seed=seed, cache=not no_cache, max_calls=judge_calls)
        except ValueError as exc:
            raise CliError(f"--judge {judge}: {exc}") from None
        judge_out["meaningless"] = meaningless_reason(judge_out)
        report["judge"] = judge_out | {"model": judge}
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{report['answered']} answered calls ({report['unanswered']} unanswered) in {report['trajectories']} "
               f"trajectories, holdout {holdout}; answered by {report['by_source']}")
    for name, result in (("C2ST", c2st_out), ("judge", report.get("judge"))):
        if result is None:
            continue
        label = f"judge {judge}" if name == "judge" else "C2ST (TF-IDF + logistic regression)"
        click.echo(f"{label}: discriminator accuracy {_fmt(result)}, p = {result['p_value']:.3g} vs 0.5"
                   + (_judge_counts(result) if name == "judge" else ""))
        if name == "C2ST":
            if result.get("simulator_only"):
                click.echo(f"  simulator-answered calls only: {_fmt(result['simulator_only'])}")
            click.echo("  by source: " + "; ".join(f"{k} {v['accuracy']:.3f} (n {v['n']})"
                                                   for k, v in result["by_source"].items()))
            click.echo("  by tool: " + "; ".join(f"{k} {v['accuracy']:.3f} (n {v['n']})"
                                                 for k, v in result["by_tool"].items()))
        click.echo(_control_line("positive", "shuffled outputs of other tools", result["positive_control"]))
        click.echo(_control_line("negative", "other trials' real outputs of the same calls",
                                 result["negative_control"]))
        if result.get("meaningless"):
            click.echo(f"  WARNING: {label}: {result['meaningless']}")


commands = [agents, realism_cmd]
