"""The replay workload (kind ``chat``): sources -> replay points -> deployments -> journal -> Parquet.

Its executor is the local asyncio pipeline: one producer, a bounded queue and a worker pool per deployment;
every finished call is journaled at once (DESIGN rule 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from deploysim.core.lifecycle import Call, Executed, Run, Workload
from deploysim.core.models import Model, check_model_id
from deploysim.core.models.batch import check_batch
from deploysim.core.schema import LOGGED, Deployment, Generation, GenerationParams, Record, Reject, ReplayPoint
from deploysim.core.store import GENERATIONS, JournalError, RunStore, generation_key
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine.progress import RunProgress
from deploysim.pipeline.engine.summary import InputCounts, build_summary
from deploysim.pipeline.replay import deidentify_record, prepare_points
from deploysim.pipeline.sampling import UniformSample
from deploysim.pipeline.sources import SkippedInputs, iter_inputs

if TYPE_CHECKING:
    from deploysim.core.batching import BatchExecutor

_DONE = None
T = TypeVar("T")
#: one call of the replay: a point, the deployment answering it, the sample index
Job = tuple[ReplayPoint, Deployment, int]


def _deidentifier(config: SimConfig) -> Callable[[Record], Record] | None:
    """The privacy room's de-identifier for this config, or None when privacy is off."""
    if config.privacy.get("mode", "off") == "off":
        return None
    from deploysim.pipeline.privacy import build_deidentifier

    return build_deidentifier(config.privacy)


class ReplayWorkload(Workload[SimConfig, Job]):
    """Replay every point against every deployment; the executor is the per-deployment queue pipeline."""

    kind = "chat"
    journal = "generations"
    key = "point_id"
    store: RunStore

    def __init__(self, config: SimConfig, store: RunStore | None = None) -> None:
        super().__init__(config)
        if store is not None:  # ``execute`` sets the run's; a caller that only reads inputs hands its own
            self.store = store
        self.counts = InputCounts()
        self.skipped_done = 0
        self.skipped = SkippedInputs()
        self.models: dict[str, Model] = {}
        self._flush_pending = False
        #: the first write that failed (a full disk): nothing more is sent once it is set
        self.failure: JournalError | None = None
        #: set when some deployment is batched (``batch: true``): its batches' counts go in the summary
        self.batch_executor: BatchExecutor | None = None

    def preflight(self) -> None:
        """What can be checked without sending anything: privacy settings and model ids (cheap)."""
        from deploysim.pipeline.privacy import parse_privacy_config

        parse_privacy_config(self.config.privacy)
        for deployment in self.config.deployments:
            check_model_id(deployment.model)
            if deployment.batch:
                check_batch(deployment.model, deployment.name)
        if self.config.judge:
            check_model_id(self.config.judge)

    def _inputs(self) -> Iterator[Reject | list[ReplayPoint]]:
        """Each record's replay points, or a reject (``prepare_points`` is the per-record error boundary)."""
        config = self.config
        deidentify = _deidentifier(config)
        return self.prepared(lambda record: prepare_points(record, config.turn, config.seed, deidentify))

    def deidentified_records(self) -> Iterator[Reject | Record]:
        """Each sampled record, de-identified (one error boundary per record), or a reject."""
        deidentify = _deidentifier(self.config)
        return self.prepared(lambda record: deidentify_record(record, deidentify))

    def prepared(self, prepare: Callable[[Record], T | Reject]) -> Iterator[Reject | T]:
        """Sampled records through ``prepare`` (a per-record error boundary), counted so they reconcile."""
        config = self.config

        def open_inputs() -> Iterator[Record | Reject]:
            self.skipped = SkippedInputs()  # the sampler reads twice: count the last pass only
            return iter_inputs(config.data, config.format, max_message_chars=config.max_message_chars,
                               skipped=self.skipped)

        sample = UniformSample(open_inputs, config.sample, config.seed) if config.sample is not None else None
        if sample is not None:
            self.counts.records_sampled = 0
        late_rejects = 0
        for item in iter(sample) if sample is not None else open_inputs():
            if isinstance(item, Reject):
                yield item
                continue
            prepared = prepare(item)
            if isinstance(prepared, Reject):
                late_rejects += 1
                yield prepared
                continue
            if sample is None:
                self.counts.records_read += 1
                self.counts.records_accepted += 1
            else:
                self.counts.records_sampled += 1  # type: ignore[operator]
            yield prepared
        if sample is not None:  # the sampler's first pass saw every accepted record
            self.counts.records_accepted = sample.total_accepted - late_rejects
            self.counts.records_read += sample.total_accepted - late_rejects

    def _reject(self, reject: Reject) -> None:
        self.counts.records_read += 1
        self.counts.records_rejected += 1
        kind = (f"{reject.field.split('[')[0]}: {reject.reason.split(';')[0][:60]}" if reject.field
                else reject.reason[:60])
        self.counts.rejects_by_reason[kind] = self.counts.rejects_by_reason.get(kind, 0) + 1
        self.store.write_reject(reject)

    # -- the items: one model call per (point, deployment, sample); any executor can run them ----

    async def setup(self, run: Run) -> None:
        self.store = run.store
        self.models = {d.name: run.models.deployment(d) for d in self.config.deployments}
        run.store.open_attempt()

    def done(self, run: Run) -> set[str]:
        self._done = self.store.done_keys() if run.resume else set()
        return self._done

    def items(self, run: Run) -> Iterator[tuple[str, Job]]:
        """Every call to make, keyed by ``generation_key``; points, rejects, logged replies written as they stream."""
        done: set[str] = getattr(self, "_done", set())
        try:
            for item in self._inputs():
                if self.failure is not None:
                    break
                if isinstance(item, Reject):
                    self._reject(item)
                    continue
                for point in item:
                    self.counts.points += 1
                    self.store.write_point(point)
                    self._journal_logged(point, done)
                    for deployment in self.config.deployments:
                        for sample in range(deployment.samples):
                            yield generation_key(point.point_id, deployment.name, sample), (point, deployment, sample)
        except JournalError as exc:
            self.failure = self.failure or exc

    def call(self, item: Job, run: Run) -> Call:
        point, deployment, sample = item
        return Call(self.models[deployment.name], deployment.apply_system_prompt(point.prefix),
                    _sample_params(deployment, sample), point.tools, sample, point.point_id)

    def finish(self, item: Job, generation: Generation, run: Run) -> dict[str, Any]:
        return GENERATIONS.row(generation)

    def record(self, key: str, row: dict[str, Any], run: Run) -> None:
        self._journal_row(row)

    def executed(self, run: Run, wanted: set[str], skipped: int) -> Executed:
        self.skipped_done = skipped
        return Executed(rows={}, skipped=skipped, wanted=len(wanted))

    async def teardown(self, run: Run) -> None:
        run.models.flush()
        try:
            run.store.close_attempt()
        except JournalError as exc:
            self.failure = self.failure or exc

    def summarise(self, run: Run, executed: Executed) -> dict[str, Any]:
        if self.failure is not None:  # a write failed (a full disk): nothing more was sent
            raise self.failure
        self.store.write_parquet()
        summary = build_summary(run.root, self.config, self.counts, self.models, run.started, executed.skipped)
        summary["inputs_skipped"] = self.skipped.by_reason
        if self.batch_executor is not None:
            for name, stats in self.batch_executor.stats().items():
                summary["deployments"][name]["batch"] = stats
        summary["engine"] = self.config.engine
        return summary

    def concurrency(self) -> int:
        """Calls in flight at once under a generic executor (each deployment's Model also limits its own)."""
        return sum(max(1, d.concurrency) for d in self.config.deployments)

    # -- its own executor: bounded per-deployment queues (backpressure), workers per concurrency ----

    async def execute(self, run: Run) -> Executed:
        config, models = self.config, self.models
        batched = {d.name for d in config.deployments if d.batch}
        if batched:  # ``batch: true`` (``run --batch``): those calls go through the provider's batch API
            return await self._execute_batched(run, batched)
        done = self.done(run)
        queues: dict[str, asyncio.Queue[Job | None]] = {name: asyncio.Queue(maxsize=config.queue_size)
                                                         for name in models}
        progress = RunProgress(models, enabled=run.show_progress)
        with progress:
            workers = [asyncio.create_task(self._worker(run, queues[d.name], progress))
                       for d in config.deployments for _ in range(max(1, d.concurrency))]
            producer = asyncio.create_task(self._produce(run, queues, done, progress))
            try:
                await producer
                for deployment in config.deployments:
                    for _ in range(max(1, deployment.concurrency)):
                        await queues[deployment.name].put(_DONE)
                await asyncio.gather(*workers)
            except BaseException:
                producer.cancel()
                for task in workers:
                    task.cancel()
                raise
        return Executed(rows={}, skipped=self.skipped_done, wanted=self.counts.points)

    async def _execute_batched(self, run: Run, batched: set[str]) -> Executed:
        from deploysim.core.batching import BatchExecutor

        progress = RunProgress(self.models, enabled=run.show_progress)

        def planned() -> None:
            progress.set_totals({d.name: self.counts.points * d.samples for d in self.config.deployments})

        self.batch_executor = BatchExecutor(batched, self.config.batch, progress=progress, planned=planned)
        with progress:
            executed = await self.batch_executor.execute(self, run)
        return Executed(rows={}, skipped=executed.skipped, wanted=self.counts.points)

    async def _produce(self, run: Run, queues: dict[str, asyncio.Queue[Any]], done: set[str],
                       progress: RunProgress) -> None:
        for key, job in self.items(run):
            if done and key in done:
                self.skipped_done += 1
                progress.advance(job[1].name, skipped=True)
                continue
            await queues[job[1].name].put(job)
        progress.set_totals({d.name: self.counts.points * d.samples for d in self.config.deployments})

    def _journal_row(self, row: dict[str, Any]) -> None:
        """Journal a finished call (one flush per loop iteration); a failed write sets ``failure`` and stops the run."""
        try:
            self.store.journal_row(row, flush=False)
        except JournalError as exc:
            self.failure = self.failure or exc
            return
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        try:
            self.store.flush_journal()
        except JournalError as exc:
            self.failure = self.failure or exc

    def _journal_logged(self, point: ReplayPoint, done: set[str]) -> None:
        """What production said is the ``logged`` deployment's answer: no call, just a row."""
        if point.original is None or (done and generation_key(point.point_id, LOGGED, 0) in done):
            return
        self._journal_row(GENERATIONS.row(
            Generation(point_id=point.point_id, deployment=LOGGED, text=point.original.content,
                       tool_calls=point.original.tool_calls, finish_reason=LOGGED, attempts=0)))

    async def _worker(self, run: Run, queue: asyncio.Queue[Any], progress: RunProgress) -> None:
        while True:
            job = await queue.get()
            if job is _DONE:
                return
            if self.failure is None:
                try:
                    self.store.ensure_space()  # no call is sent whose answer could not be journaled
                except JournalError as exc:
                    self.failure = exc
            if self.failure is not None:
                continue  # drain the queue so the producer is never stuck; nothing more is sent
            self._journal_row(await self.process(job, run))
            progress.advance(job[1].name)


def _sample_params(deployment: Deployment, sample: int) -> GenerationParams | None:
    """Sample s of K uses seed + s: K samples sharing one seed would be K copies of one reply."""
    if sample == 0 or deployment.params.seed is None:
        return None
    return deployment.params.model_copy(update={"seed": deployment.params.seed + sample})
