"""Grading, statistics and de-identification at scale: one pass, same answers (issue 13 items 3-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
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


def test_metadata_columns_answer_as_the_python_dicts_did() -> None:
    from deploysim.evaluate.stats.analysis import _NOT_SEGMENTS, segment_fields, segment_labels
    from deploysim.evaluate.stats.data import Metadata, cluster_of

    rng = np.random.default_rng(3)
    rows = [{"conversation_id": f"c{i // 3}" if i % 7 else "", "language": str(rng.choice(["en", "de", "fr"])),
             "tier": int(rng.integers(0, 3)), "flag": bool(i % 2), "note": f"n{i}"} for i in range(300)]
    rows[5].pop("language")
    rows[6]["language"] = ""
    mixed = [*rows[:10], {"language": 3, "nested": {"a": 1}}]  # types that do not fit one Arrow schema
    for meta_rows in (rows, mixed):
        meta = Metadata(meta_rows)
        # the slow, obvious computations of before
        values: dict[str, set] = {}
        for m in meta_rows:
            for k, v in m.items():
                if k not in _NOT_SEGMENTS and isinstance(v, str | int | bool):
                    values.setdefault(k, set()).add(v)
        assert segment_fields(meta) == sorted(k for k, v in values.items() if 2 <= len(v) <= 50)
        for name in ("language", "tier", "flag", "note"):
            labels = segment_labels(meta, name, max_values=2)
            from collections import Counter
            raw = ["(missing)" if m.get(name) in (None, "") else str(m.get(name)) for m in meta_rows]
            top = {v for v, _ in Counter(raw).most_common(2)}
            assert labels.tolist() == [v if v in top else "(other)" for v in raw], name
        records = pa.chunked_array([pa.array([f"r{i}" for i in range(len(meta_rows))])])
        assert meta.cluster_keys(records).to_pylist() == [cluster_of(f"r{i}", m) for i, m in enumerate(meta_rows)]


@pytest.mark.parametrize("event_rate", [0.002, 0.3])  # sparse events (resampled exactly) and common (normal limit)
def test_large_bootstrap_matches_the_exact_cluster_bootstrap(event_rate: float) -> None:
    from deploysim.evaluate.stats import paired

    rng = np.random.default_rng(0)
    c = 12_000
    w = rng.choice([1.0, 2.0], c)
    a = w * (rng.random(c) < event_rate)
    b = w * (rng.random(c) < event_rate * 1.5)
    big = paired._large_bootstrap_sums(np.random.default_rng(1), 4000, w, a, b)
    exact: list[list[np.ndarray]] = [[], [], []]
    for _ in range(10):  # exact resampling, 4,000 replicates
        picks = rng.integers(0, c, (400, c))
        for i, v in enumerate((w, a, b)):
            exact[i].append(v[picks].sum(axis=1))
    for got, want in zip(big, (np.concatenate(e) for e in exact), strict=True):
        assert abs(got.mean() - want.mean()) < 0.05 * want.std() + 1e-9
        assert got.std() == pytest.approx(want.std(), rel=0.08)
        assert np.quantile(got, 0.975) - np.quantile(got, 0.025) == pytest.approx(
            np.quantile(want, 0.975) - np.quantile(want, 0.025), rel=0.1)
    assert c > paired.EXACT_MAX_CLUSTERS  # bootstrap_sums takes this path at this size


EXPECTED_VERDICTS = Path(__file__).parent / "fixtures" / "graders" / "bundled_verdicts.jsonl.gz"


def _verdict_rows(results: dict[str, list]) -> list[dict]:
    from tests.scale_items import bundled_items

    items = bundled_items()
    rows = []
    for name, per_item in results.items():
        for it, decisions in zip(items, per_item, strict=True):
            rows.extend({"point_id": it.point_id, "deployment": it.deployment, "grader": name,
                         "behaviour": d.behaviour, "flagged": d.flagged, "score": d.score, "rationale": d.rationale}
                        for d in decisions)
    return rows


def test_default_graders_give_the_verdicts_they_gave_before_the_speed_work() -> None:
    """The fixture holds the default set's verdicts on the bundled sample, written by main's code
    before the graders were optimised (issue 13 item 4): every decision, score and rationale is equal."""
    import asyncio
    import gzip

    import orjson

    from deploysim.evaluate.graders import DEFAULT_GRADERS, create_grader
    from tests.scale_items import bundled_items

    items = bundled_items()
    got = _verdict_rows({n: asyncio.run(create_grader(n).grade(items)) for n in DEFAULT_GRADERS})
    want = [orjson.loads(line) for line in gzip.open(EXPECTED_VERDICTS)]
    assert len(got) == len(want) == 4752
    assert got == want


def test_grading_in_worker_processes_gives_the_single_process_verdicts(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from deploysim.evaluate.graders.run import grade_run

    one = build_run(tmp_path / "one", {"refusal": (0.1, 0.2)}, n_points=300, max_chars=600)
    (one / "verdicts.parquet").unlink()
    two = tmp_path / "two"
    shutil.copytree(one, two)
    forks = []
    real = grade_mod._Pool.__init__

    def spy(self, graders, workers):  # type: ignore[no-untyped-def]
        forks.append(workers)
        real(self, graders, workers)

    monkeypatch.setattr(grade_mod._Pool, "__init__", spy)
    a = grade_run(one, None, show_progress=False, workers=1)
    b = grade_run(two, None, show_progress=False, workers=2)
    assert forks == [2]  # 600 replies >= POOL_MIN_ITEMS: the second ran in two processes
    assert a["rates"] == b["rates"] and a["verdicts"] == b["verdicts"] == 600 * 11

    def table(run: Path) -> list[dict]:
        rows = pq.read_table(run / "verdicts.parquet").to_pylist()
        return sorted(rows, key=lambda r: (r["point_id"], r["deployment"], r["grader"], r["behaviour"]))

    assert table(one) == table(two)


def test_metadata_field_missing_everywhere_is_one_missing_segment() -> None:
    from deploysim.evaluate.stats.analysis import segment_labels
    from deploysim.evaluate.stats.data import Metadata

    meta = Metadata([{"language": "en"}, {"language": "de"}])
    assert meta.values("language")[1] == ["en", "de"]  # parsed by Arrow, JSON text dropped
    assert segment_labels(meta, "tier").tolist() == ["(missing)", "(missing)"]


def _write_journal(path: Path, n_replies: int, seed: int = 0) -> None:
    """Verdict journal lines as grading writes them: two graders (one with two behaviours) per reply,
    some lines errors later regraded, some replies regraded under a new rubric version."""
    import orjson

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        def line(i: int, grader: str, behaviour: str, version: str, error: str | None) -> None:
            out.write(orjson.dumps({"point_id": f"p{i}", "deployment": "candidate", "sample_index": 0,
                                    "grader": grader, "grader_version": version, "behaviour": behaviour,
                                    "flagged": None if error else bool(i % 2), "score": None, "rationale": "r",
                                    "error": error}) + b"\n")
        for i in range(n_replies):
            bad = rng.random() < 0.1
            line(i, "refusal", "refusal", "1", "boom" if bad else None)
            line(i, "pii", "pii_email", "1", None)
            line(i, "pii", "pii_phone", "1", "boom" if rng.random() < 0.1 else None)
        for i in range(0, n_replies, 7):  # a resume regrades failed ones, a rubric change regrades some
            line(i, "refusal", "refusal", "2", None)
        out.write(b'{"point_id": "cut sh')  # a line cut short by a kill: ignored


def _naive_done_keys(journal: Any) -> set[str]:
    """(reply, grader, version) whose latest journal lines hold no error, as a set of strings (main's way)."""
    status: dict[str, dict[str, bool]] = {}
    for row in journal.rows():
        key = grade_mod._item_key(row["point_id"], row["deployment"], row.get("sample_index", 0), row["grader"],
                                  row.get("grader_version", "1"))
        status.setdefault(key, {})[row["behaviour"]] = row.get("error") is None
    return {k for k, by_behaviour in status.items() if all(by_behaviour.values())}


def _naive_finalise(journal_path: Path) -> list[dict]:
    from deploysim.core.store import JsonlJournal

    rows = list(JsonlJournal(journal_path, key="point_id").rows())
    last = {(r["point_id"], r["deployment"], r["sample_index"], r["behaviour"], r["grader"]): i
            for i, r in enumerate(rows)}
    return [r for i, r in enumerate(rows) if last[(r["point_id"], r["deployment"], r["sample_index"],
                                                    r["behaviour"], r["grader"])] == i]


@pytest.mark.parametrize("part_rows", [1 << 19, 500])
def test_resume_keys_and_finalise_give_what_the_per_verdict_dicts_gave(tmp_path: Path, part_rows: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole in memory and partitioned on disk (part_rows 500: 9 partitions): same resume keys, same verdicts."""
    from deploysim.core.store import JsonlJournal

    monkeypatch.setattr(grade_mod, "PART_ROWS", part_rows)
    run_dir = tmp_path / "run"
    path = run_dir / "journal" / "verdicts.jsonl"
    _write_journal(path, 1000)
    journal = JsonlJournal(path, key="point_id")
    done = grade_mod._done_keys(journal, run_dir / grade_mod.JOURNAL_SCRATCH)
    want = _naive_done_keys(journal)
    assert isinstance(done, grade_mod.DoneKeys) and len(done) == len(want) > 1000
    every = {grade_mod._item_key(f"p{i}", "candidate", 0, g, v) for i in range(1000) for g in ("refusal", "pii")
             for v in ("1", "2")}
    assert {k for k in every if k in done} == want
    n = grade_mod._finalise(run_dir, journal)
    got = pq.read_table(run_dir / "verdicts.parquet").to_pylist()
    expected = _naive_finalise(path)
    assert n == len(got) == len(expected) == 3000
    assert [(r["point_id"], r["grader"], r["grader_version"], r["behaviour"], r["error"]) for r in got] == \
        [(r["point_id"], r["grader"], r["grader_version"], r["behaviour"], r["error"]) for r in expected]
    assert not (run_dir / grade_mod.JOURNAL_SCRATCH).exists()


def test_resume_keys_and_finalise_hold_no_python_object_per_verdict(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Python-heap peak (tracemalloc) of building the resume keys and finalising, 4x the journal: it stays
    about flat. A set or dict with a key per verdict (as before) grows it ~4x (~150 bytes a verdict)."""
    import tracemalloc

    from deploysim.core.store import JsonlJournal

    monkeypatch.setattr(grade_mod, "PART_ROWS", 4000)
    peaks = {}
    for n in (4000, 16000):
        run_dir = tmp_path / str(n)
        path = run_dir / "journal" / "verdicts.jsonl"
        _write_journal(path, n)
        journal = JsonlJournal(path, key="point_id")
        tracemalloc.start()
        done = grade_mod._done_keys(journal, run_dir / grade_mod.JOURNAL_SCRATCH)
        grade_mod._finalise(run_dir, journal)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert done.hashes.nbytes == 8 * len(done)  # 8 bytes a done key
    print(peaks)
    assert peaks[16000] < 1.5 * peaks[4000], peaks


def test_resume_keys_answer_alike_in_every_process(tmp_path: Path) -> None:
    """The Ray engine pickles the driver's DoneKeys to its workers: a key's hash may not depend on the process
    (Python's str hash is salted per process; two seeds below would disagree)."""
    import os
    import pickle
    import subprocess
    import sys

    from deploysim.core.store import JsonlJournal

    path = tmp_path / "journal" / "verdicts.jsonl"
    _write_journal(path, 200)
    done = grade_mod.done_verdicts(tmp_path)
    keys = sorted({grade_mod._item_key(f"p{i}", "candidate", 0, g, v) for i in range(200)
                   for g in ("refusal", "pii") for v in ("1", "2")})
    want = [k in _naive_done_keys(JsonlJournal(path, key="point_id")) for k in keys]
    assert [k in done for k in keys] == want and any(want) and not all(want)
    (tmp_path / "done.pickle").write_bytes(pickle.dumps((done, keys)))
    code = ("import pickle, sys; done, keys = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(''.join('1' if k in done else '0' for k in keys))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "done.pickle")], capture_output=True,
                             text=True, env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout.strip()
        assert out == "".join("1" if w else "0" for w in want)


def _verdicts_with_every_case(run_dir: Path) -> None:
    """The synthetic run's verdicts plus: a second sample for some points, a second grader of a behaviour,
    a verdict with an error message and a decision, verdicts of a point not in points.parquet."""
    table = pq.read_table(run_dir / "verdicts.parquet")
    rows = table.to_pylist()
    extra = []
    for r in rows[:300]:
        if r["behaviour"] == "over_refusal":
            extra.append({**r, "sample_index": 1, "flagged": not r["flagged"] if r["flagged"] is not None else None})
        if r["behaviour"] == "verbosity":
            extra.append({**r, "grader": "other", "flagged": True})
    extra.append({**rows[0], "error": "judge said: malformed", "flagged": True})
    extra += [{**r, "point_id": "nope"} for r in rows[:5]]
    pq.write_table(pa.Table.from_pylist(rows + extra, schema=table.schema), run_dir / "verdicts.parquet",
                   row_group_size=500)


@pytest.mark.parametrize("small_groups", [False, True])
def test_streamed_outcomes_and_counts_are_the_whole_table_ones(tmp_path: Path, small_groups: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """load_run's compact outcome columns and behaviour_rates' verdict counts equal those computed from the
    whole verdicts table in Python (main's way), whatever the batch and group sizes; behaviour_rates never
    reads verdicts.parquet whole."""
    from collections import Counter

    from deploysim.evaluate.stats import data as data_mod
    from deploysim.evaluate.stats.analysis import behaviour_rates
    from deploysim.evaluate.stats.rates import weighted_rate

    run_dir = build_run(tmp_path / "run", {"over_refusal": (0.1, 0.2), "verbosity": (0.3, 0.3)}, n_points=600,
                        points_per_conversation=2, undecided_rate=0.05)
    _verdicts_with_every_case(run_dir)
    if small_groups:  # many batches and several lookup groups
        monkeypatch.setattr(data_mod, "VERDICT_BATCH", 256)
        monkeypatch.setattr(data_mod, "GROUP_ROWS", 1000)
    ids = pq.read_table(run_dir / "points.parquet", columns=["point_id"])["point_id"].to_pylist()
    position = {p: i for i, p in enumerate(ids)}
    per_point: dict[tuple[str, str, str], np.ndarray] = {}
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for r in pq.read_table(run_dir / "verdicts.parquet").to_pylist():
        counts[r["deployment"], r["behaviour"], r["grader"],
               "errors" if r["flagged"] is None or r["error"] is not None else str(r["flagged"])] += 1
        if r["point_id"] in position and r["flagged"] is not None:
            tally = per_point.setdefault((r["behaviour"], r["grader"], r["deployment"]), np.zeros((2, len(ids))))
            tally[:, position[r["point_id"]]] += (r["flagged"], 1)
    data = data_mod.load_run(run_dir)
    assert data.graders == {"over_refusal": "synthetic", "verbosity": "synthetic"}
    columns = {(b, data.graders[b]): by_dep for b, by_dep in data.outcomes.items()} | data.others
    assert set(columns) == {(b, g) for b, g, _ in per_point}
    with np.errstate(invalid="ignore", divide="ignore"):
        for (b, g, d), (flagged, decided) in per_point.items():
            want = np.where(decided > 0, flagged / np.maximum(decided, 1), np.nan)
            np.testing.assert_array_equal(columns[b, g][d], want)
    assert 0 < np.nanmean(columns["over_refusal", "synthetic"]["candidate"] % 1 > 0)  # fractions: two samples
    original = pq.read_table

    def no_whole_verdicts(source: Any, *args: Any, **kwargs: Any) -> Any:
        assert not str(source).endswith("verdicts.parquet"), "verdicts.parquet read whole"
        return original(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", no_whole_verdicts)
    rates = behaviour_rates(run_dir)
    got = {(d, b.split("[")[0], r["grader"]): r for d, by_b in rates.items() for b, r in by_b.items()}
    assert set(got) == {k[:3] for k in counts}
    for (d, b, g), r in got.items():
        assert (r["flagged"], r["graded"], r["errors"]) == (
            counts[d, b, g, "True"], counts[d, b, g, "True"] + counts[d, b, g, "False"], counts[d, b, g, "errors"])
        y = np.where(per_point[b, g, d][1] > 0, per_point[b, g, d][0] / np.maximum(per_point[b, g, d][1], 1),
                     np.nan)
        assert r["rate"] == round(weighted_rate(y, data.weights, data.clusters).rate, 6)
    assert rates["candidate"]["verbosity[other]"]["grader"] == "other"


def test_metadata_read_from_points_parquet_is_parsed_by_arrow(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """points.parquet's metadata column is large_string: parsed by Arrow a batch at a time (the JSON text not
    kept), with the Python dicts' answers; a field with two types across batches falls back to Python."""
    from deploysim.evaluate.stats import data as data_mod
    from deploysim.evaluate.stats.analysis import _NOT_SEGMENTS, segment_fields, segment_labels

    monkeypatch.setattr(data_mod, "METADATA_BATCH", 64)
    run_dir = build_run(tmp_path / "run", {"refusal": (0.1, 0.2)}, n_points=300, points_per_conversation=3)
    path = run_dir / "points.parquet"
    table = pq.read_table(path)
    assert pa.types.is_large_string(table.schema.field("metadata_json").type)
    rows = [orjson.loads(m) for m in table["metadata_json"].to_pylist()]
    meta = data_mod.Metadata.read(path)
    assert meta.column is None and len(meta) == 300  # parsed by Arrow, the JSON text dropped
    python = data_mod.Metadata(rows)
    python._table = None  # the Python path, as for metadata that does not fit one Arrow schema
    assert segment_fields(meta) == segment_fields(python) == ["language", "surface"]
    for name in ("language", "surface"):
        assert segment_labels(meta, name).tolist() == segment_labels(python, name).tolist()
    records = table["record_id"]
    assert meta.cluster_keys(records).to_pylist() == [data_mod.cluster_of(r, m) for r, m in
                                                      zip(records.to_pylist(), rows, strict=True)]
    rows[200]["language"] = 7  # an int in the fourth batch, strings before: read whole, answered in Python
    mixed = table.set_column(table.schema.get_field_index("metadata_json"), "metadata_json",
                             pa.array([orjson.dumps(m).decode() for m in rows], pa.large_string()))
    pq.write_table(mixed, path)
    meta = data_mod.Metadata.read(path)
    assert meta.column is not None
    assert segment_labels(meta, "language").tolist() == segment_labels(data_mod.Metadata(rows), "language").tolist()
    assert _NOT_SEGMENTS.isdisjoint(segment_fields(meta))
