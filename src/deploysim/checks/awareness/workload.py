"""An awareness probe as a run (kind ``awareness``): one item per transcript, journaled with its answers.

The directory is named by a hash of the probe and the suites, so the same probe resumes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from deploysim.checks.awareness.runner import Answer, ProbeConfig, Prober, ProbeStats
from deploysim.checks.awareness.suites import Suite
from deploysim.core.lifecycle import Executed, Run, Workload
from deploysim.core.schema import canonical_json


class AwarenessConfig(BaseModel):
    """What an awareness run snapshots: the probe, the suites it was given (by content), the cache."""

    model_config = ConfigDict(extra="forbid")

    probe: dict[str, Any]
    suites: dict[str, str]  # name -> digest of its transcripts
    cache: bool = True
    cache_path: str | None = None

    @classmethod
    def of(cls, config: ProbeConfig, suites: list[Suite], cache: bool, cache_path: str | None) -> AwarenessConfig:
        digests = {s.name: hashlib.sha256(canonical_json([[i.key, [m.model_dump() for m in i.transcript]]
                                                          for i in s.items])).hexdigest()[:16] for s in suites}
        probe = config.describe() | {"concurrency": config.concurrency, "timeout_s": config.timeout_s,
                                     "max_retries": config.max_retries}
        return cls(probe=probe, suites=digests, cache=cache, cache_path=cache_path)

    def digest(self) -> str:
        """Names the run directory: the same probe of the same suites resumes it."""
        return hashlib.sha256(canonical_json(self.model_dump(exclude={"cache", "cache_path"}))).hexdigest()[:12]


class AwarenessWorkload(Workload[AwarenessConfig, tuple[Suite, int]]):
    """Kind ``awareness``: one item per transcript of every suite, journaled with all its answers."""

    kind = "awareness"
    journal = "probes"
    key = "key"

    def __init__(self, config: AwarenessConfig, probe: ProbeConfig, suites: list[Suite],
                 on_item: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.probe = probe
        self.suites = suites
        self.on_item = on_item
        self.answers: list[Answer] = []
        self.stats = ProbeStats()

    async def setup(self, run: Run) -> None:
        self.prober = Prober(self.probe, run.models)
        self.stats = self.prober.stats
        per_item = len(self.probe.formats) * len(self.probe.questions) * self.probe.repeats
        self.stats.calls_planned = per_item * sum(len(s.items) for s in self.suites)

    def items(self, run: Run) -> Iterator[tuple[str, tuple[Suite, int]]]:
        for suite in self.suites:
            for index, item in enumerate(suite.items):
                yield f"{suite.name}|{item.key}", (suite, index)

    def concurrency(self) -> int:
        return max(1, self.probe.concurrency * 2)

    async def process(self, item: tuple[Suite, int], run: Run) -> dict[str, Any]:
        suite, index = item
        answers = await self.prober.probe_item(suite, index)
        if self.on_item is not None:
            self.on_item()
        error = next((a.error for a in answers if a.error is not None), None)
        return {"key": f"{suite.name}|{suite.items[index].key}", "answers": [a.to_dict() for a in answers],
                "error": error}

    async def teardown(self, run: Run) -> None:
        run.models.flush()

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        """Answers in suite order, from the journal (this attempt's and any earlier one's)."""
        for key, _ in self.items(run):
            row = executed.rows.get(key)
            for answer in (row or {}).get("answers", []):
                self.answers.append(Answer(**answer))
        self.stats.resumed = executed.skipped * len(self.probe.formats) * len(self.probe.questions) * self.probe.repeats
        return {"items": executed.wanted, "items_skipped_on_resume": executed.skipped,
                "answers": len(self.answers), "reconciles": len(self.answers) == self.stats.calls_planned}
