"""SIGKILL at 20 random moments, then resume: the same outputs as a run never interrupted (rule 4).

And Ctrl-C in the first second of a run: exit 130, one line, no traceback. Both drive
``deploysim`` as its own process (signals), on the instant fake model (the harness is
what is measured here), without the call cache, so only the journal can make a
resumed run whole.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability import run_helpers as h

KILLS = 20


def _args(data: Path) -> list[str]:
    return ["--data", str(data), "--candidate", "instant/cand", "--baseline", "instant/base", "--no-cache",
            "--privacy", "off", "--no-presidio", "--quiet", "--concurrency", "8", "--no-grade"]


def _journal_rows(run: Path) -> int:
    journal = run / "journal" / "generations.jsonl"
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def _kill_when(victim: subprocess.Popen[bytes], run: Path, rows: int | None, delay: float) -> None:
    """SIGKILL once the journal holds ``rows`` lines (None: at once), ``delay`` seconds after that."""
    deadline = time.monotonic() + 120
    while rows is not None and _journal_rows(run) < rows and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)


@pytest.mark.slow
def test_sigkill_at_20_random_moments_then_resume_gives_identical_outputs(tmp_path: Path) -> None:
    """Kill moments spread over the whole run: start-up, every stretch of the journal, the final writes."""
    data = h.many_chats(tmp_path / "chats.jsonl", 60)  # 960 records: 960 logged rows + 1,920 calls
    reference = tmp_path / "reference"
    done = h.deploysim_process("run", *_args(data), "--out", str(reference))
    assert done.wait(timeout=600) == 0, done.communicate()[1].decode()
    total = _journal_rows(reference)

    rng = random.Random(15)
    moments: list[tuple[int | None, float]] = [(None, rng.uniform(0.05, 1.5)) for _ in range(3)]  # start-up
    moments += [(int(f * total), rng.uniform(0, 0.02)) for f in sorted(rng.uniform(0, 1) for _ in range(14))]
    moments += [(total, rng.uniform(0, 0.5)) for _ in range(KILLS - len(moments))]  # Parquet and summary writes
    run = tmp_path / "killed"
    killed = 0
    for rows, delay in moments:
        args = ["--resume", str(run)] if (run / "config.yaml").exists() else [*_args(data), "--out", str(run)]
        victim = h.deploysim_process("run", *args)
        _kill_when(victim, run, rows, delay)
        code = victim.wait(timeout=60)
        assert code in (-signal.SIGKILL, 0), victim.communicate()[1].decode()
        killed += code == -signal.SIGKILL
        keys = h.journal_keys(run)
        assert len(keys) == len(set(keys)), "a journaled call was sent and journaled again"
    assert killed >= 15, killed  # the kills landed while the run was working, not after it finished
    finish = h.deploysim_process("run", "--resume", str(run), "--quiet")
    assert finish.wait(timeout=600) == 0, finish.communicate()[1].decode()
    assert h.outputs(run) == h.outputs(reference)


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.0, 0.1, 0.25, 0.5, 0.8])
def test_ctrl_c_in_the_first_second_exits_130_without_a_traceback(tmp_path: Path, after_s: float) -> None:
    """SIGINT at moments of deploysim's first second, counted from when its own code starts running.

    Python's own start-up (site, .pth files) comes before any deploysim code and is not
    deploysim's to handle; ``-X importtime`` tells the test when the CLI's imports begin.
    """
    run = tmp_path / "run"
    data = h.many_chats(tmp_path / "chats.jsonl", 600)  # 9,600 records: the run outlasts the last moment
    victim = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "deploysim.cli.main", "run",
                               *_args(data), "--out", str(run)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert victim.stderr is not None
    lines: list[bytes] = []
    for line in victim.stderr:  # import-time lines arrive as each import finishes
        lines.append(line)
        if b"deploysim.cli._common" in line:  # imported by deploysim.cli.main: the CLI has started
            break
    time.sleep(after_s)
    victim.send_signal(signal.SIGINT)
    stdout, stderr = victim.communicate(timeout=60)
    text = "\n".join(line for line in (stdout + b"".join(lines) + stderr).decode().splitlines()
                     if not line.startswith("import time:"))
    assert victim.returncode == 130, text
    assert "Traceback" not in text, text
    assert "interrupted" in text
    if (run / "config.yaml").exists():
        assert f"deploysim run --resume {run}" in text
    else:
        assert "nothing was sent" in text
