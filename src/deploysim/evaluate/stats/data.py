"""A run directory as arrays: one row per replay point, one outcome column per (behaviour, deployment).

Outcome = fraction of a point's samples the grader flagged (0/1 with one sample);
NaN when the grader gave no usable verdict (errors are counted, never read as "not
flagged"). One grader per behaviour is analysed: the validated one when validation
results name it, else the one with the most verdicts (others are listed in notes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from deploysim.core.schema import LOGGED
from deploysim.core.store import POINTS, VERDICTS, RunDirError, read_config


@dataclass
class RunData:
    run_dir: Path
    point_ids: pa.Array
    weights: np.ndarray
    clusters: np.ndarray  # int codes; cluster = metadata conversation_id, else record_id
    n_clusters: int
    metadata: Metadata
    outcomes: dict[str, Outcomes]  # behaviour -> deployment -> float per point (NaN = none)
    graders: dict[str, str]
    errors: dict[str, dict[str, int]]  # behaviour -> deployment -> verdicts without a decision
    deployments: list[str]
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    #: Outcomes of the graders not analysed, by (behaviour, grader) -> deployment.
    others: dict[tuple[str, str], Outcomes] = field(default_factory=dict)
    #: Verdicts per (deployment, behaviour, grader): (flagged, not flagged, errors), an error being a
    #: verdict without a decision or with an error message; filled when load_run is asked to count.
    verdict_counts: dict[tuple[str, str, str], tuple[int, int, int]] = field(default_factory=dict)

    @property
    def behaviours(self) -> list[str]:
        return sorted(self.outcomes)


class Outcomes(Mapping[str, np.ndarray]):
    """One behaviour's outcome column per deployment, kept as compact per-point counts.

    A lookup returns a new float64 column (flagged / decided, NaN = no usable verdict). Stored:
    one int8 per point (-1 none, 0, 1) when no point has more than one decided sample, else the
    two uint16 counts: at 1.3M points and 33 columns, 43 MB instead of 343 MB of float64.
    """

    def __init__(self) -> None:
        self._columns: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]] = {}

    def put(self, deployment: str, flagged: np.ndarray, decided: np.ndarray) -> None:
        if len(decided) == 0 or int(decided.max()) <= 1:
            self._columns[deployment] = np.where(decided > 0, flagged, -1).astype(np.int8)
        else:
            self._columns[deployment] = (flagged, decided)

    def __getitem__(self, deployment: str) -> np.ndarray:
        stored = self._columns[deployment]
        if isinstance(stored, np.ndarray):
            column = stored.astype(float)
            column[stored < 0] = np.nan
            return column
        flagged, decided = stored
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(decided > 0, flagged / np.maximum(decided, 1), np.nan)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def cluster_of(record_id: str, metadata: dict[str, Any]) -> str:
    conv = metadata.get("conversation_id")
    return str(conv) if conv not in (None, "") else str(record_id)


class Metadata:
    """Points' metadata, kept as the compact JSON column and read field by field when needed.

    A 1.3M-point run's metadata as Python dicts takes gigabytes; as JSON text it takes tens
    of megabytes, and each question (segment fields, one field's labels, clusters) is one
    streaming parse that keeps only small integer codes.
    """

    def __init__(self, column: pa.ChunkedArray | list[dict[str, Any]] | None, table: pa.Table | None = None) -> None:
        if isinstance(column, list):  # already parsed (tests, small callers)
            column = pa.chunked_array([pa.array([orjson.dumps(m).decode() for m in column], pa.string())])
        self.column: pa.ChunkedArray | None = column
        if table is not None:  # parsed already, to simple columns: no JSON text kept
            self._table: pa.Table | None = table
            self._rows = table.num_rows

    @classmethod
    def read(cls, points_path: Path) -> Metadata:
        """Parsed a batch at a time when every batch gives simple columns (str, int, bool), so that the JSON
        text is never held whole (at 1.3M points, ~110 MB and as much again to parse it at once); else
        the JSON column, parsed whole when asked (which then falls back to Python if need be)."""
        parts: list[pa.Table] = []
        for batch in pq.ParquetFile(points_path, pre_buffer=False).iter_batches(
                columns=["metadata_json"], batch_size=METADATA_BATCH, use_threads=False):
            table = _parse_json(batch.column(0))
            if table is None or not _simple(table):
                break
            parts.append(table)
        else:
            try:  # a field missing from a batch is null there; one with two types does not fit: read it whole
                table = pa.concat_tables(parts, promote_options="default") if parts else None
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table = None
            if table is not None and _simple(table):
                return cls(None, table)
        return cls(pq.read_table(points_path, columns=["metadata_json"])["metadata_json"])

    def __len__(self) -> int:
        return len(self.column) if self.column is not None else self._rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.column is None:
            raise RuntimeError("metadata JSON was dropped after Arrow parsed it; ask values() or fields()")
        for chunk in self.column.chunks:
            for raw in chunk.to_pylist():
                yield orjson.loads(raw) if raw else {}

    def _arrow(self) -> pa.Table | None:
        """The metadata as Arrow columns, parsed in C++; None when the JSON does not fit one schema."""
        if not hasattr(self, "_table"):
            self._table = _parse_json(self.column) if self.column is not None else None
            if self._table is not None:
                self._rows = self._table.num_rows
                if _simple(self._table):  # every question is answered from the columns: drop the JSON text
                    self.column = None
        return self._table

    def _column(self, name: str) -> pa.ChunkedArray | None:
        """A field's Arrow column when its type keeps Python's values exactly (str, int, bool)."""
        table = self._arrow()
        if table is None or name not in table.column_names:
            return None
        column = table[name]
        if pa.types.is_string(column.type) or pa.types.is_int64(column.type) or pa.types.is_boolean(column.type):
            return column
        return None

    def fields(self, max_values: int, exclude: set[str]) -> list[str]:
        """Scalar (str, int, bool) fields with 2..max_values distinct values."""
        table = self._arrow()
        if table is None or any(self._column(n) is None and n not in exclude for n in table.column_names):
            return self._fields_python(max_values, exclude)
        out = []
        for name in table.column_names:
            if name in exclude:
                continue
            distinct = pc.count_distinct(self._column(name), mode="only_valid").as_py()
            if 2 <= distinct <= max_values:
                out.append(name)
        return sorted(out)

    def _fields_python(self, max_values: int, exclude: set[str]) -> list[str]:
        values: dict[str, set[Any]] = {}
        for meta in self:
            for key, value in meta.items():
                if key in exclude or not isinstance(value, str | int | bool):
                    continue
                seen = values.setdefault(key, set())
                if len(seen) <= max_values:
                    seen.add(value)
        return sorted(k for k, v in values.items() if 2 <= len(v) <= max_values)

    def values(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """(code per point, distinct values by code, in order of appearance): code -1 = missing or empty."""
        column = self._column(name)
        if column is not None:
            if pa.types.is_string(column.type):
                column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
            encoded = pc.dictionary_encode(column).combine_chunks() if len(column) else None
            if encoded is None:
                return np.zeros(0, np.int64), []
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            return codes, encoded.dictionary.to_pylist()
        if self.column is None:  # all columns are simple and ``name`` is not one of them: missing everywhere
            return np.full(len(self), -1, np.int64), []
        return self._values_python(name)

    def _values_python(self, name: str) -> tuple[np.ndarray, list[Any]]:
        codes = np.full(len(self), -1, np.int64)
        seen: dict[Any, int] = {}
        distinct: list[Any] = []
        for i, meta in enumerate(self):
            value = meta.get(name)
            if value is None or value == "":
                continue
            key = (type(value).__name__, value) if isinstance(value, str | int | float | bool) else (
                "json", orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
            code = seen.get(key)
            if code is None:
                code = seen[key] = len(distinct)
                distinct.append(value)
            codes[i] = code
        return codes, distinct

    def cluster_keys(self, record_ids: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
        """Cluster = metadata conversation_id, else record_id (as cluster_of)."""
        column = self._column("conversation_id")
        records = pc.cast(record_ids, pa.string())
        if column is not None:
            conv = pc.cast(column, pa.string()) if not pa.types.is_boolean(column.type) else None
            if conv is not None:
                conv = pc.if_else(pc.equal(conv, ""), pa.scalar(None, pa.string()), conv)
                return pc.coalesce(conv, records)
        elif (table := self._arrow()) is not None and "conversation_id" not in table.column_names:
            return records
        codes, distinct = self._values_python("conversation_id")
        names = [str(v) for v in distinct]
        return pa.array([names[c] if c >= 0 else str(r) for c, r in zip(codes.tolist(), records.to_pylist(),
                                                                        strict=True)], pa.string())


#: metadata rows parsed at a time by Metadata.read
METADATA_BATCH = 1 << 16


def _simple(table: pa.Table) -> bool:
    return all(pa.types.is_string(t) or pa.types.is_int64(t) or pa.types.is_boolean(t) for t in table.schema.types)


def _parse_json(column: pa.Array | pa.ChunkedArray) -> pa.Table | None:
    """One JSON object per entry as Arrow columns (C++'s reader); None when they do not fit one schema."""
    try:
        text = column.type  # string or large_string (points.parquet's): the separators must have its type
        lines = pc.binary_join_element_wise(pc.fill_null(column, pa.scalar("{}", text)), pa.scalar("\n", text),
                                            pa.scalar("", text))
        if isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        buffers = lines.buffers()
        width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
        offsets = np.frombuffer(buffers[1], dtype=width)[lines.offset: lines.offset + len(lines) + 1]
        data = buffers[2]
        if not len(lines) or data is None:
            return None
        body = data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        table = pa_json.read_json(pa.BufferReader(body),
                                  read_options=pa_json.ReadOptions(block_size=1 << 22, use_threads=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(column) else None


def load_run(run_dir: Path, preferred_graders: dict[str, str] | None = None,
             graders: Sequence[str] | None = None, count_verdicts: bool = False) -> RunData:
    """Read points and verdicts of a finished run (verdicts.parquet is written by the graders).

    ``graders`` keeps only those graders' verdicts. ``count_verdicts`` fills
    ``RunData.verdict_counts`` (reads the verdicts' error column too).
    """
    run_dir = Path(run_dir)
    points_path, verdicts_path = POINTS.path(run_dir), VERDICTS.path(run_dir)
    if not points_path.is_file():
        raise RunDirError(f"{run_dir}: no points.parquet; is this a finished run directory?")
    if not verdicts_path.is_file():
        raise RunDirError(f"{run_dir}: no verdicts.parquet; grade the run first")
    points = pq.read_table(points_path, columns=["point_id", "record_id", "weight"])
    point_ids = points["point_id"].combine_chunks()
    metadata = Metadata.read(points_path)
    clusters = dense_codes(metadata.cluster_keys(points["record_id"]))
    weights = points["weight"].to_numpy(zero_copy_only=False).astype(float)
    del points
    pa.default_memory_pool().release_unused()
    bad = ~(np.isfinite(weights) & (weights >= 0))
    if bad.any():  # a NaN or infinite weight would make every rate and interval meaningless
        first = int(np.flatnonzero(bad)[0])
        raise RunDirError(f"{points_path}: {int(bad.sum())} point(s) have a weight that is not a finite number "
                          f">= 0 (first: point {point_ids[first]}, weight {weights[first]}); "
                          "fix the records' sampling_weight and run again")
    n = len(point_ids)
    config = read_config(run_dir)  # a run written by a newer deploysim is refused here, never misread
    notes: list[str] = []
    tallies, unknown, verdict_counts = _tally_verdicts(verdicts_path, point_ids, graders, count_verdicts)
    pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed batches: give them back
    if unknown:
        notes.append(f"{unknown} verdict groups name points not in points.parquet: ignored")
    counts = {key: int(t.verdicts) for key, t in tallies.items()}
    chosen = _choose_graders(counts, preferred_graders or {}, notes)
    others: dict[tuple[str, str], Outcomes] = {}
    outcomes: dict[str, Outcomes] = {}
    errors: dict[str, dict[str, int]] = {}
    deployments: set[str] = set()
    for (behaviour, grader) in sorted(tallies):
        tally = tallies.pop((behaviour, grader))
        if not tally.by_deployment:  # every verdict named an unknown point
            continue
        analysed = chosen.get(behaviour) == grader
        columns = outcomes.setdefault(behaviour, Outcomes()) if analysed else others.setdefault(
            (behaviour, grader), Outcomes())
        for d in sorted(tally.by_deployment):
            flagged, decided, undecided = tally.by_deployment.pop(d)
            columns.put(d, flagged, decided)
            if analysed:
                errors.setdefault(behaviour, {})[d] = undecided
                deployments.add(d)
    ordered = [d["name"] for d in config.get("deployments", []) if isinstance(d, dict) and d.get("name") in deployments]
    ordered += sorted(deployments - set(ordered) - {LOGGED})
    if LOGGED in deployments:
        ordered.append(LOGGED)
    n_clusters = int(clusters.max()) + 1 if n else 0
    return RunData(run_dir, point_ids, weights, clusters, n_clusters, metadata, outcomes, chosen, errors, ordered,
                   config, notes, others, verdict_counts)


def dense_codes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Integer codes 0..k-1 for ``keys`` in sorted key order (as np.unique(return_inverse=True))."""
    encoded = pc.dictionary_encode(keys)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.unify_dictionaries().combine_chunks() if encoded.num_chunks else pa.array(
            [], pa.dictionary(pa.int32(), pa.string()))
    dictionary = encoded.dictionary
    rank = np.empty(len(dictionary), np.int64)
    rank[np.asarray(pc.sort_indices(dictionary))] = np.arange(len(dictionary))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)] if len(encoded) else np.zeros(0, np.int64)


class _Tally:
    """Per (behaviour, grader): per deployment, counts per point (flagged, decided) and undecided total."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.verdicts = 0
        self.by_deployment: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}

    def add(self, deployment: str, index: np.ndarray, flagged: np.ndarray, decided: np.ndarray) -> None:
        if deployment not in self.by_deployment:
            self.by_deployment[deployment] = (np.zeros(self.n, np.uint16), np.zeros(self.n, np.uint16), 0)
        f, d, undecided = self.by_deployment[deployment]
        f += np.bincount(index, weights=flagged, minlength=self.n).astype(np.uint16)
        d += np.bincount(index, weights=decided, minlength=self.n).astype(np.uint16)
        self.by_deployment[deployment] = (f, d, undecided + int((~decided).sum()))


VERDICT_BATCH = 1 << 16
#: verdict rows held at most while their batches' point ids wait for one lookup together
GROUP_ROWS = 1 << 21

VerdictCounts = dict[tuple[str, str, str], tuple[int, int, int]]


def _tally_verdicts(path: Path, point_ids: pa.Array, graders: Sequence[str] | None, count: bool = False
                    ) -> tuple[dict[tuple[str, str], _Tally], int, VerdictCounts]:
    """Stream verdicts.parquet once, a batch at a time, into per-point counts: memory ~ points, not verdicts.

    Returns the tallies, the number of (behaviour, grader, deployment, point) groups
    naming a point that is not in points.parquet, and (with ``count``) the verdicts per
    (deployment, behaviour, grader): flagged, not flagged, errors.
    """
    n = len(point_ids)
    tallies: dict[tuple[str, str], _Tally] = {}
    counts: dict[tuple[str, str, str], np.ndarray] = {}
    keep = set(graders) if graders is not None else None
    unknown_groups: set[tuple[str, str, str, str]] = set()
    columns = ["point_id", "deployment", "behaviour", "grader", "flagged", *(["error"] if count else [])]
    # pre_buffer=False: pre-buffered row groups stay allocated until the file is read through (~140 KB a
    # 64k-row group of these columns: +92 MB at 1.3M points), a stream's memory would grow with the file
    source = pq.ParquetFile(path, read_dictionary=columns[:4], pre_buffer=False)
    # Each batch's point-id dictionary (its distinct ids) is looked up in points.parquet's ids; batches
    # wait in a group until their dictionaries hold max(n, 1M) ids (or GROUP_ROWS rows), so that the
    # ids are hashed once per group, not once per batch (that was O(N^2)).
    group: list[pa.RecordBatch] = []
    held_ids = held_rows = 0

    def tally_group() -> None:
        if not group:
            return
        found = pc.index_in(pa.concat_arrays([pc.cast(b.column(0).dictionary, pa.string()) for b in group]),
                            value_set=point_ids)
        flat = pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        start = 0
        for batch in group:
            size = len(batch.column(0).dictionary)
            _tally_batch(batch, flat[start:start + size], tallies, counts, keep, unknown_groups, n)
            start += size
        group.clear()
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps the freed batches: give them back

    for batch in source.iter_batches(columns=columns, batch_size=VERDICT_BATCH, use_threads=False):
        group.append(batch)
        held_ids += len(batch.column(0).dictionary)
        held_rows += batch.num_rows
        if held_ids >= max(n, 1 << 20) or held_rows >= GROUP_ROWS:
            tally_group()
            held_ids = held_rows = 0
    tally_group()
    verdict_counts = {key: (int(c[0]), int(c[1]), int(c[2])) for key, c in counts.items()}
    return tallies, len(unknown_groups), verdict_counts


def _tally_batch(batch: pa.RecordBatch, where: np.ndarray, tallies: dict[tuple[str, str], _Tally],
                 counts: dict[tuple[str, str, str], np.ndarray], keep: set[str] | None,
                 unknown_groups: set[tuple[str, str, str, str]], n: int) -> None:
    """One batch of verdicts into the tallies; ``where``: the position in points.parquet of each
    entry of the batch's point-id dictionary (-1: unknown)."""
    ids = batch.column(0)
    idx = where[ids.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    flagged = batch.column(4)
    decided = pc.is_valid(flagged).to_numpy(zero_copy_only=False)
    yes = pc.fill_null(flagged, False).to_numpy(zero_copy_only=False)
    clean = pc.is_null(batch.column(5)).to_numpy(zero_copy_only=False) & decided if batch.num_columns > 5 else None
    # one integer per (behaviour, grader, deployment): grouping by integer compares, not strings
    codes, names = [], []
    for column in (batch.column(2), batch.column(3), batch.column(1)):
        codes.append(column.indices.to_numpy(zero_copy_only=False).astype(np.int64))
        names.append(column.dictionary.to_pylist())
    key = (codes[0] * len(names[1]) + codes[1]) * len(names[2]) + codes[2]
    for k in np.unique(key).tolist():
        b, rest = divmod(k, len(names[1]) * len(names[2]))
        g, d = divmod(rest, len(names[2]))
        if keep is not None and names[1][g] not in keep:
            continue
        mask = key == k
        tally = tallies.setdefault((names[0][b], names[1][g]), _Tally(n))
        total = int(mask.sum())
        tally.verdicts += total  # unknown points count here, as they always did for the choice
        if clean is not None:  # counted over every verdict, unknown points included
            hit = clean[mask]
            flagged_clean = int((hit & yes[mask]).sum())
            counted = counts.setdefault((names[2][d], names[0][b], names[1][g]), np.zeros(3, np.int64))
            counted += (flagged_clean, int(hit.sum()) - flagged_clean, total - int(hit.sum()))
        lost = mask & (idx < 0)
        if lost.any():
            unknown_groups.update((names[0][b], names[1][g], names[2][d], pid)
                                  for pid in ids.take(pa.array(np.flatnonzero(lost))).to_pylist())
        mask &= idx >= 0
        if mask.any():
            tally.add(names[2][d], idx[mask], yes[mask], decided[mask])


def _choose_graders(counts: dict[tuple[str, str], int], preferred: dict[str, str], notes: list[str]) -> dict[str, str]:
    by_behaviour: dict[str, dict[str, int]] = {}
    for (behaviour, grader), count in counts.items():
        by_behaviour.setdefault(behaviour, {})[grader] = count
    chosen: dict[str, str] = {}
    for behaviour, graders in sorted(by_behaviour.items()):
        want = preferred.get(behaviour)
        pick = want if want in graders else sorted(graders, key=lambda g: (-graders[g], g))[0]
        chosen[behaviour] = pick
        others = sorted(set(graders) - {pick})
        if others:
            notes.append(f"{behaviour}: analysed grader {pick!r}; also graded by {', '.join(others)} (not shown)")
    return chosen
