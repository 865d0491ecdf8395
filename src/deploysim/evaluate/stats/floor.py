"""Detection floor and study planning: what a sample of this size can see, and what a study needs.

* **Smallest detectable rate**: the rate at which ``n_eff`` points show at least one event
  with probability ``power``: ``1 - (1 - power)^(1/n)``. A rate below it is usually invisible
  (a zero count is then no evidence of absence).
* **Smallest detectable ratio**: for an observed rate ``p`` (Jeffreys-smoothed when zero),
  the smallest upward ratio ``r`` such that two samples of ``n_eff`` points tell ``r*p`` from
  ``p`` at the two-sided ``confidence`` with ``power``: statsmodels' ``NormalIndPower`` on
  Cohen's ``h`` (``proportion_effectsize``), inverted. This is the unpaired bound: a paired
  design does at least as well when the two deployments' verdicts are positively correlated.
* **plan**: points needed to detect ``rate -> rate*ratio`` unpaired (``NormalIndPower``, per
  arm), paired (McNemar, Connor 1987: ``n = (z_a sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2``
  with ``psi`` the discordant share, by default from independent verdicts, an upper bound),
  and to see one event at all (exact binomial).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import norm

DEFAULT_POWER = 0.8


def min_detectable_rate(n_eff: float, power: float = DEFAULT_POWER) -> float | None:
    """Smallest true rate that shows at least one event in ``n_eff`` points with probability ``power``."""
    if n_eff <= 0:
        return None
    return 1.0 - (1.0 - power) ** (1.0 / n_eff)


def _alpha(confidence: float) -> float:
    return 1.0 - confidence


def min_detectable_ratio(rate: float, n_eff: float, confidence: float = 0.95,
                         power: float = DEFAULT_POWER) -> float | None:
    """Smallest ratio r > 1 such that ``r*rate`` vs ``rate`` is detected with ``n_eff`` points per arm.

    ``inf`` when even a rate of 1 would not be detected.
    """
    from statsmodels.stats.power import NormalIndPower

    if n_eff <= 1 or not 0 < rate < 1:
        return None
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n_eff, alpha=_alpha(confidence), power=power,
                                     ratio=1.0, alternative="two-sided")
    angle = math.asin(math.sqrt(rate)) + float(h) / 2
    if angle >= math.pi / 2:
        return math.inf
    return math.sin(angle) ** 2 / rate


def points_to_see_one(rate: float, power: float = DEFAULT_POWER) -> int:
    """Points needed for at least one event with probability ``power`` (exact binomial)."""
    if not 0 < rate < 1:
        raise ValueError("rate must be in (0, 1)")
    return math.ceil(math.log(1 - power) / math.log1p(-rate))


def unpaired_points(rate: float, ratio: float, confidence: float = 0.95, power: float = DEFAULT_POWER) -> int:
    """Points per deployment to detect ``rate -> rate*ratio`` with two independent samples."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    other = _check(rate, ratio)
    h = abs(proportion_effectsize(other, rate))
    n = NormalIndPower().solve_power(effect_size=h, nobs1=None, alpha=_alpha(confidence), power=power, ratio=1.0,
                                     alternative="two-sided")
    return math.ceil(float(n))


def paired_points(rate: float, ratio: float, confidence: float = 0.95, power: float = DEFAULT_POWER,
                  discordance: float | None = None) -> int:
    """Replay points (each answered by both deployments) for McNemar's test to detect the change.

    ``discordance`` is the share of points where exactly one deployment is flagged; by default
    the value for verdicts independent given the point (an upper bound: real verdicts on the
    same prompt agree more, which lowers it and the points needed).
    """
    other = _check(rate, ratio)
    delta = other - rate
    psi = discordance if discordance is not None else rate * (1 - other) + other * (1 - rate)
    if not abs(delta) <= psi <= 1:
        raise ValueError(f"discordance must be between |difference| = {abs(delta):.3g} and 1")
    z_a, z_b = norm.ppf(1 - _alpha(confidence) / 2), norm.ppf(power)
    n = (z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta**2, 0.0))) ** 2 / delta**2
    return math.ceil(n)


def _check(rate: float, ratio: float) -> float:
    if not 0 < rate < 1:
        raise ValueError("rate must be in (0, 1)")
    if ratio <= 0 or ratio == 1:
        raise ValueError("ratio must be positive and not 1")
    other = rate * ratio
    if not 0 < other < 1:
        raise ValueError(f"rate x ratio = {other:g} is not a rate in (0, 1)")
    return other


@dataclass
class Plan:
    rate: float
    ratio: float
    confidence: float
    power: float
    unpaired_per_deployment: int
    paired_points: int
    discordance: float | None
    points_to_see_one_event: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_study(rate: float, ratio: float, confidence: float = 0.95, power: float = DEFAULT_POWER,
               discordance: float | None = None) -> Plan:
    return Plan(rate, ratio, confidence, power, unpaired_points(rate, ratio, confidence, power),
                paired_points(rate, ratio, confidence, power, discordance), discordance,
                points_to_see_one(rate, power))


def detection_floor(flagged: float, n_eff: float, confidence: float = 0.95,
                    power: float = DEFAULT_POWER) -> dict[str, float | None]:
    """The floor of one deployment's rate estimate: smallest detectable rate and ratio."""
    rate = flagged / n_eff if n_eff > 0 else 0.0
    if n_eff > 0 and not 0 < rate < 1:
        rate = (min(max(flagged, 0.0), n_eff) + 0.5) / (n_eff + 1)  # Jeffreys, for zero (or all) counts
    ratio = min_detectable_ratio(rate, n_eff, confidence, power) if n_eff > 0 else None
    return {"min_rate": min_detectable_rate(n_eff, power), "min_ratio": ratio, "power": power}
