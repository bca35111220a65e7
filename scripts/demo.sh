#!/usr/bin/env bash
# The demo on a fresh machine: installs the real tools into .tools/, starts an OpenBao dev
# server with example secrets, starts avp-sidecar on a unix socket, sends real CMP
# GenerateManifest requests (as Argo CD's repo-server would) for the apps in examples/, and
# prints the manifests with the secrets filled in.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.demo"
mkdir -p "$state"

# The demo needs helm, kubectl and OpenBao; the test-only system packages are left out.
INSTALL_TOOLS_PROMTOOL=skip INSTALL_TOOLS_REGISTRY=skip ./scripts/install-tools.sh
cargo build --locked --quiet --bin avp-sidecar
bin="$root/target/debug/avp-sidecar"

export VAULT_DEV_STATE="$state/vault" BAO_PORT="${BAO_PORT:-18200}" BAO_ROOT_TOKEN=demo-root
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ./vault-dev/stop.sh >/dev/null 2>&1 || true
}
trap cleanup EXIT
./vault-dev/stop.sh >/dev/null 2>&1 || true
./vault-dev/start.sh
VAULT_ADDR="http://127.0.0.1:$BAO_PORT" VAULT_TOKEN=demo-root ./vault-dev/seed.sh

socket="$state/avp.sock"
echo "== starting avp-sidecar on $socket (log: $state/server.log)"
VAULT_ADDR="http://127.0.0.1:$BAO_PORT" \
AVP_TYPE=vault AVP_AUTH_TYPE=approle \
AVP_ROLE_ID="$(cat "$state/vault/approle_role_id")" \
AVP_SECRET_ID="$(cat "$state/vault/approle_secret_id")" \
ARGOCD_CMP_SERVER_LOGFORMAT=text \
  "$bin" serve --socket "$socket" --workdir "$state/work" \
    --kustomize "$root/.tools/bin/kubectl" --helm "$root/.tools/bin/helm" \
    >"$state/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do [ -S "$socket" ] && break; sleep 0.05; done
[ -S "$socket" ] || { cat "$state/server.log"; echo "server did not start" >&2; exit 1; }

call() {
  echo
  echo "== GenerateManifest $*"
  "$bin" call --socket "$socket" --repo "$root/examples" "$@"
}
call --app-path kustomize-app --app-name web --namespace demo \
  --plugin-env IMAGE_NAME=nginx --plugin-env IMAGE_TAG=1.27.3 \
  --plugin-env APP_REPO=https://github.com/acme/apps
call --app-path helm-app --app-name myapp --namespace demo \
  --plugin-env IMAGE_NAME=ghcr.io/acme/web --plugin-env IMAGE_TAG=2.0.1
echo
echo "== done: the server log is in $state/server.log"
