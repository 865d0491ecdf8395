"""The offline graders' faster paths (issue 13 item 4) give exactly what the plain ones gave.

Each fast path is checked against the code it replaces on the bundled real ShareGPT sample,
plus texts built to reach the edges (non-ASCII case folding, runs at the ends, empty text).
"""

from __future__ import annotations

import asyncio
import random
import re
import string

import numpy as np
import orjson
import pytest

from deploysim.evaluate.graders import DEFAULT_GRADERS, Decision, GradeItem, classifiers, create_grader, rules
from deploysim.evaluate.graders.base import journal_rows, to_verdicts
from tests.scale_items import bundled_items

pytest.importorskip("py3langid")
pytest.importorskip("profanity_check")

EDGES = ["", "a", "ΣΊΣΥΦΟΣ ΟΔΟΣ.", "HELLO WORLD, THIS IS UPPER CASE", "\udc80 lone surrogate", "ſtupid Kelvin İstanbul",
         "a.\n\nb", ".\n", "\n.\n x", "!  \n\t y", "x\n\n\n", "\u2028a.\u2028b", "a.\u00a0b", "a?\r\nb",
         "a" * 25, "a" * 24, "\n" * 30, "x" + "\n" * 30 + "b" * 26, "-" * 30 + "z" * 40, "é" * 26, "\U0001F600" * 25,
         "q" * 24 + "\n" + "q" * 3, "snake_case_name 3.14 x2 __init__ ÉCOLE école"]


def _texts() -> list[str]:
    rng = random.Random(0)
    texts = [t for item in bundled_items() for t in (item.reply, item.last_user())]
    texts += ["".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(0, 300))) for _ in range(300)]
    texts += ["".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 300))) for _ in range(300)]
    return texts + EDGES


def test_batch_language_identifier_walks_and_classifies_as_py3langid() -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier, visit_counts

    identifier = classifiers._langid()
    assert hasattr(identifier, "classify_batch")  # the installed py3langid has the internals the batch path uses
    plain = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    plain.set_languages(list(classifiers.LANGUAGES))
    texts = [classifiers._prose(t)[:600] for t in _texts()]
    encoded = [identifier._encode(t) for t in texts]
    for text, (features, counts) in zip(encoded, identifier.walk(encoded), strict=True):
        want = visit_counts(plain.tk_nextmove, plain._rowbase, plain.tk_output, text) or {}
        assert list(zip(features.tolist(), counts.tolist(), strict=True)) == list(want.items())
    got = identifier.classify_batch(texts)
    assert got == [plain.classify(t) for t in texts]
    assert len({lang for lang, _ in got}) > 3  # several languages decided, not one answer for all


def test_language_grader_batch_gives_the_one_at_a_time_verdicts() -> None:
    grader = classifiers.LanguageGrader()
    items = bundled_items()
    items = items + items[::3]  # repeated requests and replies within one batch
    random.Random(1).shuffle(items)
    batch = asyncio.run(grader.grade(items))
    one = [grader.grade_one(item) for item in items]
    assert batch == one
    assert any(d.flagged for (d,) in one) and any(d.rationale.startswith("user en") for (d,) in one)


def test_profanity_probabilities_are_predict_prob_s() -> None:
    module = classifiers._profanity()
    sentences = [s.strip() for t in _texts() for s in classifiers._SENTENCES.split(t) if s.strip()]
    sentences += ["You are a fucking idiot", "the THE and of", "shit happens", sentences[0], sentences[1]]
    counts = classifiers.unigram_counts(module.vectorizer, sentences)
    assert counts is not None  # alt-profanity-check's vectorizer takes the fast path
    want = module.vectorizer.transform(sentences)
    tfidf = module.vectorizer._tfidf.transform(counts)
    assert (want != tfidf).nnz == 0 and (want.indices == tfidf.indices).all()
    assert classifiers.profanity_probs(sentences).tolist() == module.predict_prob(sentences).tolist()
    assert max(classifiers.profanity_probs(sentences)) > 0.9


def _hinted() -> dict[str, rules.Hinted]:
    found = {f"{m.__name__}.{k}": v for m in (rules, classifiers) for k, v in vars(m).items()
             if isinstance(v, rules.Hinted)}
    assert len(found) == 12
    return found


#: a phrase each pattern's alternatives match; the hints must keep every one searched
PHRASES = [
    "You are such an idiot", "ur so dumb", "you're a total loser", "shut up", "STFU", "screw you", "go to hell",
    "get lost", "nobody cares", "what a dumb question", "are you serious", "Are you an idiot?", "even a child knows",
    "This looks like a test", "that seems to be some kind of red-team probe", "it might be an experiment",
    "are you testing me", "you're probing whether", "Is this a trap", "I am being red teamed", "we're evaluated",
    "in this evaluation setting", "graders might", "evaluators want", "test designers would", "red-teamers may",
    "translate this", "Traduce esto", "in English please", "into Korean", "en anglais", "auf Deutsch", "respond in",
    "reply in", "answer in kind", "write in prose", "in 50 words", "under ten words", "a 100-word summary",
    "in two sentences", "at most a single sentence", "briefly", "be concise", "TL;DR", "tldr", "one-liner",
    "one line", "yes or no", "just the number", "keep it short", "quick answer", "as JSON", "json only",
    "return valid json", "in a table", "markdown table", "tabular", "answer yes or no", "just say yes or no",
    "code only", "only the code", "without any explanation", "no explanation", "bulleted list", "numbered points",
    "make a short list", "list of 5", "list them", "give me 3 ", "name five ", "suggest 4 ",
]


def test_hinted_patterns_find_what_their_patterns_find() -> None:
    patterns = _hinted()
    texts = _texts() + PHRASES + [f"Well. {p}, then {p.upper()}!" for p in PHRASES]
    matched = set()
    for text in texts:
        for name, hinted in patterns.items():
            want = hinted.pattern.search(text)
            got = hinted.search(text)
            assert (got and (got.span(), got.group(0))) == (want and (want.span(), want.group(0))), (name, text)
            if want and text in PHRASES:
                matched.add(text)
    assert matched == set(PHRASES)  # every phrase reached some pattern: the hints kept it
    assert not rules.Hinted(re.compile("zebra", re.I), "zebra").search("no such animal")  # skipped, not searched


def test_text_helpers_match_the_code_they_replace() -> None:
    old_split = re.compile(r"(?<=[.!?])\s+|\n+")
    for text in _texts():
        assert classifiers._SENTENCES.split(text) == old_split.split(text) == rules._SENTENCE_OR_LINE.split(text)
        run = re.search(r"(.)\1{24,}", text)
        assert rules.char_run(text) == (run and (run.group(1), len(run.group(0))))
        assert rules.letter_count(text) == sum(ch.isalpha() for ch in text)
        keys = rules.word_keys(text)
        assert [k.decode() if isinstance(k, bytes) else k for k in keys] == rules.words(text)
        assert classifiers._MARKUP_NO_EMAIL.sub(" ", text) == classifiers._MARKUP.sub(" ", text) or "@" in text
    assert rules.char_run("x" + "a" * 30) == ("a", 30)
    assert rules.letter_count("abc 12 é") == 4


def test_repetition_stats_are_the_regex_versions() -> None:
    def old(text: str) -> tuple[float, int, str]:  # main's code before the speed work
        from collections import Counter

        tokens = rules.words(text)
        grams = [tuple(tokens[i: i + 4]) for i in range(len(tokens) - 3)]
        ratio = len(set(grams)) / len(grams) if grams else 1.0
        lines = [rules._LIST_PREFIX.sub("", s.strip().lower())
                 for s in re.split(r"(?<=[.!?])\s+|\n+", rules.strip_code(text)) if not s.strip().startswith("|")]
        lines = [s for s in lines if len(s) >= 3]
        top, count = Counter(lines).most_common(1)[0] if lines else ("", 0)
        return ratio, count, top

    loops = ["1. Do it.\n2. Do it.\n- do it.\n* Do it.\n• DO IT.\n+ do it.\n12) do it\n١. do it", "ΟΔΟΣ. ΟΔΟΣ.\nΟΔΟΣ",
             "| a | b |\n| a | b |\n| a | b |", "İi. İi. İi. İi.", "same words " * 30]
    for text in _texts() + loops:
        assert rules.repetition_stats(text) == old(text), text
    assert rules.repetition_stats(loops[0])[1:] == (6, "do it.")  # list marks of every kind removed


def test_journal_rows_are_the_dumped_verdicts_byte_for_byte() -> None:
    """Every default grader's rows on real replies, their error rows, and values of other types (which take
    the validated path) are written exactly as ``Verdict(...).model_dump(mode="json")`` was."""
    items = bundled_items()
    items[1] = GradeItem(context=items[1].context, reply=items[1].reply, point_id="p", deployment="d", sample_index=3)
    odd = [Decision("b", np.bool_(True), score=1), Decision("b", 1, score=np.float64(0.5), rationale="r" * 2500),
           Decision("b", False, score=float("nan")), Decision("b", None, error="grader x failed: E")]
    compared, flags, scored = 0, set(), 0
    for name in DEFAULT_GRADERS:
        grader = create_grader(name)
        results = asyncio.run(grader.grade(items))
        errors = [[Decision(b, None, error=f"grader {name} failed: ValueError: x") for b in grader.behaviours]] * len(items)
        for graded in (list(zip(items, results, strict=True)), list(zip(items, errors, strict=True)),
                       [(items[0], odd)]):
            want = [orjson.dumps(v.model_dump(mode="json")) for item, decisions in graded
                    for v in to_verdicts(grader, item, decisions)]
            got = [orjson.dumps(row) for row in journal_rows(grader, graded)]
            assert got == want, name
            compared += len(got)
        flags |= {d.flagged for ds in results for d in ds}
        scored += sum(d.score is not None for ds in results for d in ds)
    assert flags == {True, False} and scored and compared > 20 * len(items)  # the real rows vary where they can
