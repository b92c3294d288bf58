#!/usr/bin/env bash
# Shared set-up: a virtual environment in .venv with the project installed.
# Usage: source scripts/bootstrap.sh [EXTRAS]   (EXTRAS e.g. "fast" or "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Python 3.11 or newer is required (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
extras="${1:-fast}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$extras]"
