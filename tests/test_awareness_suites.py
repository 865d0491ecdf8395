"""Suites: hh-rlhf parsing, the benchmark suite, run-derived real/simulated pairs, pipeline-cue audits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deploysim.checks.awareness.benchmark import MULTIPLE_CHOICE, WORD_PROBLEMS, benchmark_records
from deploysim.checks.awareness.suites import (
    AUDIT_SYSTEM_PROMPT,
    Suite,
    SuiteError,
    SuiteItem,
    benchmark_suite,
    hh_rlhf_suite,
    iter_hh_rlhf,
    parse_hh_rlhf,
    real_suite,
    redaction_audit,
    run_suites,
    system_prompt_audit,
)
from deploysim.core.schema import Message, Record, RecordError, Reject
from deploysim.evaluate.report.awareness import awareness_section

FIXTURES = Path(__file__).parent / "fixtures" / "awareness"
HH = FIXTURES / "hh_rlhf_harmless_30.jsonl"


def test_parse_hh_rlhf_dialogue() -> None:
    record = parse_hh_rlhf("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how do I pick a lock?\n\n"
                           "Assistant: I can't help with that.", "r1")
    assert [m.role for m in record.messages] == ["user", "assistant", "user", "assistant"]
    assert record.messages[2].content == "how do I pick a lock?"
    assert record.messages[3].content == "I can't help with that."
    # a trailing human turn with no reply is dropped: transcripts end on the assistant
    trailing = parse_hh_rlhf("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "r2")
    assert [m.content for m in trailing.messages] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("preamble\n\nHuman: a\n\nAssistant: b", "text before"),
        ("no turns at all", "text before"),
        ("\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "same speaker"),
        ("\n\nHuman: only a question", "no assistant reply"),
    ],
)
def test_parse_hh_rlhf_rejects(text: str, reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        parse_hh_rlhf(text, "bad")


def test_iter_hh_rlhf_fixture_and_rejects(tmp_path: Path) -> None:
    records = list(iter_hh_rlhf(HH))
    assert len(records) == 30 and all(isinstance(r, Record) for r in records)
    assert all(r.messages[-1].role == "assistant" for r in records)  # type: ignore[union-attr]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(HH.read_text().splitlines()[0] + "\n{not json\n{\"rejected\": \"x\"}\n\n")
    items = list(iter_hh_rlhf(bad))
    assert isinstance(items[0], Record)
    assert isinstance(items[1], Reject) and items[1].line == 2 and "JSON" in items[1].reason
    assert isinstance(items[2], Reject) and items[2].line == 3 and "chosen" in items[2].reason


def test_hh_rlhf_suite_sampling_is_seeded() -> None:
    suite = hh_rlhf_suite([HH], sample=5, seed=1)
    assert suite.kind == "eval" and suite.label == 1 and len(suite.items) == 5
    again = hh_rlhf_suite([HH], sample=5, seed=1)
    assert [i.key for i in suite.items] == [i.key for i in again.items]
    other = hh_rlhf_suite([HH], sample=5, seed=2)
    assert [i.key for i in suite.items] != [i.key for i in other.items]
    with pytest.raises(SuiteError, match="not found"):
        hh_rlhf_suite([FIXTURES / "missing.jsonl"], None, 0)


def test_benchmark_suite_looks_like_a_benchmark() -> None:
    records = benchmark_records()
    assert len(records) == len(MULTIPLE_CHOICE) + len(WORD_PROBLEMS) >= 20
    first = records[0].messages
    assert "multiple choice questions" in (first[0].content or "") and (first[0].content or "").endswith("Answer:")
    assert first[1].content in ("A", "B", "C", "D")
    for _subject, question, options, right in MULTIPLE_CHOICE:
        assert len(set(options)) == 4 and 0 <= right < 4, question
    suite = benchmark_suite(sample=4, seed=0)
    assert suite.label == 1 and len(suite.items) == 4
    assert len(benchmark_suite(None, 0).items) == len(records)


def _real() -> Suite:
    records = [
        Record(id="a", messages=[Message(role="user", content="Email me at jane.doe@example.com please"),
                                 Message(role="assistant", content="Sure, Jane.")]),
        Record(id="b", messages=[Message(role="system", content="Logged prompt."),
                                 Message(role="user", content="hi"), Message(role="assistant", content="hello")]),
        Record(id="c", messages=[Message(role="user", content="no reply logged")]),
    ]
    return real_suite(records)


def test_real_suite_is_prefix_plus_logged_reply() -> None:
    suite = _real()
    assert [i.record.id for i in suite.items] == ["a", "b"]
    assert suite.items[0].transcript[-1].content == "Sure, Jane."
    assert suite.skipped == {"no logged reply": 1}
    assert suite.label == 0


def test_system_prompt_audit_pairs_the_same_conversations() -> None:
    real = _real()
    with_prompt, without = system_prompt_audit(real)
    assert [i.key for i in with_prompt.items] == [i.key for i in real.items] == [i.key for i in without.items]
    assert with_prompt.items[0].transcript[0].content == AUDIT_SYSTEM_PROMPT
    assert with_prompt.items[1].transcript[0].content == "Logged prompt."  # a logged prompt is kept
    assert all(m.role != "system" for i in without.items for m in i.transcript)
    assert real.items[1].transcript[0].role == "system"  # the source suite is untouched


def test_redaction_audit_fails_clearly_without_the_privacy_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deploysim.pipeline.privacy", None)
    with pytest.raises(SuiteError, match="deploysim.pipeline.privacy.build_deidentifier"):
        redaction_audit(_real())


def test_redaction_audit_placeholder_vs_surrogate() -> None:
    pytest.importorskip("deploysim.pipeline.privacy")
    from deploysim.pipeline.privacy import build_deidentifier  # noqa: F401  (the audit needs this name)

    real = _real()
    placeholder, surrogate = redaction_audit(real, {"presidio": False})  # regex recognizers: fast
    assert [i.key for i in placeholder.items] == [i.key for i in real.items] == [i.key for i in surrogate.items]
    assert placeholder.label is None and surrogate.label is None  # not counted in calibration
    p_text = placeholder.items[0].transcript[0].content or ""
    s_text = surrogate.items[0].transcript[0].content or ""
    assert "jane.doe@example.com" not in p_text and "jane.doe@example.com" not in s_text
    assert p_text != s_text
    assert "@" in s_text  # a surrogate email still looks like an email
    assert real.items[0].transcript[0].content == "Email me at jane.doe@example.com please"


def test_run_suites_pair_logged_and_regenerated_replies(tmp_path: Path) -> None:
    from deploysim.cli.demo import sample_path
    from deploysim import run_simulation
    from deploysim.pipeline.config import SimConfig

    config = SimConfig(data=[str(sample_path())], format="sharegpt", sample=5, seed=3,
                       deployments=[{"name": "candidate", "model": "instant/echo"}], cache=False)
    run_simulation(config, tmp_path / "run", show_progress=False)
    real, simulated = run_suites(tmp_path / "run", "candidate", sample=None, seed=0)
    assert len(real.items) == len(simulated.items) == 5
    assert [i.key for i in real.items] == [i.key for i in simulated.items]
    for r, s in zip(real.items, simulated.items, strict=True):
        assert r.transcript[:-1] == s.transcript[:-1]
        assert s.transcript[-1].content.startswith("[instant fake reply")
        assert not r.transcript[-1].content.startswith("[instant fake reply")
    three, _ = run_suites(tmp_path / "run", "candidate", sample=3, seed=0)
    assert len(three.items) == 3
    with pytest.raises(SuiteError, match="no generations"):
        run_suites(tmp_path / "run", "baseline", None, 0)


def test_awareness_section_escapes_everything() -> None:
    results = {
        "probe": {"model": "<b>m</b>", "questions": [1, 2], "repeats": 1, "temperature": 0.0},
        "suites": {"<script>": {"kind": "real"}},
        "results": {"append": {"<script>": {
            "conversations": 1, "parseable": 1, "answers": 2, "parse_rate": 0.5,
            "flag_rate": {"k": 1, "n": 1, "rate": 1.0, "ci_low": 0.2, "ci_high": 1.0},
            "mean_p_eval": 1.0, "answer_eval_share": {"k": 1, "n": 1, "rate": 1.0, "ci_low": 0.2, "ci_high": 1.0}}}},
        "comparisons": {}, "auc": {}, "calibration": {},
        "grader": {"available": False, "reason": "<i>missing</i>"},
        "suites_not_run": {"hh-rlhf": "pass --hh-rlhf <PATH>"},
    }
    html = awareness_section(results)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>m</b>" not in html and "<i>" not in html and "&lt;PATH&gt;" in html
    assert html.startswith("<section") and html.rstrip().endswith("</section>")
    assert "100.0% [20.0%, 100.0%] (1/1)" in html


def test_suite_item_transcript_is_the_record_messages() -> None:
    record = Record(id="x", messages=[Message(role="user", content="q"), Message(role="assistant", content="a")])
    assert SuiteItem("k", record).transcript == record.messages
