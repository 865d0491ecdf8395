"""Stratified sampling, caps and near-duplicate removal: sizes, weights, unbiasedness, reproducibility."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from deploysim.core.schema import Message, Record, Reject
from deploysim.pipeline.sampling import SamplingPlan, StreamSampler, UniformSample, allocate

SIZES = {"free": 600, "plus": 300, "enterprise": 100}
RATES = {"free": 0.05, "plus": 0.2, "enterprise": 0.6}


def population(seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for tier, size in SIZES.items():
        for i in range(size):
            out.append(Record(id=f"{tier}-{i}", source_file="pop.jsonl", source_line=len(out),
                              messages=[Message(role="user", content=f"question {tier} {i} " + " ".join(
                                  rng.choice("abcdefghij") * 3 for _ in range(12))),
                                        Message(role="assistant", content="answer")],
                              metadata={"tier": tier, "user": f"u{i % 50}", "y": rng.random() < RATES[tier]}))
    rng.shuffle(out)
    return out


def run(records: list, plan: SamplingPlan) -> tuple[list[Record], StreamSampler]:
    sampler = StreamSampler(lambda: iter(records), plan)
    return [r for r in sampler if isinstance(r, Record)], sampler


def test_allocation() -> None:
    assert allocate(SIZES, 100) == {"free": 60, "plus": 30, "enterprise": 10}
    assert allocate(SIZES, 90, "equal") == {"free": 30, "plus": 30, "enterprise": 30}
    assert allocate({"a": 5, "b": 1000}, 300, "equal") == {"a": 5, "b": 295}
    assert allocate({"a": 1, "b": 999}, 10) == {"a": 1, "b": 9}
    assert allocate(SIZES, 5000) == SIZES


def test_stratum_sizes_and_weights() -> None:
    kept, sampler = run(population(), SamplingPlan(n=100, strata=["tier"], seed=3))
    per = Counter(r.metadata["tier"] for r in kept)
    assert per == {"free": 60, "plus": 30, "enterprise": 10}
    for r in kept:
        tier = r.metadata["tier"]
        assert r.weight == pytest.approx(SIZES[tier] / per[tier])
    assert sum(r.weight for r in kept) == pytest.approx(1000)
    assert sampler.counts.strata["enterprise"] == {"population": 100, "sampled": 10, "weight": 10.0}
    assert sampler.counts.accepted == 1000 and sampler.counts.sampled_out == 900


def test_weighted_estimates_are_unbiased() -> None:
    """Equal allocation over-samples the rare tier; the weights must undo it (the unweighted mean is biased)."""
    records = population(1)
    truth = sum(r.metadata["y"] for r in records) / len(records)
    weighted, unweighted = [], []
    for seed in range(150):
        kept, _ = run(records, SamplingPlan(n=60, strata=["tier"], allocation="equal", seed=seed))
        w = [r.weight for r in kept]
        y = [r.metadata["y"] for r in kept]
        weighted.append(sum(a * b for a, b in zip(w, y, strict=True)) / sum(w))
        unweighted.append(sum(y) / len(y))
    mean_w = sum(weighted) / len(weighted)
    sd = (sum((x - mean_w) ** 2 for x in weighted) / (len(weighted) - 1)) ** 0.5
    assert abs(mean_w - truth) < 3 * sd / len(weighted) ** 0.5 + 1e-9
    assert abs(sum(unweighted) / len(unweighted) - truth) > 0.1  # the design really is unequal-probability


def test_reproducible_and_order_independent() -> None:
    records = population()
    plan = SamplingPlan(n=50, strata=["tier"], caps={"user": 5}, seed=7)
    a = sorted(r.id for r in run(records, plan)[0])
    b = sorted(r.id for r in run(list(reversed(records)), plan)[0])
    c = sorted(r.id for r in run(records, SamplingPlan(n=50, strata=["tier"], caps={"user": 5}, seed=8))[0])
    assert a == b and a != c


def test_caps_per_user_with_weights() -> None:
    kept, sampler = run(population(), SamplingPlan(caps={"user": 3}, seed=1))
    per_user = Counter(r.metadata["user"] for r in kept)
    assert set(per_user.values()) == {3} and len(per_user) == 50
    assert sampler.counts.capped_removed == 1000 - 150
    assert all(r.weight == pytest.approx(20 / 3) for r in kept)  # 20 records per user, 3 kept


def test_near_duplicates_removed_and_counted() -> None:
    base = population()[:200]
    text = "how do I reset my router password when the admin page does not load at all after the update"
    dups = [Record(id=f"d{i}", source_file="dup.jsonl", source_line=i, metadata={"tier": "free"},
                   messages=[Message(role="user", content=text + (" please" if i % 2 else "")),
                             Message(role="assistant", content="x")]) for i in range(30)]
    kept, sampler = run([*base, *dups], SamplingPlan(dedupe=True))
    assert sampler.counts.duplicates_removed == 29
    assert sum(r.id.startswith("d") for r in kept) == 1 and len(kept) == 201
    kept2, sampler2 = run([*base, *dups], SamplingPlan(dedupe=True, n=50, strata=["tier"]))
    assert sampler2.counts.duplicates_removed == 29 and len(kept2) == 50


def test_rejects_pass_through_once() -> None:
    records: list = [*population()[:20], Reject(source_file="x.jsonl", line=3, reason="bad")]
    items = list(StreamSampler(lambda: iter(records), SamplingPlan(n=5, caps={"user": 1}, dedupe=True)))
    assert sum(isinstance(i, Reject) for i in items) == 1


def test_bad_plans_are_clear() -> None:
    with pytest.raises(ValueError, match="needs a sample size"):
        SamplingPlan(strata=["tier"])
    with pytest.raises(ValueError, match="cap for 'user'"):
        SamplingPlan(caps={"user": 0})


def test_uniform_sample_unchanged() -> None:
    records = population()
    kept = [r for r in UniformSample(lambda: iter([r.model_copy(deep=True) for r in records]), 10, 0)
            if isinstance(r, Record)]
    assert len(kept) == 10 and all(r.weight == 100 for r in kept)
