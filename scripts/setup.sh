#!/usr/bin/env bash
# Set-up on a fresh machine: a portable llama-cpp-python, then deploysim with every extra.
#
# llama-cpp-python compiles llama.cpp from source. Its default build targets the build
# machine's CPU (GGML_NATIVE), so a wheel built on one machine dies with "Illegal
# instruction" on another whose CPU differs (e.g. one that advertises AMX). This script
# builds it once with portable x86-64 flags (AVX2/FMA/F16C, no -march=native) into
# deploysim's own wheel folder, named by version and flags, and installs that wheel.
# pip's own wheel cache is bypassed (--no-cache-dir): it ignores CMAKE_ARGS and would
# hand back a native wheel built earlier.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
LLAMA_VERSION=0.3.36
case "$(uname -m)" in
  x86_64|amd64) FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" ;;
  *) FLAGS="-DGGML_NATIVE=OFF" ;;
esac
TAG=$(printf '%s %s %s' "$LLAMA_VERSION" "$(uname -m)" "$FLAGS" | sha256sum | cut -c1-12)
WHEELS=${DEPLOYSIM_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/deploysim/wheels/$TAG}

if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $LLAMA_VERSION for any $(uname -m) CPU (once, ~7 min on 2 cores) -> $WHEELS" >&2
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 "$PY" -m pip wheel -q --no-cache-dir --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS.tmp"
  mv "$WHEELS.tmp"/llama_cpp_python-*.whl "$WHEELS"/ && rm -rf "$WHEELS.tmp"
fi
WHEEL=$(ls "$WHEELS"/llama_cpp_python-*.whl | head -1)
"$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$WHEEL"
"$PY" -m pip install -q "$WHEEL[server]" -e '.[all]'
# Decode one token in a child process: proves the local model runs on this CPU (exit 2 and a hint if not).
"$PY" -m deploysim.core.models.local
