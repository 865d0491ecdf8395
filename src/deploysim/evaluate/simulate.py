"""``run_simulation``: the replay workload through the run lifecycle, graded with the run's graders.

It lives here, not in ``pipeline``, because grading is this layer's: the lifecycle
(``core``) takes the grading step as a parameter, the replay workload (``pipeline``)
knows nothing of graders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploysim.core.lifecycle import Executor, Run, run_workload
from deploysim.evaluate.graders.run import grade_run_async
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine import ReplayWorkload


def run_simulation(config: SimConfig, out: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a simulation into ``out``; returns the summary that was written."""

    async def grade(run: Run) -> dict[str, Any] | None:
        if not config.graders:
            return None
        return await grade_run_async(run.root, config.graders, config.judge, run.models, show_progress)

    executor = _ray_executor(config) if config.engine == "ray" else None
    return run_workload(ReplayWorkload(config), Path(out), resume=resume, grade=grade, show_progress=show_progress,
                        executor=executor)


def _ray_executor(config: SimConfig) -> Executor:
    """``--engine ray``: the install hint (exit 2) and an address that does not answer are raised here, before
    the run directory exists; replies are graded in the stream by the graders handed in."""
    from deploysim.core.models import default_cache_path
    from deploysim.evaluate.graders import GradeItem, build_graders
    from deploysim.evaluate.graders.run import done_verdicts, verdicts_for
    from deploysim.pipeline.engine.ray import Grading, RayExecutor, check_address, require_ray

    from deploysim.pipeline.config import ConfigError

    batched = [d.name for d in config.deployments if getattr(d, "batch", False)]
    if batched:
        raise ConfigError(f"deployment(s) {batched} use the provider's batch API (batch: true), which runs on the "
                          "local engine: drop --engine ray, or drop --batch")
    require_ray()
    check_address(config.ray_address)
    grading = None
    if config.graders:
        cache_path = str(config.cache_path or default_cache_path()) if config.cache else None
        grading = Grading(build=build_graders, grade=verdicts_for, item=GradeItem, done_in=done_verdicts,
                          cache_path=cache_path)
    return RayExecutor(config.ray_address, grading)
