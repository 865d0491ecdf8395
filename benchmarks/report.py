"""Size and open time of the HTML report for a 10k-point run.

    python benchmarks/report.py [--points 10000] [--keep DIR]

Builds a run from the bundled real conversations (synthetic verdicts, 5 behaviours,
3 points per conversation), times the statistics and the report, and opens the
report in headless Chromium. Open times are printed next to a reference measured in
the same browser in the same run (a minimal HTML page), so ratios survive a slower
or busier machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.browser import Browser, find_chromium
from deploysim.evaluate.report.html import build_report
from deploysim.evaluate.stats.analysis import analyse_run
from tests.synthetic import build_run

BEHAVIOURS = {"over_refusal": (0.08, 0.12), "sycophancy": (0.05, 0.04), "pii_leakage": (0.0, 0.001),
              "fabrication": (0.1, 0.1), "verbosity": (0.2, 0.3)}


def _open(browser: Browser, url: str) -> float:
    start = time.perf_counter()
    browser.open(url)
    browser.evaluate("new Promise(r => { const f = () => document.readyState === 'complete' ? r() : "
                     "setTimeout(f, 5); f(); })")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="keep the run and report here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="deploysim-bench-"))
    run = root / "run"
    t0 = time.perf_counter()
    build_run(run, BEHAVIOURS, n_points=args.points, points_per_conversation=3, seed=0)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = analyse_run(run)
    t_stats = time.perf_counter() - t0
    t0 = time.perf_counter()
    html = build_report(run, stats=stats)
    t_report = time.perf_counter() - t0
    report = root / "report.html"
    report.write_text(html, encoding="utf-8")
    minimal = root / "minimal.html"
    minimal.write_text("<!doctype html><title>m</title><p>minimal page</p>")
    size = report.stat().st_size
    print(f"points {args.points}, behaviours {len(BEHAVIOURS)}, conversations {stats.n_clusters}")
    print(f"build run (synthetic, not the product): {t_build:.2f} s")
    print(f"stats: {t_stats:.2f} s; report html: {t_report:.2f} s; size {size / 1e6:.2f} MB "
          f"({size / args.points:.0f} bytes/point)")
    if find_chromium() is None:
        print("chromium not installed: open time not measured")
        return
    with Browser() as browser:
        _open(browser, minimal.as_uri())  # warm up
        ref = min(_open(browser, minimal.as_uri()) for _ in range(5))
        opens = [_open(browser, report.as_uri()) for _ in range(3)]
        ready = browser.evaluate("document.documentElement.getAttribute('data-report-ready')")
        errors = browser.errors()
    best = min(opens)
    print(f"open minimal page: {ref * 1000:.0f} ms (reference, best of 5)")
    print(f"open report: {best * 1000:.0f} ms best of 3 (median {sorted(opens)[1] * 1000:.0f} ms) = "
          f"{best / ref:.1f}x the minimal page; ready={ready}; console errors {len(errors)}")


if __name__ == "__main__":
    main()
