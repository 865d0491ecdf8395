"""The run directory: manifest, config, journal, rejects, Parquet outputs and the reconciled summary (layout: README).

Points and rejects are a pure function of the inputs and config, so a resumed run rewrites them; only
generations cost money, so only they are journaled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import yaml

from deploysim.core.schema import Generation, Reject, ReplayPoint, Verdict
from deploysim.core.store.journal import JournalError, JsonlJournal, ensure_space, write_error
from deploysim.core.store.manifest import (
    CONFIG,
    Manifest,
    RunVersionError,
    new_manifest,
    read_manifest,
    write_json_atomic,
)
from deploysim.core.store.tables import (
    GENERATIONS,
    POINTS,
    VERDICTS,
    ColumnBatches,
    ParquetOut,
    RunDirError,
    iter_parquet,
    jsonl_batches,
)


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """OSError while writing under ``path`` -> JournalError naming it (a full or read-only disk)."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from None


def generation_key(point_id: str, deployment: str, sample_index: int) -> str:
    return f"{point_id}|{deployment}|{sample_index}"


class RunStore:
    """The one owner of a run directory's files: every room reads and writes them through it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.journal_path = self.root / "journal" / "generations.jsonl"
        self.rejects_path = self.root / "rejects.jsonl"
        self._points: ColumnBatches | None = None
        self._rejects: IO[bytes] | None = None
        self._journal = JsonlJournal(self.journal_path, key="point_id")
        #: a first attempt writes generations.parquet as it goes; a resumed one rebuilds it
        self._generations: ColumnBatches | None = None
        self._generations_final = False
        #: whether the journal may hold error rows (set by journal() and done_keys())
        self.journal_has_errors = False

    # -- the directory: manifest and config ----------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    def holds_run(self) -> bool:
        """Whether a run was started here (any schema)."""
        try:
            read_manifest(self.root)
        except RunVersionError:
            return True
        except RunDirError:
            return False
        return True

    def create(self, kind: str, config: dict[str, Any]) -> Manifest:
        """Start a new run (config.yaml, manifest, each renamed into place); a directory holding a run is refused."""
        if self.holds_run():
            raise RunDirError(f"{self.root} already holds a run; resume it, or pick another directory")
        manifest = new_manifest(kind)
        with _writing(self.config_path):
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{CONFIG}.tmp"
            tmp.write_text(f"# deploysim {kind} run config, schema {manifest.schema_version}\n"
                           + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
            os.replace(tmp, self.config_path)
        self.write_json("manifest.json", manifest.model_dump(exclude_none=True))
        return manifest

    def open(self, kind: str | None = None) -> Manifest:
        """An existing run, migrated to this schema (written back); a newer one or another kind is refused."""
        manifest = read_manifest(self.root, migrate=True)
        if kind is not None and manifest.kind != kind:
            raise RunDirError(f"{self.root} holds a {manifest.kind} run, not a {kind} run")
        return manifest

    def journal_file(self, name: str, key: str) -> JsonlJournal:
        """The resume journal ``journal/<name>.jsonl`` keyed by ``key``."""
        return JsonlJournal(self.root / "journal" / f"{name}.jsonl", key=key)

    def write_rejects(self, rejects: Iterable[Reject]) -> int:
        count = 0
        with _writing(self.rejects_path), open(self.rejects_path, "wb") as handle:
            for reject in rejects:
                handle.write(reject.model_dump_json().encode() + b"\n")
                count += 1
        return count

    # -- a chat run's attempt ----------------------------------------------------------------

    def open_attempt(self) -> None:
        """Start (or restart) writing: derived files anew, the journal appended to."""
        with _writing(self.root):
            (self.root / "journal").mkdir(parents=True, exist_ok=True)
            self._points = ColumnBatches(ParquetOut(POINTS.path(self.root), POINTS.schema))
            fresh = not self.journal_path.exists() or self.journal_path.stat().st_size == 0
            if fresh:  # each call is answered once per attempt: the journal's rows are final as written
                self._generations = ColumnBatches(ParquetOut(GENERATIONS.path(self.root), GENERATIONS.schema))
            self._generations_final = False
            self._rejects = open(self.rejects_path, "wb")
        self._journal.open()  # drops a final line cut short by a kill

    def close_attempt(self) -> int:
        """Close every file of the attempt (the first failure is raised after); returns the points written."""
        points = 0
        failure: JournalError | None = None
        closers = [("points", self._points), ("generations", self._generations),
                   ("journal", self._journal), ("rejects", self._rejects)]
        self._points = self._generations = None
        self._rejects = None
        for name, part in closers:
            if part is None:
                continue
            try:
                with _writing(self.root):
                    closed = part.close()
                if name == "points":
                    points = closed or 0
                elif name == "generations":
                    self._generations_final = True
            except JournalError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return points

    def ensure_space(self) -> None:
        """JournalError (ENOSPC) when the run directory's disk has too little room to journal a call."""
        ensure_space(self.root)

    def write_point(self, point: ReplayPoint) -> None:
        assert self._points is not None
        with _writing(POINTS.path(self.root)):
            self._points.add(POINTS.row(point))

    def write_reject(self, reject: Reject) -> None:
        assert self._rejects is not None
        with _writing(self.rejects_path):
            self._rejects.write(reject.model_dump_json().encode() + b"\n")
            self._rejects.flush()

    def journal(self, generation: Generation, flush: bool = True) -> None:
        """Append one finished call, flushed (``flush=False``: coalesced by ``flush_journal``)."""
        self.journal_row(GENERATIONS.row(generation), flush)

    def journal_row(self, row: dict[str, Any], flush: bool = True) -> None:
        """``journal`` for a row already in the generations table's shape."""
        if row["error"] is not None:
            self.journal_has_errors = True
        self._journal.append(row, flush=flush)
        if self._generations is not None:
            with _writing(GENERATIONS.path(self.root)):
                self._generations.add(row)

    def flush_journal(self) -> None:
        self._journal.flush()

    def iter_journal(self) -> Iterator[dict[str, Any]]:
        return self._journal.rows()

    def done_keys(self) -> set[str]:
        """Calls that finished well in an earlier attempt; errors are tried again on resume."""
        done: set[str] = set()
        for row in self.iter_journal():
            key = generation_key(row["point_id"], row["deployment"], row.get("sample_index", 0))
            if row.get("error") is None:
                done.add(key)
            else:
                self.journal_has_errors = True
                done.discard(key)
        return done

    def write_parquet(self) -> None:
        """generations.parquet as a first attempt wrote it, else rebuilt from the journal (last line per call wins)."""
        if self._generations_final:
            return
        with _writing(GENERATIONS.path(self.root)):
            self._rebuild_generations()

    def _rebuild_generations(self) -> None:
        # Only calls that errored can appear twice (retried on resume): set just those aside.
        errored = {
            generation_key(row["point_id"], row["deployment"], row.get("sample_index", 0))
            for row in self.iter_journal()
            if row.get("error") is not None
        } if self.journal_has_errors else set()
        schema = GENERATIONS.schema
        generations = ParquetOut(GENERATIONS.path(self.root), schema)
        last: dict[str, dict[str, Any]] = {}
        for batch in jsonl_batches(self.journal_path, schema):
            if not errored:
                generations.write(batch)
                continue
            keep = []
            for row in batch.to_pylist():
                key = generation_key(row["point_id"], row["deployment"], row["sample_index"])
                if key in errored:
                    last[key] = row
                else:
                    keep.append(row)
            generations.write(pa.Table.from_pylist(keep, schema=schema))
        generations.write(pa.Table.from_pylist(list(last.values()), schema=schema))
        generations.close()

    def write_json(self, name: str, data: Any) -> None:
        with _writing(self.root / name):
            write_json_atomic(self.root / name, data)


def _checked(run_dir: Path) -> Path:
    """``run_dir`` once its manifest allows reading it (a newer schema is refused, never misread)."""
    run_dir = Path(run_dir)
    if (run_dir / "manifest.json").is_file():
        read_manifest(run_dir)
    return run_dir


def read_points(run_dir: Path) -> Iterator[ReplayPoint]:
    """Replay points of a finished run, streamed from points.parquet."""
    return POINTS.read(_checked(run_dir))


def read_generations(run_dir: Path) -> Iterator[Generation]:
    return GENERATIONS.read(_checked(run_dir))


def write_verdicts(run_dir: Path, verdicts: Iterable[Verdict], name: str = "verdicts.parquet") -> int:
    return VERDICTS.write(run_dir, verdicts, name)


def read_verdicts(run_dir: Path, name: str = "verdicts.parquet") -> Iterator[Verdict]:
    return map(VERDICTS.parse, iter_parquet(_checked(run_dir) / name))
