"""Built-in recognizers and surrogates: detection, consistency, variety, validity, no leaks in errors."""

from __future__ import annotations

import email.utils
import json
import re
from pathlib import Path

import phonenumbers
import pytest
from stdnum import iban, luhn

from deploysim.core.schema import Message, Record, ToolCall
from deploysim.pipeline.privacy import PrivacyError, build_deidentifier
from deploysim.pipeline.privacy import recognizers as rk

TEXT = (
    "I'm stuck. Email me at maria.gonzalez@gmail.com or call (415) 555-2671 / +44 7911 123456. "
    "Card 4539 1488 0343 6467, IBAN DE89 3704 0044 0532 0130 00, SSN 536-90-4512, NI AB 12 34 56 C. "
    "Server 203.0.113.42 and 2001:db8:85a3::8a2e:370:7334; key sk-proj-abcDEF1234567890abcdefXYZ, "
    "AKIAIOSFODNN7EXAMPLE. DB postgres://admin:S3cr3tPw9@db.internal:5432/app, password: Hunter2!x. "
    "Ship to 221 Baker Street. Again: maria.gonzalez@gmail.com, 415-555-2671."
)
EXPECTED = {
    "maria.gonzalez@gmail.com": rk.EMAIL, "(415) 555-2671": rk.PHONE, "+44 7911 123456": rk.PHONE,
    "4539 1488 0343 6467": rk.CARD, "DE89 3704 0044 0532 0130 00": rk.IBAN, "536-90-4512": rk.SSN,
    "AB 12 34 56 C": rk.NINO, "203.0.113.42": rk.IP, "2001:db8:85a3::8a2e:370:7334": rk.IP,
    "sk-proj-abcDEF1234567890abcdefXYZ": rk.API_KEY, "AKIAIOSFODNN7EXAMPLE": rk.API_KEY,
    "admin:S3cr3tPw9": rk.URL_CREDENTIALS, "Hunter2!x": rk.SECRET, "221 Baker Street": rk.ADDRESS,
    "415-555-2671": rk.PHONE,
}


def record(text: str = TEXT, rid: str = "r1") -> Record:
    return Record(id=rid, source_file="chat.jsonl", source_line=1, messages=[
        Message(role="user", content=text),
        Message(role="assistant", content="Got it, I'll email maria.gonzalez@gmail.com.",
                tool_calls=[ToolCall(id="c1", name="send", arguments=json.dumps({"to": "maria.gonzalez@gmail.com"}))]),
    ], metadata={"user_id": "maria.gonzalez@gmail.com", "note": "call 415-555-2671"}, weight=2.0)


def deid(**cfg: object):
    return build_deidentifier({"mode": "surrogate", "presidio": False, **cfg})


def test_every_kind_is_found() -> None:
    spans = rk.resolve_overlaps(rk.find_builtin(TEXT, rk.builtin_finders()))
    found = {s.text(TEXT): s.kind for s in spans}
    assert found == EXPECTED


@pytest.mark.parametrize("text", [
    "version 2023-01-15 build 20230115", "order #123456789012", "see RFC 3339 and ISO 8601", "x = 0.123456789",
    "time 12:30:45 and std::vector<int>", "logo@2x.png", "password = form.password", "token: string",
    "call 555-0100", "1234 5678 9012 3456", "uuid 550e8400-e29b-41d4-a716-446655440000",
])
def test_common_non_pii_is_left_alone(text: str) -> None:
    assert rk.resolve_overlaps(rk.find_builtin(text, rk.builtin_finders())) == []


def test_nothing_planted_survives_and_no_markers() -> None:
    out = deid()(record())
    blob = out.model_dump_json()
    for value in EXPECTED:
        assert value not in blob
    assert "REDACTED" not in blob and "<" not in out.messages[0].content


def test_consistent_within_record() -> None:
    out = deid()(record())
    text = out.messages[0].content
    emails = [text.split("Email me at ")[1].split()[0], text.split("Again: ")[1].split(",")[0]]
    assert emails[0] == emails[1] and "@" in emails[0]
    assert emails[0] in out.messages[1].content
    assert json.loads(out.messages[1].tool_calls[0].arguments)["to"] == emails[0]
    # "(415) 555-2671" and "415-555-2671" are one number: same digits, each keeps its own format.
    phones = [m for m in re.findall(r"\(?\d{3}\)?[ -]\d{3}-\d{4}", text)]
    assert len({re.sub(r"\D", "", p) for p in phones}) == 1
    assert phones[0].startswith("(") and not phones[1].startswith("(")


def test_different_across_records_and_reproducible() -> None:
    d = deid()
    a, b = d(record(rid="a")), d(record(rid="b"))
    assert a.messages[0].content != b.messages[0].content
    assert d(record(rid="a")).messages[0].content == a.messages[0].content
    assert deid(seed=1)(record(rid="a")).messages[0].content != a.messages[0].content


def test_surrogates_are_format_valid() -> None:
    d = deid()
    for i in range(30):
        text = d(record(rid=f"v{i}")).messages[0].content
        spans = {s.kind: s.text(text) for s in rk.resolve_overlaps(rk.find_builtin(text, rk.builtin_finders()))}
        card = spans[rk.CARD]
        assert luhn.is_valid(card.replace(" ", "")) and re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", card)
        assert iban.is_valid(spans[rk.IBAN].replace(" ", "")) and spans[rk.IBAN].startswith("DE")
        name, addr = email.utils.parseaddr(spans[rk.EMAIL])
        assert addr == spans[rk.EMAIL] and re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", addr)
        phones = [s.text(text) for s in rk.resolve_overlaps(rk.find_builtin(text, rk.builtin_finders()))
                  if s.kind == rk.PHONE]
        assert len(phones) == 3
        for phone in phones:
            assert phonenumbers.is_valid_number(phonenumbers.parse(phone, "US"))
        assert rk.SSN in spans and rk.IP in spans and spans[rk.API_KEY].startswith(("sk-proj-", "AKIA"))


def test_placeholder_mode() -> None:
    out = build_deidentifier({"mode": "placeholder", "presidio": False})(record())
    text = out.messages[0].content
    assert text.count("<EMAIL_1>") == 2 and "<PHONE_1>" in text and "<CARD_1>" in text
    assert "maria" not in out.model_dump_json()


def test_metadata_pseudonyms_are_stable_across_records() -> None:
    d = deid()
    a, b = d(record(rid="a")), d(record(rid="b"))
    assert a.metadata["user_id"] == b.metadata["user_id"] != "maria.gonzalez@gmail.com"
    assert a.weight == 2.0
    assert "555-2671" not in a.metadata["note"]
    assert a.id == "a" and a.source_line == 1


def test_off_is_identity_and_bad_config_is_clear() -> None:
    r = record()
    assert build_deidentifier({"mode": "off"})(r) is r
    with pytest.raises(PrivacyError, match="privacy.mode"):
        build_deidentifier({"mode": "redact"})
    with pytest.raises(PrivacyError, match="unknown kind"):
        build_deidentifier({"presidio": False, "entities": ["SHOE_SIZE"]})


def test_mapping_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    deid()(record())
    assert list(tmp_path.iterdir()) == []
    mapping = tmp_path / "map" / "mapping.jsonl"
    d = deid(mapping_path=str(mapping))
    d(record())
    d(record())  # a second pass over the same record writes nothing new
    rows = [json.loads(line) for line in mapping.read_text().splitlines()]
    assert {r["original"] for r in rows} >= {"maria.gonzalez@gmail.com", "4539 1488 0343 6467"}
    assert len(rows) == len({(r["kind"], r["original"]) for r in rows})
    assert mapping.stat().st_mode & 0o777 == 0o600


def test_errors_never_quote_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    d = deid()

    def boom(kind: str, value: str) -> str:
        raise RuntimeError(f"cannot fake {value}")

    monkeypatch.setattr("deploysim.pipeline.privacy.surrogates.RecordSurrogates.replace", lambda self, k, v: boom(k, v))
    with pytest.raises(PrivacyError) as info:
        d(record())
    assert "maria" not in str(info.value) and "r1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is not None
    assert "maria" not in repr(info.value.args)


@pytest.mark.slow
def test_presidio_names_places_organisations() -> None:
    pytest.importorskip("presidio_analyzer")
    d = build_deidentifier({"mode": "surrogate", "presidio": True})
    text = "Hi, my name is Maria Gonzalez and I work at Acme Logistics in Springfield. Thanks, Maria"
    out = d(Record(id="p", messages=[Message(role="user", content=text), Message(role="assistant", content="ok")]))
    clean = out.messages[0].content
    for value in ("Gonzalez", "Acme Logistics", "Springfield"):
        assert value not in clean
    first = clean.split("my name is ")[1].split()[0]
    assert clean.endswith(first)  # "Maria" alone maps to the same fake first name
