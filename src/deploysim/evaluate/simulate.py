"""``run_simulation``: the replay workload through the run lifecycle, graded with the run's graders.

It lives here, not in ``pipeline``, because grading is this layer's: the lifecycle
(``core``) takes the grading step as a parameter, the replay workload (``pipeline``)
knows nothing of graders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploysim.core.lifecycle import Run, run_workload
from deploysim.evaluate.graders.run import grade_run_async
from deploysim.pipeline.config import SimConfig
from deploysim.pipeline.engine import ReplayWorkload


def run_simulation(config: SimConfig, out: Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a simulation into ``out``; returns the summary that was written."""

    async def grade(run: Run) -> dict[str, Any] | None:
        if not config.graders:
            return None
        return await grade_run_async(run.root, config.graders, config.judge, run.models, show_progress)

    return run_workload(ReplayWorkload(config), Path(out), resume=resume, grade=grade, show_progress=show_progress)
