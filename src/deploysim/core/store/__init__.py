"""Store: the run directory, its resume journal and Parquet outputs."""

from deploysim.core.store.journal import JournalError
from deploysim.core.store.run_dir import (
    GENERATION_SCHEMA,
    POINT_SCHEMA,
    VERDICT_SCHEMA,
    RunDirError,
    RunStore,
    generation_key,
    read_generations,
    read_points,
    read_verdicts,
    write_verdicts,
)

__all__ = [
    "GENERATION_SCHEMA",
    "JournalError",
    "POINT_SCHEMA",
    "VERDICT_SCHEMA",
    "RunDirError",
    "RunStore",
    "generation_key",
    "read_generations",
    "read_points",
    "read_verdicts",
    "write_verdicts",
]
