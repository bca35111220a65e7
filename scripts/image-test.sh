#!/usr/bin/env bash
# Builds the avp-sidecar image (sidecar/Dockerfile) and runs it the way Argo CD runs a sidecar:
# read-only root file system, uid 999, every capability dropped, no privilege escalation, the
# plugin socket on a shared volume. Then drives a real CMP request through that socket from
# outside the container (`avp-sidecar call`, which talks like the repo-server) and checks the
# manifests that come back.
#
# Needs a Docker engine. Uses a running one (DOCKER_HOST or the default socket); otherwise starts
# a private `dockerd` (Debian's docker.io, installed with apt when missing and running as root).
# Where no engine can start (no cgroups/overlay in the sandbox), it says so and exits 0, or 1
# with IMAGE_TEST_REQUIRED=1. Where no registry is reachable, the base image is made with
# debootstrap (Debian bookworm, minbase) and the binaries are built on the host
# (--build-arg BINARIES=prebuilt).
#
# Environment: IMAGE_TEST_REQUIRED=1 (fail instead of skipping), DEBIAN_MIRROR (debootstrap),
# IMAGE_TAG (default avp-sidecar:image-test).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tag=${IMAGE_TAG:-avp-sidecar:image-test}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d "${TMPDIR:-/tmp}/image-test.XXXXXX")
dockerd_pid=
container=

say() { echo "image-test: $*" >&2; }
# The docker client: BuildKit (needed to skip the unused build stages) comes from the buildx
# plugin on recent clients; Debian's docker.io client (20.10) drives the engine's built-in
# BuildKit without it. `docker` below always means this client.
docker() { command "${DOCKER_CLIENT:-docker}" "$@"; }
if ! command docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
  DOCKER_CLIENT=/usr/bin/docker
fi
cleanup() {
  [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$work" "$root/.image"
}
trap cleanup EXIT
skip() {
  if [ "${IMAGE_TEST_REQUIRED:-0}" = 1 ]; then
    say "FAILED: $*"
    exit 1
  fi
  say "SKIPPED: $* (set IMAGE_TEST_REQUIRED=1 to fail instead)"
  exit 0
}

# 1. An engine.
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing Debian's docker.io ..."
      apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null 2>&1; }
      apt_install || { apt-get update >/dev/null 2>&1 && apt_install; } || skip "apt-get install docker.io failed"
    else
      skip "no Docker engine and no dockerd to start (install Debian's docker.io)"
    fi
  fi
  say "starting a private dockerd ..."
  export DOCKER_HOST="unix://$work/docker.sock"
  dockerd --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
    -H "$DOCKER_HOST" >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    reason=$(grep -iE 'level=(error|fatal)' "$work/dockerd.log" | tail -n 1 | sed 's/.*msg="\([^"]*\)".*/\1/')
    skip "dockerd cannot start on this machine: ${reason:-its containerd never answered within 30 s}"
  fi
fi
say "engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"

# 2. A base image: the registry's, else debootstrap.
base=debian:bookworm-slim
binaries=from-source
if ! timeout 60 docker pull -q "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1
  } || skip "no registry reachable and no debootstrap"
  say "no registry: building a bookworm base with debootstrap from $mirror ..."
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 5 "$work/debootstrap.log" >&2; say "FAILED: debootstrap"; exit 1; }
  base=avp-sidecar-base:bookworm
  tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
  binaries=prebuilt
fi

# 3. The image.
if [ "$binaries" = prebuilt ]; then
  say "building the binaries on the host (no registry for the build images) ..."
  cargo build --release --locked --bin avp-sidecar --bin avp-sandbox-exec
  INSTALL_TOOLS_FOR=image ./scripts/install-tools.sh >/dev/null
  mkdir -p .image/bin
  install -s -m 0755 target/release/avp-sidecar target/release/avp-sandbox-exec .image/bin/
  install -m 0755 .tools/bin/helm .tools/bin/kubectl .tools/bin/kustomize .image/bin/
fi
say "docker build (BASE_IMAGE=$base, BINARIES=$binaries) ..."
DOCKER_BUILDKIT=1 docker build -q -f sidecar/Dockerfile \
  --build-arg BASE_IMAGE="$base" --build-arg BINARIES="$binaries" -t "$tag" . >/dev/null

# 4. Run it as Argo CD would, with the socket dir shared with us.
sockets="$work/plugins"
mkdir -m 0777 "$sockets"
container=$(docker run -d --read-only --user 999:999 --cap-drop ALL \
  --security-opt no-new-privileges --tmpfs /tmp:rw,size=256m \
  -v "$sockets:/home/argocd/cmp-server/plugins" "$tag")
socket=
for _ in $(seq 1 60); do
  socket=$(find "$sockets" -maxdepth 1 -name 'avp-kustomize*.sock' -print -quit)
  [ -n "$socket" ] && break
  sleep 0.5
done
[ -n "$socket" ] || { docker logs "$container" >&2; say "FAILED: no avp-kustomize socket"; exit 1; }
user=$(docker inspect -f '{{.Config.User}} readonly={{.HostConfig.ReadonlyRootfs}} capdrop={{.HostConfig.CapDrop}}' "$container")
say "running: $user"

# 5. A real CMP request from outside: a kustomize app, streamed as the repo-server does.
repo="$work/repo"
mkdir -p "$repo/app"
cat >"$repo/app/kustomization.yaml" <<'YAML'
resources: [configmap.yaml]
namePrefix: image-
YAML
cat >"$repo/app/configmap.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: test}
data: {hello: world}
YAML
bin=target/release/avp-sidecar
[ -x "$bin" ] || bin=target/debug/avp-sidecar
[ -x "$bin" ] || cargo build --locked --bin avp-sidecar
[ -x "$bin" ] || bin=target/debug/avp-sidecar
out=$("$bin" call --socket "$socket" --repo "$repo" --app-path app 2>&1) ||
  { echo "$out" >&2; docker logs "$container" >&2; say "FAILED: the CMP request"; exit 1; }
# Here-strings, not pipes: with pipefail, `grep -q` leaving at its first match can kill the
# writer with SIGPIPE and fail a check that found what it looked for.
grep -q 'image-test' <<<"$out" ||
  { echo "$out" >&2; say "FAILED: the manifests lack the rendered ConfigMap"; exit 1; }
logs=$(docker logs "$container" 2>&1)
grep -q '"msg":"serving"' <<<"$logs" ||
  { echo "$logs" >&2; say "FAILED: no JSON 'serving' log line"; exit 1; }
# Confined tool runs start the small helper binary, not the server binary (~2 ms per run).
if grep -q 'tool sandbox on' <<<"$logs"; then
  grep -q 'helper: avp-sandbox-exec)' <<<"$logs" ||
    { echo "$logs" >&2; say "FAILED: the image does not use avp-sandbox-exec"; exit 1; }
fi
say "OK: $tag rendered through $(basename "$socket") (read-only, uid 999, no capabilities)"
