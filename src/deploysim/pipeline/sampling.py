"""Sampling records from a stream: a seeded uniform sample of N without holding the records (docs/privacy.md).

Bottom-k by seeded hash: the choice depends only on the seed and each record's identity; each sampled
record carries its inclusion weight (total / N). ``StreamSampler`` adds strata, caps and near-duplicates.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from deploysim.core.schema import Record, Reject

InputStream = Callable[[], Iterator[Record | Reject]]


def seeded_hash(*parts: object) -> int:
    """64 bits of blake2b over the parts joined by NUL: the one hash every seeded choice ranks by."""
    return int.from_bytes(hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


def _rank(seed: int, record: Record) -> int:
    return seeded_hash(seed, record.key())


class UniformSample:
    """Two passes over ``open_inputs()``; rejects come out of the first pass only."""

    def __init__(self, open_inputs: InputStream, n: int, seed: int) -> None:
        self.open_inputs = open_inputs
        self.n = n
        self.seed = seed
        self.total_accepted = 0

    def __iter__(self) -> Iterator[Record | Reject]:
        heap: list[tuple[int, str]] = []  # max-heap of the n smallest ranks
        for item in self.open_inputs():
            if isinstance(item, Reject):
                yield item
                continue
            self.total_accepted += 1
            entry = (-_rank(self.seed, item), item.key())
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
        chosen = {key for _, key in heap}
        weight = self.total_accepted / max(len(chosen), 1)
        for item in self.open_inputs():
            if isinstance(item, Record) and item.key() in chosen:
                item.weight *= weight
                yield item


# --- stratified sampling, caps and near-duplicate removal: passes that keep small per-group state; only the
# MinHash LSH index grows with the input (measured in benchmarks/ingest.py) ---------------------------------

MISSING = "<missing>"


@dataclass
class SamplingPlan:
    n: int | None = None
    strata: list[str] = field(default_factory=list)
    allocation: Literal["proportional", "equal"] = "proportional"
    caps: dict[str, int] = field(default_factory=dict)
    dedupe: bool = False
    dedupe_threshold: float = 0.8
    num_perm: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strata and self.n is None:
            raise ValueError("stratified sampling needs a sample size (--sample N)")
        if self.n is not None and self.n < 1:
            raise ValueError(f"sample size must be at least 1, got {self.n}")
        for name, cap in self.caps.items():
            if cap < 1:
                raise ValueError(f"cap for {name!r} must be at least 1, got {cap}")
        if not 0 < self.dedupe_threshold <= 1:
            raise ValueError(f"dedupe threshold must be in (0, 1], got {self.dedupe_threshold}")


@dataclass
class SamplingCounts:
    accepted: int = 0
    duplicates_removed: int = 0
    capped_removed: int = 0
    sampled_out: int = 0
    emitted: int = 0
    strata: dict[str, dict[str, float]] = field(default_factory=dict)


def stratum_of(record: Record, fields: list[str]) -> str:
    return "|".join(str(record.metadata.get(f, MISSING)) for f in fields)


def allocate(sizes: dict[str, int], n: int, how: str = "proportional") -> dict[str, int]:
    """Sample size per stratum: proportional (largest remainder, at least 1 each) or equal; never above N_h."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    if how == "equal":
        alloc = {h: 0 for h in sizes}
        left, open_strata = n, sorted(sizes, key=lambda h: sizes[h])
        while open_strata and left > 0:
            share = max(1, left // len(open_strata))
            for h in list(open_strata):
                take = min(share, sizes[h] - alloc[h], left)
                alloc[h] += take
                left -= take
                if alloc[h] >= sizes[h]:
                    open_strata.remove(h)
                if left == 0:
                    break
        return alloc
    if how != "proportional":
        raise ValueError(f"unknown allocation {how!r}; expected proportional or equal")
    exact = {h: n * size / total for h, size in sizes.items()}
    alloc = {h: min(sizes[h], max(1, int(q))) for h, q in exact.items()}
    by_remainder = sorted(sizes, key=lambda h: (exact[h] - int(exact[h]), h), reverse=True)
    while sum(alloc.values()) < n:
        grew = False
        for h in by_remainder:
            if sum(alloc.values()) >= n:
                break
            if alloc[h] < sizes[h]:
                alloc[h] += 1
                grew = True
        if not grew:
            break
    while sum(alloc.values()) > n:  # the "at least 1" floor overshot: take back from the largest
        h = max(alloc, key=lambda k: (alloc[k], k))
        alloc[h] -= 1
    return alloc


def shingles(record: Record, max_chars: int = 4000) -> set[bytes]:
    """Word 3-grams of what the users (and system prompt) wrote: two logs of one prompt share most of them."""
    text = " ".join(m.text() for m in record.messages if m.role in ("user", "system"))[:max_chars].lower()
    words = text.split()
    if len(words) < 3:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + 3]).encode() for i in range(len(words) - 2)}


class NearDuplicates:
    """MinHash + LSH (datasketch): is this record a near-duplicate of one already seen?"""

    def __init__(self, threshold: float, num_perm: int, seed: int) -> None:
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        self.num_perm = num_perm
        self.seed = seed
        self.index = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def seen_before(self, record: Record, key: int) -> bool:
        grams = shingles(record)
        if not grams:
            return False
        signature = self._minhash(num_perm=self.num_perm, seed=self.seed)
        signature.update_batch(list(grams))
        if self.index.query(signature):
            return True
        self.index.insert(key, signature, check_duplication=False)
        return False


class StreamSampler:
    """Dedupe, cap per group, then stratified bottom-k; each kept record's weight is multiplied accordingly.

    A cap keeping ``c`` of ``N_g`` multiplies by ``N_g / c``, a stratum keeping ``n_h`` of ``N_h`` by ``N_h / n_h``;
    near-duplicates are dropped without reweighting. Rejects come out of the first pass only.
    """

    def __init__(self, open_inputs: InputStream, plan: SamplingPlan) -> None:
        self.open_inputs = open_inputs
        self.plan = plan
        self.counts = SamplingCounts()
        self._duplicates: set[int] = set()
        self._cap_rule: dict[str, dict[str, tuple[int, float]]] = {}
        self._strata_rule: dict[str, tuple[int, float]] = {}

    def __iter__(self) -> Iterator[Record | Reject]:
        plan = self.plan
        first = True
        if plan.dedupe and not plan.caps and plan.n is None:
            yield from self._dedupe_only()
            return
        if plan.dedupe or plan.caps:
            yield from self._fit_dedupe_and_caps()
            first = False
        if plan.n is not None:
            yield from self._fit_strata(first)
            first = False
        if first:  # nothing to fit: pass through
            for item in self.open_inputs():
                if isinstance(item, Record):
                    self.counts.accepted += 1
                    self.counts.emitted += 1
                yield item
            return
        yield from self._emit()

    def _dedupe_only(self) -> Iterator[Record | Reject]:
        index = NearDuplicates(self.plan.dedupe_threshold, self.plan.num_perm, self.plan.seed)
        for item in self.open_inputs():
            if isinstance(item, Record):
                self.counts.accepted += 1
                if index.seen_before(item, seeded_hash(item.key())):
                    self.counts.duplicates_removed += 1
                    continue
                self.counts.emitted += 1
            yield item

    def _fit_dedupe_and_caps(self) -> Iterator[Reject]:
        plan = self.plan
        index = NearDuplicates(plan.dedupe_threshold, plan.num_perm, plan.seed) if plan.dedupe else None
        heaps: dict[str, dict[str, list[int]]] = {f: {} for f in plan.caps}
        sizes: dict[str, dict[str, int]] = {f: {} for f in plan.caps}
        for item in self.open_inputs():
            if isinstance(item, Reject):
                yield item
                continue
            self.counts.accepted += 1
            key = item.key()
            if index is not None and index.seen_before(item, seeded_hash(key)):
                self._duplicates.add(seeded_hash(key))
                self.counts.duplicates_removed += 1
                continue
            for name, cap in plan.caps.items():
                if name not in item.metadata:
                    continue
                group = str(item.metadata[name])
                sizes[name][group] = sizes[name].get(group, 0) + 1
                heap = heaps[name].setdefault(group, [])
                rank = -seeded_hash(plan.seed, f"cap:{name}", key)
                if len(heap) < cap:
                    heapq.heappush(heap, rank)
                elif rank > heap[0]:
                    heapq.heapreplace(heap, rank)
        for name, groups in heaps.items():
            self._cap_rule[name] = {
                g: (-heap[0], sizes[name][g] / len(heap)) for g, heap in groups.items()
            }
        del heaps, sizes

    def _cap_factor(self, record: Record, key: str) -> float | None:
        factor = 1.0
        for name, rules in self._cap_rule.items():
            if name not in record.metadata:
                continue
            threshold, group_factor = rules[str(record.metadata[name])]
            if seeded_hash(self.plan.seed, f"cap:{name}", key) > threshold:
                return None
            factor *= group_factor
        return factor

    def _fit_strata(self, first: bool) -> Iterator[Reject]:
        plan = self.plan
        assert plan.n is not None
        heaps: dict[str, list[int]] = {}
        sizes: dict[str, int] = {}
        for item in self.open_inputs():
            if isinstance(item, Reject):
                if first:
                    yield item
                continue
            if first:
                self.counts.accepted += 1
            key = item.key()
            if seeded_hash(key) in self._duplicates or self._cap_factor(item, key) is None:
                continue
            stratum = stratum_of(item, plan.strata)
            sizes[stratum] = sizes.get(stratum, 0) + 1
            heap = heaps.setdefault(stratum, [])
            rank = -seeded_hash(plan.seed, "strata", key)
            if len(heap) < plan.n:
                heapq.heappush(heap, rank)
            elif rank > heap[0]:
                heapq.heapreplace(heap, rank)
        alloc = allocate(sizes, plan.n, plan.allocation)
        for stratum, heap in heaps.items():
            n_h = alloc[stratum]
            if n_h == 0:
                self._strata_rule[stratum] = (-1, 0.0)
            else:
                threshold = -heapq.nlargest(n_h, heap)[-1]  # the n_h-th smallest rank
                self._strata_rule[stratum] = (threshold, sizes[stratum] / n_h)
            self.counts.strata[stratum] = {"population": sizes[stratum], "sampled": n_h,
                                           "weight": sizes[stratum] / n_h if n_h else 0.0}

    def _emit(self) -> Iterator[Record]:
        for item in self.open_inputs():
            if isinstance(item, Reject):
                continue
            key = item.key()
            if seeded_hash(key) in self._duplicates:
                continue
            factor = self._cap_factor(item, key)
            if factor is None:
                self.counts.capped_removed += 1
                continue
            if self._strata_rule:
                threshold, stratum_factor = self._strata_rule.get(stratum_of(item, self.plan.strata), (-1, 0.0))
                if seeded_hash(self.plan.seed, "strata", key) > threshold:
                    self.counts.sampled_out += 1
                    continue
                factor *= stratum_factor
            self.counts.emitted += 1
            yield item.model_copy(update={"weight": item.weight * factor})
