"""Engines that run a simulation: the local asyncio pipeline (a Ray one comes later)."""

from deploysim.pipeline.engine.local import LocalEngine, RunLockedError, run_simulation

__all__ = ["LocalEngine", "RunLockedError", "run_simulation"]
