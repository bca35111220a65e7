//! avp-sidecar: an Argo CD config-management-plugin (CMP) server that renders kustomize and
//! helm apps and fills in argocd-vault-plugin placeholders from Vault.
//!
//! # Layout
//!
//! The folders follow a request from the socket to the response:
//!
//! - [`server`]: the gRPC service on the unix socket, deadlines, the one mapping of errors to
//!   gRPC statuses, the HTTP endpoints (`/metrics`, `/readyz`).
//! - [`protocol`]: the CMP wire: the client stream, checksum, safe archive extraction, the
//!   per-request work dir, and a client that talks like Argo CD's repo-server.
//! - [`pipeline`]: the request path proper: request env ([`pipeline::context`]), plugin
//!   definitions, discovery, render (kustomize, helm, plain directories; the only process
//!   spawner), tool-output splitting, the render cache, and the substitute stage.
//! - [`substitute`]: the placeholder language (AVP-compatible): parsing, modifiers, and the
//!   fill-in of documents, independent of where values come from.
//! - [`secrets`]: where values come from: the Vault/OpenBao client, the per-render read
//!   cache, path policy, KV mount rules and AVP's settings (`AVP_*`, `-s` Secrets).
//! - [`kube`]: the one Kubernetes API client (service-account GETs and PATCHes).
//! - [`sandbox`]: confinement of every tool run (Landlock, no network, the helm gate).
//! - [`fetch`]: chart fetching: the proxy fetching tools must use, its destination rules, the
//!   operator's repository credentials, the shared dependency cache.
//! - [`features`]: opt-in features beside the request path: rotation-aware refresh, rollout
//!   hashes, the `check` lint, and the `argocd-cm` plugin importer.
//! - [`config`]: the operator's flags, parsed once at startup; never from a request.
//! - Shared: [`errors`] (error-chain text), [`metrics`], [`telemetry`] (logs), [`yaml`]
//!   (reader/emitter with a memory budget), [`names`] (Kubernetes name rules).
//!
//! The binary's commands (`serve`, `render`, `check`, `call`, `generate`, ...) live in the
//! binary crate's `cli/` folder. See ARCHITECTURE.md for the data flow and invariants.

pub mod config;
pub(crate) mod errors;
pub mod features;
pub mod fetch;
pub(crate) mod kube;
pub mod metrics;
pub(crate) mod names;
pub mod pipeline;
pub mod protocol;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod substitute;
pub mod telemetry;
pub mod yaml;

/// Deterministic randomness for property-style tests.
#[cfg(test)]
pub(crate) mod test_rng {
    /// A xorshift64 stream from `seed` (non-zero), as numbers below 1,000,003.
    pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> usize {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % 1_000_003).unwrap_or_default()
        }
    }
}
