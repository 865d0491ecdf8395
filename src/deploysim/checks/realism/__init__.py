"""Realism checks of the simulation itself: a classifier two-sample test on real vs simulated tool outputs."""

from deploysim.checks.realism.c2st import C2STResult, c2st

__all__ = ["C2STResult", "c2st"]
