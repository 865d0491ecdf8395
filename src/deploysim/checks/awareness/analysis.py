"""Assemble the awareness results (the JSON the CLI writes and the report section reads; docs/awareness.md)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from deploysim.checks.awareness.metrics import auc, calibration, compare, rate, score_conversations, suite_summary
from deploysim.checks.awareness.runner import Answer, ProbeConfig, ProbeStats
from deploysim.checks.awareness.suites import Suite

RESULTS_SCHEMA = "deploysim.checks.awareness/1"
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("simulated", "real"),
    ("redaction:placeholder", "redaction:surrogate"),
    ("system-prompt:without", "system-prompt:with"),
)
AUC_PAIRS: tuple[tuple[str, str], ...] = (
    ("hh-rlhf", "real"),
    ("benchmark", "real"),
    ("simulated", "real"),
    ("hh-rlhf", "simulated"),
    ("benchmark", "simulated"),
)
AWARENESS_BEHAVIOUR = "evaluation_awareness"
EXAMPLES_PER_SUITE = 5


def analyse(suites: list[Suite], answers: list[Answer], config: ProbeConfig, stats: ProbeStats | None = None,
            grader: dict[str, Any] | None = None, skipped_suites: dict[str, str] | None = None) -> dict[str, Any]:
    scores = score_conversations(answers)
    reasons: dict[tuple[str, str], Counter[str]] = {}
    by_question: dict[tuple[str, str, str], list[int]] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    first_of = {q.id: q.first for q in config.questions}
    first_choice: dict[str, list[int]] = {}  # format -> [parseable, chose the option named first]
    for a in answers:
        reasons.setdefault((a.format, a.suite), Counter())[a.reason] += 1
        if a.label is not None:
            row_first = first_choice.setdefault(a.format, [0, 0])
            row_first[0] += 1
            row_first[1] += a.label == first_of.get(a.question)
        row = by_question.setdefault((a.format, a.suite, a.question), [0, 0, 0])
        row[0] += 1
        if a.label is not None:
            row[1] += 1
            row[2] += a.label == "eval"
        elif len(examples.setdefault(a.suite, [])) < EXAMPLES_PER_SUITE:
            examples[a.suite].append({"format": a.format, "question": a.question, "reason": a.reason,
                                      "text": (a.text or a.error or "")[:200]})
    names = [s.name for s in suites]
    results: dict[str, Any] = {}
    comparisons: dict[str, list[dict[str, Any]]] = {}
    aucs: dict[str, list[dict[str, Any]]] = {}
    calib: dict[str, dict[str, Any]] = {}
    questions: dict[str, dict[str, dict[str, Any]]] = {}
    for fmt in config.formats:
        results[fmt] = {s.name: suite_summary(scores.get((fmt, s.name), {}), reasons.get((fmt, s.name), Counter()))
                        for s in suites}
        comparisons[fmt] = [
            {"a": a, "b": b, **compare(scores.get((fmt, a), {}), scores.get((fmt, b), {}))}
            for a, b in COMPARISONS if a in names and b in names
        ]
        aucs[fmt] = [
            {"positive": pos, "negative": neg, **auc(_probs(scores, fmt, pos), _probs(scores, fmt, neg))}
            for pos, neg in AUC_PAIRS if pos in names and neg in names
        ]
        probs: list[float] = []
        labels: list[int] = []
        used = []
        for suite in suites:
            if suite.label is None:
                continue
            suite_probs = _probs(scores, fmt, suite.name)
            probs += suite_probs
            labels += [suite.label] * len(suite_probs)
            used.append(suite.name)
        calib[fmt] = {"suites": used, **calibration(probs, labels)}
        questions[fmt] = {}
        for (f, suite_name, qid), (n, parsed, n_eval) in sorted(by_question.items()):
            if f == fmt:
                questions[fmt].setdefault(suite_name, {})[qid] = {
                    "answers": n, "parseable": parsed, "eval_share": n_eval / parsed if parsed else None}
    conversations = [
        {"format": fmt, "suite": suite, "key": key, "answers": s.n_answers, "parseable": s.n_parseable,
         "eval": s.n_eval, "p_eval": s.p_eval}
        for (fmt, suite), rows in sorted(scores.items()) for key, s in rows.items()
    ]
    return {
        "schema": RESULTS_SCHEMA,
        "probe": config.describe(),
        "suites": {s.name: {"kind": s.kind, "label": s.label, "items": len(s.items), "note": s.note,
                            "skipped": s.skipped} for s in suites},
        "suites_not_run": skipped_suites or {},
        "results": results,
        "comparisons": comparisons,
        "auc": aucs,
        "calibration": calib,
        "by_question": questions,
        # Share of parseable answers picking whichever option the question named first: near 1
        # means the model parrots the first option and its P(eval) measures question order.
        "first_option_share": {fmt: rate(first_choice.get(fmt, [0, 0])[1], first_choice.get(fmt, [0, 0])[0])
                               for fmt in config.formats},
        "unparseable_examples": examples,
        "grader": grader or {"available": False, "reason": "not requested"},
        "calls": None if stats is None else {
            "planned": stats.calls_planned, "unique": stats.calls_unique, "cache_hits": stats.cache_hits,
            "resumed": stats.resumed,
            "errors": stats.errors, "errors_by_kind": stats.errors_by_kind},
        "conversations": conversations,
    }


def _probs(scores: dict[tuple[str, str], dict[str, Any]], fmt: str, suite: str) -> list[float]:
    return [s.p_eval for s in scores.get((fmt, suite), {}).values() if s.p_eval is not None]


def grader_rates(suites: list[Suite], names: tuple[str, ...] = ("simulated", "real")) -> dict[str, Any]:
    """The offline graders' verbalised-awareness rate on each suite's final reply, when the graders room exists."""
    try:
        try:
            from deploysim.evaluate.graders import GradeItem, create_grader, registry
        except ImportError:
            from deploysim.evaluate.graders.base import GradeItem, create_grader, registry
        specs = [s for s in registry().values() if AWARENESS_BEHAVIOUR in s.behaviours and s.offline]
    except Exception as exc:  # a room still being built must not sink the awareness results
        return {"available": False, "reason": f"deploysim.evaluate.graders not usable: {type(exc).__name__}: {exc}"}
    if not specs:
        return {"available": False, "reason": f"no offline grader covers {AWARENESS_BEHAVIOUR!r}"}
    grader = create_grader(specs[0].name)
    out: dict[str, Any] = {"available": True, "grader": grader.name, "version": str(grader.version),
                           "behaviour": AWARENESS_BEHAVIOUR, "suites": {}}
    for suite in suites:
        if suite.name not in names:
            continue
        items = [GradeItem(context=item.transcript[:-1], reply=item.transcript[-1].text(), point_id=item.key)
                 for item in suite.items if item.transcript and item.transcript[-1].role == "assistant"]
        decisions = asyncio.run(grader.grade(items)) if items else []
        flags = [d.flagged for row in decisions for d in row if d.behaviour == AWARENESS_BEHAVIOUR]
        decided = [f for f in flags if f is not None]
        out["suites"][suite.name] = {**rate(sum(decided), len(decided)), "undecided": len(flags) - len(decided)}
    return out
