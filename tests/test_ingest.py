"""`deploysim ingest`: sources -> sampling -> de-identification -> Parquet that `deploysim run --data` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.core.schema import Record
from deploysim.pipeline.sources import iter_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "privacy"


def test_ingest_writes_a_clean_dataset_run_can_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "wizard", "content": "call me at 415-555-2671"}]}\nnot json\n')
    out = tmp_path / "ds.parquet"
    result = CliRunner().invoke(main, [
        "ingest", str(FIXTURES / "canary.jsonl"), "--out", str(out), "--format", "openai", "--no-presidio",
        "--strata", "tier", "--sample", "20", "--dedupe", "--seed", "3",
    ])
    result_bad = CliRunner().invoke(main, ["ingest", str(bad), "--out", str(tmp_path / "bad.parquet"),
                                           "--format", "openai", "--no-presidio"])
    assert result.exit_code == 0, result.output
    assert "written 20" in result.output
    summary = json.loads((tmp_path / "ds.ingest.json").read_text())
    assert summary["reconciles"] and summary["records_read"] == 40
    assert sum(row["sampled"] for row in summary["strata"].values()) == 20
    assert summary["privacy"]["replaced"]["EMAIL_ADDRESS"] > 0 and not summary["privacy"]["mapping_written"]
    records = [r for r in iter_inputs([out]) if isinstance(r, Record)]
    assert len(records) == 20 and all(r.format == "openai" for r in records)
    assert abs(sum(r.weight for r in records) - 40) < 1e-9
    text = json.dumps(pq.read_table(out).to_pylist())
    planted = json.loads((FIXTURES / "planted.json").read_text())
    assert not [v for values in planted.values() for v in values if v in text]
    # Bad input: every line accounted for, reasons kept, no raw value in the rejects file.
    assert result_bad.exit_code == 0, result_bad.output
    rejects = (tmp_path / "bad.rejects.jsonl").read_text()
    assert len(rejects.splitlines()) == 2 and "wizard" in rejects and "415-555-2671" not in rejects
    assert list(iter_inputs([tmp_path / "bad.parquet"], "deploysim")) == []


def test_ingest_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["ingest", str(FIXTURES / "canary.jsonl"), "--out", str(tmp_path / "o.parquet"),
                             "--strata", "tier"])
    assert r.exit_code == 2 and "needs a sample size" in r.output
    r = runner.invoke(main, ["ingest", str(FIXTURES / "canary.jsonl"), "--out", str(tmp_path / "o.parquet"),
                             "--cap-per", "user_id"])
    assert r.exit_code == 2 and "FIELD=N" in r.output
    r = runner.invoke(main, ["ingest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.parquet")])
    assert r.exit_code == 2 and "not found" in r.output
    assert not (tmp_path / "o.parquet").exists()


def test_ingest_mapping_only_by_path(tmp_path: Path) -> None:
    mapping = tmp_path / "private" / "map.jsonl"
    r = CliRunner().invoke(main, ["ingest", str(FIXTURES / "canary.jsonl"), "--out", str(tmp_path / "m.parquet"),
                                  "--no-presidio", "--privacy", "placeholder", "--mapping", str(mapping)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in mapping.read_text().splitlines()]
    assert rows and all(row["replacement"].startswith("<") for row in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ingest.json", "m.parquet", "m.rejects.jsonl", "private"]
