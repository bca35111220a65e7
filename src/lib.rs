//! avp-sidecar: an Argo CD config-management-plugin (CMP) server that renders kustomize and
//! helm apps and fills in argocd-vault-plugin placeholders from Vault.
//!
//! See ARCHITECTURE.md for the module map, data flow and invariants.

pub mod argocd_cm;
pub mod check;
pub mod config;
pub mod context;
pub mod discovery;
pub mod errors;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod path_template;
pub mod pipeline;
pub mod plugin;
pub mod protocol;
pub mod render;
pub mod render_cache;
pub mod rollout;
pub mod rotation;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod substitute;
pub mod substitute_stage;
pub mod telemetry;
pub mod yaml;
