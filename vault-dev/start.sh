#!/usr/bin/env bash
# Starts a local OpenBao dev server (in memory, known root token) in the background for the demo
# and the integration tests, and waits until it is healthy.
#   BAO_PORT        listen port on 127.0.0.1 (default 8200; the dev server also binds port+1)
#   BAO_ROOT_TOKEN  root token (default "root")
#   BAO_AUDIT_LOG   if set, a file audit device writes every request and response there
#                   (OpenBao only accepts audit devices from config, not the API)
#   VAULT_DEV_STATE state dir (default <repo>/.demo/vault); gets pid, bao.log and env
#                   (VAULT_ADDR=..., BAO_ADDR=...; `set -a; . "$VAULT_DEV_STATE/env"; set +a`)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${BAO_PORT:-8200}
token=${BAO_ROOT_TOKEN:-root}
state=${VAULT_DEV_STATE:-$root/.demo/vault}
bao="$root/.tools/bin/bao"
ready_timeout=15 # seconds

die() { echo "vault-dev: $*" >&2; exit 1; }
[ -x "$bao" ] || die "$bao is missing; run scripts/install-tools.sh first"
case "$port" in
  '' | *[!0-9]*) die "BAO_PORT must be a port number (got '$port')" ;;
esac
[ "$port" -ge 1 ] && [ "$port" -le 65534 ] || die "BAO_PORT must be in 1..65534 (port+1 is used too)"
addr="http://127.0.0.1:$port"

# listening PORT: true when something accepts TCP connections on 127.0.0.1:PORT
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# health: true when GET /v1/sys/health answers 200 (initialized, unsealed, active)
if command -v curl >/dev/null; then
  health() { curl -fsS -o /dev/null --max-time 1 "$addr/v1/sys/health" 2>/dev/null; }
else
  health() {
    python3 - "$addr/v1/sys/health" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
  }
fi

mkdir -p "$state"
if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
  die "a dev server from $state is already running (pid $(cat "$state/pid")); run vault-dev/stop.sh first"
fi
for p in "$port" "$((port + 1))"; do
  if listening "$p"; then
    die "something already listens on 127.0.0.1:$p (the dev server needs BAO_PORT=$port and $((port + 1))); stop it or choose another BAO_PORT"
  fi
done

rm -f "$state/pid"
config_args=()
if [ -n "${BAO_AUDIT_LOG:-}" ]; then
  printf 'audit "file" "file" {\n  options {\n    file_path = "%s"\n  }\n}\n' "$BAO_AUDIT_LOG" >"$state/audit.hcl"
  config_args=(-config "$state/audit.hcl")
fi
"$bao" server -dev -dev-no-store-token -dev-root-token-id="$token" \
  -dev-listen-address="127.0.0.1:$port" "${config_args[@]}" </dev/null >"$state/bao.log" 2>&1 &
pid=$!
echo "$pid" >"$state/pid"
printf 'VAULT_ADDR=%s\nBAO_ADDR=%s\n' "$addr" "$addr" >"$state/env"

deadline=$((SECONDS + ready_timeout))
while [ $SECONDS -lt $deadline ]; do
  if health; then
    echo "vault-dev: OpenBao dev server ready on $addr (pid $pid, log $state/bao.log)"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || {
    rm -f "$state/pid"
    echo "vault-dev: bao exited before becoming ready; last lines of $state/bao.log:" >&2
    tail -n 20 "$state/bao.log" >&2
    exit 1
  }
  sleep 0.05
done
kill -TERM "$pid" 2>/dev/null || true
rm -f "$state/pid"
echo "vault-dev: OpenBao did not become healthy on $addr within ${ready_timeout}s (stopped it); last lines of $state/bao.log:" >&2
tail -n 20 "$state/bao.log" >&2
exit 1
