"""Hand a finished run to the tools people already use: Inspect AI eval logs and flat JSONL (README).

The Inspect log is written without inspect-ai, to its documented ``EvalLog`` shape (read back in tests).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deploysim.core.schema import LOGGED, Generation, Message, ReplayPoint, Verdict
from deploysim.core.store import VERDICTS, read_config, read_generations, read_points, read_verdicts

EXPORT_FORMATS = ("inspect", "jsonl")
#: deploysim finish reasons -> Inspect ``StopReason``.
STOP_REASONS = {"stop": "stop", "length": "max_tokens", "tool_calls": "tool_calls", "content_filter": "content_filter"}

Key = tuple[str, str, int]  # point id, deployment, sample index


def _verdicts(run: Path) -> dict[Key, list[Verdict]]:
    by_reply: dict[Key, list[Verdict]] = defaultdict(list)
    if VERDICTS.path(run).exists():
        for verdict in read_verdicts(run):
            by_reply[(verdict.point_id, verdict.deployment, verdict.sample_index)].append(verdict)
    return by_reply


def _reply_rows(run: Path) -> Iterator[tuple[ReplayPoint, Generation, list[Verdict]]]:
    points = {p.point_id: p for p in read_points(run)}
    verdicts = _verdicts(run)
    for generation in read_generations(run):
        point = points.get(generation.point_id)
        if point is not None:
            yield point, generation, verdicts.get((generation.point_id, generation.deployment,
                                                   generation.sample_index), [])


def _flags(verdicts: list[Verdict]) -> dict[str, bool | None]:
    """Behaviour -> flagged by any grader (None when no grader decided)."""
    out: dict[str, bool | None] = {}
    for v in verdicts:
        if v.flagged is None:
            out.setdefault(v.behaviour, None)
        else:
            out[v.behaviour] = bool(out.get(v.behaviour)) or v.flagged
    return out


def export_jsonl(run: Path, out: Path) -> int:
    """Flat rows (one per reply) to ``out``; returns the row count."""
    run, out = Path(run), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    with open(tmp, "wb") as handle:
        for point, gen, verdicts in _reply_rows(run):
            last_user = next((m.text() for m in reversed(point.prefix) if m.role == "user"), "")
            row: dict[str, Any] = {
                "point_id": point.point_id, "record_id": point.record_id, "turn_index": point.turn_index,
                "deployment": gen.deployment, "sample_index": gen.sample_index, "weight": point.weight,
                "last_user_message": last_user, "reply": gen.text,
                "tool_calls": [f"{c.name}({c.arguments})" for c in gen.tool_calls],
                "finish_reason": gen.finish_reason, "error": gen.error, "latency_s": gen.latency_s,
                "prompt_tokens": gen.usage.prompt_tokens, "completion_tokens": gen.usage.completion_tokens,
            }
            row |= {f"flag.{b}": f for b, f in sorted(_flags(verdicts).items())}
            handle.write(orjson.dumps(row) + b"\n")
            n += 1
    tmp.replace(out)
    return n


def _inspect_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text()}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "function": c.name, "type": "function",
                              "arguments": a if isinstance(a := c.parsed_arguments(), dict) else {"value": a}}
                             for c in message.tool_calls]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
        out["function"] = message.name
    return out


def _inspect_sample(point: ReplayPoint, gen: Generation, verdicts: list[Verdict]) -> dict[str, Any]:
    reply = Message(role="assistant", content=gen.text or "", tool_calls=gen.tool_calls)
    inputs = [_inspect_message(m) for m in point.prefix]
    scores: dict[str, Any] = {}
    undecided = []
    for v in verdicts:
        if v.flagged is None:
            undecided.append(f"{v.behaviour}:{v.grader}")
            continue
        key = v.behaviour if v.behaviour not in scores else f"{v.behaviour}:{v.grader}"
        scores[key] = {"value": int(v.flagged), "explanation": v.rationale or None,
                       "metadata": {"grader": v.grader, "grader_version": v.grader_version, "score": v.score}}
    sample: dict[str, Any] = {
        "id": point.point_id, "epoch": gen.sample_index + 1, "input": inputs,
        "target": point.original.text() if point.original else "",
        "messages": [*inputs, _inspect_message(reply)] if gen.ok else inputs,
        "output": {"model": gen.deployment, "choices": [] if not gen.ok else [
            {"message": _inspect_message(reply), "stop_reason": STOP_REASONS.get(gen.finish_reason or "", "unknown")}],
            "usage": {"input_tokens": gen.usage.prompt_tokens, "output_tokens": gen.usage.completion_tokens,
                      "total_tokens": gen.usage.prompt_tokens + gen.usage.completion_tokens},
            "time": gen.latency_s},
        "scores": scores,
        "metadata": {"record_id": point.record_id, "turn_index": point.turn_index, "weight": point.weight,
                     "undecided_verdicts": undecided, **{f"record.{k}": v for k, v in point.metadata.items()
                                                         if isinstance(v, (str, int, float, bool))}},
        "store": {}, "events": [], "model_usage": {}, "attachments": {},
    }
    if not gen.ok:
        sample["error"] = {"message": gen.error or "error", "traceback": "", "traceback_ansi": ""}
    return sample


def export_inspect(run: Path, out: Path) -> list[Path]:
    """One Inspect log per deployment (``x.json`` -> ``x-candidate.json``); returns the files written."""
    run, out = Path(run), Path(out)
    config = read_config(run)  # a run written by a newer deploysim is refused, never misread
    by_dep: dict[str, list[dict[str, Any]]] = defaultdict(list)
    models: dict[str, str] = {d.get("name", ""): d.get("model", "") for d in config.get("deployments") or []}
    for point, gen, verdicts in _reply_rows(run):
        by_dep[gen.deployment].append(_inspect_sample(point, gen, verdicts))
    written = []
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    stem = out.name.removesuffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for deployment, samples in sorted(by_dep.items()):
        model = "logged/production" if deployment == LOGGED else models.get(deployment) or f"deploysim/{deployment}"
        rates: dict[str, list[int]] = defaultdict(list)
        for s in samples:
            for name, score in s["scores"].items():
                rates[name].append(score["value"])
        log = {
            "version": 2, "status": "success",
            "eval": {"eval_id": f"{run.name}-{deployment}", "run_id": run.name, "created": created,
                     "task": f"deploysim/{run.name}", "task_id": run.name, "task_version": 0,
                     "dataset": {"name": run.name, "samples": len({s["id"] for s in samples})},
                     "model": model, "config": {}, "packages": {},
                     "metadata": {"deploysim_deployment": deployment, "deploysim_run": str(run)}},
            "plan": {"name": "plan", "steps": [], "config": {}},
            "results": {"total_samples": len(samples), "completed_samples": sum("error" not in s for s in samples),
                        "scores": [{"name": name, "scorer": name, "params": {},
                                    "metrics": {"mean": {"name": "mean", "value": sum(v) / len(v), "params": {}}}}
                                   for name, v in sorted(rates.items())]},
            "stats": {"started_at": created, "completed_at": created, "model_usage": {}},
            "samples": samples,
        }
        path = out.with_name(f"{stem}-{deployment}.json")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(orjson.dumps(log, option=orjson.OPT_INDENT_2))
        tmp.replace(path)
        written.append(path)
    return written
