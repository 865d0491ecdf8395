"""Statistics: weighted, clustered rates; paired comparisons; multiple testing; grader-error correction."""

from deploysim.stats.analysis import BehaviourStats, RunStats, SegmentRow, analyse_run
from deploysim.stats.correction import CorrectedRate, GraderValidation, corrected_rate, load_validation, rogan_gladen
from deploysim.stats.multiple import adjust_pvalues
from deploysim.stats.paired import DOWN, NO_CHANGE, UP, PairedComparison, compare_paired
from deploysim.stats.rates import RateEstimate, cluster_rate_interval, weighted_rate, wilson

__all__ = [
    "DOWN", "NO_CHANGE", "UP", "BehaviourStats", "CorrectedRate", "GraderValidation", "PairedComparison",
    "RateEstimate", "RunStats", "SegmentRow", "adjust_pvalues", "analyse_run", "cluster_rate_interval",
    "compare_paired", "corrected_rate", "load_validation", "rogan_gladen", "weighted_rate", "wilson",
]
