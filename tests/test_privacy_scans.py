"""The speed paths of the built-in recognizers find what the plain scans find.

Each finder tries its exact pattern only near something cheap to find (``@``, ``://``, the start of
a long run of key characters, a trigger matched over a class map of the text, a keyword near a
trigger word); these tests compare each against the plain scan over the whole text, on random
texts dense in what the finders look for and on boundary cases.
"""

from __future__ import annotations

import random

import pytest

from deploysim.pipeline.privacy import recognizers as rk
from tests.test_privacy_speed import _secrets_as_before, _writer


def _random_texts(seed: int, n: int = 400) -> list[str]:
    """Texts dense in what the finders look for, non-ASCII letters and digits too (``\\d`` matches ``٣``, ``３``)."""
    rng = random.Random(seed)
    pieces = ["0", "1", "4", "9", "12", "555", "2024", " ", " ", "-", ".", "(", ")", ":", "::", "://", "@", "_", "/",
              "A", "B", "Z", "DE", "GB", "AB", "a", "f", "e", "x", "é", "中", "٣", "３", "ſ", "?", "#", "\n", "St",
              " Street", " Ave", "sk-", "ghp_", "AKIA", "eyJ", "SG.", "xoxb-", "hf_", "key", "pass", "Token", "com",
              "user:pw", "mail", "http", "fe80", "db8", "abcd", "1234567890", "4539148803436467", "NI", "Apt",
              "password", "API_KEY", "client secret", "PIN code", "access token", "Bearer", "pwd", ": ", "=", "'",
              "Xk9$mQ2p", "İ"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 120))) for _ in range(n)]


#: Digits outside ASCII, and digit runs longer than the numeric trigger's longest match.
TRIGGER_EDGE_TEXTS = ("call ٣٤٥ ٦٧٨ ٩٠١٢ now", "card ４５３９ １４８８ ０３４３ ６４６７", "DE８９ 3704",
                      "12 Main ３ St", "0" * 100, "1-2 " * 30, "(555) 0100." * 9)


@pytest.mark.parametrize("seed", range(5))
def test_trigger_scans_over_character_classes_find_what_the_text_patterns_find(seed: int) -> None:
    texts = _random_texts(seed) + _writer()["edge_texts"]()[:2000] + list(TRIGGER_EDGE_TEXTS)
    triggers = [rk._NUMERIC_TRIGGER, rk._IBAN_NINO_TRIGGER, rk._IPV6_TRIGGER, rk._ADDRESS_START]
    for text in texts:
        for trigger in triggers:
            spans = [m.span() for m in trigger.finditer(text)]
            assert spans == [m.span() for m in trigger.pattern.finditer(text)], text
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
