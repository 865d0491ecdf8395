"""Mutated records in every input format, built from the bundled real data (issue 15: 0 crashes, 0 losses).

The quick test (default run) reads about 150 mutated records; the slow one at least 10,000
(``python benchmarks/fuzz.py`` prints the same figures with peak RSS). For every file:
no exception but a clear ``SourceError`` (and none of those either), every pristine record accepted
or covered by a counted "rest of the file" reject, every reject naming the file and a position,
no reject quoting the input. A few files also go through ``run`` and ``check-data``: same counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.pipeline.config import SimConfig
from deploysim import run_simulation
from tests.reliability.mutate import FORMATS, Outcome, build_files, judge_file


def fuzz(tmp_path: Path, mutated: int, seed: int) -> Outcome:
    total = Outcome()
    for file in build_files(tmp_path, mutated, seed=seed):
        total.add(judge_file(file))
    return total


def assert_clean(total: Outcome, mutated: int) -> None:
    assert total.mutated >= mutated
    assert total.crashes == [], total.crashes[:5]
    assert total.refused_files == [], total.refused_files[:5]
    assert total.losses == [], total.losses[:5]
    assert total.lost_after_damage == 0
    assert total.unlocated == [], total.unlocated[:5]
    assert total.quoted == [], total.quoted[:5]
    assert total.unreconciled == []
    # the mutations bite: most mutated records are rejected, and every kind of mutation occurred
    assert total.rejected >= 0.5 * total.mutated
    assert len(total.by_mutation) >= 14


def test_fuzz_quick(tmp_path: Path) -> None:
    assert_clean(fuzz(tmp_path, 150, seed=1), 150)


@pytest.mark.slow
def test_fuzz_ten_thousand_mutated_records(tmp_path: Path) -> None:
    total = fuzz(tmp_path, 10_000, seed=0)
    assert_clean(total, 10_000)
    print(f"\nfiles {total.files}, records {total.records}, mutated {total.mutated}, accepted {total.accepted}, "
          f"rejected {total.rejected}, crashes 0, losses 0")


def test_check_data_and_run_agree_on_mutated_files(tmp_path: Path) -> None:
    files = build_files(tmp_path / "in", 40, seed=7, per_file=12, mutated_share=0.4)[: len(FORMATS)]
    assert {f.fmt for f in files} == set(FORMATS)
    for i, file in enumerate(files):
        result = CliRunner().invoke(main, ["check-data", str(file.path), "--show", "0"])
        assert result.exit_code == 0, result.output
        head = result.output.splitlines()[0]
        config = SimConfig(data=[str(file.path)], deployments=[{"name": "candidate", "model": "instant/echo"}],
                           cache_path=str(tmp_path / "cache.sqlite"), privacy={"mode": "surrogate", "presidio": False})
        summary = run_simulation(config, tmp_path / f"run{i}", show_progress=False)
        assert summary["reconciles"], (file.path.name, summary["checks"])
        expected = (f"records {summary['records_read']} = accepted {summary['records_accepted']} "
                    f"+ rejected {summary['records_rejected']}")
        assert expected in head, (file.path.name, head, expected)


def test_the_other_formats_never_crash_on_damaged_files(tmp_path: Path) -> None:
    """The coding-agent, Inspect, Langfuse, LangSmith and OpenInference fixtures, damaged at the byte level:
    each read ends in records, located rejects or a clear SourceError (whole-file formats), never a crash."""
    import random

    from deploysim.pipeline.sources import SourceError, detect_format, iter_inputs
    from tests.reliability.mutate import BYTE_MUTATIONS, ROOT

    rng = random.Random(3)
    crashes, tried = [], 0
    for fixture in sorted((ROOT / "tests" / "fixtures" / "formats").iterdir()):
        if fixture.suffix in (".md", ".py"):
            continue
        fmt = detect_format(fixture)
        for i in range(20):
            name = rng.choice(sorted(BYTE_MUTATIONS))
            damaged = tmp_path / f"{i}-{fixture.name}"
            damaged.write_bytes(BYTE_MUTATIONS[name](fixture.read_bytes(), rng))
            for mode in ("auto", fmt):
                tried += 1
                try:
                    items = list(iter_inputs([damaged], mode))
                except SourceError:
                    continue
                except Exception as exc:  # noqa: BLE001 - what this test counts
                    crashes.append(f"{damaged.name} ({name}, {mode}): {type(exc).__name__}")
                    continue
                assert all(i.source_file == str(damaged) for i in items if not hasattr(i, "messages"))
    assert tried >= 500 and crashes == []
