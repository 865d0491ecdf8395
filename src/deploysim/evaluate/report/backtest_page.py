"""The backtest page: predicted against actual, the direction table, the baselines side by side.

One self-contained file, Jinja2 autoescaping, a Content-Security-Policy that allows no script.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from deploysim.evaluate.stats.format import pct

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'")
METHODS = (("deploysim", "deploysim (replay)"), ("previous", "previous release"), ("suite", "hard-prompt suite"))

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>deploysim backtest</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;padding:0 16px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px} table{border-collapse:collapse;margin:8px 0}
td,th{border-bottom:1px solid #dde2ea;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f3f5f8} td:nth-child(-n+2),th:nth-child(-n+2){text-align:left} td:first-child{white-space:nowrap}
.right{color:#17803d;font-weight:600} .wrong{color:#b42318;font-weight:600} .muted{color:#6b7280}
svg text{font:11px system-ui,sans-serif;fill:#374151}
</style></head><body>
<h1>deploysim backtest</h1>
<p class="muted">History <code>{{ r.history }}</code> &middot; pairs {{ r.pairs|join(", ") }} &middot;
direction judged where production moved by at least {{ r.min_change }}x &middot; smoothing {{ r.smoothing }}
&middot; {{ (r.confidence * 100)|round|int }}% intervals</p>

<h2 id="baselines">Methods side by side</h2>
<table id="methods"><thead><tr><th>method</th><th>direction right</th><th>interval</th>
<th>median multiplicative error</th><th>interval</th><th>within 2x</th><th>within 10x</th><th>cells</th></tr></thead>
<tbody>{% for m in methods %}<tr data-method="{{ m.key }}"><td>{{ m.label }}</td>
<td>{{ m.direction }}</td><td>{{ m.direction_ci }}</td><td>{{ m.median }}</td><td>{{ m.median_ci }}</td>
<td>{{ m.within2 }}</td><td>{{ m.within10 }}</td><td>{{ m.cells }}</td></tr>{% endfor %}</tbody></table>

<h2 id="scatter-title">Predicted against actual (log-log)</h2>
<p class="muted">One point per (pair, behaviour), smoothed rates. The line is y = x; the band is within 1.5x.
Filled points moved by at least {{ r.min_change }}x in production.</p>
{{ scatter }}

<h2>Direction</h2>
<table id="direction"><thead><tr><th>pair</th><th>behaviour</th><th>previous</th><th>actual</th>
<th>actual change</th><th>predicted</th><th>predicted change</th><th>deploysim</th>
{% if has_suite %}<th>suite change</th><th>suite</th>{% endif %}</tr></thead><tbody>
{% for c in direction %}<tr><td>{{ c.pair }}</td><td>{{ c.behaviour }}</td><td>{{ c.previous }}</td>
<td>{{ c.actual }}</td><td>{{ c.actual_change }}</td><td>{{ c.predicted }}</td><td>{{ c.predicted_change }}</td>
<td class="{{ c.verdict }}">{{ c.verdict }}</td>
{% if has_suite %}<td>{{ c.suite_change }}</td><td class="{{ c.suite_verdict }}">{{ c.suite_verdict }}</td>{% endif %}
</tr>{% else %}<tr><td colspan="9" class="muted">no behaviour moved by {{ r.min_change }}x or more</td></tr>
{% endfor %}</tbody></table>

<h2>Every cell</h2>
<table id="cells"><thead><tr><th>pair</th><th>behaviour</th><th>grader</th><th>previous</th><th>actual</th>
<th>predicted</th><th>error</th></tr></thead><tbody>
{% for c in cells %}<tr><td>{{ c.pair }}</td><td>{{ c.behaviour }}</td><td>{{ c.grader }}</td><td>{{ c.previous }}</td>
<td>{{ c.actual }}</td><td>{{ c.predicted }}</td><td>{{ c.error }}</td></tr>{% endfor %}</tbody></table>
</body></html>
"""


def _rate(r: dict[str, Any]) -> str:
    return f"{pct(r['rate'])} [{pct(r['low'])}, {pct(r['high'])}] ({r['flagged']:g}/{r['n']})"


def _x(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def scatter_svg(cells: list[dict[str, Any]], size: int = 520) -> Markup:
    """Log-log scatter of smoothed predicted vs actual rates with y = x and a 1.5x band."""
    pad = 48
    points = [(c["actual"]["smoothed"], c["predicted"]["smoothed"], c) for c in cells]
    values = [v for p in points for v in p[:2]] or [1e-3, 1.0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    span = math.log10(hi) - math.log10(lo)

    def pos(v: float) -> float:
        return pad + (math.log10(v) - math.log10(lo)) / span * (size - 2 * pad)

    def ypos(v: float) -> float:
        return size - pos(v)

    parts = [f'<svg id="scatter" role="img" aria-labelledby="scatter-title" width="{size}" height="{size}" '
             f'viewBox="0 0 {size} {size}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="#fafbfc" '
             'stroke="#cbd2dc"/>']
    band = [(lo, lo * 1.5), (hi / 1.5, hi), (hi, hi / 1.5), (lo * 1.5, lo)]
    parts.append('<polygon class="band" fill="#dbeafe" opacity="0.7" points="'
                 + " ".join(f"{pos(x):.1f},{ypos(y):.1f}" for x, y in band) + '"/>')
    parts.append(f'<line class="identity" x1="{pos(lo):.1f}" y1="{ypos(lo):.1f}" x2="{pos(hi):.1f}" '
                 f'y2="{ypos(hi):.1f}" stroke="#1d4ed8" stroke-width="1.5"/>')
    decade = lo
    while decade <= hi * 1.0001:
        parts.append(f'<text x="{pos(decade):.1f}" y="{size - pad + 16}" text-anchor="middle">{decade:g}</text>')
        parts.append(f'<text x="{pad - 6}" y="{ypos(decade) + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    parts.append(f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">actual rate (production)</text>')
    parts.append(f'<text x="14" y="{size / 2}" text-anchor="middle" transform="rotate(-90 14 {size / 2})">'
                 'predicted rate</text>')
    for actual, predicted, c in points:
        fill = "#b45309" if c["direction_cell"] else "none"
        title = (f"{c['pair']} {c['behaviour']}: predicted {predicted:.4g}, actual {actual:.4g}, "
                 f"error {c['multiplicative_error']:.2f}x")
        parts.append(f'<circle class="cell" cx="{pos(actual):.1f}" cy="{ypos(predicted):.1f}" r="4.5" fill="{fill}" '
                     f'stroke="#b45309" stroke-width="1.5"><title>{Markup.escape(title)}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _verdict(score: dict[str, Any] | None) -> str:
    if score is None or score.get("direction_right") is None:
        return "-"
    return "right" if score["direction_right"] else "wrong"


def build_backtest_page(result: dict[str, Any]) -> str:
    methods = []
    for key, label in METHODS:
        m = result["metrics"] if key == "deploysim" else result["baselines"].get(key)
        if m is None:
            continue
        d_low, d_high = m["direction_accuracy_interval"]
        e_low, e_high = m["median_multiplicative_error_interval"]
        methods.append({
            "key": key, "label": label,
            "direction": "-" if m["direction_accuracy"] is None else
            f"{m['direction_accuracy']:.0%} ({m['direction_right']}/{m['direction_cells']})",
            "direction_ci": "-" if d_low is None else f"[{d_low:.0%}, {d_high:.0%}]",
            "median": _x(m["median_multiplicative_error"]),
            "median_ci": "-" if e_low is None else f"[{e_low:.2f}x, {e_high:.2f}x]",
            "within2": _share(m["within_2x"]), "within10": _share(m["within_10x"]), "cells": m["cells"],
        })
    cells = result["cells"]
    direction = [{
        "pair": c["pair"], "behaviour": c["behaviour"], "previous": _rate(c["previous"]),
        "actual": _rate(c["actual"]), "actual_change": _x(c["actual_change"]), "predicted": _rate(c["predicted"]),
        "predicted_change": _x(c["scores"]["deploysim"]["predicted_change"]),
        "verdict": _verdict(c["scores"]["deploysim"]),
        "suite_change": _x(c["scores"]["suite"]["predicted_change"]) if "suite" in c["scores"] else "-",
        "suite_verdict": _verdict(c["scores"].get("suite")),
    } for c in cells if c["direction_cell"]]
    rows = [{"pair": c["pair"], "behaviour": c["behaviour"], "grader": c["grader"], "previous": _rate(c["previous"]),
             "actual": _rate(c["actual"]), "predicted": _rate(c["predicted"]), "error": _x(c["multiplicative_error"])}
            for c in cells]
    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(r=result, csp=CSP, methods=methods, scatter=scatter_svg(cells),
                                            direction=direction, cells=rows,
                                            has_suite="suite" in result["baselines"])


def write_backtest_page(result: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    out.write_text(build_backtest_page(result))
    return out
