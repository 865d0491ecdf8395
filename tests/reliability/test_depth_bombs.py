"""Issue 15 point 2: nesting bombs (a 208 KB file once took 23 GB) are located rejects under a memory limit.

Each bomb is read in a child process whose address space is capped at half a GiB over what it maps
after its imports (``resource.setrlimit``); the good records around the bomb must still come through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def chat(i: int) -> dict[str, object]:
    return {"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}]}


BOMB_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from deploysim.pipeline.sources import iter_inputs
    from deploysim.core.schema import Record
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) for l in f if l.startswith("VmSize")) * 1024
    limit = vm + 512 * 1024 * 1024  # half a GiB over what is mapped after imports
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out = {}
    for name in sys.argv[1:]:
        items = list(iter_inputs([Path(name)]))
        out[name] = ([i.id for i in items if isinstance(i, Record)],
                     [(i.line, i.reason) for i in items if not isinstance(i, Record)],
                     resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    print(json.dumps({"files": out, "baseline_mb": baseline,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
""")


def write_bomb(directory: Path, container: str, depth: int) -> tuple[Path, list[str], int]:
    """A file with a nesting bomb between good records: (path, the good ids, the bomb's location)."""
    bomb = "[" * depth + "]" * depth
    good = json.dumps(chat(1))
    if container == "json":
        path = directory / f"bomb-{depth}.json"
        path.write_text(f"[{good}, {{\"id\": \"x\", \"messages\": {bomb}}}, {json.dumps(chat(2))}]")
        return path, ["c1", "c2"], 2
    if container == "jsonl":
        path = directory / f"bomb-{depth}.jsonl"
        path.write_text(f"{good}\n{{\"id\": \"x\", \"messages\": {bomb}}}\n{json.dumps(chat(2))}\n")
        return path, ["c1", "c2"], 2
    span = {"traceId": "t", "spanId": "s1", "name": "chat", "attributes": [
        {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(chat(1)["messages"])}}]}
    path = directory / f"bomb-{depth}-otlp.json"
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": ['
                    f'{{"spanId": "s0", "attributes": {bomb}}}, {json.dumps(span)}]}}]}}]}}')
    return path, ["t:s1"], 1


def test_nesting_bombs_are_located_rejects_under_a_memory_limit(tmp_path: Path) -> None:
    cases = [write_bomb(tmp_path, container, depth) for container in ("json", "jsonl", "otlp")
             for depth in (20_000, 100_000)]
    proc = subprocess.run([sys.executable, "-c", BOMB_CHILD, *(str(c[0]) for c in cases)], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    for path, good, bad_at in cases:
        good_ids, bad, _ = result["files"][str(path)]
        assert good_ids == good, path.name
        assert [line for line, _ in bad] == [bad_at], path.name
        assert "nested deeper than 100 levels" in bad[0][1], path.name
    print(f"peak RSS of the child: {result['peak_mb']} MB ({result['baseline_mb']} MB after its imports)")
    # reading a bomb costs a counter, not a stack: the peak stays where the imports left it
    assert result["peak_mb"] - result["baseline_mb"] < 50, result
