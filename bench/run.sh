#!/usr/bin/env bash
# One-command benchmark: direct vs pass-through vs gateway vs LiteLLM. See bench/README.md.
# Usage: bash bench/run.sh [--quick] [--no-litellm] [--rounds N] [--out FILE] ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
if ! command -v wrk >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null 2>&1; } \
    || echo "[bench] could not install wrk; throughput figures will be skipped" >&2
fi
exec "$PY" -m bench "$@"
