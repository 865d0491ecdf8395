"""The Ray engine (``--engine ray``): the replay pipeline as Ray Data operators, on one machine or a cluster.

``RayExecutor`` is an ``Executor`` of the replay workload (``core.lifecycle``: ``run_workload(...,
executor=RayExecutor())``): same stages, same run directory as the workload's own local
executor (``engine/local.py``), so ``stats``, ``report``, ``gate`` and ``--resume`` read its runs unchanged:

1. **streaming read**: one read task per input file (``sources.iter_file``), records
   streamed out in blocks, each keeping the origin that the local engine gives it (same
   point ids, same seeded sample);
2. **sampling**: a rank per record (``map_batches``), the bottom-k keys chosen on the
   driver (N small keys, never the records), then a second read keeps those records;
3. **de-identification and cutting** (``map_batches`` on an actor pool, so the
   de-identifier is built once per worker): replay points, or a located reject;
4. **generation**, one operator per deployment:
   - ``openai/`` and ``openai-compatible/`` deployments go through Ray Data's LLM
     processor ``HttpRequestProcessorConfig`` (``ray.data.llm.build_processor``) with
     ``qps`` (from ``requests_per_minute``) and ``max_retries``. Its aiohttp session is
     deploysim's (``_CallSession``): the call cache is read before a request is sent and
     written when an answer comes back, and a call that still fails after its retries
     comes back as an error row (DESIGN rule 3) instead of failing the dataset;
   - every other provider (``instant/``, ``local/``, ``anthropic/``) through the run's
     ``Model`` (``ModelService.deployment``), as the local engine calls it, on an actor pool;
5. **grading** (``map_batches`` on an actor pool, graders handed in as ``Grading``): every
   reply as it streams past; the lifecycle's grade step then finds the verdicts journaled;
6. **writing**: the driver streams the results and writes points, rejects and the
   journal exactly as the local engine does, so a killed Ray run resumes without
   resending a finished call (the journal), and calls that finished but were not yet
   journaled when it was killed are served from the call cache.

The cache file must be reachable from the workers that call models (always so on one
machine; on a cluster put ``cache_path`` on shared storage, or each node keeps its own).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import socket
import time
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa

from pydantic import TypeAdapter

from deploysim.core.lifecycle import Executed, Run, Workload
from deploysim.core.models import CallCache, CallStats, ModelOutput, ModelService, call_key, get_model, open_cache
from deploysim.core.models.service import is_empty
from deploysim.core.schema import LOGGED, Deployment, Generation, Record, Reject, ReplayPoint
from deploysim.core.store import GENERATIONS, JournalError, generation_key
from deploysim.pipeline.engine.local import ReplayWorkload, _deidentifier, _sample_params
from deploysim.pipeline.replay import prepare_points
from deploysim.pipeline.sampling import _rank
from deploysim.pipeline.sources import SkippedInputs, input_files, iter_file

if TYPE_CHECKING:
    from deploysim.pipeline.config import SimConfig

RAY_HINT = ("--engine ray needs the [ray] extra (ray[data] and aiohttp): pip install 'deploysim[ray]'")
#: how long an unreachable --ray-address may take to be reported (the issue asks for under 30 s)
PROBE_S = 10.0
HTTP_PROVIDERS = ("openai/", "openai-compatible/")
#: rows between the stages: every block has this one schema
ROW_SCHEMA = pa.schema([("kind", pa.string()), ("data", pa.string()), ("tag", pa.string()), ("n", pa.int64()),
                        ("point", pa.string())])
READ_BLOCK_ROWS = 1024
_OUTPUT = TypeAdapter(ModelOutput)


class RayUnavailableError(ImportError):
    """``--engine ray`` without the ``[ray]`` extra (the CLI's exit 2)."""


class RayClusterError(RuntimeError):
    """A Ray cluster address that does not answer."""


def require_ray() -> Any:
    """The ``ray`` module, or RayUnavailableError with the install hint."""
    try:
        import aiohttp  # noqa: F401  - the HTTP stage needs it
        import ray
        import ray.data.llm  # noqa: F401
    except ImportError:
        raise RayUnavailableError(RAY_HINT) from None
    return ray


def check_address(address: str | None, timeout_s: float = PROBE_S) -> None:
    """RayClusterError unless ``host:port`` (or ``ray://host:port``) accepts a connection within ``timeout_s``."""
    if address in (None, "", "auto", "local"):
        return
    assert address is not None
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise RayClusterError(f"--ray-address {address!r}: expected host:port (GCS) or ray://host:port (Ray client)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise RayClusterError(f"Ray cluster at {address} does not answer ({why}, waited up to {timeout_s:g}s); "
                              "start it with `ray start --head`, or check --ray-address") from None


def init_ray(address: str | None) -> bool:
    """Join (or start) Ray; True when this call started it (and so should shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    check_address(address)
    try:
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        raise RayClusterError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return True


# -- rows between stages ------------------------------------------------------------------------------


class _Rows:
    def __init__(self) -> None:
        self.kind: list[str] = []
        self.data: list[str] = []
        self.tag: list[str] = []
        self.n: list[int] = []
        self.point: list[str] = []

    def add(self, kind: str, data: str, tag: str = "", n: int = 0, point: str = "") -> None:
        self.kind.append(kind)
        self.data.append(data)
        self.tag.append(tag)
        self.n.append(n)
        self.point.append(point)

    def __len__(self) -> int:
        return len(self.kind)

    def table(self) -> pa.Table:
        return pa.Table.from_arrays([pa.array(self.kind, pa.string()), pa.array(self.data, pa.string()),
                                     pa.array(self.tag, pa.string()), pa.array(self.n, pa.int64()),
                                     pa.array(self.point, pa.string())],
                                    schema=ROW_SCHEMA)


def _iter_rows(batch: pa.Table) -> Iterator[tuple[str, str, str, int, str]]:
    """(kind, data, tag, n, point): ``point`` is the replay point of a generation row, for grading."""
    columns = [batch.column(name).to_pylist() for name in ("kind", "data", "tag", "n", "point")]
    return zip(*columns)


def _record(data: str, key: str) -> Record:
    record = Record.model_validate_json(data)
    record.origin = key.split("\x00", 1)[0]  # not serialised: carried in the row's tag (``Record.key``)
    return record


# -- stage 1: streaming read ----------------------------------------------------------------------------


def _read_files(batch: dict[str, Any], max_message_chars: int) -> Iterator[pa.Table]:
    """Each file's records (tag = ``Record.key()``) and rejects, in blocks; one tally row per file."""
    for path, fmt, origin in zip(batch["path"], batch["format"], batch["origin"]):
        skipped = SkippedInputs()
        rows = _Rows()
        for item in iter_file(Path(path), fmt, origin, max_message_chars, skipped):
            if isinstance(item, Reject):
                rows.add("reject", item.model_dump_json())
            else:
                rows.add("record", item.model_dump_json(), item.key())
            if len(rows) >= READ_BLOCK_ROWS:
                yield rows.table()
                rows = _Rows()
        rows.add("tally", json.dumps({"skipped": skipped.by_reason}))
        yield rows.table()


# -- stage 2: sampling -------------------------------------------------------------------------------


def _rank_rows(batch: pa.Table, seed: int) -> pa.Table:
    """Pass one: a record becomes its seeded rank (``sampling._rank``, the local sampler's) and key."""
    rows = _Rows()
    for kind, data, tag, n, _ in _iter_rows(batch):
        if kind == "record":
            rows.add("rank", str(_rank(seed, _record(data, tag))), tag)
        else:
            rows.add(kind, data, tag, n)
    return rows.table()


def _keep_chosen(batch: pa.Table, chosen: frozenset[str], weight: float) -> pa.Table:
    """Pass two: only the chosen records, weighted total / N (rejects and tallies came with pass one)."""
    rows = _Rows()
    for kind, data, tag, _, _ in _iter_rows(batch):
        if kind == "record" and tag in chosen:
            record = _record(data, tag)
            record.weight *= weight
            rows.add("record", record.model_dump_json(), tag)
    return rows.table()


# -- stage 3: de-identification and cutting ----------------------------------------------------------


class _Prepare:
    """De-identify and cut each record (``replay.prepare_points``, the per-record error boundary); a point
    becomes one ``point`` row and one ``call`` row per deployment and sample not already journaled."""

    def __init__(self, config: SimConfig, done: frozenset[str]) -> None:
        self.config = config
        self.done = done
        self.deidentify = _deidentifier(config)  # once per worker: Presidio's start-up is seconds

    def __call__(self, batch: pa.Table) -> pa.Table:
        config, rows, prepared_ok, skipped_done = self.config, _Rows(), 0, 0
        for kind, data, tag, n, _ in _iter_rows(batch):
            if kind != "record":
                rows.add(kind, data, tag, n)
                continue
            prepared = prepare_points(_record(data, tag), config.turn, config.seed, self.deidentify)
            if isinstance(prepared, Reject):
                rows.add("late_reject", prepared.model_dump_json())
                continue
            prepared_ok += 1
            for point in prepared:
                encoded = point.model_dump_json()
                rows.add("point", encoded)
                for deployment in config.deployments:
                    for sample in range(deployment.samples):
                        if generation_key(point.point_id, deployment.name, sample) in self.done:
                            skipped_done += 1
                        else:
                            rows.add("call", encoded, deployment.name, sample)
        if prepared_ok:
            rows.add("tally", json.dumps({"prepared": prepared_ok, "skipped_done": skipped_done}))
        return rows.table()


# -- stage 4a: generation through deploysim's own clients ------------------------------------------------


class _Answer:
    """One deployment's calls through the run's ``Model`` (cache, limits, retries): the local engine's path."""

    def __init__(self, deployment: Deployment, cache_path: str | None) -> None:
        self.deployment = deployment
        self.loop = asyncio.new_event_loop()
        self.service = ModelService(cache=cache_path is not None, cache_path=cache_path)
        self.model = self.service.deployment(deployment)

    def __call__(self, batch: pa.Table) -> pa.Table:
        name, deployment = self.deployment.name, self.deployment
        rows = list(_iter_rows(batch))
        calls = [(i, ReplayPoint.model_validate_json(data), n)
                 for i, (kind, data, tag, n, _) in enumerate(rows) if kind == "call" and tag == name]
        if calls:
            async def answer_all() -> list[Generation]:
                return await asyncio.gather(*[
                    self.model.generate(deployment.apply_system_prompt(point.prefix),
                                        _sample_params(deployment, sample), point.tools, sample, id=point.point_id)
                    for _, point, sample in calls])

            for (i, _, sample), generation in zip(calls, self.loop.run_until_complete(answer_all())):
                rows[i] = ("generation", generation.model_dump_json(), name, sample, rows[i][1])
            self.service.flush()
        out = _Rows()
        for row in rows:
            out.add(*row)
        return out.table()


# -- stage 4b: generation through Ray Data's HTTP request processor ---------------------------------------


@dataclass
class _HttpSpec:
    """What the HTTP stage's session needs (picklable: it travels to the stage's actors)."""

    deployment: Deployment
    url: str
    headers: dict[str, str]
    identity: dict[str, Any]
    cache_path: str | None
    #: attempts before a failure is final: the first plus ``max_retries``
    attempts: int = field(init=False)

    def __post_init__(self) -> None:
        self.attempts = 1 + max(0, self.deployment.max_retries)


class _Canned:
    """A response made by ``_CallSession`` (the processor reads ``status``, ``reason`` and ``json()``)."""

    def __init__(self, status: int, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.reason = "retry" if status != 200 else "OK"
        self.body = body or {}

    async def __aenter__(self) -> _Canned:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self) -> dict[str, Any]:
        return self.body


class _SessionFactory:
    def __init__(self, spec: _HttpSpec) -> None:
        self.spec = spec

    def __call__(self) -> _CallSession:
        return _CallSession(self.spec)


class _CallSession:
    """The aiohttp session the processor's HTTP stage posts through, once per payload and per retry.

    - a payload that is not a call of this deployment (the rows flowing past) is answered here;
    - a cache hit is answered from the cache: nothing is sent;
    - a failure that may pass (a retryable status, a timeout, a dropped connection, broken JSON)
      is answered 503 while attempts remain, so the processor backs off and retries;
    - the answer or the final failure is returned as one JSON string, ``deploysim``, that the
      postprocess turns into a Generation (an error row when the call failed: never a crashed run).
    """

    def __init__(self, spec: _HttpSpec) -> None:
        import aiohttp

        self.spec = spec
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=spec.deployment.timeout_s))
        self.cache: CallCache | None = _worker_cache(spec.cache_path)
        self.attempts: dict[str, int] = {}

    async def __aenter__(self) -> _CallSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        if self.cache is not None:
            self.cache.flush()

    def post(self, url: str, headers: dict[str, str] | None = None, data: Any = None) -> Any:
        return self._post(data)

    async def _post(self, data: Any) -> _Canned:
        call = json.loads(json.loads(data))  # the row's payload is a JSON string (one Arrow type for every row)
        if not call:
            return _Canned(200, {"deploysim": ""})
        key, body = call["key"], call["body"]
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and not is_empty(hit):
                return _answer(output=_OUTPUT.dump_python(hit, mode="json"), cached=True, attempts=0, latency=0.0)
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        started = time.perf_counter()
        failure, kind, retryable, wait = await self._send(body)
        if isinstance(failure, dict):  # the answer
            output = failure["output"]
            self.attempts.pop(key, None)
            if self.cache is not None:
                self.cache.put(key, _OUTPUT.validate_python(output))
                self.cache.flush()  # before the row can reach the journal: a kill now must not pay again
            return _answer(output=output, cached=False, attempts=attempt, latency=time.perf_counter() - started)
        if retryable and attempt < self.spec.attempts:
            if wait:
                await asyncio.sleep(wait)
            return _Canned(503)  # the processor waits base * 2**n and posts again
        self.attempts.pop(key, None)
        return _Canned(200, {"deploysim": json.dumps({"error": failure, "kind": kind, "attempts": attempt,
                                                      "latency_s": round(time.perf_counter() - started, 4)})})

    async def _send(self, body: dict[str, Any]) -> tuple[Any, str, bool, float]:
        """(answer dict, "", _, _) or (error message, kind, retryable, seconds to wait first)."""
        import aiohttp

        from deploysim.core.models.openai_api import RETRYABLE_STATUS, output_from_completion_body, retry_after_seconds

        try:
            async with self.http.post(self.spec.url, json=body, headers=self.spec.headers) as response:
                status = response.status
                if status != 200:
                    wait = min(retry_after_seconds(response.headers) or 0.0, 120.0)
                    return f"HTTP {status} from provider", f"http_{status}", status in RETRYABLE_STATUS, wait
                raw = await response.read()
        except (asyncio.TimeoutError, TimeoutError):
            return f"timed out after {self.spec.deployment.timeout_s:g}s", "ModelCallError", True, 0.0
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: no answer from provider", "ModelCallError", True, 0.0
        try:
            output = output_from_completion_body(json.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"malformed response from provider ({type(exc).__name__})", "ModelCallError", True, 0.0
        if is_empty(output):
            return "empty reply from provider (no text and no tool calls)", "empty_reply", False, 0.0
        return {"output": _OUTPUT.dump_python(output, mode="json")}, "", False, 0.0


def _answer(output: dict[str, Any], cached: bool, attempts: int, latency: float) -> _Canned:
    return _Canned(200, {"deploysim": json.dumps({"output": output, "cached": cached, "attempts": attempts,
                                                  "latency_s": round(latency, 4)})})


_CACHES: dict[str, CallCache | None] = {}


def _worker_cache(path: str | None) -> CallCache | None:
    """One cache connection per worker process and file (a session is made per batch)."""
    if path is None:
        return None
    if path not in _CACHES:
        _CACHES[path] = open_cache(Path(path))
    return _CACHES[path]


def _http_preprocess(spec: _HttpSpec) -> Any:
    deployment = spec.deployment

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        from deploysim.core.models.openai_api import chat_request

        call: dict[str, Any] = {}
        if row["kind"] == "call" and row["tag"] == deployment.name:
            point = ReplayPoint.model_validate_json(row["data"])
            sample = int(row["n"])
            params = _sample_params(deployment, sample) or deployment.params
            messages = deployment.apply_system_prompt(point.prefix)
            call = {"key": call_key(spec.identity, messages, params, point.tools, sample),
                    "body": chat_request(str(spec.identity["model"]), messages, params, point.tools)}
        return {"kind": row["kind"], "data": row["data"], "tag": row["tag"], "n": row["n"], "point": row["point"],
                "payload": json.dumps(call)}

    return preprocess


def _http_postprocess(name: str) -> Any:
    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        kind, data, n = row["kind"], row["data"], int(row["n"])
        if kind == "call" and row["tag"] == name:
            point = ReplayPoint.model_validate_json(data)
            result = json.loads((row.get("http_response") or {}).get("deploysim") or "{}")
            base: dict[str, Any] = {"point_id": point.point_id, "deployment": name, "sample_index": n}
            if "output" in result:
                output = _OUTPUT.validate_python(result["output"])
                generation = Generation(**base, text=output.text, tool_calls=output.tool_calls,
                                        finish_reason=output.finish_reason, usage=output.usage,
                                        latency_s=result["latency_s"], attempts=result["attempts"],
                                        cached=result["cached"], prompt_truncated=output.prompt_truncated)
            else:
                generation = Generation(**base, error=result.get("error") or "no answer from the HTTP stage",
                                        latency_s=result.get("latency_s") or 0.0, attempts=result.get("attempts", 1))
            return {"kind": "generation", "data": generation.model_dump_json(), "tag": name, "n": n, "point": data}
        return {"kind": kind, "data": data, "tag": row["tag"], "n": n, "point": row["point"]}

    return postprocess


def _http_processor(deployment: Deployment, cache_path: str | None) -> Any:
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    client = get_model(deployment.model)
    url, headers = client.http_target()  # type: ignore[attr-defined]
    spec = _HttpSpec(deployment=deployment, url=url, headers=headers, identity=client.cache_identity(),
                     cache_path=cache_path)
    rpm = deployment.requests_per_minute
    config = HttpRequestProcessorConfig(
        url=url,
        qps=max(1, round(rpm / 60)) if rpm else None,
        max_retries=max(0, deployment.max_retries),
        base_retry_wait_time_in_s=0.5,
        batch_size=16,
        concurrency=max(1, deployment.concurrency),
        session_factory=_SessionFactory(spec),
        http_request_stage={"num_cpus": 0.25},
    )
    return build_processor(config, preprocess=_http_preprocess(spec), postprocess=_http_postprocess(deployment.name))


# -- stage 5: grading -----------------------------------------------------------------------------------


@dataclass
class Grading:
    """What the grading stage needs from the evaluate layer, handed in by ``run_simulation`` (the pipeline
    layer does not import graders): ``build_graders``, ``grade_items``, ``GradeItem``, the verdicts an
    earlier attempt journaled, and the verdict journal's path in the run directory."""

    build: Callable[..., list[Any]]
    grade: Callable[..., Any]
    item: Callable[..., Any]
    #: the verdict keys a run directory's journal holds (``done_verdicts``): not asked for again on resume
    done_in: Callable[[Path], Container[str]]
    #: the run's call cache (a judge's calls), None when the run is uncached
    cache_path: str | None
    done: Container[str] = frozenset()  # a DoneKeys on resume: 8 bytes a key, picklable to the workers


class _Grade:
    """The run's graders on every reply as it streams past (``logged`` ones from the point rows): verdict
    rows for the driver's ``journal/verdicts.jsonl``; ``grade_run`` then only finds them done and
    finalises. Verdicts an earlier attempt journaled (``done``) are not asked for again."""

    def __init__(self, config: SimConfig, grading: Grading) -> None:
        self.grading = grading
        self.service = ModelService(cache=grading.cache_path is not None, cache_path=grading.cache_path)
        self.graders = grading.build(list(config.graders or []), judge=config.judge, service=self.service)
        self.done = grading.done  # set by the executor from ``done_in`` on resume
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: pa.Table) -> pa.Table:
        GradeItem, grade_items = self.grading.item, self.grading.grade
        out, items = _Rows(), []
        for kind, data, tag, n, encoded in _iter_rows(batch):
            out.add(kind, data, tag, n)  # the point travels no further
            if kind == "generation":
                generation = Generation.model_validate_json(data)
                if generation.error is None:
                    point = ReplayPoint.model_validate_json(encoded)
                    items.append(GradeItem(context=point.prefix, reply=generation.text or "",
                                           tool_calls=generation.tool_calls, finish_reason=generation.finish_reason,
                                           tools=point.tools, point_id=point.point_id, deployment=tag,
                                           sample_index=n))
            elif kind == "point":
                point = ReplayPoint.model_validate_json(data)
                if point.original is not None:  # what production said, graded as the ``logged`` deployment
                    items.append(GradeItem(context=point.prefix, reply=point.original.content or "",
                                           tool_calls=point.original.tool_calls, finish_reason=LOGGED,
                                           tools=point.tools, point_id=point.point_id, deployment=LOGGED))
        if items:
            for verdicts in self.loop.run_until_complete(grade_items(self.graders, items, self.done)):
                for verdict in verdicts:
                    out.add("verdict", verdict.model_dump_json())
        return out.table()


# -- the engine ---------------------------------------------------------------------------------------


def _count(stats: CallStats, generation: Generation) -> None:
    """What a ``Model`` counts for one call, counted on the driver from the row the workers sent back."""
    if generation.cached:
        stats.cache_hits += 1
    else:
        stats.cache_misses += 1
        stats.calls += generation.attempts
        stats.retries += max(0, generation.attempts - 1)
    if generation.error is None:
        stats.ok += 1
        stats.prompt_tokens += generation.usage.prompt_tokens
        stats.completion_tokens += generation.usage.completion_tokens
    else:
        stats.errors += 1


def is_http(model: str) -> bool:
    return model.startswith(HTTP_PROVIDERS)


class RayExecutor:
    """The replay workload's executor on Ray Data (``run_workload(..., executor=RayExecutor())``).

    The workload keeps what it owns: counts, points, rejects, the journal, the summary; the
    executor streams Ray's result blocks into them, as ``ReplayWorkload.execute`` does with its
    queues. ``grading`` (handed in by the layer that knows graders) grades replies in the stream.
    """

    def __init__(self, address: str | None = None, grading: Grading | None = None) -> None:
        self.address = address
        self.grading = grading

    async def execute(self, workload: Workload[Any, Any], run: Run) -> Executed:
        if not isinstance(workload, ReplayWorkload):
            raise TypeError(f"the Ray engine runs the replay workload, not {type(workload).__name__}")
        started = init_ray(self.address)
        try:
            return self._execute(workload, run)
        finally:
            if started:
                import ray

                ray.shutdown()

    def build(self, workload: ReplayWorkload, run: Run, done: frozenset[str], cache_path: str | None,
              late: dict[str, Any]) -> Any:
        """The dataset of result rows (rejects, tallies, points, generations, verdicts), read lazily."""
        import ray

        config = workload.config
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = run.show_progress
        ctx.execution_options.preserve_order = True  # points.parquet in input order, as the local engine writes
        plan = input_files(config.data, config.format)
        files = [{"path": str(path), "format": fmt, "origin": origin} for path, fmt, origin in plan]
        reader: Any = _read_files  # a generator of blocks: one file streams out in several

        def read() -> Any:
            return ray.data.from_items(files, override_num_blocks=max(1, len(files))).map_batches(
                reader, batch_size=1, fn_kwargs={"max_message_chars": config.max_message_chars})

        records = read()
        if config.sample is not None:
            chosen, total = self._choose(workload, read().map_batches(_rank_rows, batch_format="pyarrow",
                                                                      fn_kwargs={"seed": config.seed}), config.sample)
            late["total_accepted"] = total
            records = records.map_batches(_keep_chosen, batch_format="pyarrow", fn_kwargs={
                "chosen": frozenset(chosen), "weight": total / max(len(chosen), 1)})
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        pool = ray.data.ActorPoolStrategy
        rows = records.map_batches(_Prepare, batch_format="pyarrow", batch_size=256,
                                   compute=pool(min_size=1, max_size=cpus),
                                   fn_constructor_kwargs={"config": config, "done": done})
        for deployment in config.deployments:
            if is_http(deployment.model):
                rows = _http_processor(deployment, cache_path)(rows)
            else:
                size = 1 if deployment.model.startswith("local/") else cpus  # a local model: one copy in memory
                rows = rows.map_batches(_Answer, batch_format="pyarrow", batch_size=256,
                                        compute=pool(min_size=1, max_size=size),
                                        fn_constructor_kwargs={"deployment": deployment, "cache_path": cache_path})
        if config.graders and self.grading is not None:
            grading = self.grading
            if run.resume:
                grading = replace(grading, done=grading.done_in(run.root))
            rows = rows.map_batches(_Grade, batch_format="pyarrow", batch_size=256,
                                    compute=pool(min_size=1, max_size=cpus),
                                    fn_constructor_kwargs={"config": config, "grading": grading})
        return rows

    def _choose(self, workload: ReplayWorkload, ranks: Any, n: int) -> tuple[set[str], int]:
        """The bottom-n keys by seeded rank; rejects are written here (pass one), as the local sampler does."""
        heap: list[tuple[int, str]] = []
        total = 0
        for batch in ranks.iter_batches(batch_format="pyarrow", batch_size=None):
            for kind, data, tag, _, _ in _iter_rows(batch):
                if kind == "reject":
                    workload._reject(Reject.model_validate_json(data))
                elif kind == "tally":
                    self._tally(workload, json.loads(data))
                elif kind == "rank":
                    total += 1
                    entry = (-int(data), tag)
                    if len(heap) < n:
                        heapq.heappush(heap, entry)
                    elif entry > heap[0]:
                        heapq.heapreplace(heap, entry)
        return {key for _, key in heap}, total

    def _tally(self, workload: ReplayWorkload, tally: dict[str, Any]) -> None:
        skipped = workload.skipped.by_reason
        for reason, count in tally.get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
        self._prepared += tally.get("prepared", 0)
        self._skipped_done += tally.get("skipped_done", 0)

    def _execute(self, workload: ReplayWorkload, run: Run) -> Executed:
        config, store = workload.config, run.store
        done = workload.done(run)
        cache = run.models
        cache_path = str(cache.cache_path) if cache.cache_enabled else None
        self._prepared = self._skipped_done = 0
        late: dict[str, Any] = {}
        late_rejects = 0
        verdicts = store.journal_file("verdicts", key="point_id") if self.grading is not None else None
        try:
            if verdicts is not None:
                verdicts.open()
            rows = self.build(workload, run, frozenset(done), cache_path, late)
            for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
                store.ensure_space()
                for kind, data, tag, n, _ in _iter_rows(batch):
                    if kind == "verdict" and verdicts is not None:
                        verdicts.append(json.loads(data), flush=False)
                    elif kind == "generation":
                        generation = Generation.model_validate_json(data)
                        store.journal_row(GENERATIONS.row(generation), flush=False)
                        _count(workload.models[tag].stats, generation)
                    elif kind == "point":
                        point = ReplayPoint.model_validate_json(data)
                        workload.counts.points += 1
                        store.write_point(point)
                        workload._journal_logged(point, done)
                    elif kind in ("reject", "late_reject"):
                        late_rejects += kind == "late_reject"
                        workload._reject(Reject.model_validate_json(data))
                    elif kind == "tally" and (config.sample is None or "skipped" not in json.loads(data)):
                        self._tally(workload, json.loads(data))
                store.flush_journal()
                if verdicts is not None:
                    verdicts.flush()
        except JournalError as exc:
            workload.failure = workload.failure or exc
        finally:
            if verdicts is not None:
                verdicts.close()
        counts = workload.counts
        if config.sample is None:
            counts.records_read += self._prepared
            counts.records_accepted += self._prepared
        elif "total_accepted" in late:  # the local sampler's arithmetic (``ReplayWorkload.prepared``)
            counts.records_sampled = self._prepared
            counts.records_accepted = late["total_accepted"] - late_rejects
            counts.records_read += late["total_accepted"] - late_rejects
        workload.skipped_done = self._skipped_done
        return Executed(rows={}, skipped=self._skipped_done, wanted=counts.points)

