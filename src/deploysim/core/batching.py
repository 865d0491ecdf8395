"""The batch executor: a run lifecycle ``Executor`` that sends model calls through providers' batch APIs.

Batched items are spooled to disk under their ``custom_id`` (the call-cache key), the rest run live;
the batches go through ``core.models.batch.BatchRunner``. A resume re-plans the unfinished items with
the same ``custom_id``s, so the runner re-attaches to batches in flight (docs/batch.md, docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from deploysim.core.lifecycle import Executed, LocalExecutor, Run, Workload
from deploysim.core.models import Model, call_key
from deploysim.core.models.batch import (
    BatchJournal,
    BatchResult,
    BatchRunner,
    BatchSettings,
    BatchStats,
    BatchUnsupportedError,
    Spool,
)
from deploysim.core.models.service import is_empty
from deploysim.core.schema import Generation


class BatchProgress(Protocol):
    """What the executor reports: one more answer for a model, and a line on its batches' state."""

    def advance(self, name: str, skipped: bool = False) -> None: ...

    def describe(self, name: str, text: str) -> None: ...


class _NoProgress:
    def advance(self, name: str, skipped: bool = False) -> None:
        return None

    def describe(self, name: str, text: str) -> None:
        return None


@dataclass
class _Owner:
    key: str
    id: str
    sample: int


@dataclass
class _Group:
    """One batched model's planned calls: requests and waiting items on disk, owners in memory."""

    model: Model
    api: Any
    requests: Spool
    items: Spool
    owners: dict[str, list[_Owner]] = field(default_factory=dict)
    runner: BatchRunner | None = None


class _LiveItems(Workload[Any, Any]):
    """The workload as ``LocalExecutor`` sees it: its items minus the batched calls, planned instead."""

    def __init__(self, workload: Workload[Any, Any], executor: BatchExecutor) -> None:
        super().__init__(workload.config)
        self.workload = workload
        self.executor = executor
        self.planned: set[str] = set()
        self.wanted: set[str] = set()
        self.skipped = 0
        self._done: set[str] = set()

    def done(self, run: Run) -> set[str]:
        self._done = self.workload.done(run)
        return self._done

    def items(self, run: Run) -> Iterator[tuple[str, Any]]:
        for key, item in self.workload.items(run):
            call = None if key in self._done else self.workload.call(item, run)
            if call is not None and call.model.name in self.executor.batched:
                self.planned.add(key)
                self.executor._plan(key, item, call, run)
                continue
            yield key, item

    def concurrency(self) -> int:
        return self.workload.concurrency()

    async def process(self, item: Any, run: Run) -> dict[str, Any]:
        return await self.workload.process(item, run)

    def record(self, key: str, row: dict[str, Any], run: Run) -> None:
        self.workload.record(key, row, run)

    def executed(self, run: Run, wanted: set[str], skipped: int) -> Executed:
        self.wanted, self.skipped = wanted, skipped  # the real ``executed`` comes once the batches are in
        return Executed(rows={})


class BatchExecutor:
    def __init__(self, batched: set[str], settings: BatchSettings | None = None, *,
                 progress: BatchProgress | None = None, planned: Callable[[], None] | None = None) -> None:
        """``batched``: the ``Model.name``s whose calls are batched; ``planned`` runs once every item is read."""
        self.batched = batched
        self.settings = settings or BatchSettings()
        self.progress: BatchProgress = progress or _NoProgress()
        self.planned = planned
        self.groups: dict[str, _Group] = {}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per batched model: what its batches did (for the run's summary)."""
        out = {}
        for name, group in self.groups.items():
            s = group.runner.stats if group.runner is not None else BatchStats()
            out[name] = {"provider": group.api.provider, "requests": s.requests, "served_from_cache": s.cache_hits,
                         "batches_submitted": s.batches_submitted, "batches_reattached": s.batches_reattached,
                         "batches_rejected": s.batches_rejected, "requests_rejected": s.requests_rejected,
                         "rejections": s.rejections, "requests_resubmitted": s.requests_resubmitted,
                         "requests_undone": s.requests_undone, "requests_oversize": s.requests_oversize}
        return out

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed:
        live = _LiveItems(workload, self)
        try:
            await LocalExecutor().execute(live, run)  # the live items; the batched ones are planned on the way
            if self.planned is not None:
                self.planned()
            await asyncio.gather(*(self._send(group, workload, run) for group in self.groups.values()))
        finally:
            for group in self.groups.values():  # rebuilt by a resume: nothing to keep
                group.requests.close()
                group.items.close()
        return workload.executed(run, live.wanted | live.planned, live.skipped)

    def _group(self, model: Model, run: Run) -> _Group:
        group = self.groups.get(model.name)
        if group is None:
            batch_api = getattr(model.client, "batch_api", None)
            if batch_api is None or not hasattr(model.client, "request_body"):
                raise BatchUnsupportedError(f"{model.name!r}: {model.client.model_id} has no batch API")
            spool = run.root / "batch-requests"
            group = _Group(model, batch_api(), Spool(spool / f"{model.name}.jsonl"),
                           Spool(spool / f"{model.name}.items"))
            self.groups[model.name] = group
        return group

    def _plan(self, key: str, item: Any, call: Any, run: Run) -> None:
        model: Model = call.model
        group = self._group(model, run)
        params = call.params or model.params
        custom_id = call_key(model.client.cache_identity(), call.messages, params, call.tools, call.sample)
        group.items.add(key, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        owners = group.owners.setdefault(custom_id, [])
        owners.append(_Owner(key, call.id, call.sample))
        if len(owners) == 1:
            body = model.client.request_body(call.messages, params, call.tools)  # type: ignore[attr-defined]
            group.requests.add(custom_id, group.api.encode(custom_id, body))

    async def _send(self, group: _Group, workload: Workload[Any, Any], run: Run) -> None:
        model, settings = group.model, self.settings
        name = model.name
        group.runner = BatchRunner(
            group.api, BatchJournal(run.root / "batches.jsonl"), name, cache=model.cache, limits=settings.limits(),
            poll_s=settings.poll_s, poll_max_s=settings.poll_max_s, max_resubmits=settings.resubmits,
            on_status=lambda text: self.progress.describe(name, f"{name} [{text}]"))
        stats = model.stats

        def answered(result: BatchResult, cached: bool) -> None:
            output, error = result.output, result.error
            if output is not None and is_empty(output):
                output, error = None, "empty reply from provider (no text and no tool calls)"
            for owner in group.owners.pop(result.custom_id, []):
                base: dict[str, Any] = {"point_id": owner.id, "deployment": name, "sample_index": owner.sample}
                if output is not None:
                    stats.ok += 1
                    stats.prompt_tokens += output.usage.prompt_tokens
                    stats.completion_tokens += output.usage.completion_tokens
                    generation = Generation(**base, text=output.text, tool_calls=output.tool_calls,
                                            finish_reason=output.finish_reason, usage=output.usage,
                                            attempts=0 if cached else 1, cached=cached,
                                            latency_s=0.0 if cached else round(result.latency_s, 4),
                                            prompt_truncated=output.prompt_truncated)
                else:
                    stats.errors += 1
                    kind = (error or "batch error").split(":")[0][:40]
                    stats.errors_by_kind[kind] = stats.errors_by_kind.get(kind, 0) + 1
                    generation = Generation(**base, error=error or "batch error")
                item = pickle.loads(group.items.get(owner.key))  # noqa: S301 - our own spool, this process
                workload.record(owner.key, workload.finish(item, generation, run), run)
                self.progress.advance(name)

        result = await group.runner.run(group.requests, answered, model.flush)
        stats.cache_hits += result.cache_hits
        stats.calls += result.requests - result.cache_hits
