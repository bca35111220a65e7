#!/usr/bin/env bash
# Runs the OpenBao dev server a test binary shares (`Bao::shared()` in bao.rs) for exactly as
# long as that binary lives: starts and seeds it with vault-dev/start.sh and seed.sh, prints
# "ready", then waits for its stdin to reach end of file. The test binary holds the only write
# end of that pipe and never writes, so the end comes when the binary exits, however it exits
# (normally, on a panic, on SIGKILL). Then the server is stopped and its dir removed. (A static
# is never dropped, so no Drop in the binary could do this.)
#   $1              a dir of its own: the server's state goes to $1/vault; removed at the end
#   BAO_PORT, BAO_ROOT_TOKEN, BAO_AUDIT_LOG as for vault-dev/start.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:?usage: bao-tether.sh DIR}
export VAULT_DEV_STATE="$dir/vault"

cleanup() {
  "$root/vault-dev/stop.sh" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
# Ctrl-C reaches the whole process group: stop the server rather than leave it behind.
trap 'exit 1' INT TERM HUP

"$root/vault-dev/start.sh" >&2 || exit 1
VAULT_ADDR="http://127.0.0.1:${BAO_PORT:?}" VAULT_TOKEN="${BAO_ROOT_TOKEN:?}" \
  "$root/vault-dev/seed.sh" >&2 || exit 1
echo ready
# Nothing reads our output any more.
exec >/dev/null 2>&1
while read -r _; do :; done
