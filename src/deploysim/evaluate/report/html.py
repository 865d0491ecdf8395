"""``deploysim report``: one self-contained HTML file a person can read and share.

Conversation text is hostile: autoescaped tables, examples as escaped JSON written with ``textContent``,
and a Content-Security-Policy allowing only the report's own nonce'd script as a second wall.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
from jinja2 import Environment
from markupsafe import Markup

from deploysim.core.store import GENERATIONS, POINTS, VERDICTS
from deploysim.evaluate.report.assets import CSS, JS, TEMPLATE
from deploysim.evaluate.stats.analysis import RunStats, analyse_run
from deploysim.evaluate.stats.data import LOGGED, RunData, cluster_of, load_run
from deploysim.evaluate.stats.format import interval, num, pct, pp, pvalue
from deploysim.evaluate.stats.paired import DOWN, UP, PairedComparison

MAX_TEXT = 4000
PREFIX_MESSAGES = 6
CATEGORIES = ("candidate only", "baseline only", "both flagged", "neither")


def safe_json(value: Any) -> Markup:
    """JSON that cannot end its ``<script>`` block or be read as HTML/JS line breaks."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    for raw, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                     ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return Markup(text)


# -- forest plot ------------------------------------------------------------------------------

@dataclass
class _ForestRow:
    label: str
    ratio: float | None
    low: float | None
    high: float | None
    direction: str


def forest_svg(comparisons: list[PairedComparison], width: int = 760) -> Markup:
    """Rate ratios with intervals on a log axis; an interval running off-scale ends in an arrow."""
    rows = [_ForestRow(f"{c.behaviour} vs {c.reference}", c.ratio, c.ratio_low, c.ratio_high, c.direction)
            for c in comparisons]
    if not rows:
        return Markup('<p class="ci">No paired comparison to plot.</p>')
    finite = [v for r in rows for v in (r.ratio, r.low, r.high) if v is not None and math.isfinite(v) and v > 0]
    lo = min([0.5, *finite])
    hi = max([2.0, *finite])
    lo, hi = max(lo / 1.2, 1 / 64), min(hi * 1.2, 64)
    left, right, top, row_h = 230, 70, 24, 26
    plot_w = width - left - right
    height = top + row_h * len(rows) + 34

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return left + plot_w * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))

    esc = Markup.escape
    parts = [f'<svg id="forest-plot" role="img" aria-label="forest plot of rate ratios" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    ticks = [t for t in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if lo <= t <= hi]
    axis_y = top + row_h * len(rows) + 4
    for t in ticks:
        parts.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 10}" y2="{axis_y}"/>')
        label = f"{t:g}" if t >= 1 else f"1/{round(1 / t)}"
        parts.append(f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}"/>')
    parts.append(f'<line class="ref" x1="{x(1):.1f}" x2="{x(1):.1f}" y1="{top - 10}" y2="{axis_y}"/>')
    colours = {UP: "#b42318", DOWN: "#067647"}
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = colours.get(r.direction, "#475467")
        parts.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{esc(r.label)}</text>')
        if r.ratio is None:
            parts.append(f'<text x="{x(1) + 8:.1f}" y="{y + 4:.1f}" fill="#98a2b3">no events in either</text>')
            continue
        low = r.low if r.low is not None and r.low > 0 else lo
        high = r.high if r.high is not None else hi
        x1, x2 = x(low), x(high)
        parts.append(f'<line class="ci-line" x1="{x1:.1f}" x2="{x2:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        if not math.isfinite(high) or high > hi:
            parts.append(f'<path d="M{x2:.1f},{y - 5:.1f} L{x2 + 8:.1f},{y:.1f} L{x2:.1f},{y + 5:.1f} Z" '
                         f'fill="{colour}"/>')
        if low < lo:
            parts.append(f'<path d="M{x1:.1f},{y - 5:.1f} L{x1 - 8:.1f},{y:.1f} L{x1:.1f},{y + 5:.1f} Z" '
                         f'fill="{colour}"/>')
        if math.isfinite(r.ratio):
            parts.append(f'<circle class="point" cx="{x(r.ratio):.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{y + 4:.1f}">{esc(num(r.ratio))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


# -- examples ---------------------------------------------------------------------------------

def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"\n… [{len(text) - MAX_TEXT} more characters]"


def select_examples(data: RunData, baseline: str | None, candidate: str | None, per_category: int,
                    seed: int = 0) -> list[tuple[str, str, int]]:
    """(behaviour, category, point index): discordant pairs first, a few agreeing ones for contrast."""
    rng = np.random.default_rng(seed)
    picked: list[tuple[str, str, int]] = []
    for behaviour in data.behaviours:
        by_dep = data.outcomes[behaviour]
        ref = by_dep.get(baseline or "", by_dep.get(LOGGED))
        sub = by_dep.get(candidate or "")
        if ref is None or sub is None:
            continue
        both = ~np.isnan(ref) & ~np.isnan(sub)
        masks = {
            "candidate only": both & (sub > ref),
            "baseline only": both & (ref > sub),
            "both flagged": both & (ref > 0) & (sub > 0) & (ref == sub),
            "neither": both & (ref == 0) & (sub == 0),
        }
        for category, mask in masks.items():
            idx = np.flatnonzero(mask)
            limit = per_category if category != "neither" else max(1, per_category // 5)
            if len(idx) > limit:
                idx = np.sort(rng.choice(idx, limit, replace=False))
            picked.extend((behaviour, category, int(i)) for i in idx)
    return picked


def _example_payload(data: RunData, stats: RunStats, picked: list[tuple[str, str, int]],
                     segment_field: str | None) -> list[dict[str, Any]]:
    if not picked:
        return []
    ids = sorted({data.point_ids[i].as_py() for _, _, i in picked})
    run = data.run_dir
    points = pq.read_table(POINTS.path(run), filters=[("point_id", "in", ids)],
                           columns=["point_id", "record_id", "prefix_json", "original_json", "metadata_json"])
    point_rows = {r["point_id"]: r for r in points.to_pylist()}
    replies: dict[tuple[str, str], dict[str, Any]] = {}
    gen_path = GENERATIONS.path(run)
    if gen_path.is_file():
        gens = pq.read_table(gen_path, filters=[("point_id", "in", ids)],
                             columns=["point_id", "deployment", "sample_index", "text", "error"])
        gens = gens.filter(pc.equal(gens["sample_index"], 0))
        for g in gens.to_pylist():
            replies[(g["point_id"], g["deployment"])] = {"text": _clip(g["text"]), "error": g["error"]}
    verdicts = pq.read_table(VERDICTS.path(run), filters=[("point_id", "in", ids)],
                             columns=["point_id", "deployment", "sample_index", "behaviour", "grader", "flagged",
                                      "rationale", "error"])
    rationale: dict[tuple[str, str, str], tuple[bool | None, str]] = {}
    for v in verdicts.to_pylist():
        if data.graders.get(v["behaviour"]) != v["grader"] or v["sample_index"] != 0:
            continue
        why = v["rationale"] or (f"error: {v['error']}" if v["error"] else "")
        rationale[(v["point_id"], v["deployment"], v["behaviour"])] = (v["flagged"], _clip(why) or "")
    out = []
    for behaviour, category, i in picked:
        pid = data.point_ids[i].as_py()
        row = point_rows.get(pid)
        if row is None:
            continue
        meta = orjson.loads(row["metadata_json"]) if row["metadata_json"] else {}
        prefix = orjson.loads(row["prefix_json"]) if row["prefix_json"] else []
        original = orjson.loads(row["original_json"]) if row["original_json"] else None
        reps: dict[str, Any] = {}
        for dep in stats.deployments:
            if dep == LOGGED:
                base = {"text": _clip((original or {}).get("content")), "error": None if original else "no reply"}
            else:
                base = replies.get((pid, dep), {"text": None, "error": "no generation"})
            flagged, why = rationale.get((pid, dep, behaviour), (None, ""))
            reps[dep] = {**base, "flagged": flagged, "rationale": why}
        segment = meta.get(segment_field) if segment_field else None
        out.append({
            "behaviour": behaviour, "category": category, "point_id": pid,
            "conversation": cluster_of(row["record_id"], meta),
            "segment": None if segment is None else str(segment),
            "prefix": [{"role": m.get("role", ""), "text": _clip(m.get("content") or "")}
                       for m in prefix[-PREFIX_MESSAGES:]],
            "prefix_omitted": len(prefix) > PREFIX_MESSAGES,
            "replies": reps,
        })
    return out


# -- page -------------------------------------------------------------------------------------

def _rate_cell(stats: RunStats, behaviour: str, dep: str) -> dict[str, Any]:
    b = stats.behaviours[behaviour]
    r = b.rates.get(dep)
    if r is None or r.rate is None:
        return {"rate": "-", "ci": "", "zero": False}
    corr = b.corrected.get(dep)
    cal = b.calibrated.get(dep)
    floor = b.floor.get(dep)
    return {
        "calibrated": f"{pct(cal['rate'])} {interval(cal['low'], cal['high'])} (x{cal['factor']:.2f})"
        if cal and cal["rate"] is not None else "",
        "floor": f"rate ≥ {pct(floor['min_rate'])}, ratio ≥ {num(floor['min_ratio'])}"
        if floor and floor["min_rate"] is not None else "",
        "rate": pct(r.rate), "ci": interval(r.low, r.high), "zero": r.zero_events,
        "upper": pct(r.upper_one_sided), "detectable": pct(r.detectable_rate),
        "corrected": f"{pct(corr.rate)} {interval(corr.low, corr.high)}" if corr and corr.rate is not None else "",
    }


def _comp_cells(c: PairedComparison | None) -> dict[str, Any]:
    if c is None:
        return {"ratio": "-", "ratio_ci": "", "diff": "-", "diff_ci": "", "p": "-", "p_method": "",
                "direction": "-", "badge": "flat"}
    return {"ratio": num(c.ratio), "ratio_ci": interval(c.ratio_low, c.ratio_high, num), "diff": pp(c.diff),
            "diff_ci": interval(c.diff_low, c.diff_high, pp), "p": pvalue(c.p_adjusted), "p_method": c.p_method,
            "direction": c.direction, "badge": {UP: "up", DOWN: "down"}.get(c.direction, "flat")}


def build_report(run_dir: Path, stats: RunStats | None = None, examples_per_category: int = 20,
                 segment_field: str | None = None, csp: bool = True, seed: int = 0, **stats_kwargs: Any) -> str:
    """The report as one HTML string. ``stats`` defaults to ``analyse_run(run_dir, **stats_kwargs)``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("deploysim")
    except PackageNotFoundError:
        __version__ = "(unknown version)"
    run_dir = Path(run_dir)
    stats = stats or analyse_run(run_dir, seed=seed, **stats_kwargs)
    data = load_run(run_dir, stats_graders(stats))
    reference = stats.baseline or LOGGED
    headline = []
    for behaviour, b in stats.behaviours.items():
        comp = stats.comparison(behaviour, reference=reference)
        headline.append({"behaviour": behaviour, "grader": b.grader,
                         "rates": [_rate_cell(stats, behaviour, d) for d in stats.deployments], **_comp_cells(comp)})
    logged_rows = []
    if stats.baseline:
        for c in stats.comparisons:
            if c.reference == LOGGED:
                logged_rows.append({"behaviour": c.behaviour, "ref": pct(c.rate_reference),
                                    "sub": pct(c.rate_subject), **_comp_cells(c)})
    segments: dict[str, list[dict[str, Any]]] = {}
    for field, rows in stats.segments.items():
        segments[field] = [{
            "value": r.value, "n": r.n_points, "behaviour": r.behaviour,
            "ref": pct(r.rates[stats.baseline].rate) if stats.baseline in r.rates else "-",
            "sub": pct(r.rates[stats.candidate].rate) if stats.candidate in r.rates else "-",
            **_comp_cells(r.comparison)} for r in rows]
    if segment_field is None and stats.segments:
        segment_field = next(iter(stats.segments))
    picked = select_examples(data, stats.baseline, stats.candidate, examples_per_category, seed)
    examples = _example_payload(data, stats, picked, segment_field)
    payload = {
        "behaviours": list(stats.behaviours), "deployments": stats.deployments, "categories": list(CATEGORIES),
        "segment_field": segment_field,
        "segment_values": sorted({e["segment"] for e in examples if e["segment"] is not None}),
        "examples": examples,
    }
    deployments = [{"name": d.get("name", "?"), "model": d.get("model", "?")}
                   for d in data.config.get("deployments", []) if isinstance(d, dict)]
    if any(LOGGED == d for d in stats.deployments):
        deployments.append({"name": LOGGED, "model": "what production said"})
    env = Environment(autoescape=True)
    awareness_html = Markup("")
    if (run_dir / "awareness.json").is_file():  # written by `deploysim awareness --run RUN`
        from deploysim.evaluate.report.awareness import awareness_section

        # awareness_section escapes every value it renders (tested in tests/test_report.py)
        awareness_html = Markup(awareness_section(json.loads((run_dir / "awareness.json").read_text())))
    comps = [c for c in stats.comparisons if c.reference == reference] + [
        c for c in stats.comparisons if c.reference == LOGGED and reference != LOGGED]
    return env.from_string(TEMPLATE).render(
        title=run_dir.resolve().name, stats=stats, deployments=deployments, headline=headline,
        logged_rows=logged_rows, segments=segments, forest_svg=forest_svg(comps), data_json=safe_json(payload),
        css=Markup(CSS), js=Markup(JS), nonce=secrets.token_urlsafe(16), csp=csp, version=__version__,
        awareness_html=awareness_html,
    )


def stats_graders(stats: RunStats) -> dict[str, str]:
    return {b: s.grader for b, s in stats.behaviours.items()}


def write_report(run_dir: Path, out: Path | None = None, **kwargs: Any) -> Path:
    """Write ``RUN/report.html`` (or ``out``) and return its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    html = build_report(Path(run_dir), **kwargs)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
