"""Store: the run directory, its resume journal and Parquet outputs."""

from deploysim.store.run_dir import RunDirError, RunStore, generation_key, read_generations, read_points

__all__ = ["RunDirError", "RunStore", "generation_key", "read_generations", "read_points"]
