"""``deploysim agents run``: agent episodes into a resumable run directory.

Layout::

    config.json                  resolved configuration (what --resume re-reads)
    rejects.jsonl                inputs that are not usable trajectories
    prior_calls.sqlite           the prior-call store (derived: rebuilt each attempt; only with privacy
                                 off — it holds raw outputs, so otherwise it lives in memory)
    journal/episodes.jsonl       one line per finished episode (the resume journal)
    transcripts/<episode>.json   full conversation + the source of every tool answer
    verdicts.parquet             agent graders on the candidate's and the logged turn
    summary.json                 counts that reconcile

Resume: episodes journaled without error are skipped; the rest re-run, and every
model call they already paid for (candidate or simulator) comes from the call cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deploysim.agents.graders import AGENT_GRADERS, POLICY_GRADER, read_policy
from deploysim.agents.loop import EpisodeResult, agent_turn_starts, episode_id, logged_turn, run_episode
from deploysim.agents.toolformat import wrap_for_tools
from deploysim.agents.toolsim import (
    LLMToolSimulator,
    PriorCallStore,
    RawSealer,
    ToolPolicy,
    ToolResolver,
    build_connectors,
    parse_affordances,
)
from deploysim.agents.toolsim.resolver import SOURCES
from deploysim.core.models import CallCache, DeploymentCaller, get_model, open_cache
from deploysim.core.schema import LOGGED, Deployment, GenerationParams, Message, Record, Reject, Verdict
from deploysim.core.store.journal import JsonlJournal
from deploysim.core.store.run_dir import write_verdicts
from deploysim.pipeline.engine.local import run_lock
from deploysim.pipeline.sources import iter_inputs


class AgentRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[str]
    candidate: str
    simulator: str | None = None
    affordances: str = "all"
    connectors: str | None = None  # YAML: {connectors: {json:..., repository:...}, tools: {read/write/shell}}
    #: A checkout at the logged commit: answers coding agents' read-only shell commands (never runs them).
    repo: str | None = None
    prior: list[str] = Field(default_factory=list)  # more trajectories for the prior-call store
    tools_file: str | None = None  # OpenAI tool specs (JSON list) for records that carry none
    turns: str = "first-tool"
    limit: int | None = None
    max_steps: int = 8
    max_tokens: int = 256
    simulator_max_tokens: int = 384
    temperature: float = 0.0
    tool_format: str = "auto"
    tool_choice: Literal["auto", "required-first", "as-logged"] = "auto"
    privacy: dict[str, Any] = Field(default_factory=lambda: {"mode": "surrogate"})
    cache: bool = True
    concurrency: int = 2
    #: Per model call, queueing behind a shared local engine included: agent prompts are long (a policy, tools).
    timeout_s: float = 600.0
    graders: list[str] = Field(default_factory=lambda: list(AGENT_GRADERS))
    judge: str | None = None  # judge model id of the agent_policy grader
    policy: str | None = None  # policy text file agent_policy grades against (needs judge)

    @model_validator(mode="after")
    def _policy_grader(self) -> AgentRunConfig:
        """A policy with a judge adds agent_policy to the graders; a policy without one is an error."""
        if self.policy and not self.judge:
            raise ValueError("a policy (--policy FILE) needs a judge model (--judge MODEL) to grade against it")
        if self.policy and POLICY_GRADER not in self.graders:
            self.graders = [*self.graders, POLICY_GRADER]
        if POLICY_GRADER in self.graders and not (self.judge and self.policy):
            raise ValueError(f"the {POLICY_GRADER} grader needs both judge (--judge MODEL) and policy (--policy FILE)")
        return self


def load_connector_config(path: str | None) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """(connectors section, base dir for relative paths, tool policy section) from a YAML file."""
    if not path:
        return {}, Path("."), {}
    raw = yaml.safe_load(Path(path).read_text()) or {}
    base = Path(path).parent / str(raw.get("base_dir", "."))  # documents are read relative to this
    return raw.get("connectors") or {}, base, raw.get("tools") or {}


def deidentifiers(privacy: dict[str, Any]) -> tuple[Callable[[Record], Record], Callable[[Record, str], str] | None]:
    """(record de-identifier, text-in-a-record's-context de-identifier for connector answers)."""
    from deploysim.pipeline.privacy import build_deidentifier

    deid = build_deidentifier(privacy)
    if privacy.get("mode", "surrogate") == "off":
        return deid, None

    def text(record: Record, value: str) -> str:
        # Same record key (file, line, id) => the same surrogates as the record's own text.
        wrapper = Record(id=record.id, source_file=record.source_file, source_line=record.source_line,
                         messages=[Message(role="tool", content=value)])
        return deid(wrapper).messages[0].text()

    return deid, text


def iter_trajectory_pairs(paths: list[str], deid: Callable[[Record], Record], rejects: list[Reject] | None = None,
                          tools_file: str | None = None) -> Iterator[tuple[Record, Record]]:
    """(de-identified, raw) records; those without tool specs get ``tools_file``'s (else inferred later).

    The raw record never leaves the process: it only feeds the in-memory prior-call store,
    whose exact hits are de-identified in the asking episode's record context.
    """
    tools = orjson.loads(Path(tools_file).read_bytes()) if tools_file else None
    for item in iter_inputs(paths, "auto"):
        if isinstance(item, Reject):
            if rejects is not None:
                rejects.append(item)
            continue
        if tools and not item.tools:
            item.tools = tools
        yield deid(item), item


def iter_trajectories(paths: list[str], deid: Callable[[Record], Record], rejects: list[Reject] | None = None,
                      tools_file: str | None = None) -> Iterator[Record]:
    """De-identified records; those without tool specs get ``tools_file``'s (else they are inferred later)."""
    for clean, _raw in iter_trajectory_pairs(paths, deid, rejects, tools_file):
        yield clean


def _safe_name(text: str) -> str:
    short = re.sub(r"[^A-Za-z0-9_.@-]", "_", text)[:80]
    return f"{short}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def build_resolver(config: AgentRunConfig, records: Iterable[Record | tuple[Record, Record]], store_path: Path | str,
                   simulator: LLMToolSimulator | None, deid_text: Callable[[Record, str], str] | None,
                   leave_one_out: bool = False, affordances: str | None = None,
                   sealer: RawSealer | None = None) -> ToolResolver:
    connector_cfg, base, tool_cfg = load_connector_config(config.connectors)
    if config.repo:
        connector_cfg = {**connector_cfg, "shell_repository": {"path": config.repo}}
    policy = ToolPolicy.from_config(tool_cfg)
    if Path(str(store_path)).exists():
        Path(str(store_path)).unlink()
    store = PriorCallStore(store_path, sealer)
    store.add_records(records, policy)
    return ToolResolver(policy=policy, store=store, connectors=build_connectors(connector_cfg, base),
                        simulator=simulator, affordances=parse_affordances(affordances or config.affordances),
                        leave_one_out=leave_one_out, deid=deid_text)


def simulator_caller(config: AgentRunConfig, cache: CallCache | None) -> DeploymentCaller | None:
    if not config.simulator:
        return None
    deployment = Deployment(name="simulator", model=config.simulator, concurrency=1, timeout_s=config.timeout_s,
                            params=GenerationParams(temperature=0.0, max_tokens=config.simulator_max_tokens))
    return DeploymentCaller(deployment, get_model(config.simulator), cache)


async def _run(config: AgentRunConfig, root: Path, resume: bool) -> dict[str, Any]:
    started = time.time()
    deid, deid_text = deidentifiers(config.privacy)
    journal = JsonlJournal(root / "journal" / "episodes.jsonl", key="episode_id")
    done = {k for k, row in journal.latest().items() if row.get("status") != "errored"} if resume else set()
    cache = open_cache() if config.cache else None
    candidate = Deployment(name="candidate", model=config.candidate, concurrency=config.concurrency,
                           timeout_s=config.timeout_s,
                           params=GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens))
    client = wrap_for_tools(get_model(config.candidate), config.tool_format)
    caller = DeploymentCaller(candidate, client, cache)
    sim_caller = simulator_caller(config, cache)
    rejects: list[Reject] = []
    records_read = 0

    def prior_records() -> Iterator[tuple[Record, Record]]:
        nonlocal records_read
        for pair in iter_trajectory_pairs(config.data, deid, rejects, config.tools_file):
            records_read += 1
            yield pair
        if config.prior:
            yield from iter_trajectory_pairs(config.prior, deid, tools_file=config.tools_file)

    # The store streams to disk; with privacy on, its raw outputs (re-de-identified per episode on
    # a hit) are sealed under a key that only this process holds.
    privacy_on = deid_text is not None
    records: Iterable[Record | tuple[Record, Record]] = (
        prior_records() if privacy_on else (clean for clean, _raw in prior_records()))  # off: raw is clean
    resolver = build_resolver(config, records, root / "prior_calls.sqlite",
                              LLMToolSimulator(sim_caller) if sim_caller else None, deid_text,
                              sealer=RawSealer() if privacy_on else None)
    (root / "transcripts").mkdir(parents=True, exist_ok=True)
    (root / "rejects.jsonl").write_bytes(b"".join(r.model_dump_json().encode() + b"\n" for r in rejects))
    semaphore = asyncio.Semaphore(max(1, config.concurrency))
    skipped = 0
    episodes: list[tuple[Record, int]] = []
    for n, record in enumerate(iter_trajectories(config.data, deid, tools_file=config.tools_file)):
        if config.limit is not None and n >= config.limit:
            break
        for start in agent_turn_starts(record, config.turns):
            episodes.append((record, start))

    async def one(record: Record, start: int) -> None:
        async with semaphore:
            try:
                result = await run_episode(record, start, caller, resolver, config.max_steps, config.tool_choice)
            except Exception as exc:  # one broken episode must not sink the run (rule 3)
                result = EpisodeResult(episode_id(record, start), record.id, start, "errored",
                                       list(record.messages[: start + 1]), error=f"{type(exc).__name__}: {exc}"[:300])
            path = root / "transcripts" / f"{_safe_name(result.episode_id)}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(result.transcript(), option=orjson.OPT_INDENT_2))
            tmp.replace(path)  # transcript first: a journal line always has its transcript
            journal.append(result.journal_row() | {"transcript": path.name})

    try:
        with journal:
            todo = []
            for record, start in episodes:
                if episode_id(record, start) in done:
                    skipped += 1
                    continue
                todo.append(one(record, start))
            await asyncio.gather(*todo)
    finally:
        if cache is not None:
            cache.close()
        await client.aclose()
        if resolver.store is not None:
            resolver.store.close()
    wanted = {episode_id(r, s) for r, s in episodes}
    rows = {k: v for k, v in journal.latest().items() if k in wanted}
    verdict_count, rates = await grade_episodes(root, rows, {episode_id(r, s): (r, s) for r, s in episodes}, config)
    by_source = dict.fromkeys(SOURCES, 0)
    statuses: dict[str, int] = {}
    for row in rows.values():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        for source, n in row["tool_calls_by_source"].items():
            by_source[source] += n
    tool_calls = sum(row["tool_calls"] for row in rows.values())
    errored = statuses.get("errored", 0)
    summary = {
        "records_read": records_read + len(rejects),
        "records_accepted": records_read,
        "records_rejected": len(rejects),
        "episodes": len(episodes),
        "episodes_done": len(rows) - errored,
        "episodes_errored": errored,
        "episodes_missing": len(episodes) - len(rows),
        "episodes_by_status": statuses,
        "episodes_skipped_on_resume": skipped,
        "tool_calls": tool_calls,
        "tool_calls_by_source": by_source,
        "candidate_calls": caller.stats.__dict__,
        "simulator_calls": sim_caller.stats.__dict__ if sim_caller else None,
        "verdicts": verdict_count,
        "behaviour_rates": rates,
        "wall_s": round(time.time() - started, 2),
    }
    summary["reconciled"] = (summary["episodes"] == summary["episodes_done"] + summary["episodes_errored"]
                             and sum(by_source.values()) == tool_calls
                             and summary["records_read"] == summary["records_accepted"] + summary["records_rejected"])
    tmp = root / ".summary.json.tmp"
    tmp.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str))
    tmp.replace(root / "summary.json")
    return summary


async def grade_episodes(root: Path, rows: dict[str, dict[str, Any]], episodes: dict[str, tuple[Record, int]],
                   config: AgentRunConfig) -> tuple[int, dict[str, Any]]:
    """Agent graders over the candidate's turn and the logged agent's turn of every finished episode."""
    from deploysim.agents import graders as _agent_graders  # noqa: F401  (registers the agent graders)
    from deploysim.evaluate.graders import GradeItem, build_graders
    from deploysim.evaluate.graders.base import to_verdicts

    graders = build_graders(agent_grader_entries(config))
    items: list[GradeItem] = []
    for key, row in rows.items():
        if row["status"] == "errored":
            continue
        record, start = episodes[key]
        transcript = orjson.loads((root / "transcripts" / row["transcript"]).read_bytes())
        messages = [Message.model_validate(m) for m in transcript["messages"]]
        final = messages[-1] if row["status"] == "handed_back" else Message(role="assistant", content="")
        context = messages[:-1] if row["status"] == "handed_back" else messages
        items.append(GradeItem(context=context, reply=final.text(), tools=record.tools, point_id=key,
                               deployment="candidate", finish_reason=row["status"]))
        turn = logged_turn(record, start)
        if turn:
            logged_final = turn[-1] if turn[-1].role == "assistant" and not turn[-1].tool_calls else None
            steps = turn[:-1] if logged_final is not None else turn
            items.append(GradeItem(context=list(record.messages[: start + 1]) + steps,
                                   reply=logged_final.text() if logged_final else "", tools=record.tools,
                                   point_id=key, deployment=LOGGED, finish_reason=LOGGED))
    verdicts: list[Verdict] = []
    counts: dict[str, dict[str, list[int]]] = {}
    try:
        for g in graders:
            for item, decisions in zip(items, await g.grade(items), strict=True):
                verdicts.extend(to_verdicts(g, item, decisions))
                for d in decisions:
                    tally = counts.setdefault(d.behaviour, {}).setdefault(item.deployment, [0, 0, 0])
                    if d.flagged is None:  # undecided (e.g. an unparseable judge answer): an error, not a "no"
                        tally[2] += 1
                    else:
                        tally[0] += int(d.flagged)
                        tally[1] += 1
    finally:
        for g in graders:  # the judge holds a model client and a call-cache handle
            closer = getattr(g, "aclose", None)
            if closer is not None:
                await closer()
    written = write_verdicts(root, verdicts)
    rates = {b: {dep: {"flagged": f, "n": n, "errors": e, "rate": round(f / n, 4) if n else None}
                 for dep, (f, n, e) in by_dep.items()} for b, by_dep in counts.items()}
    return written, rates


def agent_grader_entries(config: AgentRunConfig) -> list[dict[str, Any]]:
    """Each configured agent grader with its parameters: the rule graders get the tool policy
    (read/write/shell lists of the connectors YAML); agent_policy gets the judge model, the
    policy file and the run's cache setting (its calls go to the same call cache as the run's)."""
    _, _, tool_cfg = load_connector_config(config.connectors)
    tools = {k: list(v) for k, v in tool_cfg.items() if k in ("read", "write", "shell")}
    entries: list[dict[str, Any]] = []
    for name in config.graders:
        if name == POLICY_GRADER:
            params: dict[str, Any] = {"model": config.judge, "policy": config.policy, "cache": config.cache}
        else:
            params = dict(tools)
        entries.append({"name": name, "params": params})
    return entries


def run_agents(config: AgentRunConfig, out: Path, *, resume: bool = False) -> dict[str, Any]:
    out = Path(out)
    with run_lock(out):
        config_path = out / "config.json"
        if resume:
            if not config_path.is_file():
                raise FileNotFoundError(f"{out}: no config.json to resume")
            config = AgentRunConfig.model_validate_json(config_path.read_bytes())
            check_policy_grader(config)  # a moved policy file fails now, not after the episodes ran
        else:
            if config_path.exists():
                raise FileExistsError(f"{out} already holds a run; pass --resume to finish it")
            check_policy_grader(config)  # before config.json: a bad --policy/--judge leaves no run behind
            config_path.write_text(config.model_dump_json(indent=2))
        return asyncio.run(_run(config, out, resume))


def check_policy_grader(config: AgentRunConfig) -> None:
    """ValueError now if agent_policy could not be built later: unreadable policy file, malformed judge id."""
    if POLICY_GRADER not in config.graders:
        return
    from deploysim.core.models import providers

    read_policy(config.policy or "")
    known = providers()
    prefix, _, rest = (config.judge or "").partition("/")
    if prefix not in known or not rest:
        raise ValueError(f"--judge {config.judge!r}: expected <provider>/<model>, provider one of "
                         f"{', '.join(known)}")
