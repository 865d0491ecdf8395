"""Grading, statistics and de-identification at scale: one pass, same answers (issue 13 items 3-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploysim.evaluate.graders import run as grade_mod
from deploysim.evaluate.graders.run import iter_grade_items
from tests.synthetic import build_run


def _naive_items(run_dir: Path) -> set[tuple[str, str, str, str]]:
    points = pq.read_table(run_dir / "points.parquet", columns=["point_id", "prefix_json"]).to_pylist()
    prefix = {p["point_id"]: p["prefix_json"] for p in points}
    gens = pq.read_table(run_dir / "generations.parquet").to_pylist()
    return {(g["point_id"], g["deployment"], g["text"], prefix[g["point_id"]][:40]) for g in gens
            if g["error"] is None and g["point_id"] in prefix}


def _items(run_dir: Path, chunk: int) -> set[tuple[str, str, str, str]]:
    import orjson

    out = set()
    for it in iter_grade_items(run_dir, chunk=chunk):
        prefix = orjson.dumps([m.model_dump(exclude_defaults=True) for m in it.context]).decode()
        out.add((it.point_id, it.deployment, it.reply, prefix[:40]))
    return out


@pytest.mark.parametrize("order", ["as_written", "shuffled", "one_late"])
def test_grade_items_read_each_generation_once_in_any_order(tmp_path: Path, order: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = build_run(tmp_path / "run", {"refusal": (0.1, 0.2)}, n_points=300, max_chars=200)
    gens = pq.read_table(run_dir / "generations.parquet")
    rng = np.random.default_rng(1)
    if order == "shuffled":  # e.g. a resumed run rebuilt from a journal in completion order
        gens = gens.take(pa.array(rng.permutation(gens.num_rows)))
    elif order == "one_late":  # a slow call of point 0 finishing last
        gens = gens.take(pa.array([*range(1, gens.num_rows), 0]))
    # one generation whose point is unknown and one error: neither is graded
    extra = pa.Table.from_pylist([{**gens.slice(0, 1).to_pylist()[0], "point_id": "nope"},
                                  {**gens.slice(1, 1).to_pylist()[0], "error": "boom", "deployment": "x"}],
                                 schema=gens.schema)
    gens = pa.concat_tables([gens, extra])
    pq.write_table(gens, run_dir / "generations.parquet", row_group_size=64)
    expected = _naive_items(run_dir)

    read = {"text_rows": 0, "calls": 0}
    original = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        for batch in original(self, *args, **kwargs):
            if "text" in batch.schema.names:
                read["text_rows"] += batch.num_rows
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    assert _items(run_dir, chunk=16) == expected  # 19 chunks of points
    # every generation's text is read exactly once, not once per chunk of points
    assert read["text_rows"] == gens.num_rows
    assert not (run_dir / grade_mod.SCRATCH).exists()
