"""Teacher-forced tool simulation: replay the logged agent's own calls so only tool outputs differ.

For each trajectory, every logged call is answered by the resolution chain (never
by exact replay of itself: that would return the real output) with the conversation
up to that call as context; simulated writes feed the episode overlay so later reads
see them. The store answers leave-one-out: a trajectory never answers its own calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deploysim.agents.run import (
    AgentRunConfig,
    build_resolver,
    deidentifiers,
    iter_trajectories,
    iter_trajectory_pairs,
    simulator_model,
)
from deploysim.agents.toolsim import LLMToolSimulator, ToolResolver, logged_calls, parse_affordances
from deploysim.agents.toolsim.store import task_key
from deploysim.core.lifecycle import Executed, Run, Workload, run_workload
from deploysim.core.schema import Record
from deploysim.core.store import RunStore


async def teacher_forced_rows(record: Record, resolver: ToolResolver) -> list[dict[str, Any]]:
    episode = resolver.start_episode(record, start=-1)
    rows = []
    for n, logged in enumerate(logged_calls(record.messages)):
        if logged.output is None:
            continue
        answer = await resolver.resolve(episode, logged.call, list(record.messages[: logged.index + 1]))
        rows.append({"record_id": record.id, "task": task_key(record), "holdout": resolver.holdout,
                     "call_index": n, "tool": logged.call.name,
                     "arguments": logged.call.arguments, "real": logged.output, "simulated": answer.output,
                     "source": answer.source, "note": answer.note, "error": answer.error})
    return rows


class TeacherForcedWorkload(Workload[AgentRunConfig, Record]):
    """Kind ``realism``: one item per trajectory; its rows (real vs simulated output per logged call)."""

    kind = "realism"
    journal = "records"
    key = "record_id"

    def __init__(self, config: AgentRunConfig, out: Path) -> None:
        super().__init__(config)
        self.out = out
        self.affordances = ",".join(sorted(parse_affordances(config.affordances) - {"replay"})) or "none"

    async def setup(self, run: Run) -> None:
        config = self.config
        self.deid, deid_text = deidentifiers(config.privacy)
        simulator = simulator_model(config, run.models)
        # (de-identified, raw) pairs: store hits are re-de-identified in the asking record's context
        pairs = iter_trajectory_pairs(config.data, self.deid, tools_file=config.tools_file)
        self.resolver = build_resolver(config, pairs, ":memory:", LLMToolSimulator(simulator) if simulator else None,
                                       deid_text, leave_one_out=True, affordances=self.affordances)

    def items(self, run: Run) -> Iterator[tuple[str, Record]]:
        for n, record in enumerate(iter_trajectories(self.config.data, self.deid, tools_file=self.config.tools_file)):
            if self.config.limit is not None and n >= self.config.limit:
                break
            yield record.id, record

    async def process(self, item: Record, run: Run) -> dict[str, Any]:
        return {"record_id": item.id, "rows": await teacher_forced_rows(item, self.resolver)}

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        """The rows file ``out`` (temp name, renamed), and its counts by source."""
        counts: dict[str, int] = {}
        tmp = self.out.with_suffix(".tmp")
        total = 0
        with open(tmp, "wb") as handle:
            for entry in executed.rows.values():
                for row in entry["rows"]:
                    handle.write(orjson.dumps(row) + b"\n")
                    total += 1
                    key = "error" if row["error"] else row["source"]
                    counts[key] = counts.get(key, 0) + 1
        tmp.replace(self.out)
        return {"calls": total, "by_source": counts, "affordances": self.affordances, "holdout": self.resolver.holdout,
                "out": str(self.out),
                "records": executed.wanted, "records_skipped_on_resume": executed.skipped}


def simulate_tools(config: AgentRunConfig, out: Path) -> dict[str, Any]:
    """Write ``out`` (JSONL, one row per logged call) resumably; returns counts by source.

    The run directory (manifest, config, journal, summary) is ``<out stem>.realism/`` beside it.
    """
    out = Path(out)
    root = out.parent / f"{out.stem}.realism"
    return run_workload(TeacherForcedWorkload(config, out), root, resume=RunStore(root).holds_run())
