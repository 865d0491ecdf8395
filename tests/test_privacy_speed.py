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


def _secrets_as_before(text: str) -> set[tuple[int, int]]:
    """main's secret scan before the speed work: the regex tried at the 15 places before every trigger word."""
    out: set[tuple[int, int]] = set()
    for word in rk._SECRET_WORDS:
        i = text.find(word)
        while i != -1:
            for j in range(max(0, i - 14), i + 1):
                if j and text[j - 1].isalnum():
                    continue
                m = rk._SECRET_RE.match(text, j)
                if m is None:
                    continue
                value = m.group(1).rstrip(".")
                if rk._secret_like(value):
                    out.add((m.start(1), m.start(1) + len(value)))
                break
            i = text.find(word, i + 1)
    return out


@pytest.mark.parametrize("prefix", ["", "é ", "\u017f", "İstanbul ", "ß ", "한국어 ", "\u0131"])
def test_secret_scan_matches_the_old_scan_where_lower_casing_moves_or_folds_characters(prefix: str) -> None:
    texts = [f"{prefix}{body}" for body in (
        "\u017fecret_key: Xk9$mQ2p", "my password: Tr0ub4dor&3 and api key = Hunter2!x9", "PIN code: 4821-Ab",
        "Aİ password=Q9w8e7r6!", "cl\u0131ent_secret: Zz81!aQk", "key key PASS: zX9!aa77 TOKEN=Ab12Cd34Ef",
        "api key password: Xk9$mQ2p", "Bearer eyJhbGciOi.J9abc", "\u0130\u0130 passwd is W0rd$Fish")]
    for text in texts:
        found = {(s.start, s.end) for s in rk.find_secrets(text)}
        assert found == _secrets_as_before(text), text
