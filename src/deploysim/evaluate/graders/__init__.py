"""Graders: the behaviour catalog, the Grader protocol and registry, offline graders, the LLM judge.

``grade_run(run_dir, names)`` grades every deployment's replies in a run directory
(``logged`` included) into ``verdicts.parquet``; ``DEFAULT_GRADERS`` is the offline set
the demo uses. Plugins register through the ``deploysim.graders`` entry-point group.
"""

from deploysim.evaluate.graders.base import (
    ENTRY_POINT_GROUP,
    BaseGrader,
    Decision,
    GradeItem,
    Grader,
    GraderConfig,
    GraderError,
    GraderSpec,
    build_graders,
    create_grader,
    grader,
    load_grader_yaml,
    registry,
)
from deploysim.evaluate.graders.catalog import BEHAVIOURS, CATALOG, Behaviour
from deploysim.evaluate.graders.run import DEFAULT_GRADERS, GradeLockedError, grade_run, iter_grade_items

__all__ = [
    "BEHAVIOURS",
    "CATALOG",
    "DEFAULT_GRADERS",
    "ENTRY_POINT_GROUP",
    "BaseGrader",
    "Behaviour",
    "Decision",
    "GradeItem",
    "GradeLockedError",
    "Grader",
    "GraderConfig",
    "GraderError",
    "GraderSpec",
    "build_graders",
    "create_grader",
    "grade_run",
    "grader",
    "iter_grade_items",
    "load_grader_yaml",
    "registry",
]
