"""One run lifecycle for every kind of run: lock, config and manifest, model service, execute, grade, summary.

The executor seam: ``run_workload(..., executor=E)`` runs the items with any ``Executor`` instead of the
workload's own ``execute`` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from deploysim.core.models import Model, ModelService
from deploysim.core.schema import SCHEMA_VERSION, Generation, GenerationParams, Message
from deploysim.core.store import JsonlJournal, Manifest, RunStore, exclusive_lock

EXIT_OK = 0
EXIT_NOT_RECONCILED = 1

T = TypeVar("T")
C = TypeVar("C", bound=BaseModel)


def default_workers() -> int:
    """All the cores this process may use (worker processes for grading and de-identification)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RunLockedError(RuntimeError):
    pass


def run_lock(root: Path) -> AbstractContextManager[None]:
    """One process per run directory: a second one would corrupt the journal."""
    return exclusive_lock(Path(root) / ".lock", RunLockedError,
                          f"{root}: another deploysim process is using this run directory")


@dataclass
class Run:
    """What a workload sees while it runs: the directory, the model service, the attempt."""

    store: RunStore
    models: ModelService
    manifest: Manifest
    resume: bool
    show_progress: bool = True
    started: float = field(default_factory=time.time)

    @property
    def root(self) -> Path:
        return self.store.root


@dataclass
class Executed:
    """What an executor reports: the latest journal row per item of this run, and what it skipped."""

    rows: dict[str, dict[str, Any]]
    skipped: int = 0
    wanted: int = 0


@dataclass
class Call:
    """An item's one model call, for executors that send calls their own way (a provider's batch API)."""

    model: Model
    messages: list[Message]
    params: GenerationParams | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    sample: int = 0
    id: str = ""


class Workload(Generic[C, T]):
    """``kind``, ``config``, ``items`` and ``process`` (or ``call`` + ``finish``); the rest is optional."""

    kind: ClassVar[str] = ""
    journal: ClassVar[str] = "items"
    key: ClassVar[str] = "key"

    def __init__(self, config: C) -> None:
        self.config = config
        self._journal: JsonlJournal | None = None

    def preflight(self) -> None:
        """Checks that need no run directory (settings, model ids), before anything is written."""

    def service(self) -> ModelService:
        return ModelService(cache=bool(getattr(self.config, "cache", True)),
                            cache_path=getattr(self.config, "cache_path", None))

    async def setup(self, run: Run) -> None:
        """Open what processing needs (models from ``run.models``, stores, connectors)."""

    def items(self, run: Run) -> Iterable[tuple[str, T]]:
        raise NotImplementedError

    def concurrency(self) -> int:
        return 1

    def call(self, item: T, run: Run) -> Call | None:
        """The item's one model call; None when ``process`` does more."""
        return None

    def finish(self, item: T, generation: Generation, run: Run) -> dict[str, Any]:
        raise NotImplementedError

    async def process(self, item: T, run: Run) -> dict[str, Any]:
        call = self.call(item, run)
        if call is None:
            raise NotImplementedError(f"{type(self).__name__} supplies neither process nor call")
        generation = await call.model.generate(call.messages, call.params, call.tools, call.sample, id=call.id)
        return self.finish(item, generation, run)

    async def teardown(self, run: Run) -> None:
        """Close what ``setup`` opened (the lifecycle closes the model service)."""

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        return {"items": executed.wanted, "items_skipped_on_resume": executed.skipped}

    def _journal_file(self, run: Run) -> JsonlJournal:
        if self._journal is None:
            self._journal = run.store.journal_file(self.journal, self.key)
        return self._journal

    def done(self, run: Run) -> set[str]:
        """Keys an earlier attempt finished without error: not executed again."""
        if not run.resume:
            return set()
        return {k for k, row in self._journal_file(run).latest().items()
                if row.get("error") is None and row.get("status") != "errored"}

    def record(self, key: str, row: dict[str, Any], run: Run) -> None:
        """Journal one finished item (flushed: a kill after this loses nothing)."""
        journal = self._journal_file(run)
        if not journal.is_open:
            journal.open()  # drops a last line cut short by a kill
        journal.append(row)

    def executed(self, run: Run, wanted: set[str], skipped: int) -> Executed:
        journal = self._journal_file(run)
        journal.close()
        return Executed({k: row for k, row in journal.latest().items() if k in wanted}, skipped, len(wanted))

    async def execute(self, run: Run) -> Executed:
        return await LocalExecutor().execute(self, run)


@runtime_checkable
class Executor(Protocol):
    """Runs a workload's items and returns ``workload.executed(...)`` (contract: docs/architecture.md)."""

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed: ...


class LocalExecutor:
    """The asyncio loop: skip what the journal holds, run the rest ``concurrency`` at a time."""

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed:
        done, wanted, skipped = workload.done(run), set(), 0
        limit = asyncio.Semaphore(max(1, workload.concurrency()))
        tasks: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        async def one(key: str, item: Any) -> None:
            try:
                row = await workload.process(item, run)
            finally:
                limit.release()
            workload.record(key, row, run)

        try:
            for key, item in workload.items(run):
                await asyncio.sleep(0)  # a long run of skipped items still lets the loop breathe
                wanted.add(key)
                if key in done:
                    skipped += 1
                    continue
                await limit.acquire()  # backpressure: items are read as slots free up
                task = asyncio.create_task(one(key, item))
                tasks.add(task)
                task.add_done_callback(finished)
                if failures:
                    break
            await asyncio.gather(*tasks)
            if failures:  # process must turn an item's failure into a row: this is a bug, stop
                raise failures[0]
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return workload.executed(run, wanted, skipped)


Grade = Callable[[Run], Awaitable[dict[str, Any] | None]]


def run_workload(workload: Workload[Any, Any], out: Path, *, resume: bool = False, grade: Grade | None = None,
                 grade_key: str | None = "behaviours", show_progress: bool = True,
                 executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) ``workload`` into ``out``; returns the summary written."""
    workload.preflight()  # before the directory exists: a bad setting leaves nothing half-made behind
    store = RunStore(Path(out))
    with run_lock(store.root):
        if resume:
            manifest = store.open(workload.kind)
        else:
            manifest = store.create(workload.kind, workload.config.model_dump(mode="json"))
        run = Run(store, workload.service(), manifest, resume, show_progress)
        summary = asyncio.run(_run(workload, run, grade, grade_key, executor))
        summary = {"kind": workload.kind, "schema_version": SCHEMA_VERSION, "status": "complete", **summary}
        store.write_json("summary.json", summary)
        return summary


async def _run(workload: Workload[Any, Any], run: Run, grade: Grade | None, grade_key: str | None,
               executor: Executor | None) -> dict[str, Any]:
    try:
        await workload.setup(run)
        try:
            executed = await (workload.execute(run) if executor is None else executor.execute(workload, run))
        finally:
            await workload.teardown(run)
        summary = workload.summarise(run, executed)
        grading = await grade(run) if grade is not None else None
        if grading is not None:
            summary.update({grade_key: grading} if grade_key else grading)
        return summary
    finally:
        await run.models.aclose()


def exit_code(summary: dict[str, Any]) -> int:
    """0 when the run's counts reconcile, else 1 (bad input or directory is 2, raised before this)."""
    return EXIT_OK if summary.get("reconciles", summary.get("reconciled", True)) else EXIT_NOT_RECONCILED
