"""Grading: a stream of replies through graders into a run directory, resumable (every kind of run).

Resumable like generation (DESIGN rule 4): each (reply, grader) that finishes is
appended to ``journal/verdicts.jsonl`` and flushed, so a killed grading run picks up
where it stopped and never re-asks a judge for a verdict it already has. A grader
failure becomes error verdicts (``flagged=None``), counted in the rates, never
dropped (rule 3). ``verdicts.parquet`` is rebuilt from the journal at the end.
``grade_items`` is the loop (chat runs and agent runs use it); ``grade_run`` grades
every deployment's replies (``logged`` included) of a finished chat run.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from deploysim.core.lifecycle import default_workers
from deploysim.core.models import ModelService
from deploysim.core.schema import ReplayPoint, ToolCall, Verdict
from deploysim.core.store import (
    GENERATIONS,
    POINTS,
    VERDICTS,
    JsonlJournal,
    RunStore,
    exclusive_lock,
    read_config,
    read_points,
)
from deploysim.evaluate.graders.base import Decision, GradeItem, Grader, build_graders, journal_rows, to_verdicts

#: The offline set ``deploysim demo`` and ``deploysim grade`` use by default: no network, no judge.
DEFAULT_GRADERS: list[str] = [
    "refusal", "action_claims", "eval_awareness", "pii", "system_prompt_leak",
    "toxicity", "language", "verbosity", "degenerate", "format",
]
BATCH = 256
POINT_CHUNK = 4096
#: where generations out of point order are partitioned by chunk while grading (removed after)
SCRATCH = Path("journal") / "grading-partitions"
BATCH_ROWS_SCRATCH = 1 << 14
#: generations held in memory at most while streaming a file near point order (else: partition)
STREAM_HOLD_ROWS = 1 << 16


class GradeLockedError(RuntimeError):
    pass


def _grade_lock(root: Path) -> AbstractContextManager[None]:
    # Separate from the engine's .lock: the engine calls grade_run while holding its own.
    return exclusive_lock(root / ".grade.lock", GradeLockedError,
                          f"{root}: another process is grading this run directory")


def _item_key(point_id: str, deployment: str, sample_index: int, grader: str, version: str) -> str:
    return f"{point_id}|{deployment}|{sample_index}|{grader}|{version}"


#: journal lines per on-disk partition when the journal is summarised (resume keys, finalise)
PART_ROWS = 1 << 17
#: the journal summary is partitioned on disk here while grading starts and ends (removed after)
JOURNAL_SCRATCH = Path("journal") / "verdict-partitions"
_SUMMARY = pa.schema([("row", pa.int64()), ("reply", pa.string()), ("grader", pa.string()),
                      ("version", pa.string()), ("behaviour", pa.string()), ("ok", pa.bool_())])


def _key_hash(key: str) -> int:
    """A key's 64-bit hash, the same in every process (BLAKE2b; Python's ``hash`` of a str is salted per
    process), so that a ``DoneKeys`` built by the driver answers in Ray's worker processes too."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "little", signed=True)


class DoneKeys:
    """The (reply, grader, version) keys done, as a sorted int64 array of their hashes: 8 bytes a key.

    A set of Python strings cost ~150 bytes a key (43M keys at 1.3M points); this holds the
    hashes only. Two keys share a 64-bit hash with probability ~ n^2 / 2^65 (about 1e-5 at
    10M keys), which would leave one verdict ungraded. Picklable: the Ray engine ships it to
    its grading workers.
    """

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = np.unique(np.asarray(hashes, np.int64))

    def __contains__(self, key: object) -> bool:
        if not len(self.hashes):  # a fresh run: nothing to hash
            return False
        h = _key_hash(str(key))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and int(self.hashes[i]) == h

    def __len__(self) -> int:
        return len(self.hashes)


def _journal_parts(journal: JsonlJournal, scratch: Path) -> Iterator[pa.Table]:
    """The journal as summary tables (row, reply, grader, version, behaviour, ok), every line of a
    (reply) in the same table: one table in memory when small, else partitioned on disk by a hash of
    the reply so that memory stays bounded by PART_ROWS lines, not by the journal."""
    if not journal.path.exists():
        return
    lines = sum(chunk.count(b"\n") for chunk in _read_blocks(journal.path))
    parts = max(1, -(-lines // PART_ROWS))

    def batches() -> Iterator[pa.RecordBatch]:
        cols: dict[str, list[Any]] = {name: [] for name in [*_SUMMARY.names, "part"]}
        for i, row in enumerate(journal.rows()):
            reply = f"{row['point_id']}|{row['deployment']}|{row.get('sample_index', 0)}"
            cols["row"].append(i)
            cols["reply"].append(reply)
            cols["grader"].append(row["grader"])
            cols["version"].append(str(row.get("grader_version", "1")))
            cols["behaviour"].append(row["behaviour"])
            cols["ok"].append(row.get("error") is None)
            cols["part"].append(hash(reply) % parts)
            if len(cols["row"]) >= BATCH_ROWS_SCRATCH:
                yield pa.RecordBatch.from_pydict(cols, schema=_SUMMARY.append(pa.field("part", pa.int64())))
                cols = {name: [] for name in cols}
        if cols["row"]:
            yield pa.RecordBatch.from_pydict(cols, schema=_SUMMARY.append(pa.field("part", pa.int64())))

    if parts == 1:
        table = pa.Table.from_batches(list(batches()), schema=_SUMMARY.append(pa.field("part", pa.int64())))
        yield table.drop_columns(["part"])
        return
    shutil.rmtree(scratch, ignore_errors=True)
    partitioning = ds.partitioning(pa.schema([("part", pa.int64())]))
    try:
        ds.write_dataset(batches(), scratch, schema=_SUMMARY.append(pa.field("part", pa.int64())),
                         format="parquet", partitioning=partitioning, use_threads=False,
                         max_partitions=1 << 20, max_open_files=256, existing_data_behavior="overwrite_or_ignore")
        parted = ds.dataset(scratch, format="parquet", partitioning=partitioning)
        for k in range(parts):
            yield parted.to_table(columns=_SUMMARY.names, filter=pc.field("part") == k)
            pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed partitions: give them back
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            yield block


def _last_rows(table: pa.Table, keys: list[str]) -> pa.Array:
    """The row number of the last line of each ``keys`` group."""
    return table.group_by(keys, use_threads=False).aggregate([("row", "max")])["row_max"]


def _done_keys(journal: JsonlJournal, scratch: Path | None = None) -> DoneKeys:
    """(reply, grader, version) whose latest journal lines hold no error: not graded again.

    Built a partition of the journal at a time (see _journal_parts); what is kept is one
    int64 hash per done key (see DoneKeys), never a Python object per verdict.
    """
    found: list[np.ndarray] = []
    for table in _journal_parts(journal, scratch or journal.path.parent / "verdict-partitions"):
        if not table.num_rows:
            continue
        last = table.filter(pc.is_in(table["row"], value_set=_last_rows(table, ["reply", "grader", "version",
                                                                               "behaviour"])))
        by_key = last.group_by(["reply", "grader", "version"], use_threads=False).aggregate([("ok", "all")])
        done = by_key.filter(by_key["ok_all"])
        found.append(np.fromiter((_key_hash(f"{r}|{g}|{v}") for r, g, v in zip(
            done["reply"].to_pylist(), done["grader"].to_pylist(), done["version"].to_pylist(), strict=True)),
            np.int64, count=done.num_rows))
    return DoneKeys(np.concatenate(found) if found else np.zeros(0, np.int64))


def _generation_chunks(run_dir: Path, point_ids: pa.Array, chunk: int,
                       scratch: Path) -> Iterator[tuple[int, pa.Table]]:
    """(point chunk number, its generations), each generation read once: O(points + generations).

    A generation's chunk is its point's position in points.parquet // ``chunk``. When the
    file is in point order (the engine writes it as calls finish, near point order) the
    chunks stream straight through; otherwise the generations are first partitioned by
    chunk into ``scratch`` (one write, one read) so that no chunk rescans the file.
    Generations of points not in points.parquet are left out, as before.
    """
    path = GENERATIONS.path(run_dir)
    columns = ["point_id", "deployment", "sample_index", "text", "tool_calls_json", "finish_reason", "error"]
    source = pq.ParquetFile(path, pre_buffer=False)  # pre-buffered row groups stay until the end: memory ~ file

    def chunk_ids(batch: pa.RecordBatch) -> np.ndarray:
        pos = pc.index_in(batch["point_id"], value_set=point_ids)
        return np.asarray(pc.fill_null(pc.divide(pos, chunk), -1).to_numpy(zero_copy_only=False), np.int64)

    ids = [chunk_ids(b) for b in source.iter_batches(columns=["point_id"], batch_size=1 << 16)]
    cid_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    rows = np.flatnonzero(cid_all >= 0)
    present, inverse = np.unique(cid_all[rows], return_inverse=True)
    last_row = np.full(len(present), -1, np.int64)
    np.maximum.at(last_row, inverse, rows)
    emit_at = np.maximum.accumulate(last_row)  # chunks go out in order: chunk k once rows <= emit_at[k] are read
    # rows held back at the worst moment (each row waits from its position until its chunk goes out)
    held = np.zeros(len(cid_all) + 2, np.int64)
    np.add.at(held, rows, 1)
    np.add.at(held, emit_at[inverse] + 1, -1)
    if len(rows) == 0 or int(np.cumsum(held).max()) <= STREAM_HOLD_ROWS:  # near point order: stream once
        parts: dict[int, list[pa.Table]] = {}
        nxt, offset = 0, 0
        for batch in source.iter_batches(columns=columns, batch_size=BATCH):
            cid = cid_all[offset:offset + batch.num_rows]
            offset += batch.num_rows
            table = pa.Table.from_batches([batch])
            for k in np.unique(cid[cid >= 0]):
                parts.setdefault(int(k), []).append(table.filter(pa.array(cid == k)))
            while nxt < len(present) and emit_at[nxt] < offset:
                yield int(present[nxt]), pa.concat_tables(parts.pop(int(present[nxt])))
                nxt += 1
        return
    del cid_all, rows, inverse, held
    shutil.rmtree(scratch, ignore_errors=True)

    def tagged() -> Iterator[pa.RecordBatch]:
        for batch in source.iter_batches(columns=columns, batch_size=BATCH_ROWS_SCRATCH):
            cid = chunk_ids(batch)
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(cid, pa.int64())],
                                             names=[*columns, "chunk"]).filter(pa.array(cid >= 0))

    schema = source.schema_arrow.append(pa.field("chunk", pa.int64()))
    schema = pa.schema([schema.field(c) for c in [*columns, "chunk"]])
    partitioning = ds.partitioning(pa.schema([("chunk", pa.int64())]))
    try:
        ds.write_dataset(tagged(), scratch, schema=schema, format="parquet", partitioning=partitioning,
                         use_threads=False, max_partitions=1 << 20, max_open_files=256,
                         existing_data_behavior="overwrite_or_ignore")
        parted = ds.dataset(scratch, format="parquet", partitioning=partitioning)
        for k in present:
            yield int(k), parted.to_table(columns=columns, filter=pc.field("chunk") == int(k))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def iter_grade_items(run_dir: Path, chunk: int = POINT_CHUNK) -> Iterator[GradeItem]:
    """Replies joined with their replay prefix, a chunk of points at a time, in one pass.

    Memory is bounded by the chunk, not the run. Points and generations are each read
    once (see _generation_chunks); earlier versions rescanned generations per chunk.
    """
    run_dir = Path(run_dir)
    point_ids = pq.read_table(POINTS.path(run_dir), columns=["point_id"])["point_id"].combine_chunks()
    points = read_points(run_dir)
    loaded: dict[str, ReplayPoint] = {}
    loaded_chunk = -1
    for k, table in _generation_chunks(run_dir, point_ids, chunk, run_dir / SCRATCH):
        if k != loaded_chunk:
            loaded = {}
            for _ in range((k - loaded_chunk - 1) * chunk):  # chunks without generations
                next(points)
            for _ in range(chunk):
                point = next(points, None)
                if point is None:
                    break
                loaded[point.point_id] = point
            loaded_chunk = k
        for row in table.to_pylist():
            if row["error"] is not None:
                continue
            point = loaded[row["point_id"]]
            yield GradeItem(
                context=point.prefix,
                reply=row["text"] or "",
                tool_calls=[ToolCall(**c) for c in orjson.loads(row["tool_calls_json"] or "[]")],
                finish_reason=row["finish_reason"],
                tools=point.tools,
                point_id=row["point_id"],
                deployment=row["deployment"],
                sample_index=row["sample_index"],
            )


def _count_ok(run_dir: Path) -> tuple[int, int]:
    table = pq.read_table(GENERATIONS.path(run_dir), columns=["error"])
    errors = int(pc.sum(pc.is_valid(table["error"])).as_py() or 0)
    return table.num_rows - errors, errors


async def _graded(graders: Sequence[Grader], batch: list[GradeItem],
                  done: Container[str]) -> list[tuple[Grader, list[tuple[GradeItem, list[Decision]]]]]:
    """Each grader that had work on ``batch`` (items not in ``done``), with its (item, decisions) pairs.

    A grader that fails gives error decisions (``flagged=None``): recorded, never fatal (rule 3).
    """
    out: list[tuple[Grader, list[tuple[GradeItem, list[Decision]]]]] = []
    for g in graders:
        todo = [it for it in batch if _item_key(it.point_id, it.deployment, it.sample_index, g.name,
                                                 str(g.version)) not in done]
        if not todo:
            continue
        try:
            results = await g.grade(todo)
            if len(results) != len(todo):
                raise RuntimeError(f"returned {len(results)} results for {len(todo)} items")
        except Exception as exc:  # a broken grader is recorded, not fatal (rule 3)
            message = f"grader {g.name} failed: {type(exc).__name__}: {exc}"[:500]
            results = [[Decision(b, None, error=message) for b in g.behaviours] for _ in todo]
        out.append((g, list(zip(todo, results, strict=True))))
    return out


async def verdicts_for(graders: Sequence[Grader], batch: list[GradeItem], done: Container[str]) -> list[list[Verdict]]:
    """Each grader's verdicts on the items of ``batch`` not in ``done``, one list per grader that had work.

    A grader that fails gives error verdicts (``flagged=None``): recorded, never fatal (rule 3).
    Used by the Ray engine's grading stage (replies graded as they stream); ``grade_items``
    writes the same verdicts as journal rows (``journal_rows``).
    """
    return [[v for item, decisions in graded for v in to_verdicts(g, item, decisions)]
            for g, graded in await _graded(graders, batch, done)]


def done_verdicts(run_dir: Path) -> DoneKeys:
    """The (reply, grader, version) keys ``run_dir``'s verdict journal holds without error."""
    return _done_keys(RunStore(run_dir).journal_file("verdicts", key="point_id"), Path(run_dir) / JOURNAL_SCRATCH)


#: Graders the worker processes run: set in the parent just before the pool forks, inherited.
_POOLED: list[Grader] = []
#: Grading spreads over worker processes from this many replies up (below, forking costs more than it saves).
POOL_MIN_ITEMS = 2 * BATCH


def _pool_grade(job: tuple[list[int], list[list[int]], list[GradeItem]]) -> list[list[dict[str, Any]] | str]:
    """In a worker: pooled graders ``which`` on their ``todo`` items; journal rows per grader, or its error."""
    which, todos, items = job
    out: list[list[dict[str, Any]] | str] = []
    for gi, todo in zip(which, todos, strict=True):
        g = _POOLED[gi]
        subset = [items[i] for i in todo]
        try:
            results = asyncio.run(g.grade(subset)) if subset else []
            if len(results) != len(subset):
                raise RuntimeError(f"returned {len(results)} results for {len(subset)} items")
        except Exception as exc:  # a broken grader is recorded, not fatal (rule 3)
            out.append(f"grader {g.name} failed: {type(exc).__name__}: {exc}"[:500])
            continue
        out.append(journal_rows(g, zip(subset, results, strict=True)))
    return out


class _Pool:
    """Offline graders across worker processes: each batch is split among them, results come back
    as journal rows. Forked (the graders' loaded models are inherited, not reloaded); where fork is
    not available grading stays in one process."""

    def __init__(self, graders: Sequence[Grader], workers: int) -> None:
        import multiprocessing

        from deploysim.evaluate.graders.base import registry

        specs = registry()
        self.indices = [i for i, g in enumerate(graders) if (spec := specs.get(g.name)) is not None and spec.offline]
        self.workers = workers
        _POOLED[:] = [graders[i] for i in self.indices]
        self.pool = multiprocessing.get_context("fork").Pool(workers)

    def grade(self, batch: list[GradeItem], todos: list[list[int]]) -> list[list[dict[str, Any]] | str]:
        """Per pooled grader: journal rows for its ``todo`` items (in order), or an error message."""
        size = -(-len(batch) // self.workers)
        jobs = []
        for lo in range(0, len(batch), size):
            hi = min(len(batch), lo + size)
            part = [[i - lo for i in todo if lo <= i < hi] for todo in todos]
            jobs.append((list(range(len(todos))), part, batch[lo:hi]))
        merged: list[list[dict[str, Any]] | str] = [[] for _ in todos]
        for result in self.pool.map(_pool_grade, jobs):
            for gi, rows in enumerate(result):
                if isinstance(rows, str) or isinstance(merged[gi], str):
                    merged[gi] = merged[gi] if isinstance(merged[gi], str) else rows
                else:
                    merged[gi].extend(rows)  # type: ignore[union-attr]
        return merged

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
        _POOLED.clear()


async def _grade_batch(graders: Sequence[Grader], batch: list[GradeItem], done: DoneKeys,
                       journal: JsonlJournal, pool: _Pool | None = None) -> int:
    written = 0
    pooled: dict[int, list[dict[str, Any]] | str] = {}
    if pool is not None:
        todos = [[i for i, it in enumerate(batch) if _item_key(it.point_id, it.deployment, it.sample_index,
                                                                graders[gi].name, str(graders[gi].version)) not in done]
                 for gi in pool.indices]
        if any(todos):
            pooled = dict(zip(pool.indices, pool.grade(batch, todos), strict=True))
    for gi, result in pooled.items():
        if isinstance(result, str):  # the grader failed in a worker: error verdicts, as verdicts_for gives
            g = graders[gi]
            todo = [it for it in batch if _item_key(it.point_id, it.deployment, it.sample_index, g.name,
                                                     str(g.version)) not in done]
            result = journal_rows(g, [(item, [Decision(b, None, error=result) for b in g.behaviours]) for item in todo])
        for row in result:
            journal.append(row, flush=False)
        written += len(result)
    rest = [g for gi, g in enumerate(graders) if gi not in pooled and not (pool and gi in pool.indices)]
    for g, graded in await _graded(rest, batch, done):
        for row in journal_rows(g, graded):
            journal.append(row, flush=False)
            written += 1
    journal.flush()
    return written


def _finalise(run_dir: Path, journal: JsonlJournal) -> int:
    """verdicts.parquet from the journal; the last line per (reply, behaviour, grader) wins.

    Streams: the lines a later line replaces are found a partition of the journal at a
    time (see _journal_parts), then the journal is read once more in order and written
    out batch by batch. Memory holds the replaced line numbers, not a key per verdict.
    """
    replaced: list[np.ndarray] = []
    for table in _journal_parts(journal, Path(run_dir) / JOURNAL_SCRATCH):
        if table.num_rows:
            keep = pc.is_in(table["row"], value_set=_last_rows(table, ["reply", "behaviour", "grader"]))
            replaced.append(table["row"].filter(pc.invert(keep)).to_numpy())
    skip = np.sort(np.concatenate(replaced)) if replaced else np.zeros(0, np.int64)

    def rows() -> Iterator[Verdict]:
        nxt = 0
        for i, row in enumerate(journal.rows()):
            if nxt < len(skip) and skip[nxt] == i:
                nxt += 1
                continue
            yield Verdict.model_validate(row)

    return VERDICTS.write(run_dir, rows())


def grade_run(run_dir: Path, grader_names: list[str] | None, judge: str | None = None,
              show_progress: bool = True, cache: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Grade every reply in ``run_dir`` with the named graders; resumable; returns the rates.

    ``grader_names`` None means DEFAULT_GRADERS. Entries may be registry names, YAML
    files (``graders: [...]``) or ``{name, params}`` mappings. ``judge`` is the model id
    handed to LLM-judge graders; their calls go through a model service with the run's saved
    ``cache`` and ``cache_path`` (``cache=False``: none read or written, as ``--no-cache``).
    ``workers``: processes for the offline graders (None: all cores).
    """
    config = read_config(Path(run_dir))  # a run written by a newer deploysim is refused here
    service = ModelService(cache=cache and bool(config.get("cache", True)), cache_path=config.get("cache_path"))

    async def grade() -> dict[str, Any]:
        try:
            return await grade_run_async(Path(run_dir), grader_names, judge, service, show_progress, workers)
        finally:
            await service.aclose()

    return asyncio.run(grade())


async def grade_run_async(run_dir: Path, grader_names: list[str] | None, judge: str | None,
                          service: ModelService, show_progress: bool, workers: int | None = None) -> dict[str, Any]:
    graders = build_graders(list(grader_names) if grader_names else DEFAULT_GRADERS, judge=judge, service=service)
    started = time.time()
    ok, errored = _count_ok(run_dir)
    n_verdicts, written = await grade_items(run_dir, graders, iter_grade_items(run_dir), ok, show_progress,
                                            workers)
    names = [g.name for g in graders]
    from deploysim.evaluate.stats.analysis import behaviour_rates  # numpy/scipy stack: only once grading ends

    return {
        "graders": names,
        "grader_versions": {g.name: str(g.version) for g in graders},
        "replies_graded": ok,
        "replies_skipped_generation_error": errored,
        "verdicts": n_verdicts,
        "verdicts_this_attempt": written,
        "duration_s": round(time.time() - started, 2),
        "rates": behaviour_rates(run_dir, names),
    }


async def grade_items(run_dir: Path, graders: Sequence[Grader], items: Iterable[GradeItem], total: int | None,
                      show_progress: bool, workers: int | None = None) -> tuple[int, int]:
    """Grade a stream of items into ``run_dir`` (journal, then verdicts.parquet); (verdicts, written now).

    Items stream in batches of ``BATCH``; a (reply, grader, version) the journal already
    holds without error is not graded again, so a killed grading resumes where it stopped.
    Offline graders run in ``workers`` processes (None: all cores) when there are at least
    POOL_MIN_ITEMS items; judges stay in this process.
    """
    import multiprocessing

    journal = RunStore(run_dir).journal_file("verdicts", key="point_id")
    workers = default_workers() if workers is None else workers
    with _grade_lock(Path(run_dir)):
        done = _done_keys(journal, Path(run_dir) / JOURNAL_SCRATCH)
        use_pool = (workers > 1 and (total or 0) >= POOL_MIN_ITEMS
                    and "fork" in multiprocessing.get_all_start_methods())
        pool = _Pool(graders, workers) if use_pool else None  # forked before the progress bar's thread starts
        progress = _progress(total, show_progress)
        written = 0
        try:
            with journal:
                batch: list[GradeItem] = []
                for item in items:
                    batch.append(item)
                    if len(batch) >= BATCH * (pool.workers if pool else 1):
                        written += await _grade_batch(graders, batch, done, journal, pool)
                        progress(len(batch))
                        batch = []
                if batch:
                    written += await _grade_batch(graders, batch, done, journal, pool)
                    progress(len(batch))
        finally:
            progress(None)
            if pool is not None:
                pool.close()
            for g in graders:
                closer = getattr(g, "aclose", None)
                if closer is not None:
                    await closer()
        return _finalise(Path(run_dir), journal), written


def _progress(total: int | None, enabled: bool) -> Any:
    """A callable advancing a rich bar (None closes it); a no-op when disabled."""
    if not enabled:
        return lambda n: None
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(file=sys.stderr))
    task = bar.add_task("grading", total=total)
    bar.start()

    def advance(n: int | None) -> None:
        if n is None:
            bar.stop()
        else:
            bar.advance(task, n)

    return advance
