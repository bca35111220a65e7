//! Where secret values come from. Owns the `SecretSource` trait and the types the substitution
//! engine exchanges with it. Knows nothing about YAML or manifests.
//!
//! Secret values live only inside `SecretData`, whose `Debug` prints key names, never values,
//! and whose strings are overwritten when it is dropped (cache eviction, end of a render).
//! Copies we cannot reach stay as they are: the HTTP client's receive buffers and the rendered
//! manifests handed to the repo-server.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// KV secrets engine version used to read a path. AVP default is 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum KvVersion {
    V1,
    #[default]
    V2,
}

/// One read the substitution engine needs: a Vault API path (KV v2 paths include `data/`, as in
/// AVP), the engine version, and an optional secret version. Holds no secret, so it may be logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRequest {
    pub path: String,
    pub kv_version: KvVersion,
    pub version: Option<String>,
}

impl fmt::Display for SecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(v) = &self.version {
            write!(f, " (version {v})")?;
        }
        Ok(())
    }
}

/// The key/value data of one secret (`data` for KV v1, `data.data` for KV v2), and the KV v2
/// version it came from (`data.metadata.version`), which rotation tracking and rollout hashes
/// use instead of values.
#[derive(Clone, Default, PartialEq)]
pub struct SecretData {
    values: Map<String, Value>,
    version: Option<u64>,
}

impl SecretData {
    pub fn new(values: Map<String, Value>) -> Self {
        Self {
            values,
            version: None,
        }
    }

    #[must_use]
    pub fn with_version(mut self, version: Option<u64>) -> Self {
        self.version = version;
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// The KV v2 version read; `None` for KV v1.
    pub fn version(&self) -> Option<u64> {
        self.version
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        self.values.values_mut().for_each(wipe);
    }
}

/// Overwrites every string in `value` (keys are names, not secrets) before it is freed.
pub(crate) fn wipe(value: &mut Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, "***")))
            .entry(&"(version)", &self.version)
            .finish()
    }
}

/// Why one read failed. Messages name the path, never a value.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// Nothing at that path (or that version).
    #[error("could not find secrets at path {0}")]
    NotFound(SecretRequest),
    /// A KV v2 read whose path lacks the `data/` segment.
    #[error(
        "the vault path {0} is empty - did you forget to include /data/ in the vault path for kv-v2?"
    )]
    MissingDataSegment(String),
    /// The requested KV v2 version is deleted or destroyed.
    #[error(
        "the secret version {version} for vault path {path} is nil - is this version of the secret deleted?"
    )]
    VersionDeleted { path: String, version: String },
    /// Access denied by Vault or by the operator's policy.
    #[error("permission denied reading {0}")]
    PermissionDenied(String),
    /// The mount rules refuse the path before Vault is asked (system mount, not a listed or KV
    /// mount, another KV version).
    #[error("{0}")]
    Refused(mounts::MountError),
    /// Vault's answer holds the sidecar's own token or login credential.
    #[error(
        "vault's answer for {0} contains this sidecar's own vault credentials; refused (placeholders may read secrets only)"
    )]
    OwnCredentials(String),
    /// Vault unreachable, login failed, bad response, timeout.
    #[error("vault read of {path} failed: {message}")]
    Backend { path: String, message: String },
}

/// Results of all reads one render needs, keyed by request.
pub type Fetched = HashMap<SecretRequest, Result<SecretData, ReadError>>;

/// What KV v2 metadata says about a secret: versions and their state, never values. Lets
/// `check` verify paths and rotation tracking notice new versions without reading data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMetadata {
    pub current_version: u64,
    /// Versions still readable (not deleted, not destroyed), ascending.
    pub live_versions: Vec<u64>,
}

/// A backend that can read secrets. Implementations must be cheap to share across requests.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// Reads one secret.
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError>;

    /// Refuses `req` without asking anything (the fixed part of the mount rules), so a render
    /// is refused before any of its reads is sent. `Ok` where the source has no such rules;
    /// `read` applies the same rules, whoever calls it.
    fn precheck(&self, _req: &SecretRequest) -> Result<(), ReadError> {
        Ok(())
    }

    /// KV v2 metadata of the secret `req` names (its `data/` path read as `metadata/`).
    /// `Ok(None)` where there is no such thing (KV v1, sources without versions).
    async fn metadata(&self, _req: &SecretRequest) -> Result<Option<KvMetadata>, ReadError> {
        Ok(None)
    }

    /// What the caller's token may do on `path` (Vault's `sys/capabilities-self`: `read`,
    /// `deny`, ...), asked without touching the secret. `Ok(None)` where there is no such
    /// question (sources without policies).
    async fn capabilities(&self, _path: &str) -> Result<Option<Vec<String>>, ReadError> {
        Ok(None)
    }

    /// Forgets anything kept for the latest version of `path`, so the next read asks the
    /// backend again (rotation tracking saw a new version). Sources that keep nothing ignore it.
    fn invalidate(&self, _path: &str) {}
}

pub(crate) mod avp_secret;
pub(crate) mod body;
pub(crate) mod cache;
#[cfg(test)]
mod fake_http;
pub(crate) mod mounts;
pub(crate) mod path_template;
pub mod policy;
pub mod settings;
pub mod vault;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wipe_clears_every_string_and_keeps_the_shape() {
        let mut v = json!({"a": "s3cret", "b": [1, "x", {"c": "y"}], "d": null, "e": true});
        wipe(&mut v);
        assert_eq!(
            v,
            json!({"a": "", "b": [1, "", {"c": ""}], "d": null, "e": true})
        );
    }
}
