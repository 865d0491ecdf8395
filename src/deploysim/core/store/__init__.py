"""Store: the one owner of the run directory (manifest, config, journals, Parquet tables, summary)."""

from deploysim.core.store.journal import JournalError, JsonlJournal, exclusive_lock
from deploysim.core.store.manifest import Manifest, RunVersionError, read_config, read_manifest
from deploysim.core.store.run_dir import (
    RunDirError,
    RunStore,
    generation_key,
    read_generations,
    read_points,
    read_verdicts,
    write_verdicts,
)
from deploysim.core.store.tables import GENERATIONS, POINTS, VERDICTS, Table

__all__ = ["GENERATIONS", "JournalError", "JsonlJournal", "Manifest", "POINTS", "RunDirError", "RunStore",
           "RunVersionError", "Table", "VERDICTS", "exclusive_lock", "generation_key", "read_config",
           "read_generations", "read_manifest", "read_points", "read_verdicts", "write_verdicts"]
