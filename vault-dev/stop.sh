#!/usr/bin/env bash
# Stops the dev server started by start.sh: SIGTERM, up to 5 s to exit, then SIGKILL; removes
# the pid file. No error if it is not running.
#   VAULT_DEV_STATE state dir (default <repo>/.demo/vault)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${VAULT_DEV_STATE:-$root/.demo/vault}
[ -f "$state/pid" ] || exit 0
pid=$(cat "$state/pid")
rm -f "$state/pid"
case "$pid" in '' | *[!0-9]*) exit 0 ;; esac
# Only signal the process if it still is a `bao server` (the pid may have been reused).
if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'bao server'; then
  exit 0
fi
kill -TERM "$pid" 2>/dev/null || exit 0
# gone: exited, or a zombie waiting for its (new) parent to reap it
gone() { ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; }
for _ in $(seq 1 100); do
  gone && exit 0
  sleep 0.05
done
kill -KILL "$pid" 2>/dev/null || true
