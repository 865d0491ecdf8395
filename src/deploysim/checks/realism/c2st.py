"""Classifier two-sample test: can a text classifier tell real tool outputs from simulated ones?

TF-IDF (word and character n-grams, and output words tied to the call's tool and
arguments: ``conditioned_tokens``) + logistic regression, evaluated out-of-fold
with folds grouped by trajectory (no trajectory is in both train and test), so every
output is predicted once by a model that never saw its trajectory. Accuracy near 50%
means the simulation is indistinguishable.

Outputs of one trajectory are not independent, so the interval is a cluster
bootstrap over trajectories (resample whole trajectories, percentile interval) and the
p-value a cluster-robust z-test against 50%; Wilson's interval, which assumes
independent outputs, is kept for comparison only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import orjson
from scipy.stats import norm
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import FeatureUnion, make_pipeline
from statsmodels.stats.proportion import proportion_confint


@dataclass
class C2STResult:
    n: int
    n_real: int
    n_simulated: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    ci_method: str
    wilson_low: float
    wilson_high: float
    p_value: float
    folds: int
    clusters: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass
class ClusteredAccuracy:
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    clusters: int
    p_value: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def clustered_accuracy(correct: Sequence[bool] | np.ndarray, groups: Sequence[str] | np.ndarray,
                       alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> ClusteredAccuracy:
    """Accuracy of 0/1 outcomes with a trajectory-clustered bootstrap interval and cluster-robust p vs 0.5."""
    hits = np.asarray(correct, dtype=float)
    labels = np.asarray(groups)
    n = len(hits)
    if n == 0:
        return ClusteredAccuracy(0, 0, float("nan"), float("nan"), float("nan"), 0, float("nan"))
    names, index = np.unique(labels, return_inverse=True)
    per_hits = np.bincount(index, weights=hits, minlength=len(names))
    per_n = np.bincount(index, minlength=len(names)).astype(float)
    accuracy = float(hits.mean())
    g = len(names)
    if g < 2:
        return ClusteredAccuracy(n, int(hits.sum()), accuracy, 0.0, 1.0, g, 1.0)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, g, size=(n_boot, g))
    boot = per_hits[draws].sum(axis=1) / per_n[draws].sum(axis=1)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    residual = per_hits - 0.5 * per_n
    se = float(np.sqrt((residual ** 2).sum() * g / (g - 1))) / n
    p_value = 1.0 if se == 0 and accuracy == 0.5 else float(2 * norm.sf(abs(accuracy - 0.5) / se)) if se else 0.0
    return ClusteredAccuracy(n, int(hits.sum()), accuracy, float(low), float(high), g, p_value)


_TOKEN = re.compile(r"[A-Za-z_]+|\d+")


def conditioned_tokens(text: str) -> list[str]:
    """Tokens of the output tied to the call: ``tool|word`` for each output word, and for each argument
    whether its value appears in the output (``tool|key|echo`` or ``tool|key|absent``).

    A bag of words over the whole text cannot see an output that belongs to another tool or
    another call (the positive control shuffles them: every word's frequency stays the same);
    these tokens can. Texts are ``unit_text``: ``tool arguments\noutput``.
    """
    head, newline, output = text.partition("\n")
    tool, _, arguments = head.partition(" ") if newline else ("", "", "")
    output = output if newline else text
    tokens = [f"{tool}|{w.lower()}" for w in _TOKEN.findall(output)[:400]] or [f"{tool}|<empty>"]
    try:
        args = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        args = {}
    if isinstance(args, dict):
        for key, value in args.items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
                tokens.append(f"{tool}|{key}|{'echo' if str(value) in output else 'absent'}")
    return tokens


def _pipeline(seed: int):  # noqa: ANN202
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=50_000, sublinear_tf=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=50_000, sublinear_tf=True)),
        ("call", TfidfVectorizer(analyzer=conditioned_tokens, max_features=50_000, sublinear_tf=True)),
    ])
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=1.0, random_state=seed))


def oof_predictions(texts: Sequence[str], labels: np.ndarray, groups: np.ndarray, folds: int = 5,
                    seed: int = 0) -> tuple[np.ndarray, int]:
    """(out-of-fold predictions, folds used): each text predicted by a model that never saw its group."""
    k = max(2, min(folds, len(set(groups))))
    predictions = np.full(len(texts), -1)
    for train, test in GroupKFold(n_splits=k).split(texts, labels, groups):
        if len(set(labels[train])) < 2:  # a fold with one class only: predict the majority
            predictions[test] = labels[train][0]
            continue
        model = _pipeline(seed).fit([texts[i] for i in train], labels[train])
        predictions[test] = model.predict([texts[i] for i in test])
    return predictions, k


def c2st_predictions(real: Sequence[str], simulated: Sequence[str], real_groups: Sequence[str] | None = None,
                     simulated_groups: Sequence[str] | None = None, folds: int = 5,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(correct per text, group per text, folds): real texts first, then simulated."""
    if len(real) < 2 or len(simulated) < 2:
        raise ValueError("need at least two real and two simulated texts")
    texts = list(real) + list(simulated)
    labels = np.array([0] * len(real) + [1] * len(simulated))
    groups = np.array(list(real_groups or [f"r{i}" for i in range(len(real))])
                      + list(simulated_groups or [f"s{i}" for i in range(len(simulated))]))
    if len(set(groups)) < 2:  # one trajectory only: fall back to per-output folds (outputs are then not independent)
        groups = np.array([f"u{i}" for i in range(len(texts))])
    predictions, k = oof_predictions(texts, labels, groups, folds, seed)
    return predictions == labels, groups, k


def c2st(real: Sequence[str], simulated: Sequence[str], real_groups: Sequence[str] | None = None,
         simulated_groups: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
         alpha: float = 0.05) -> C2STResult:
    correct, groups, k = c2st_predictions(real, simulated, real_groups, simulated_groups, folds, seed)
    clustered = clustered_accuracy(correct, groups, alpha=alpha, seed=seed)
    n = len(correct)
    wl, wh = proportion_confint(clustered.correct, n, alpha=alpha, method="wilson")
    return C2STResult(n=n, n_real=len(real), n_simulated=len(simulated), correct=clustered.correct,
                      accuracy=clustered.accuracy, ci_low=clustered.ci_low, ci_high=clustered.ci_high,
                      ci_method="cluster bootstrap over trajectories", wilson_low=float(wl), wilson_high=float(wh),
                      p_value=clustered.p_value, folds=k, clusters=clustered.clusters)
