//! The Vault (or OpenBao) backend: the only code that talks HTTP to Vault.
//!
//! Reads paths exactly as argocd-vault-plugin does: the path is the raw API path (KV v2 paths
//! carry `data/`, which AVP never inserts), KV v2 returns `data.data` and honours `#version`,
//! KV v1 returns `data` and ignores versions. Logs in once and shares the token across requests
//! (AVP logs in on every run); on a 403 it logs in again once and retries, which covers an
//! expired or revoked token. Concurrent readers never trigger parallel logins.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::RwLock;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::config::{Auth, VaultConfig};
use super::{KvVersion, ReadError, SecretData, SecretRequest, SecretSource};

pub struct VaultSource {
    config: VaultConfig,
    /// The logged-in client; `None` until the first read (or after a rejected token).
    client: RwLock<Option<Arc<VaultClient>>>,
}

impl std::fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSource")
            .field("addr", &self.config.addr)
            .field("auth", &self.config.auth.kind())
            .finish()
    }
}

/// Why a login failed (messages name the method and mount, never a credential).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("vault login ({method} at auth/{mount}) failed: {reason}")]
    Rejected {
        method: &'static str,
        mount: String,
        reason: String,
    },
    #[error("reading kubernetes service account token {path}: {reason}")]
    Jwt { path: String, reason: String },
    #[error("configuring vault client: {0}")]
    Client(String),
}

impl VaultSource {
    /// Validates TLS material up front; the first login happens on the first read.
    pub fn new(config: VaultConfig) -> Result<Self, LoginError> {
        // rustls needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let source = Self {
            config,
            client: RwLock::new(None),
        };
        source.build_client("")?;
        Ok(source)
    }

    /// Every setting explicit: vaultrs' defaults would read `VAULT_*` from the process env.
    fn build_client(&self, token: &str) -> Result<VaultClient, LoginError> {
        let c = &self.config;
        let identity = match (&c.tls.client_cert, &c.tls.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert)
                    .map_err(|e| LoginError::Client(format!("{}: {e}", cert.display())))?;
                pem.extend(
                    std::fs::read(key)
                        .map_err(|e| LoginError::Client(format!("{}: {e}", key.display())))?,
                );
                Some(
                    vaultrs::client::Identity::from_pem(&pem)
                        .map_err(|e| LoginError::Client(e.to_string()))?,
                )
            }
            _ => None,
        };
        let mut b = VaultClientSettingsBuilder::default();
        b.address(c.addr.as_str())
            .token(token)
            .ca_certs(
                c.tls
                    .ca_certs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            )
            .identity(identity)
            .verify(!c.tls.skip_verify)
            .timeout(Some(c.timeout));
        if let Some(ns) = &c.namespace {
            b.set_namespace(ns.clone());
        }
        let settings = b.build().map_err(|e| LoginError::Client(e.to_string()))?;
        VaultClient::new(settings).map_err(|e| LoginError::Client(describe(&e)))
    }

    async fn login(&self) -> Result<VaultClient, LoginError> {
        let mut client = self.build_client("")?;
        let (method, mount, result) = match &self.config.auth {
            Auth::Token(t) => {
                client.set_token(t.expose());
                return Ok(client);
            }
            Auth::AppRole {
                role_id,
                secret_id,
                mount,
            } => (
                "approle",
                mount,
                vaultrs::auth::approle::login(&client, mount, role_id, secret_id.expose()).await,
            ),
            Auth::UserPass {
                username,
                password,
                mount,
            } => (
                "userpass",
                mount,
                vaultrs::auth::userpass::login(&client, mount, username, password.expose()).await,
            ),
            Auth::Kubernetes {
                role,
                jwt_path,
                mount,
            } => {
                let jwt =
                    tokio::fs::read_to_string(jwt_path)
                        .await
                        .map_err(|e| LoginError::Jwt {
                            path: jwt_path.display().to_string(),
                            reason: e.to_string(),
                        })?;
                (
                    "kubernetes",
                    mount,
                    vaultrs::auth::kubernetes::login(&client, mount, role, jwt.trim()).await,
                )
            }
        };
        let info = result.map_err(|e| LoginError::Rejected {
            method,
            mount: mount.clone(),
            reason: describe(&e),
        })?;
        client.set_token(&info.client_token);
        tracing::info!(method, mount = %mount, ttl_s = info.lease_duration, "logged in to vault");
        Ok(client)
    }

    /// The shared client, logging in if there is none. Only one login runs at a time.
    async fn client(&self) -> Result<Arc<VaultClient>, LoginError> {
        if let Some(c) = self.client.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(self.login().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets `stale` (if still current) so the next `client()` logs in again.
    async fn invalidate(&self, stale: &Arc<VaultClient>) {
        let mut slot = self.client.write().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, stale)) {
            *slot = None;
        }
    }

    async fn read_once(
        &self,
        client: &VaultClient,
        req: &SecretRequest,
    ) -> Result<SecretData, ClientError> {
        let map: Map<String, Value> = match req.kv_version {
            KvVersion::V1 => {
                let (mount, path) = split_first(&req.path);
                let raw = vaultrs::kv1::get_raw(client, mount, path).await?;
                match raw.data {
                    Value::Object(m) => m,
                    _ => Map::new(),
                }
            }
            KvVersion::V2 => {
                let (mount, path) = split_data(&req.path).ok_or(ClientError::ResponseEmptyError)?;
                match &req.version {
                    Some(v) => {
                        let v: u64 = v
                            .trim()
                            .parse()
                            .map_err(|_| ClientError::InvalidUpdateParameter)?;
                        vaultrs::kv2::read_version(client, mount, path, v).await?
                    }
                    None => vaultrs::kv2::read(client, mount, path).await?,
                }
            }
        };
        Ok(SecretData(map))
    }
}

/// `kv1/demo/legacy` → (`kv1`, `demo/legacy`); vaultrs joins them back with `/`.
fn split_first(path: &str) -> (&str, &str) {
    let path = path.trim_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// `team/kv/data/app/db` → (`team/kv`, `app/db`): KV v2 paths name the mount before `data/`.
fn split_data(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_matches('/');
    let idx = path.find("/data/")?;
    Some((&path[..idx], &path[idx + "/data/".len()..]))
}

/// A vaultrs error as text without request bodies (which could echo credentials).
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            if errors.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {}", errors.join("; "))
            }
        }
        ClientError::RestClientError { source } => {
            let mut msg = source.to_string();
            let mut cause = std::error::Error::source(source);
            while let Some(c) = cause {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cause = c.source();
            }
            msg
        }
        other => other.to_string(),
    }
}

fn map_error(req: &SecretRequest, e: &ClientError) -> ReadError {
    match e {
        ClientError::APIError { code: 404, .. } => match &req.version {
            Some(v) => ReadError::VersionDeleted {
                path: req.path.clone(),
                version: v.clone(),
            },
            None => ReadError::NotFound(req.clone()),
        },
        ClientError::APIError { code: 403, .. } => ReadError::PermissionDenied(req.path.clone()),
        ClientError::InvalidUpdateParameter => ReadError::Backend {
            path: req.path.clone(),
            message: format!(
                "secret version {:?} is not a number",
                req.version.as_deref().unwrap_or("")
            ),
        },
        _ => ReadError::Backend {
            path: req.path.clone(),
            message: describe(e),
        },
    }
}

#[async_trait::async_trait]
impl SecretSource for VaultSource {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        if req.kv_version == KvVersion::V2 && split_data(&req.path).is_none() {
            return Err(ReadError::MissingDataSegment(req.path.clone()));
        }
        let backend = |e: LoginError| ReadError::Backend {
            path: req.path.clone(),
            message: e.to_string(),
        };
        let client = self.client().await.map_err(backend)?;
        match self.read_once(&client, req).await {
            Ok(data) => Ok(data),
            // A 403 may mean our token expired or was revoked: log in again once.
            Err(ClientError::APIError { code: 403, .. })
                if !matches!(self.config.auth, Auth::Token(_)) =>
            {
                self.invalidate(&client).await;
                let client = self.client().await.map_err(backend)?;
                self.read_once(&client, req)
                    .await
                    .map_err(|e| map_error(req, &e))
            }
            Err(e) => Err(map_error(req, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splitting() {
        assert_eq!(
            split_data("secret/data/demo/web"),
            Some(("secret", "demo/web"))
        );
        assert_eq!(
            split_data("/team/kv/data/app/db/"),
            Some(("team/kv", "app/db"))
        );
        assert_eq!(split_data("secret/demo/web"), None);
        assert_eq!(split_first("kv1/demo/legacy"), ("kv1", "demo/legacy"));
        assert_eq!(split_first("kv1"), ("kv1", ""));
    }
}
