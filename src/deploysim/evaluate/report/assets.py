"""The report's page template, CSS and JS, inline (no CDN: the report must work offline).

Data reaches the page through Jinja2 autoescaping or as JSON in a script block; the JS only sets ``textContent``.
"""

CSS = r"""
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#f7f8fb; --card:#fff; --up:#b42318; --down:#067647;
        --flat:#5b6475; --accent:#3056d3; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#141a26; color:#fff; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:20px; }
header .sub { color:#c4cad6; font-size:13px; }
main { padding:12px 28px 40px; max-width:1500px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 18px; margin:16px 0; }
h2 { font-size:16px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
td.num { white-space:nowrap; }
#headline-table .ci, #logged-table .ci { display:block; }
.scroll { overflow-x:auto; }
.ci { color:var(--muted); font-size:12px; }
.corr { color:var(--muted); font-size:12px; display:block; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:#fff; }
.badge.up { background:var(--up); } .badge.down { background:var(--down); } .badge.flat { background:#98a2b3; }
.notes li { color:var(--muted); }
.kv { display:flex; flex-wrap:wrap; gap:6px 22px; font-size:13px; }
.kv span b { color:var(--muted); font-weight:500; margin-right:4px; }
svg text { font:12px system-ui,sans-serif; fill:var(--fg); }
svg .axis { stroke:#98a2b3; } svg .ref { stroke:#b42318; stroke-dasharray:4 3; }
svg .grid { stroke:#eef1f5; }
.controls { display:flex; flex-wrap:wrap; gap:10px; align-items:center; margin-bottom:10px; }
.controls label { font-size:12px; color:var(--muted); }
select, input[type=search] { font:inherit; padding:4px 6px; border:1px solid var(--line); border-radius:6px; }
.example { border:1px solid var(--line); border-radius:8px; margin:12px 0; overflow:hidden; }
.example .head { background:#f1f3f8; padding:6px 10px; font-size:12px; color:var(--muted); display:flex; gap:14px; }
.cols { display:grid; grid-template-columns: repeat(var(--ncols), minmax(0,1fr)); }
.col { padding:8px 10px; border-left:1px solid var(--line); min-width:0; }
.col:first-child { border-left:none; }
.col h4 { margin:0 0 6px; font-size:12px; text-transform:uppercase; color:var(--muted); }
.msg { white-space:pre-wrap; overflow-wrap:anywhere; font-size:13px; max-height:320px; overflow:auto;
       background:#fafbfd; border-radius:6px; padding:6px 8px; margin:0 0 6px; }
.role { font-size:11px; color:var(--muted); text-transform:uppercase; }
.verdict { font-size:12px; margin-top:4px; }
.flag { color:var(--up); font-weight:600; } .noflag { color:var(--down); font-weight:600; }
.why { color:var(--muted); white-space:pre-wrap; overflow-wrap:anywhere; }
#count { color:var(--muted); font-size:12px; }
footer { color:var(--muted); font-size:12px; padding:0 28px 30px; }
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var el = function (tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  };
  var behaviourSel = document.getElementById("f-behaviour");
  var categorySel = document.getElementById("f-category");
  var segmentSel = document.getElementById("f-segment");
  var search = document.getElementById("f-search");
  var list = document.getElementById("examples");
  var count = document.getElementById("count");
  data.behaviours.forEach(function (b) { behaviourSel.appendChild(new Option(b, b)); });
  data.categories.forEach(function (c) { categorySel.appendChild(new Option(c, c)); });
  data.segment_values.forEach(function (v) { segmentSel.appendChild(new Option(data.segment_field + " = " + v, v)); });
  if (!data.segment_field) { segmentSel.parentNode.style.display = "none"; }

  function matches(ex) {
    if (behaviourSel.value && ex.behaviour !== behaviourSel.value) { return false; }
    if (categorySel.value && ex.category !== categorySel.value) { return false; }
    if (segmentSel.value && ex.segment !== segmentSel.value) { return false; }
    var q = search.value.trim().toLowerCase();
    if (q) {
      var hay = ex.prefix.map(function (m) { return m.text; }).join("\n");
      Object.keys(ex.replies).forEach(function (d) {
        hay += "\n" + ex.replies[d].text + "\n" + ex.replies[d].rationale;
      });
      if (hay.toLowerCase().indexOf(q) < 0) { return false; }
    }
    return true;
  }

  function reply(dep, r) {
    var col = el("div", "col");
    col.appendChild(el("h4", null, dep));
    col.appendChild(el("div", "msg", r.text === null ? "(no reply: " + (r.error || "error") + ")" : r.text));
    var v = el("div", "verdict");
    if (r.flagged === true) { v.appendChild(el("span", "flag", "flagged")); }
    else if (r.flagged === false) { v.appendChild(el("span", "noflag", "not flagged")); }
    else { v.appendChild(el("span", null, "no verdict")); }
    if (r.rationale) { v.appendChild(el("div", "why", r.rationale)); }
    col.appendChild(v);
    return col;
  }

  function card(ex) {
    var box = el("article", "example");
    var head = el("div", "head");
    head.appendChild(el("span", null, ex.behaviour));
    head.appendChild(el("span", null, ex.category));
    head.appendChild(el("span", null, "point " + ex.point_id));
    head.appendChild(el("span", null, "conversation " + ex.conversation));
    if (ex.segment !== null) { head.appendChild(el("span", null, data.segment_field + ": " + ex.segment)); }
    box.appendChild(head);
    var cols = el("div", "cols");
    cols.style.setProperty("--ncols", String(1 + data.deployments.length));
    var prefix = el("div", "col");
    var omitted = ex.prefix_omitted ? " (last " + ex.prefix.length + " messages)" : "";
    prefix.appendChild(el("h4", null, "prefix" + omitted));
    ex.prefix.forEach(function (m) {
      prefix.appendChild(el("div", "role", m.role));
      prefix.appendChild(el("div", "msg", m.text));
    });
    cols.appendChild(prefix);
    data.deployments.forEach(function (d) {
      cols.appendChild(ex.replies[d] ? reply(d, ex.replies[d]) : el("div", "col", d + ": -"));
    });
    box.appendChild(cols);
    return box;
  }

  var PAGE = location.hash === "#all" ? Infinity : 25;
  function render() {
    var shown = data.examples.filter(matches);
    list.replaceChildren();
    shown.slice(0, PAGE).forEach(function (ex) { list.appendChild(card(ex)); });
    var more = shown.length > PAGE ? ", first " + PAGE + " shown (add #all to the URL for all)" : "";
    count.textContent = shown.length + " example(s)" + more;
  }
  [behaviourSel, categorySel, segmentSel].forEach(function (s) { s.addEventListener("change", render); });
  search.addEventListener("input", render);
  render();
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{% if csp %}<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline';
 script-src 'nonce-{{ nonce }}'; img-src data:; base-uri 'none'; form-action 'none'">{% endif %}
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>deploysim report: {{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header>
  <h1>deploysim: what changes if we ship {{ stats.candidate or "the candidate" }}?</h1>
  <div class="sub">{{ title }} · {{ stats.n_points }} replay points from {{ stats.n_clusters }} conversations
  · {{ "%.0f" % (100 * stats.confidence) }}% intervals · {{ stats.multiple_testing }}-adjusted across behaviours</div>
</header>
<main>
<section id="run">
  <h2>Run</h2>
  <div class="kv">
  {% for d in deployments %}<span><b>{{ d.name }}</b>{{ d.model }}</span>{% endfor %}
  <span><b>weighted</b>{{ "yes" if stats.weighted else "no" }}</span>
  <span><b>clustered by</b>conversation</span>
  </div>
  {% if stats.notes %}<ul class="notes">{% for n in stats.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</section>

<section id="headline">
  <h2>Headline: {{ stats.candidate }} vs {{ stats.baseline or "logged" }}</h2>
  <div class="scroll"><table id="headline-table">
    <thead><tr><th>behaviour</th>{% for d in stats.deployments %}<th>{{ d }}</th>{% endfor %}
      <th>ratio</th><th>change</th><th>p (adj.)</th><th>direction</th></tr></thead>
    <tbody>
    {% for row in headline %}
    <tr>
      <td><b>{{ row.behaviour }}</b><span class="corr">grader {{ row.grader }}</span></td>
      {% for cell in row.rates %}
      <td class="num">{{ cell.rate }} <span class="ci">{{ cell.ci }}</span>
        {% if cell.zero %}<span class="corr">≤ {{ cell.upper }} (one-sided);
          detectable ≥ {{ cell.detectable }}</span>{% endif %}
        {% if cell.corrected %}<span class="corr">corrected {{ cell.corrected }}</span>{% endif %}
        {% if cell.calibrated %}<span class="corr calibrated">calibrated {{ cell.calibrated }}</span>{% endif %}
        {% if cell.floor %}<span class="corr floor">floor {{ cell.floor }}</span>{% endif %}</td>
      {% endfor %}
      <td class="num">{{ row.ratio }} <span class="ci">{{ row.ratio_ci }}</span></td>
      <td class="num">{{ row.diff }} <span class="ci">{{ row.diff_ci }}</span></td>
      <td class="num">{{ row.p }}<span class="corr">{{ row.p_method }}</span></td>
      <td><span class="badge {{ row.badge }}">{{ row.direction }}</span></td>
    </tr>
    {% endfor %}
    </tbody>
  </table></div>
  {% if logged_rows %}
  <h3>{{ stats.candidate }} vs logged (what production said)</h3>
  <table id="logged-table">
    <thead><tr><th>behaviour</th><th>logged</th><th>{{ stats.candidate }}</th><th>ratio</th><th>change</th>
      <th>p (adj.)</th><th>direction</th></tr></thead>
    <tbody>{% for row in logged_rows %}<tr><td>{{ row.behaviour }}</td><td class="num">{{ row.ref }}</td>
      <td class="num">{{ row.sub }}</td><td class="num">{{ row.ratio }} <span class="ci">{{ row.ratio_ci }}</span></td>
      <td class="num">{{ row.diff }} <span class="ci">{{ row.diff_ci }}</span></td><td class="num">{{ row.p }}</td>
      <td><span class="badge {{ row.badge }}">{{ row.direction }}</span></td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
</section>

<section id="forest">
  <h2>Rate ratios ({{ stats.candidate }} / reference, log scale)</h2>
  {{ forest_svg }}
</section>

<section id="segments">
  <h2>Segments</h2>
  {% if not segments %}<p class="ci">No metadata field with 2 to 50 distinct values.</p>{% endif %}
  {% for field, rows in segments.items() %}
  <h3>by {{ field }}</h3>
  <table class="segment-table">
    <thead><tr><th>{{ field }}</th><th>points</th><th>behaviour</th><th>{{ stats.baseline }}</th>
      <th>{{ stats.candidate }}</th><th>change</th><th>direction</th></tr></thead>
    <tbody>{% for r in rows %}<tr><td>{{ r.value }}</td><td class="num">{{ r.n }}</td><td>{{ r.behaviour }}</td>
      <td class="num">{{ r.ref }}</td><td class="num">{{ r.sub }}</td>
      <td class="num">{{ r.diff }} <span class="ci">{{ r.diff_ci }}</span></td>
      <td><span class="badge {{ r.badge }}">{{ r.direction }}</span></td></tr>{% endfor %}</tbody>
  </table>
  {% endfor %}
</section>

<section id="drilldown">
  <h2>Examples</h2>
  <div class="controls">
    <label>behaviour <select id="f-behaviour"><option value="">all</option></select></label>
    <label>which <select id="f-category"><option value="">all</option></select></label>
    <label>segment <select id="f-segment"><option value="">all</option></select></label>
    <label>search <input id="f-search" type="search" placeholder="text in prompt, replies, rationales"></label>
    <span id="count"></span>
  </div>
  <div id="examples"></div>
</section>
{{ awareness_html }}
</main>
<footer>Generated by deploysim {{ version }}. Intervals: Wilson at the effective sample size (weights, conversation
clusters); paired changes: cluster bootstrap; tests: exact McNemar (plain samples) or cluster-robust z.</footer>
<script type="application/json" id="report-data">{{ data_json }}</script>
<script nonce="{{ nonce }}">{{ js }}</script>
</body>
</html>
"""
