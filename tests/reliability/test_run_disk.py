"""A full disk, read-only folders and damaged run directories: clear errors, exit 2, nothing lost.

Issue 15, points 5 and 9. Every test goes through the CLI, as a user would.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from deploysim.core.store.journal import JsonlJournal
from tests.reliability import run_helpers as h
from tests.reliability.run_helpers import assert_clean_failure, cli, journal_keys, outputs

RUN = ["--candidate", "counting/big", "--max-tokens", "16", "--concurrency", "4", "--quiet", "--no-cache",
       "--privacy", "off", "--no-grade"]


def _reference(tmp_path: Path, data: Path) -> dict:
    ref = tmp_path / "reference"
    assert cli("run", "--data", str(data), *RUN, "--out", str(ref)).exit_code == 0
    return outputs(ref)


def test_full_disk_stops_before_sending_what_it_cannot_journal(tmp_path: Path) -> None:
    """4 MiB tmpfs, 48 KiB replies: the run stops with the resume hint; every call sent is journaled."""
    data = h.many_chats(tmp_path / "chats.jsonl", 12)  # 192 calls of ~48 KiB: ~9 MiB of journal
    reference = _reference(tmp_path, data)
    with h.small_disk(tmp_path / "disk", "4m") as disk:
        run = disk / "run"
        h.SENT.clear()
        result = cli("run", "--data", str(data), *RUN, "--out", str(run))
        output = assert_clean_failure(result)
        assert "No space left on device" in output and f"deploysim run --resume {run}" in output
        journaled = [k for k in journal_keys(run) if k[1] != "logged"]
        assert 0 < len(journaled) < 192
        assert h.SENT["big"] == len(journaled)  # no call was sent that could not be journaled
        assert len(set(journaled)) == len(journaled)
        moved = tmp_path / "moved"
        shutil.copytree(run, moved)  # "free space": the same run directory on a disk with room
    h.SENT.clear()
    resumed = cli("run", "--resume", str(moved), "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert h.SENT["big"] == 192 - len(journaled)  # only what was never answered is sent again
    assert outputs(moved) == reference


def test_enospc_while_writing_stops_cleanly_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write itself fails (injected ENOSPC after 130 rows): stop, exit 2, hint; resume finishes the run."""
    data = h.many_chats(tmp_path / "chats.jsonl", 6)
    reference = _reference(tmp_path, data)
    real_open = JsonlJournal.open

    class FullDisk:
        """The journal's file handle on a disk that fills after 130 writes (an injected fault)."""

        def __init__(self, handle: Any) -> None:
            self.handle, self.writes = handle, 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes > 130:  # 96 logged rows, then 34 answers
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    def open_on_full_disk(self: JsonlJournal) -> JsonlJournal:
        real_open(self)
        self._handle = FullDisk(self._handle)  # type: ignore[assignment]
        return self

    monkeypatch.setattr(JsonlJournal, "open", open_on_full_disk)
    run = tmp_path / "run"
    h.SENT.clear()
    output = assert_clean_failure(cli("run", "--data", str(data), *RUN, "--out", str(run)))
    assert "No space left on device" in output and f"deploysim run --resume {run}" in output
    journaled = [k for k in journal_keys(run) if k[1] != "logged"]
    assert h.SENT["big"] - len(journaled) <= 4  # at most the calls already in flight (concurrency 4)
    monkeypatch.setattr(JsonlJournal, "open", real_open)
    resumed = cli("run", "--resume", str(run), "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert outputs(run) == reference


def test_unwritable_out_is_a_clear_error(tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    with h.read_only(parent):
        output = assert_clean_failure(cli("run", "--data", str(h.SHORT_CHATS), *RUN, "--out", str(parent / "run")))
    assert str(parent) in output and "nothing was sent" in output


def test_unwritable_cache_runs_uncached_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    with h.read_only(cache_dir):
        result = cli("run", "--data", str(h.SHORT_CHATS), "--candidate", "counting/small", "--quiet",
                     "--privacy", "off", "--no-grade", "--cache-path", str(cache_dir / "sub" / "calls.sqlite"),
                     "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "cannot be used" in caplog.text and "running uncached" in caplog.text
    summary = orjson.loads((tmp_path / "run" / "summary.json").read_bytes())
    assert summary["deployments"]["candidate"]["generations_ok"] == 16


def test_read_only_run_dir_on_resume_and_grade(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("run", "--data", str(h.SHORT_CHATS), *RUN, "--out", str(run)).exit_code == 0
    with h.read_only(run):
        output = assert_clean_failure(cli("run", "--resume", str(run), "--quiet"))
        assert "Read-only file system" in output or "Permission denied" in output
        output = assert_clean_failure(cli("grade", str(run), "--quiet"))
        assert "cannot grade" in output


def test_corrupt_journal_line_names_file_and_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("run", "--data", str(h.SHORT_CHATS), *RUN, "--out", str(run)).exit_code == 0
    journal = run / "journal" / "generations.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"point_id": "x", "deploym\x00ent\n'
    journal.write_bytes(b"".join(lines))
    output = assert_clean_failure(cli("run", "--resume", str(run), "--quiet"))
    assert f"{journal}:4: corrupt journal line" in output.replace("\n", "")


def test_missing_system_prompt_file_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(f"data: [{h.SHORT_CHATS}]\ndeployments:\n  - name: candidate\n    model: counting/small\n"
                      "    system_prompt_file: prompts/missing.txt\n")
    output = assert_clean_failure(cli("run", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"))
    assert "deployments[0].system_prompt_file" in output and "missing.txt not found" in output
    assert not (tmp_path / "run").exists()
    output = assert_clean_failure(cli("run", "--data", str(h.SHORT_CHATS), "--candidate", "counting/small",
                                      "--candidate-system-prompt", f"@{tmp_path / 'nope.txt'}",
                                      "--out", str(tmp_path / "run2"), "--quiet"))
    assert "nope.txt not found" in output
