#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the real tools into .tools/, then runs every
# unit and integration test (real kustomize, helm, OpenBao, gRPC over unix sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-tools.sh
cargo test --locked "$@"
