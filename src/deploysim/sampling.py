"""Sampling records from a stream: a seeded uniform sample of N without holding the records.

Bottom-k by hash: pass one keeps the N smallest seeded hashes (N small keys, not N
records); pass two yields exactly those records in input order. The choice depends
only on the seed and each record's identity, not on input order or on how a run was
interrupted, and each sampled record carries its inclusion weight (total / N).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Iterator

from deploysim.replay import WEIGHT_KEY
from deploysim.schema import Record, Reject

InputStream = Callable[[], Iterator[Record | Reject]]


def record_key(record: Record) -> tuple[str, int, str]:
    return (record.source_file, record.source_line, record.id)


def _rank(seed: int, record: Record) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{record.source_file}\x00{record.source_line}\x00{record.id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


class UniformSample:
    """Two passes over ``open_inputs()``; rejects come out of the first pass only."""

    def __init__(self, open_inputs: InputStream, n: int, seed: int) -> None:
        self.open_inputs = open_inputs
        self.n = n
        self.seed = seed
        self.total_accepted = 0

    def __iter__(self) -> Iterator[Record | Reject]:
        heap: list[tuple[int, tuple[str, int, str]]] = []  # max-heap of the n smallest ranks
        for item in self.open_inputs():
            if isinstance(item, Reject):
                yield item
                continue
            self.total_accepted += 1
            entry = (-_rank(self.seed, item), record_key(item))
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)
        chosen = {key for _, key in heap}
        weight = self.total_accepted / max(len(chosen), 1)
        for item in self.open_inputs():
            if isinstance(item, Record) and record_key(item) in chosen:
                item.metadata[WEIGHT_KEY] = item.metadata.get(WEIGHT_KEY, 1.0) * weight
                yield item
