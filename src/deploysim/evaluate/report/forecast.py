"""The forecast page: survival curve, fitted tail line and forecast points as inline SVG (no script, CSP)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from deploysim.evaluate.report.assets import CSS

WIDTH, HEIGHT, PAD = 460, 300, 48
COLOURS = ("#3056d3", "#b42318", "#067647", "#7a5af8")


def _svg(name: str, f: dict[str, Any], colour: str) -> str:
    empirical = f["plot"]["empirical"]
    points = f["plot"]["forecast"]
    xs = [x for x, _ in empirical] + [x for x, _ in points]
    ys = [y for _, y in empirical] + [y for _, y in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 - x0 < 1e-9 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    y0, y1 = y0 - 0.05 * max(y1 - y0, 1), y1 + 0.05 * max(y1 - y0, 1)

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (WIDTH - 2 * PAD)

    def sy(y: float) -> float:
        return HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD)

    parts = [f'<svg role="img" aria-label="{escape(name)} survival of psi" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}">']
    parts.append(f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>')
    parts.append(f'<line class="axis" x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}"/>')
    for i in range(5):  # x ticks labelled in p
        x = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle">'
                     f'{math.exp(-math.exp(-x)):.2g}</text>')  # psi -> p
    for decade in range(math.ceil(-y1 / math.log(10)), math.floor(-y0 / math.log(10)) + 1):
        y = -decade * math.log(10)
        parts.append(f'<line class="grid" x1="{PAD}" y1="{sy(y):.1f}" x2="{WIDTH - PAD}" y2="{sy(y):.1f}"/>')
        parts.append(f'<text x="{PAD - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">1e-{decade}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">elicitation probability p '
                 '(psi scale)</text>')
    parts.append(f'<text x="12" y="{PAD - 14}">share of queries above (log)</text>')
    slope, intercept = f["fit"]["slope"], f["fit"]["intercept"]
    lx0 = f["fit"]["psi_top"][-1]
    lx1 = max(x for x, _ in points) if points else lx0
    parts.append(f'<line stroke="{colour}" stroke-width="2" x1="{sx(lx0):.1f}" y1="{sy(slope * lx0 + intercept):.1f}" '
                 f'x2="{sx(lx1):.1f}" y2="{sy(slope * lx1 + intercept):.1f}"><title>fitted tail</title></line>')
    for x, y in empirical:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="#98a2b3"/>')
    for (x, y), row in zip(points, f["per_volume"], strict=True):
        title = escape(f"volume {row['volume']:,}: worst-query p {row['worst_query_p']:.3g}")
        parts.append(f'<rect x="{sx(x) - 4:.1f}" y="{sy(y) - 4:.1f}" width="8" height="8" fill="{colour}">'
                     f'<title>{title}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _table(f: dict[str, Any]) -> str:
    rows = []
    for r in f["per_volume"]:
        lo, hi = r["worst_query_p_interval"]
        clo, chi = r["expected_count_interval"]
        rows.append(f"<tr><td>{r['volume']:,}</td><td>{_fmt(r['worst_query_p'])} <span class=\"ci\">[{_fmt(lo)}, "
                    f"{_fmt(hi)}]</span></td><td>{_fmt(r['expected_count'])} <span class=\"ci\">[{_fmt(clo)}, "
                    f"{_fmt(chi)}]</span></td></tr>")
    return ("<table><thead><tr><th>volume</th><th>worst-query p</th><th>expected count</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _validation(v: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{r['volume']:,}</td><td>{_fmt(r['forecast_worst_query_p_median'])}</td>"
        f"<td>{_fmt(r['observed_worst_query_p'])}</td><td>{r['error_orders_of_magnitude_median']:+.2f}</td>"
        f"<td>{100 * r['within_one_order']:.0f}%</td></tr>" for r in v["per_volume"])
    return (f"<h3>Validation: fitted on {v['subset_points']} of {v['points']} points, {v['repeats']} subsets</h3>"
            "<table><thead><tr><th>volume</th><th>forecast (median)</th><th>observed</th>"
            "<th>error (orders of magnitude)</th><th>within 1 order</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def forecast_html(result: dict[str, Any]) -> str:
    """The whole page for one ``forecast.json``."""
    columns = []
    for i, (name, f) in enumerate(result["forecast"].items()):
        d = f["diagnostics"]
        slopes = ", ".join(f"k={k}: {_fmt(s)}" for k, s in d["slope_by_top_k"].items())
        notes = (f"<p class=\"ci\">fit on the top {f['fit']['top_k']} of {f['fit']['n']} points: slope "
                 f"{_fmt(f['fit']['slope'])}, R² {_fmt(f['fit']['r2'])}; slope by k: {escape(slopes)}; "
                 f"observed max p {_fmt(f['observed_max_p'])}, mean p {_fmt(f['observed_mean_p'])}; "
                 f"{f['bootstrap_replicates']} bootstrap replicates ({f['bootstrap_failed']} failed)</p>")
        warns = "".join(f"<li>{escape(w)}</li>" for w in d.get("warnings", []))
        if warns:
            notes += f"<ul class=\"notes\">{warns}</ul>"
        validation = result.get("validation", {}).get(name)
        columns.append(f"<div class=\"col\"><h4>{escape(name)}</h4>{_svg(name, f, COLOURS[i % len(COLOURS)])}"
                       f"{_table(f)}{notes}{_validation(validation) if validation else ''}</div>")
    method = result["elicitation"]
    how = ("P(reply begins with " + " | ".join(repr(t) for t in method["targets"]) + ")"
           if method["method"] == "target" else "flagged / K of K graded samples per point")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>deploysim forecast: {escape(result['behaviour'])}</title><style>{CSS}</style></head>
<body><header><h1>Forecast: {escape(result['behaviour'])}</h1>
<div class="sub">{escape(result['run'])} · p per point: {escape(how)} · Gumbel tail on the top {result['top_k']}
· {100 * result['confidence']:.0f}% bootstrap intervals over queries</div></header>
<main><section><h2>Survival of psi = -log(-log p), fitted tail and forecasts</h2>
<p class="ci">Grey: the run's points (share of queries with a larger p, log scale). Line: the fitted tail.
Squares: the worst-query p at each volume (where the line reaches 1/volume). Expected count = volume × E[p].</p>
<div class="cols" style="--ncols:{max(1, len(columns))}">{''.join(columns)}</div></section></main>
<footer>deploysim forecast · method: Jones et al. 2025, arXiv 2502.16797</footer></body></html>
"""
