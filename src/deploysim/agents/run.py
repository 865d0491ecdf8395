"""``deploysim agents run``: agent episodes into a resumable run directory (kind ``agents``; layout: docs/agents.md).

A workload of the run lifecycle (``deploysim.core.lifecycle``): items are episodes, processing one
runs the candidate's turn. On resume, finished episodes are skipped and every paid call is a cache hit.
"""

from __future__ import annotations

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
from deploysim.core.lifecycle import Executed, Run, Workload, run_workload
from deploysim.core.models import Limits, Model, ModelService
from deploysim.core.schema import LOGGED, GenerationParams, Message, Record, Reject
from deploysim.core.store import RunDirError, RunStore, read_config, read_verdicts
from deploysim.evaluate.graders import GradeItem, build_graders
from deploysim.evaluate.graders.run import grade_items
from deploysim.pipeline.sources import iter_inputs
from deploysim.agents.toolsim import (
    ConnectorError,
    LLMToolSimulator,
    PriorCallStore,
    RawSealer,
    ToolPolicy,
    ToolResolver,
    build_connectors,
    parse_affordances,
)
from deploysim.agents.toolsim.resolver import SOURCES


class AgentRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: list[str]
    candidate: str
    simulator: str | None = None
    affordances: str = "all"
    #: Which logged trajectories may answer an episode's calls from the store: none (any), trajectory (not its
    #: own), task (no trial of its task). Realism measurements (``simulate-tools``) use task.
    holdout: Literal["none", "trajectory", "task"] = "none"
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
    """(de-identified, raw) records; the raw one only feeds the in-process prior-call store."""
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
    try:
        connectors = build_connectors(connector_cfg, base)
    except ConnectorError as exc:  # name the file: the message names the field inside it
        raise ConnectorError(f"{config.connectors or '--repo'}: {exc}") from None
    return ToolResolver(policy=policy, store=store, connectors=connectors,
                        simulator=simulator, affordances=parse_affordances(affordances or config.affordances),
                        leave_one_out=leave_one_out, deid=deid_text,
                        holdout=config.holdout if config.holdout != "none" else None)


def simulator_model(config: AgentRunConfig, models: ModelService) -> Model | None:
    if not config.simulator:
        return None
    return models.model(config.simulator, name="simulator",
                        params=GenerationParams(temperature=0.0, max_tokens=config.simulator_max_tokens),
                        limits=Limits(concurrency=1, timeout_s=config.timeout_s))


Episode = tuple[Record, int]


class AgentWorkload(Workload[AgentRunConfig, Episode]):
    """Kind ``agents``: one item per agent turn; processing runs the candidate until it hands back."""

    kind = "agents"
    journal = "episodes"
    key = "episode_id"

    def preflight(self) -> None:
        """ValueError before config.yaml if agent_policy could not be built later (unreadable policy, bad judge id)."""
        if POLICY_GRADER not in self.config.graders:
            return
        from deploysim.core.models import providers

        read_policy(self.config.policy or "")
        prefix, _, rest = (self.config.judge or "").partition("/")
        if prefix not in providers() or not rest:
            raise ValueError(f"--judge {self.config.judge!r}: expected <provider>/<model>, provider one of "
                             f"{', '.join(providers())}")

    def concurrency(self) -> int:
        return max(1, self.config.concurrency)

    async def setup(self, run: Run) -> None:
        config = self.config
        deid, deid_text = deidentifiers(config.privacy)
        self.candidate = run.models.model(
            config.candidate, name="candidate",
            params=GenerationParams(temperature=config.temperature, max_tokens=config.max_tokens),
            limits=Limits(concurrency=config.concurrency, timeout_s=config.timeout_s),
            wrap=lambda client: wrap_for_tools(client, config.tool_format))
        self.simulator = simulator_model(config, run.models)
        rejects: list[Reject] = []
        self.records_read = 0

        def prior_records() -> Iterator[tuple[Record, Record]]:
            for pair in iter_trajectory_pairs(config.data, deid, rejects, config.tools_file):
                self.records_read += 1
                yield pair
            if config.prior:
                yield from iter_trajectory_pairs(config.prior, deid, tools_file=config.tools_file)

        # The store streams to disk; with privacy on, its raw outputs (re-de-identified per episode on
        # a hit) are sealed under a key that only this process holds.
        privacy_on = deid_text is not None
        records: Iterable[Record | tuple[Record, Record]] = (
            prior_records() if privacy_on else (clean for clean, _raw in prior_records()))  # off: raw is clean
        self.resolver = build_resolver(config, records, run.root / "prior_calls.sqlite",
                                       LLMToolSimulator(self.simulator) if self.simulator else None, deid_text,
                                       sealer=RawSealer() if privacy_on else None)
        self.rejects = run.store.write_rejects(rejects)
        (run.root / "transcripts").mkdir(parents=True, exist_ok=True)
        self.episodes: dict[str, Episode] = {}
        for n, record in enumerate(iter_trajectories(config.data, deid, tools_file=config.tools_file)):
            if config.limit is not None and n >= config.limit:
                break
            for start in agent_turn_starts(record, config.turns):
                self.episodes[episode_id(record, start)] = (record, start)

    def items(self, run: Run) -> Iterator[tuple[str, Episode]]:
        yield from self.episodes.items()

    async def process(self, item: Episode, run: Run) -> dict[str, Any]:
        record, start = item
        config = self.config
        try:
            result = await run_episode(record, start, self.candidate, self.resolver, config.max_steps,
                                       config.tool_choice)
        except Exception as exc:  # one broken episode must not sink the run (rule 3)
            result = EpisodeResult(episode_id(record, start), record.id, start, "errored",
                                   list(record.messages[: start + 1]), error=f"{type(exc).__name__}: {exc}"[:300])
        path = run.root / "transcripts" / f"{_safe_name(result.episode_id)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(result.transcript(), option=orjson.OPT_INDENT_2))
        tmp.replace(path)  # transcript first: a journal line always has its transcript
        return result.journal_row() | {"transcript": path.name}

    async def teardown(self, run: Run) -> None:
        if self.resolver.store is not None:
            self.resolver.store.close()

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        self.rows = rows = executed.rows
        by_source = dict.fromkeys(SOURCES, 0)
        statuses: dict[str, int] = {}
        for row in rows.values():
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            for source, n in row["tool_calls_by_source"].items():
                by_source[source] += n
        tool_calls = sum(row["tool_calls"] for row in rows.values())
        errored = statuses.get("errored", 0)
        summary = {
            "records_read": self.records_read + self.rejects,
            "records_accepted": self.records_read,
            "records_rejected": self.rejects,
            "episodes": executed.wanted,
            "episodes_done": len(rows) - errored,
            "episodes_errored": errored,
            "episodes_missing": executed.wanted - len(rows),
            "episodes_by_status": statuses,
            "episodes_skipped_on_resume": executed.skipped,
            "tool_calls": tool_calls,
            "tool_calls_by_source": by_source,
            "candidate_calls": self.candidate.stats.__dict__,
            "simulator_calls": self.simulator.stats.__dict__ if self.simulator else None,
            "wall_s": round(time.time() - run.started, 2),
        }
        summary["reconciled"] = (summary["episodes"] == summary["episodes_done"] + summary["episodes_errored"]
                                 and sum(by_source.values()) == tool_calls
                                 and summary["records_read"] == summary["records_accepted"]
                                 + summary["records_rejected"])
        return summary

    async def grade(self, run: Run) -> dict[str, Any]:
        return await grade_episodes(run.root, self.rows, self.episodes, self.config, run.models)


def _grade_items(root: Path, rows: dict[str, dict[str, Any]], episodes: dict[str, Episode]) -> Iterator[GradeItem]:
    """The candidate's turn and the logged agent's turn of every finished episode, one at a time."""
    for key, row in rows.items():
        if row["status"] == "errored":
            continue
        record, start = episodes[key]
        transcript = orjson.loads((root / "transcripts" / row["transcript"]).read_bytes())
        messages = [Message.model_validate(m) for m in transcript["messages"]]
        final = messages[-1] if row["status"] == "handed_back" else Message(role="assistant", content="")
        context = messages[:-1] if row["status"] == "handed_back" else messages
        yield GradeItem(context=context, reply=final.text(), tools=record.tools, point_id=key,
                        deployment="candidate", finish_reason=row["status"])
        turn = logged_turn(record, start)
        if turn:
            logged_final = turn[-1] if turn[-1].role == "assistant" and not turn[-1].tool_calls else None
            steps = turn[:-1] if logged_final is not None else turn
            yield GradeItem(context=list(record.messages[: start + 1]) + steps,
                            reply=logged_final.text() if logged_final else "", tools=record.tools,
                            point_id=key, deployment=LOGGED, finish_reason=LOGGED)


async def grade_episodes(root: Path, rows: dict[str, dict[str, Any]], episodes: dict[str, Episode],
                         config: AgentRunConfig, models: ModelService) -> dict[str, Any]:
    """Agent graders over every finished episode: streamed, journaled, resumed (a second call regrades nothing)."""
    from deploysim.agents import graders as _agent_graders  # noqa: F401  (registers the agent graders)

    graders = build_graders(agent_grader_entries(config), service=models)
    written, this_attempt = await grade_items(root, graders, _grade_items(root, rows, episodes), None, False)
    counts: dict[str, dict[str, list[int]]] = {}
    for verdict in read_verdicts(root):
        if verdict.point_id in rows:  # undecided (flagged None): an error, not a "no"
            tally = counts.setdefault(verdict.behaviour, {}).setdefault(verdict.deployment, [0, 0, 0])
            tally[0 if verdict.flagged else 1 if verdict.flagged is False else 2] += 1
    rates = {b: {dep: {"flagged": f, "n": f + no, "errors": e, "rate": round(f / (f + no), 4) if f + no else None}
                 for dep, (f, no, e) in by_dep.items()} for b, by_dep in counts.items()}
    return {"verdicts": written, "verdicts_this_attempt": this_attempt, "behaviour_rates": rates}


def agent_grader_entries(config: AgentRunConfig) -> list[dict[str, Any]]:
    """Each configured agent grader with its parameters (the tool policy, or agent_policy's judge and policy)."""
    _, _, tool_cfg = load_connector_config(config.connectors)
    tools = {k: list(v) for k, v in tool_cfg.items() if k in ("read", "write", "shell")}
    policy = {"model": config.judge, "policy": config.policy}
    return [{"name": name, "params": policy if name == POLICY_GRADER else dict(tools)} for name in config.graders]


def run_agents(config: AgentRunConfig, out: Path, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume: the saved config.yaml wins) agent episodes into ``out``; returns the summary."""
    out = Path(out)
    if resume:
        try:
            config = AgentRunConfig.model_validate(read_config(out))  # an older run's config.json too
        except RunDirError as exc:
            raise FileNotFoundError(f"{exc}; nothing to resume") from None
    elif RunStore(out).holds_run():
        raise FileExistsError(f"{out} already holds a run; pass --resume to finish it")
    workload = AgentWorkload(config)
    return run_workload(workload, out, resume=resume, grade=workload.grade, grade_key=None)
