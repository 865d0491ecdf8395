"""Teacher-forced tool simulation: replay the logged agent's own calls so only tool outputs differ.

For each trajectory, every logged call is answered by the resolution chain (never
by exact replay of itself: that would return the real output) with the conversation
up to that call as context; simulated writes feed the episode overlay so later reads
see them. The store answers leave-one-out: a trajectory never answers its own calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploysim.agents.run import (
    AgentRunConfig,
    build_resolver,
    deidentifiers,
    iter_trajectories,
    iter_trajectory_pairs,
    simulator_caller,
)
from deploysim.pipeline.engine.local import run_lock
from deploysim.core.models import open_cache
from deploysim.core.schema import Record
from deploysim.core.store.journal import JsonlJournal
from deploysim.agents.toolsim import LLMToolSimulator, ToolResolver, logged_calls, parse_affordances


async def teacher_forced_rows(record: Record, resolver: ToolResolver) -> list[dict[str, Any]]:
    episode = resolver.start_episode(record, start=-1)
    rows = []
    for n, logged in enumerate(logged_calls(record.messages)):
        if logged.output is None:
            continue
        answer = await resolver.resolve(episode, logged.call, list(record.messages[: logged.index + 1]))
        rows.append({"record_id": record.id, "call_index": n, "tool": logged.call.name,
                     "arguments": logged.call.arguments, "real": logged.output, "simulated": answer.output,
                     "source": answer.source, "error": answer.error})
    return rows


def simulate_tools(config: AgentRunConfig, out: Path) -> dict[str, Any]:
    """Write ``out`` (JSONL, one row per logged call) resumably; returns counts by source."""
    out = Path(out)
    affordances = parse_affordances(config.affordances) - {"replay"}
    with run_lock(out.parent / f".{out.name}.d"):
        return asyncio.run(_simulate(config, out, ",".join(sorted(affordances)) or "none"))


async def _simulate(config: AgentRunConfig, out: Path, affordances: str) -> dict[str, Any]:
    deid, deid_text = deidentifiers(config.privacy)
    cache = open_cache() if config.cache else None
    sim_caller = simulator_caller(config, cache)
    journal = JsonlJournal(out.with_suffix(".journal.jsonl"), key="record_id")
    done = journal.latest()

    def records() -> Iterator[Record]:
        return iter_trajectories(config.data, deid, tools_file=config.tools_file)

    # (de-identified, raw) pairs: store hits are re-de-identified in the asking record's context
    pairs = iter_trajectory_pairs(config.data, deid, tools_file=config.tools_file)
    resolver = build_resolver(config, pairs, ":memory:", LLMToolSimulator(sim_caller) if sim_caller else None,
                              deid_text, leave_one_out=True, affordances=affordances)
    try:
        with journal:
            for n, record in enumerate(records()):
                if config.limit is not None and n >= config.limit:
                    break
                if record.id in done:
                    continue
                rows = await teacher_forced_rows(record, resolver)
                journal.append({"record_id": record.id, "rows": rows})
    finally:
        if cache is not None:
            cache.close()
    counts: dict[str, int] = {}
    tmp = out.with_suffix(".tmp")
    total = 0
    with open(tmp, "wb") as handle:
        import orjson

        for entry in journal.latest().values():
            for row in entry["rows"]:
                handle.write(orjson.dumps(row) + b"\n")
                total += 1
                key = "error" if row["error"] else row["source"]
                counts[key] = counts.get(key, 0) + 1
    tmp.replace(out)
    return {"calls": total, "by_source": counts, "affordances": affordances, "out": str(out)}
