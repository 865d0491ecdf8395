"""Markdown rows from `deploysim realism --json` reports: python benchmarks/realism_table.py ARM=REPORT.json ...

One row per arm: trajectories, calls answered (by source), C2ST accuracy with its
trajectory-clustered interval overall and on the simulator-answered calls only, the
positive and negative controls, and the pairwise judge when the report has one.
"""

from __future__ import annotations

import json
import sys


def _ci(r: dict | None) -> str:
    if not r or r.get("accuracy") is None:
        return "–"
    return f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _control(r: dict, good: str, bad: str) -> str:
    if r.get("ok") is None:
        return r.get("status", "not run")
    return f"{_ci(r)} {good if r['ok'] else bad}"


def row(arm: str, report: dict) -> str:
    c = report["c2st"]
    sources = ", ".join(f"{k} {v}" for k, v in report["by_source"].items())
    judge = report.get("judge")
    judge_cell = "not run"
    if judge:
        win = judge["simulator_win_rate"]
        judge_cell = (f"{_ci(judge)}, win {'–' if win is None else f'{win:.3f}'}, n {judge['n']}; positive "
                      f"{_control(judge['positive_control'], 'caught', 'NOT caught')}; negative "
                      f"{_control(judge['negative_control'], 'chance', 'NOT chance')}")
    return (f"| {arm} | {report['trajectories']} | {report['answered']}/{report['calls']} ({sources}) | "
            f"**{_ci(c)}** | {_ci(c.get('simulator_only'))} | "
            f"{_control(c['positive_control'], 'caught', 'NOT caught')} | "
            f"{_control(c['negative_control'], 'chance', 'NOT chance')} | {judge_cell} |")


if __name__ == "__main__":
    print("| affordances | trajectories | answered / calls (by source) | C2ST accuracy [95% CI] | simulator-answered "
          "only | positive control | negative control | pairwise judge (SmolLM2) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in sys.argv[1:]:
        arm, _, path = spec.partition("=")
        with open(path) as handle:
            print(row(arm, json.load(handle)))
