"""The local asyncio pipeline: sources -> replay points -> deployments -> journal -> Parquet.

One producer reads inputs and cuts points; each deployment has a bounded queue
(backpressure: reading never runs far ahead of the slowest deployment) and a pool
of workers sized by its concurrency. Every finished call is journaled at once, so a
run killed at any moment resumes without resending it (DESIGN rule 4).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from deploysim.core.models import DeploymentCaller, check_model_id, get_model, open_cache
from deploysim.core.schema import LOGGED, SCHEMA_VERSION, Deployment, Generation, GenerationParams, Record, Reject, ReplayPoint
from deploysim.core.store import JournalError, RunStore, generation_key
from deploysim.core.store.journal import exclusive_lock, write_error
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine.progress import RunProgress
from deploysim.pipeline.engine.summary import InputCounts, build_summary
from deploysim.pipeline.replay import deidentify_record, prepare_points
from deploysim.pipeline.sampling import UniformSample
from deploysim.pipeline.sources import SkippedInputs, iter_inputs

_DONE = None
T = TypeVar("T")


class RunLockedError(RuntimeError):
    pass


def run_lock(root: Path) -> AbstractContextManager[None]:
    """One process per run directory: a second one would corrupt the journal."""
    return exclusive_lock(root / ".lock", RunLockedError,
                          f"{root}: another deploysim process is using this run directory")


def _reason_kind(reject: Reject) -> str:
    return reject.field.split("[")[0] + ": " + reject.reason.split(";")[0][:60] if reject.field else reject.reason[:60]


def _deidentifier(config: SimConfig) -> Callable[[Record], Record] | None:
    """The privacy room's de-identifier for this config, or None when privacy is off."""
    if config.privacy.get("mode", "off") == "off":
        return None
    from deploysim.pipeline.privacy import build_deidentifier

    return build_deidentifier(config.privacy)


def preflight(config: SimConfig) -> None:
    """What can be checked without sending anything: privacy settings and model ids.

    PrivacyError or ModelIdError; cheap (no de-identifier or client is built).
    """
    from deploysim.pipeline.privacy import parse_privacy_config

    parse_privacy_config(config.privacy)
    for deployment in config.deployments:
        check_model_id(deployment.model)
    if config.judge:
        check_model_id(config.judge)


def _grade(config: SimConfig, root: Path, show_progress: bool) -> dict[str, Any] | None:
    if not config.graders:
        return None
    from deploysim.evaluate.graders import grade_run

    return grade_run(root, config.graders, judge=config.judge, show_progress=show_progress)


class LocalEngine:
    def __init__(self, config: SimConfig, store: RunStore, *, show_progress: bool = True) -> None:
        self.config = config
        self.store = store
        self.counts = InputCounts()
        self.show_progress = show_progress
        self.skipped_done = 0
        self.skipped = SkippedInputs()
        self._flush_pending = False
        #: the first write that failed (a full disk): nothing more is sent once it is set
        self.failure: JournalError | None = None

    def _inputs(self) -> Iterator[Reject | list[ReplayPoint]]:
        """Each record's replay points (de-identified after sampling: sampling reads only ids), or a reject.

        ``prepare_points`` is the per-record error boundary: a record that fails de-identification,
        cutting or encoding is one more reject, and the counts say so (read = accepted + rejected).
        """
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
        kind = _reason_kind(reject)
        self.counts.rejects_by_reason[kind] = self.counts.rejects_by_reason.get(kind, 0) + 1
        self.store.write_reject(reject)

    async def run(self, resume: bool = False) -> dict[str, Any]:
        config, store = self.config, self.store
        started = time.time()
        clients = {d.name: get_model(d.model) for d in config.deployments}
        cache = open_cache(Path(config.cache_path) if config.cache_path else None) if config.cache else None
        callers = {d.name: DeploymentCaller(d, clients[d.name], cache) for d in config.deployments}
        done = store.done_keys() if resume else set()
        queues: dict[str, asyncio.Queue[tuple[ReplayPoint, int] | None]] = {
            name: asyncio.Queue(maxsize=config.queue_size) for name in callers
        }
        progress = RunProgress(callers, enabled=self.show_progress)
        store.open_attempt()
        try:
            with progress:
                workers = [
                    asyncio.create_task(self._worker(callers[d.name], queues[d.name], progress))
                    for d in config.deployments
                    for _ in range(max(1, d.concurrency))
                ]
                producer = asyncio.create_task(self._produce(queues, done, progress))
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
        finally:
            if cache is not None:
                cache.close()
            try:
                store.close_attempt()
            except JournalError as exc:
                self.failure = self.failure or exc
            for client in clients.values():
                await client.aclose()
        if self.failure is not None:
            raise self.failure
        store.write_parquet()
        summary = build_summary(store.root, config, self.counts, callers, started, self.skipped_done)
        summary["inputs_skipped"] = self.skipped.by_reason
        store.write_json("summary.json", summary)
        return summary

    async def _produce(self, queues: dict[str, asyncio.Queue[Any]], done: set[str], progress: RunProgress) -> None:
        deployments = self.config.deployments
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
                    for deployment in deployments:
                        for sample in range(deployment.samples):
                            if done and generation_key(point.point_id, deployment.name, sample) in done:
                                self.skipped_done += 1
                                progress.advance(deployment.name, skipped=True)
                                continue
                            await queues[deployment.name].put((point, sample))
        except JournalError as exc:
            self.failure = self.failure or exc
        progress.set_totals({d.name: self.counts.points * d.samples for d in deployments})

    def _journal(self, generation: Generation) -> None:
        """Journal a finished call; one flush per event-loop iteration, before the loop waits again.

        A write that fails (a full disk) stops the run: ``failure`` is set, workers send
        nothing more, and ``run`` raises it once the calls in flight have come back.
        """
        try:
            self.store.journal(generation, flush=False)
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
        self._journal(
            Generation(point_id=point.point_id, deployment=LOGGED, text=point.original.content,
                       tool_calls=point.original.tool_calls, finish_reason=LOGGED, attempts=0)
        )

    async def _worker(self, caller: DeploymentCaller, queue: asyncio.Queue[Any], progress: RunProgress) -> None:
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
            point, sample = job
            generation = await caller.answer(point, sample, _sample_params(caller.deployment, sample))
            self._journal(generation)
            progress.advance(caller.deployment.name)


def _sample_params(deployment: Deployment, sample: int) -> GenerationParams | None:
    """Sample s of K uses seed + s: K samples sharing one seed would be K copies of one reply."""
    if sample == 0 or deployment.params.seed is None:
        return None
    return deployment.params.model_copy(update={"seed": deployment.params.seed + sample})


def run_simulation(config: SimConfig, out: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a simulation into ``out``; returns the summary that was written."""
    from deploysim.pipeline.config import dump_config

    preflight(config)  # before the directory exists: a bad setting leaves nothing half-made behind
    store = RunStore(out)
    with run_lock(Path(out)):
        if not resume:
            try:
                store.root.mkdir(parents=True, exist_ok=True)
                tmp = store.root / ".config.yaml.tmp"  # renamed into place: a kill never leaves half a config
                tmp.write_text(f"# deploysim run config, schema {SCHEMA_VERSION}\n" + dump_config(config))
                os.replace(tmp, store.config_path)
            except OSError as exc:
                raise write_error(store.config_path, exc) from None
        engine = LocalEngine(config, store, show_progress=show_progress)
        summary = asyncio.run(engine.run(resume=resume))
        grading = _grade(config, store.root, show_progress)
        if grading is not None:
            summary["behaviours"] = grading
            store.write_json("summary.json", summary)
        return summary
