"""The replay workload and its local asyncio executor (a Ray or batch executor plugs in the same way).

``deploysim.run_simulation`` (in ``deploysim.evaluate.simulate``) runs it through the run
lifecycle with grading.
"""

from deploysim.core.lifecycle import RunLockedError
from deploysim.pipeline.engine.local import ReplayWorkload

__all__ = ["ReplayWorkload", "RunLockedError"]
