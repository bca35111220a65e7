#!/usr/bin/env bash
# Stops the dev server started by start.sh (TERM, then KILL after 5 s). No error if not running.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${VAULT_DEV_STATE:-$root/.demo/vault}
[ -f "$state/pid" ] || exit 0
pid=$(cat "$state/pid")
if kill -TERM "$pid" 2>/dev/null; then
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$state/pid"
