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


def _random_texts(seed: int, n: int = 400) -> list[str]:
    """Texts dense in what the finders look for, with non-ASCII letters and digits (``\\d`` matches ``٣`` and ``３``)."""
    import random

    rng = random.Random(seed)
    pieces = ["0", "1", "4", "9", "12", "555", "2024", " ", " ", "-", ".", "(", ")", ":", "::", "://", "@", "_", "/",
              "A", "B", "Z", "DE", "GB", "AB", "a", "f", "e", "x", "é", "中", "٣", "３", "ſ", "?", "#", "\n", "St",
              " Street", " Ave", "sk-", "ghp_", "AKIA", "eyJ", "SG.", "xoxb-", "hf_", "key", "pass", "Token", "com",
              "user:pw", "mail", "http", "fe80", "db8", "abcd", "1234567890", "4539148803436467", "NI", "Apt", "password",
              "API_KEY", "client secret", "PIN code", "access token", "Bearer", "pwd", ": ", "=", "'", "Xk9$mQ2p", "İ"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 120))) for _ in range(n)]


#: Digits outside ASCII, and digit runs longer than the numeric trigger's longest match.
TRIGGER_EDGE_TEXTS = ("call ٣٤٥ ٦٧٨ ٩٠١٢ now", "card ４５３９ １４８８ ０３４３ ６４６７", "DE８９ 3704", "12 Main ３ St",
                      "0" * 100, "1-2 " * 30, "(555) 0100." * 9)


@pytest.mark.parametrize("seed", range(5))
def test_trigger_scans_over_character_classes_find_what_the_text_patterns_find(seed: int) -> None:
    texts = _random_texts(seed) + _writer()["edge_texts"]()[:2000] + list(TRIGGER_EDGE_TEXTS)
    triggers = [rk._NUMERIC_TRIGGER, rk._IBAN_NINO_TRIGGER, rk._IPV6_TRIGGER, rk._ADDRESS_START]
    for text in texts:
        for trigger in triggers:
            assert [m.span() for m in trigger.finditer(text)] == [m.span() for m in trigger.pattern.finditer(text)], text
            found = trigger.search(text)
            expected = trigger.pattern.search(text)
            assert (found and found.span()) == (expected and expected.span()), text


@pytest.mark.parametrize("seed", range(5))
def test_windowed_email_url_and_key_scans_match_a_scan_of_the_whole_text(seed: int) -> None:
    """The finders try their pattern only near ``@``, ``://`` and long runs of key characters; same matches."""
    emails = "a.b@example.com x@y.co ü@bücher.de f@2x.png  _x@y.org  a@b.c.d.e.fr a@b@c.org p%q+r@s-t.io"
    keys = " ".join(t for t in _writer()["edge_texts"]() if "use" in t)[:20000]
    edges = [f"{'x' * n}@mail.example.org" for n in range(60, 67)] + [
        f"{'s' * n}://user:pw@host.org" for n in range(14, 19)] + [f"{'a' * n}://u:p@h" for n in range(1, 4)] + [
        "eyJ" + "a" * n + ".eyJ" + "b" * 10 + "." + "c" * 10 for n in range(9, 12)] + [
        f"{p}SG.{'d' * 16}.{'e' * 16}" for p in ("", "x", "S", " ", "-")]
    texts = _random_texts(seed) + [emails, keys, "postgres://admin:pw@db/x https://u:p@h ftp://a:b@c:d@e"] + edges
    for text in texts:
        emails_before = [(m.start(), m.end()) for m in rk._EMAIL_RE.finditer(text)
                         if m.group().rsplit(".", 1)[-1].lower() not in rk._FILE_SUFFIXES]
        assert [(s.start, s.end) for s in rk.find_emails(text)] == emails_before, text
        urls_before = [(m.start(1), m.end(1)) for m in rk._URL_CRED_RE.finditer(text)]
        assert [(s.start, s.end) for s in rk.find_url_credentials(text)] == urls_before, text
        keys_before = {(m.start(), m.end()) for i in range(len(text)) if (m := rk._API_KEY_RE.match(text, i))}
        assert {(s.start, s.end) for s in rk.find_api_keys(text)} == keys_before, text


@pytest.mark.parametrize("seed", range(3))
def test_secret_scan_matches_the_old_scan_on_random_texts(seed: int) -> None:
    for text in _random_texts(seed):
        assert {(s.start, s.end) for s in rk.find_secrets(text)} == _secrets_as_before(text), text
