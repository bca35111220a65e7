//! The Vault (or OpenBao) backend: the only code that talks HTTP to Vault.
//!
//! Reads paths exactly as argocd-vault-plugin does: the path is the raw API path (KV v2 paths
//! carry `data/`, which AVP never inserts), KV v2 returns `data.data` and honours `#version`,
//! KV v1 returns `data` and ignores versions.
//!
//! Token lifecycle: log in once and share the token across requests (AVP logs in on every run);
//! renew it when two thirds of its TTL have passed (log in again if renewal fails or the TTL
//! is used up); on a 403 log in again once and retry, which covers a revoked token. Only one
//! login or renewal runs at a time; concurrent readers wait for it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::RwLock;
use tokio::time::Instant;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::config::{Auth, VaultConfig};
use super::{KvVersion, ReadError, SecretData, SecretRequest, SecretSource};
use crate::metrics::{self, METRICS};

pub struct VaultSource {
    config: VaultConfig,
    /// The logged-in client; `None` until the first read (or after a rejected token).
    session: RwLock<Option<Session>>,
}

/// A logged-in client and when its token needs attention.
#[derive(Clone)]
struct Session {
    client: Arc<VaultClient>,
    /// When to renew (two thirds into the TTL); `None` for tokens without a TTL we track.
    refresh_at: Option<Instant>,
    renewable: bool,
}

impl Session {
    fn new(client: VaultClient, ttl_secs: u64, renewable: bool) -> Self {
        let refresh_at =
            (ttl_secs > 0).then(|| Instant::now() + Duration::from_secs(ttl_secs) * 2 / 3);
        Self {
            client: Arc::new(client),
            refresh_at,
            renewable,
        }
    }

    fn due(&self) -> bool {
        self.refresh_at.is_some_and(|t| Instant::now() >= t)
    }
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
            session: RwLock::new(None),
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

    async fn login(&self) -> Result<Session, LoginError> {
        let mut client = self.build_client("")?;
        let (method, mount, result) = match &self.config.auth {
            Auth::Token(t) => {
                client.set_token(t.expose());
                return Ok(Session::new(client, 0, false));
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
        metrics::inc(&METRICS.vault_logins_total);
        tracing::info!(method, mount = %mount, ttl_s = info.lease_duration, "logged in to vault");
        Ok(Session::new(client, info.lease_duration, info.renewable))
    }

    /// Renews the session's token; `None` if Vault refuses (then log in again).
    async fn renew(&self, session: &Session) -> Option<Session> {
        if !session.renewable {
            return None;
        }
        match vaultrs::token::renew_self(session.client.as_ref(), None).await {
            // Renewal cannot extend past the token's max TTL; a short grant means: log in soon.
            Ok(info) if info.lease_duration > 0 => {
                metrics::inc(&METRICS.vault_renewals_total);
                tracing::debug!(ttl_s = info.lease_duration, "renewed vault token");
                Some(Session {
                    client: session.client.clone(),
                    refresh_at: Some(
                        Instant::now() + Duration::from_secs(info.lease_duration) * 2 / 3,
                    ),
                    renewable: info.renewable,
                })
            }
            Ok(_) => None,
            Err(e) => {
                tracing::info!(error = %describe(&e), "vault token renewal failed; logging in again");
                None
            }
        }
    }

    /// The shared client: logs in if there is none, renews or logs in again when the token is
    /// due. Only one caller does that at a time; the others wait and reuse its result.
    async fn client(&self) -> Result<Arc<VaultClient>, LoginError> {
        if let Some(s) = self.session.read().await.as_ref()
            && !s.due()
        {
            return Ok(s.client.clone());
        }
        let mut slot = self.session.write().await;
        let next = match slot.as_ref() {
            Some(s) if !s.due() => return Ok(s.client.clone()),
            Some(s) => match self.renew(s).await {
                Some(renewed) => renewed,
                None => self.login().await?,
            },
            None => self.login().await?,
        };
        let client = next.client.clone();
        *slot = Some(next);
        Ok(client)
    }

    /// Forgets `stale` (if still current) so the next `client()` logs in again.
    async fn invalidate(&self, stale: &Arc<VaultClient>) {
        let mut slot = self.session.write().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(&s.client, stale)) {
            *slot = None;
        }
    }

    async fn read_once(
        &self,
        client: &VaultClient,
        req: &SecretRequest,
    ) -> Result<SecretData, ClientError> {
        metrics::inc(&METRICS.vault_reads_total);
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
