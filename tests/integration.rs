//! Integration tests: the real `avp-sidecar` binary on a unix socket, driven over real gRPC with
//! archives built like Argo CD's repo-server builds them, rendering with real kustomize and helm
//! (and, for substitution, a real OpenBao dev server). Run via the README's test command, which
//! installs the tools first.
// Test helpers are not an API, and test data casts freely between sizes.
#![allow(
    unreachable_pub,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod cases;
mod support;
