"""The built-in recognizers after the speed work flag exactly the spans they flagged before it.

The fixtures were written by ``tests/fixtures/privacy/write_spans_fixture.py`` with main's
recognizers before the change: raw spans (every finder) and the spans kept after overlaps,
for hand-made secret and API-key texts, the bundled ShareGPT sample and, where the real
ShareGPT file is present, every real conversation.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from deploysim.pipeline.privacy import recognizers as rk

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "privacy"
REAL = next((p / "shared" / "data" / "sharegpt" / "conversations.json.gz" for p in ROOT.parents
             if (p / "shared" / "data" / "sharegpt" / "conversations.json.gz").is_file()), None)


def _writer():  # the fixture writer holds the hand-made texts; load it as a module
    spec = importlib.util.spec_from_file_location("write_spans_fixture", FIXTURES / "write_spans_fixture.py")
    assert spec and spec.loader
    source = (FIXTURES / "write_spans_fixture.py").read_text()
    namespace: dict = {}
    exec(compile(source.split("\ndef spans(")[0], str(spec.origin), "exec"), namespace)
    return namespace


def _spans(text: str, finders: list[rk.Finder]) -> list:
    raw = sorted({(s.start, s.end, s.kind) for s in rk.find_builtin(text, finders)})
    kept = [(s.start, s.end, s.kind) for s in rk.resolve_overlaps(rk.find_builtin(text, finders))]
    return [[list(s) for s in raw], [list(s) for s in kept]]


def _load(name: str):
    return json.loads(gzip.decompress((FIXTURES / name).read_bytes()))


def test_secret_and_key_texts_give_the_spans_they_gave_before_the_speed_work() -> None:
    finders = rk.builtin_finders(("US", "GB"))
    before = _load("privacy_spans_before_speed.json.gz")
    texts = _writer()["edge_texts"]()
    assert len(texts) == len(before["edge"])
    changed = [t for t, old in zip(texts, before["edge"]) if _spans(t, finders) != old]
    assert not changed, changed[:5]


def test_bundled_sharegpt_gives_the_spans_it_gave_before_the_speed_work() -> None:
    finders = rk.builtin_finders(("US", "GB"))
    before = _load("privacy_spans_before_speed.json.gz")["bundled"]
    data = json.loads(gzip.decompress((ROOT / "src" / "deploysim" / "data" / "sharegpt_sample.json.gz").read_bytes()))
    now = [[_spans(t.get("value") or "", finders) for t in c.get("conversations", [])] for c in data]
    assert now == before


@pytest.mark.slow
@pytest.mark.skipif(REAL is None, reason="the real ShareGPT file (shared/data/sharegpt) is not here")
def test_real_sharegpt_gives_the_spans_it_gave_before_the_speed_work() -> None:
    finders = rk.builtin_finders(("US", "GB"))
    before = _load("sharegpt_real_spans_before_speed.json.gz")
    assert REAL is not None
    data = json.loads(gzip.decompress(REAL.read_bytes()))
    now = [[_spans(t.get("value") or "", finders) for t in c.get("conversations", [])] for c in data]
    assert len(now) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(now, before)) if a != b]
    assert not changed, changed[:10]
