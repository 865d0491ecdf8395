"""Classifier two-sample test: can a text classifier tell real tool outputs from simulated ones?

TF-IDF (word and character n-grams) + logistic regression, evaluated out-of-fold
with folds grouped by trajectory (no trajectory is in both train and test), so every
output is predicted once by a model that never saw its trajectory. Accuracy near 50%
means the simulation is indistinguishable; an exact binomial test against 50% gives
the p-value, Clopper-Pearson and Wilson the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest
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

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _pipeline(seed: int):  # noqa: ANN202
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=50_000, sublinear_tf=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), max_features=50_000, sublinear_tf=True)),
    ])
    return make_pipeline(features, LogisticRegression(max_iter=2000, C=1.0, random_state=seed))


def c2st(real: Sequence[str], simulated: Sequence[str], real_groups: Sequence[str] | None = None,
         simulated_groups: Sequence[str] | None = None, folds: int = 5, seed: int = 0,
         alpha: float = 0.05) -> C2STResult:
    if len(real) < 2 or len(simulated) < 2:
        raise ValueError("need at least two real and two simulated texts")
    texts = list(real) + list(simulated)
    labels = np.array([0] * len(real) + [1] * len(simulated))
    groups = np.array(list(real_groups or [f"r{i}" for i in range(len(real))])
                      + list(simulated_groups or [f"s{i}" for i in range(len(simulated))]))
    if len(set(groups)) < 2:  # one trajectory only: fall back to per-output folds (outputs are then not independent)
        groups = np.array([f"u{i}" for i in range(len(texts))])
    k = max(2, min(folds, len(set(groups))))
    predictions = np.full(len(texts), -1)
    for train, test in GroupKFold(n_splits=k).split(texts, labels, groups):
        if len(set(labels[train])) < 2:  # a fold with one class only: predict the majority
            predictions[test] = labels[train][0]
            continue
        model = _pipeline(seed).fit([texts[i] for i in train], labels[train])
        predictions[test] = model.predict([texts[i] for i in test])
    correct = int((predictions == labels).sum())
    n = len(texts)
    test = binomtest(correct, n, 0.5, alternative="two-sided")
    ci = test.proportion_ci(confidence_level=1 - alpha, method="exact")
    wl, wh = proportion_confint(correct, n, alpha=alpha, method="wilson")
    return C2STResult(n=n, n_real=len(real), n_simulated=len(simulated), correct=correct,
                      accuracy=correct / n, ci_low=float(ci.low), ci_high=float(ci.high),
                      ci_method="clopper-pearson", wilson_low=float(wl), wilson_high=float(wh),
                      p_value=float(test.pvalue), folds=k)
