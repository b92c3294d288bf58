#!/usr/bin/env bash
# One command on a fresh machine: install, then run the gateway with config.example.yaml.
# Extra arguments go to the gateway, e.g.  bash scripts/serve.sh --port 9000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh" fast
exec "$ROOT/.venv/bin/python" -m proxy --config "${GATEWAY_CONFIG:-$ROOT/config.example.yaml}" "$@"
