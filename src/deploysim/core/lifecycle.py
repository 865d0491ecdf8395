"""One run lifecycle: every kind of run (chat replay, agents, awareness, realism, ...) goes through it.

In the spirit of Inspect's Task plus one eval loop: a **workload** says what its items
are and how to process one; the lifecycle does the rest, once:

1. lock the run directory (one writer at a time);
2. a new run: snapshot the configuration (``config.yaml``) and write ``manifest.json``
   with the workload's kind; a resumed run: open the manifest (an older schema is
   migrated, a newer one or another kind refused) and re-read the configuration;
3. build the run's ``ModelService`` from the configuration (cache on/off, cache path):
   every model call of the run, the judge's included, goes through it;
4. execute the items: the default executor (``LocalExecutor``) skips the items the
   journal already holds without error, runs the rest with bounded concurrency and
   journals each one as it finishes (flushed: a kill loses nothing finished);
5. grade (a ``grade`` step handed in by the layer that knows the graders), streaming
   and resumable;
6. write ``summary.json`` once, at the end, and say which exit code it means.

The executor seam: ``run_workload(..., executor=...)`` runs the items with any ``Executor``
(``async execute(workload, run) -> Executed``; a Ray or provider-batch engine) instead of
the workload's own ``execute``; a workload with its own fast path (the replay pipeline's
per-deployment queues) overrides ``execute``. Nothing else changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
EXIT_BAD_INPUT = 2  # bad configuration or input, a run directory that cannot be opened

T = TypeVar("T")
C = TypeVar("C", bound=BaseModel)


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
    """One model call an item needs, for executors that send calls their own way (a provider's batch API)."""

    model: Model
    messages: list[Message]
    params: GenerationParams | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    sample: int = 0
    id: str = ""


class Workload(Generic[C, T]):
    """Base of every workload: ``kind``, ``config``, ``items`` and ``process``; the rest is optional.

    ``process`` returns the item's journal row (holding ``key``; a row whose ``error`` is set,
    or whose ``status`` is ``errored``, is redone on resume). A workload whose item is one
    model call may supply ``call`` and ``finish`` instead (then ``process`` is their composition).
    ``summarise`` turns what was executed into the workload's part of ``summary.json``.
    """

    kind: ClassVar[str] = ""
    journal: ClassVar[str] = "items"
    key: ClassVar[str] = "key"

    def __init__(self, config: C) -> None:
        self.config = config
        self._journal: JsonlJournal | None = None

    # -- what a workload supplies ---------------------------------------------------------

    def preflight(self) -> None:
        """Checks that need no run directory (settings, model ids); raised before anything is written."""

    def service(self) -> ModelService:
        """The run's model service, from the configuration (``cache``, ``cache_path`` when present)."""
        return ModelService(cache=bool(getattr(self.config, "cache", True)),
                            cache_path=getattr(self.config, "cache_path", None))

    async def setup(self, run: Run) -> None:
        """Open what processing needs (models from ``run.models``, stores, connectors)."""

    def items(self, run: Run) -> Iterable[tuple[str, T]]:
        """(key, item) pairs, streamed."""
        raise NotImplementedError

    def concurrency(self) -> int:
        return 1

    def call(self, item: T, run: Run) -> Call | None:
        """The item's one model call, or None when ``process`` does more than one call."""
        return None

    def finish(self, item: T, generation: Generation, run: Run) -> dict[str, Any]:
        """The journal row of an item from its call's answer (with ``call``)."""
        raise NotImplementedError

    async def process(self, item: T, run: Run) -> dict[str, Any]:
        call = self.call(item, run)
        if call is None:
            raise NotImplementedError(f"{type(self).__name__} supplies neither process nor call")
        generation = await call.model.generate(call.messages, call.params, call.tools, call.sample, id=call.id)
        return self.finish(item, generation, run)

    async def teardown(self, run: Run) -> None:
        """Close what ``setup`` opened (the model service is closed by the lifecycle)."""

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        return {"items": executed.wanted, "items_skipped_on_resume": executed.skipped}

    # -- the journal: what executors read and write through ---------------------------------

    def _journal_file(self, run: Run) -> JsonlJournal:
        if self._journal is None:
            self._journal = run.store.journal_file(self.journal, self.key)
        return self._journal

    def done(self, run: Run) -> set[str]:
        """Keys an earlier attempt finished without error (empty for a new run): not executed again."""
        if not run.resume:
            return set()
        return {k for k, row in self._journal_file(run).latest().items() if not _failed(row)}

    def record(self, key: str, row: dict[str, Any], run: Run) -> None:
        """Journal one finished item (flushed: a kill after this loses nothing)."""
        journal = self._journal_file(run)
        if not journal.is_open:
            journal.open()  # drops a last line cut short by a kill
        journal.append(row)

    def executed(self, run: Run, wanted: set[str], skipped: int) -> Executed:
        """Close the journal; its latest row per wanted key."""
        journal = self._journal_file(run)
        journal.close()
        rows = {k: row for k, row in journal.latest().items() if k in wanted}
        return Executed(rows=rows, skipped=skipped, wanted=len(wanted))

    # -- how it runs: the default executor; a workload may replace it ----------------------

    async def execute(self, run: Run) -> Executed:
        return await LocalExecutor().execute(self, run)


def _failed(row: dict[str, Any]) -> bool:
    return row.get("error") is not None or row.get("status") == "errored"


@runtime_checkable
class Executor(Protocol):
    """The executor seam: how a workload's items get executed (``run_workload(..., executor=)``).

    An executor reads ``workload.done(run)`` (keys to skip), streams ``workload.items(run)``,
    runs ``workload.process(item, run)`` for the rest (or sends ``workload.call(item, run)``
    its own way and hands the answer to ``workload.finish``), passes each row to
    ``workload.record(key, row, run)`` and returns ``workload.executed(run, wanted, skipped)``.
    ``LocalExecutor`` is the reference; a Ray or provider-batch executor follows it.
    """

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed: ...


class LocalExecutor:
    """The asyncio eval loop: skip what the journal holds, run the rest ``concurrency`` at a time."""

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed:
        done = workload.done(run)
        wanted: set[str] = set()
        skipped = 0
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
            async for key, item in _aiter(workload.items(run)):
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
            if failures:  # a workload's process must turn an item's failure into a row; this is a bug
                raise failures[0]
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return workload.executed(run, wanted, skipped)


async def _aiter(items: Iterable[tuple[str, T]]) -> AsyncIterator[tuple[str, T]]:
    for pair in items:
        yield pair
        await asyncio.sleep(0)


Grade = Callable[[Run], Awaitable[dict[str, Any] | None]]


def run_workload(workload: Workload[Any, Any], out: Path, *, resume: bool = False, grade: Grade | None = None,
                 grade_key: str | None = "behaviours", show_progress: bool = True,
                 executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) ``workload`` into ``out``; returns the summary that was written.

    ``grade``'s result goes into the summary under ``grade_key`` (None: merged into it).
    ``executor`` None: the workload's own ``execute`` (``LocalExecutor`` unless it has its own).
    """
    workload.preflight()  # before the directory exists: a bad setting leaves nothing half-made behind
    store = RunStore(Path(out))
    with run_lock(store.root):
        if resume:
            manifest = store.open(workload.kind)
        else:
            manifest = store.create(workload.kind, workload.config.model_dump(mode="json"))
        return asyncio.run(_run(workload, store, manifest, resume, grade, grade_key, show_progress, executor))


async def _run(workload: Workload[Any, Any], store: RunStore, manifest: Manifest, resume: bool,
               grade: Grade | None, grade_key: str | None, show_progress: bool,
               executor: Executor | None) -> dict[str, Any]:
    models = workload.service()
    run = Run(store=store, models=models, manifest=manifest, resume=resume, show_progress=show_progress)
    try:
        await workload.setup(run)
        try:
            executed = await (workload.execute(run) if executor is None else executor.execute(workload, run))
        finally:
            await workload.teardown(run)
        summary = workload.summarise(run, executed)
        if grade is not None:
            grading = await grade(run)
            if grading is not None and grade_key is not None:
                summary[grade_key] = grading
            elif grading is not None:
                summary.update(grading)
    finally:
        await models.aclose()
    summary = {"kind": workload.kind, "schema_version": SCHEMA_VERSION, "status": "complete", **summary}
    store.write_json("summary.json", summary)
    return summary


def exit_code(summary: dict[str, Any]) -> int:
    """0 when the run's counts reconcile, else 1 (bad input or directory is 2, raised before this)."""
    return EXIT_OK if summary.get("reconciles", summary.get("reconciled", True)) else EXIT_NOT_RECONCILED
