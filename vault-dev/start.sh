#!/usr/bin/env bash
# Starts a local OpenBao dev server (in-memory, root token known) for the demo and the tests.
#   BAO_PORT        listen port on 127.0.0.1 (default 8200; the dev server also binds port+1)
#   BAO_ROOT_TOKEN  root token (default "root")
#   VAULT_DEV_STATE state dir for pid, log and env (default <repo>/.demo/vault)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${BAO_PORT:-8200}
token=${BAO_ROOT_TOKEN:-root}
state=${VAULT_DEV_STATE:-$root/.demo/vault}
bao="$root/.tools/bin/bao"
[ -x "$bao" ] || { echo "vault-dev: $bao missing; run scripts/install-tools.sh" >&2; exit 1; }
mkdir -p "$state"
addr="http://127.0.0.1:$port"

health() { python3 - "$addr/v1/sys/health" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except Exception:
    sys.exit(1)
PY
}
if health; then
  echo "vault-dev: something already answers on $addr; stop it first (vault-dev/stop.sh)" >&2
  exit 1
fi

"$bao" server -dev -dev-no-store-token -dev-root-token-id="$token" \
  -dev-listen-address="127.0.0.1:$port" >"$state/bao.log" 2>&1 &
echo $! >"$state/pid"
printf 'VAULT_ADDR=%s\nBAO_ADDR=%s\n' "$addr" "$addr" >"$state/env"
for _ in $(seq 1 300); do
  if health; then
    echo "vault-dev: OpenBao dev server on $addr (pid $(cat "$state/pid"), log $state/bao.log)"
    exit 0
  fi
  kill -0 "$(cat "$state/pid")" 2>/dev/null || break
  sleep 0.05
done
echo "vault-dev: OpenBao did not become ready on $addr; log follows" >&2
cat "$state/bao.log" >&2
exit 1
