"""The local model on any CPU: a portable build, and a clear error (never a bare exit 132) when
llama.cpp cannot run here. The SIGILL is an injected fault: a child that kills itself with it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from deploysim.core.models import local
from tests.conftest import FIXTURES, require_local_model

SIGILL_SCRIPT = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"


def test_a_child_that_dies_with_sigill_becomes_a_clear_error(tmp_path):
    with pytest.raises(local.LocalRuntimeError) as caught:
        local.check_runtime(tmp_path / "x.gguf", script=SIGILL_SCRIPT)
    message = str(caught.value)
    assert "another CPU" in message and "SIGILL" in message and "scripts/setup.sh" in message


def test_a_child_that_fails_to_load_names_its_last_line(tmp_path):
    with pytest.raises(local.LocalRuntimeError, match=r"exit 3\): broken build"):
        local.check_runtime(tmp_path / "x.gguf", script="import sys; sys.stderr.write('broken build\\n'); sys.exit(3)")


def test_the_installed_llama_cpp_is_portable():
    """The build targets no CPU feature beyond AVX2/FMA/F16C: no AVX-512, no AMX (what killed the demo)."""
    require_local_model()
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info
    assert "AVX512" not in info and "AMX" not in info, info


@pytest.mark.model
def test_the_real_check_passes_and_is_remembered(tmp_path, monkeypatch):
    path = require_local_model()
    monkeypatch.setattr(local, "_RUNTIME_OK", set())
    local.check_runtime(path)
    from deploysim.core.models.cache import default_cache_path

    assert (default_cache_path().parent / "local-runtime" / local._runtime_fingerprint(path)).is_file()
    # Remembered on disk: a new process (empty memo) does not probe again, even if the probe would now fail.
    monkeypatch.setattr(local, "_RUNTIME_OK", set())
    monkeypatch.setattr(local, "PROBE_SCRIPT", SIGILL_SCRIPT)
    local.check_runtime(path)


@pytest.mark.model
def test_run_with_a_local_model_that_cannot_run_exits_2_with_the_hint(tmp_path, monkeypatch):
    require_local_model()
    monkeypatch.setattr(local, "_RUNTIME_OK", set())
    monkeypatch.setattr(local, "PROBE_SCRIPT", SIGILL_SCRIPT)
    from deploysim.cli.main import main

    result = CliRunner().invoke(main, ["run", "--data", str(FIXTURES / "sources" / "openai_chat.jsonl"),
                                       "--candidate", "local/smollm2", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "another CPU" in result.output and "Traceback" not in result.output


@pytest.mark.model
def test_the_check_command_exits_0_here():
    require_local_model()
    proc = subprocess.run([sys.executable, "-m", "deploysim.core.models.local"], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "runs on this CPU" in proc.stdout
    assert proc.returncode != -signal.SIGILL
