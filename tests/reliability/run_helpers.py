"""Instruments for the run-side reliability tests: small disks, read-only folders, counted calls.

``small_disk`` mounts a real tmpfs of a given size (we are root on the test machines);
``read_only`` makes a folder read-only with a read-only bind mount (root ignores
permission bits), or with chmod when not root. ``CountingModel`` is the instant
fake model (harness measurements only) that counts the calls it was sent and can
answer with long replies, so a small disk fills after a known number of calls.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from deploysim.core.models import ModelOutput, model_provider
from deploysim.core.models.instant import InstantFakeModel
from deploysim.core.schema import GenerationParams, Message

SHORT_CHATS = Path(__file__).parent.parent / "fixtures" / "sources" / "short_chats.jsonl"

#: calls sent per model name, since the last ``reset``
SENT: dict[str, int] = {}


class CountingModel(InstantFakeModel):
    """FAKE (instant) model: counts calls; ``counting/big`` pads replies to 48 KiB."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model_id = f"counting/{name}"
        self.name = name

    def cache_identity(self) -> dict[str, Any]:
        return {"provider": "counting", "model": self.model_id, "base_url": None}

    async def generate(self, messages: list[Message], params: GenerationParams,
                       tools: list[dict[str, Any]]) -> ModelOutput:
        SENT[self.name] = SENT.get(self.name, 0) + 1
        output = await super().generate(messages, params, tools)
        if self.name == "big":
            output.text = (output.text or "") + " pad" * (48 * 1024 // 4)
        return output


@model_provider("counting", "FAKE instant model that counts its calls (tests only)")
def _counting(name: str) -> CountingModel:
    return CountingModel(name)


def cli(*args: str) -> Result:
    """``deploysim ARGS`` in this process (so CountingModel's counts are visible)."""
    from deploysim.cli.main import main

    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_clean_failure(result: Result, code: int = 2) -> str:
    """Exit ``code``, an ``error:`` line, no traceback; returns the output."""
    output = result.output
    assert result.exit_code == code, (result.exit_code, output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output, output
    assert "error:" in output, output
    return output


def many_chats(path: Path, copies: int) -> Path:
    """The bundled short chats ``copies`` times over, each copy with its own ids."""
    rows = [json.loads(line) for line in SHORT_CHATS.read_text().splitlines() if line.strip()]
    with open(path, "w") as out:
        for copy in range(copies):
            for row in rows:
                out.write(json.dumps({**row, "id": f"{row['id']}-{copy}"}) + "\n")
    return path


def journal_keys(run: Path) -> list[tuple[str, str, int]]:
    journal = run / "journal" / "generations.jsonl"
    lines = journal.read_bytes().splitlines() if journal.exists() else []
    rows = [orjson.loads(line) for line in lines if line.endswith(b"}")]
    return [(r["point_id"], r["deployment"], r["sample_index"]) for r in rows]


def outputs(run: Path) -> dict[str, list[tuple]]:
    """What a finished run decided, without timings: points, generations and verdicts, sorted."""
    def rows(name: str, drop: tuple[str, ...]) -> list[tuple]:
        table = pq.read_table(run / name).to_pylist()
        return sorted(tuple((k, v) for k, v in sorted(r.items()) if k not in drop) for r in table)

    result = {
        "points": rows("points.parquet", ()),
        "generations": rows("generations.parquet", ("latency_s", "cached", "attempts")),
    }
    if (run / "verdicts.parquet").exists():
        result["verdicts"] = rows("verdicts.parquet", ())
    return result


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``4m``) at ``path``; skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
        pytest.skip("cannot mount a tmpfs here (needs root): the injected-ENOSPC test covers this path")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` read-only for this process, root included (a read-only bind mount), then writable again."""
    if _mount("--bind", str(path), str(path)):
        try:
            if not _mount("-o", "remount,bind,ro", str(path)):
                pytest.skip("cannot remount read-only here")
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        return
    if os.geteuid() == 0:
        pytest.skip("root without mount: permission bits do not stop root")
    modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
    for p in modes:
        p.chmod(modes[p] & ~0o222)
    try:
        yield path
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def deploysim_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``deploysim ARGS`` as its own process (for signals)."""
    return subprocess.Popen([sys.executable, "-m", "deploysim.cli.main", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
