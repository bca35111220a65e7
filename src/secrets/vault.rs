//! The Vault (or OpenBao) backend: the only code that talks HTTP to Vault.
//!
//! Owns: the Vault client (TLS, namespace, timeout), logging in, keeping the token usable, and
//! turning Vault's answers into [`SecretData`] or [`ReadError`] with AVP's meaning.
//! Must not: log, return or format a token, credential or secret value (errors name paths,
//! mounts and HTTP statuses only), read settings from the process env (vaultrs would, for any
//! setting left unset, so every one is set explicitly), or panic on any answer from Vault.
//!
//! Reads are AVP's: `GET /v1/<path>` with the path exactly as written (KV v2 paths carry
//! `data/`, which AVP never inserts), `?version=N` for KV v2; KV v2 returns `data.data`, KV v1
//! returns `data` and ignores versions. One difference: a KV v2 path with no `data` segment
//! after the mount gets AVP's "did you forget to include /data/" error without asking Vault,
//! which would usually answer 403 (reader policies cover `<mount>/data/*`) and hide the hint.
//!
//! The GET goes through the `reqwest` client that vaultrs built (same TLS settings and
//! timeout) rather than `kv2::read`: vaultrs' KV v2 calls take mount and path apart and insert
//! `data/` themselves, and collapse every 404 into one error, while AVP's messages need the
//! response body (warnings mean "forgot `/data/`", `metadata` with a deletion time means
//! "version deleted", a bare 404 means "not found"). Logins and token renewal use vaultrs
//! (GitHub, which vaultrs lacks, is one POST through the same client). A GET whose connection
//! breaks is sent once more (Vault restarted under a pooled connection); a 429 or 5xx (not 501)
//! is asked again after 250 ms, 500 ms, ... (`VAULT_MAX_RETRIES` times, default 2, as AVP's
//! client does); timeouts are not retried.
//!
//! Token lifecycle: log in once, lazily, and share the token across requests (AVP logs in on
//! every run); renew it when two thirds of its TTL have passed (log in again if renewal fails
//! or the TTL is used up); on a 403 whose token `auth/token/lookup-self` also refuses (revoked
//! or expired; Vault's `default` policy allows the lookup), log in again once and retry. Only
//! one login or renewal runs at a time; concurrent readers wait for it, and when it fails they
//! all get its error rather than each trying again against a Vault that just said no (a caller
//! that arrives after the failure tries afresh: failures are shared, not cached). A due token
//! whose refresh fails stays in use while its TTL lasts; the refresh is retried every 5 s.
//! A static `VAULT_TOKEN` is never renewed or replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use tokio::time::Instant;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::mounts::{Described, SecretMounts, Verdict};
use super::settings::{Auth, Sensitive, VaultConfig, is_clean_path, is_header_safe};
use super::{KvMetadata, KvVersion, ReadError, SecretData, SecretRequest, SecretSource};
use crate::metrics::{self, VaultOp, VaultResult};

tokio::task_local! {
    /// The Application whose render is calling Vault, as `<project>/<app>`.
    static ORIGIN: String;
}

/// Runs `work` with its Vault reads, metadata and capability calls attributed to `origin`
/// (`<project>/<app>`; `None`: not attributed): they carry it in an `X-Avp-Sidecar-App` header,
/// which Vault's audit log records once the operator lists the header in
/// `sys/config/auditing/request-headers`. Logins and renewals, shared by all renders, carry
/// none; a read shared by concurrent renders names the render that asked first; answers from
/// the cache make no call at all.
pub async fn attributed<F: std::future::Future>(origin: Option<String>, work: F) -> F::Output {
    match origin {
        Some(origin) => ORIGIN.scope(origin, work).await,
        None => work.await,
    }
}

/// Larger answers are refused (a KV secret is at most a few MiB).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Vault error texts are cut to this many characters in our messages.
const MAX_ERROR_CHARS: usize = 300;

pub struct VaultSource {
    config: VaultConfig,
    /// Which mounts placeholders may read (`--secret-mounts`; empty: asked of Vault).
    mounts: SecretMounts,
    /// Mounts Vault described, and when; reused for [`MOUNT_TTL`].
    described: std::sync::Mutex<Vec<(Described, Instant)>>,
    /// The Kubernetes service-account token of the last login (read from a file at each
    /// login), kept only to recognise it in an answer.
    jwt: std::sync::Mutex<Option<Sensitive>>,
    session: RwLock<Slot>,
    logins: AtomicU64,
    /// Failed logins so far; a caller that saw `n` shares any failure numbered above `n`.
    failures: AtomicU64,
}

/// How long Vault's description of a mount is reused: mounts change rarely (an upgrade to
/// KV v2, a remount), and a lookup is one small call per mount.
const MOUNT_TTL: Duration = Duration::from_secs(300);
/// Credentials shorter than this are recognised in an answer only as a whole string (a short
/// password would match inside unrelated values).
const MIN_SUBSTRING_CREDENTIAL: usize = 8;

#[derive(Default)]
struct Slot {
    /// The logged-in client; `None` until the first read (or after a rejected token).
    current: Option<Session>,
    /// The last login failure and its number, handed to callers that were already waiting
    /// when it failed.
    failure: Option<(u64, LoginError)>,
}

/// A logged-in client and when its token needs attention.
#[derive(Clone)]
struct Session {
    client: Arc<VaultClient>,
    /// When to renew (two thirds into the TTL); `None` for tokens without a TTL we track.
    refresh_at: Option<Instant>,
    /// When the token's TTL runs out; `None` as for `refresh_at`.
    expires_at: Option<Instant>,
    renewable: bool,
}

/// A token this close to its end is not used while its refresh fails.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);
/// After a failed refresh of a token that is still valid, try again this much later.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

impl Session {
    fn new(client: VaultClient, ttl_secs: u64, renewable: bool) -> Self {
        Self::with_ttl(Arc::new(client), ttl_secs, renewable)
    }

    fn with_ttl(client: Arc<VaultClient>, ttl_secs: u64, renewable: bool) -> Self {
        let ttl = Duration::from_secs(ttl_secs.min(u32::MAX.into()));
        let now = Instant::now();
        Self {
            client,
            refresh_at: (ttl_secs > 0).then(|| now + ttl * 2 / 3),
            expires_at: (ttl_secs > 0).then(|| now + ttl),
            renewable,
        }
    }

    fn due(&self) -> bool {
        self.refresh_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Still usable while a refresh fails: the TTL has not (nearly) run out.
    fn still_valid(&self) -> bool {
        self.expires_at
            .is_some_and(|t| Instant::now() + EXPIRY_MARGIN < t)
    }
}

impl std::fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSource")
            .field("addr", &self.config.addr)
            .field("namespace", &self.config.namespace)
            .field("auth", &self.config.auth.kind())
            .finish()
    }
}

/// Why a login failed (messages name the method and mount, never a credential).
#[derive(Clone, Debug, thiserror::Error)]
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
    /// The readiness check's token lookup got no usable answer (Vault down, sealed, the token
    /// refused).
    #[error("vault token check (auth/token/lookup-self) failed: {0}")]
    Check(String),
}

/// One HTTP answer from Vault; a secret's values (or a login token) while it lives.
struct Answer {
    status: u16,
    body: Value,
}

impl Drop for Answer {
    fn drop(&mut self) {
        super::wipe(&mut self.body);
    }
}

impl VaultSource {
    /// Checks the settings and TLS material up front; the first login happens on the first
    /// read.
    pub fn new(config: VaultConfig) -> Result<Self, LoginError> {
        // rustls needs a process-wide crypto provider; a second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // VaultConfig's fields are public: repeat the checks whose failure would panic in
        // vaultrs (URL parsing, header values).
        if reqwest::Url::parse(&config.addr).is_err() {
            return Err(LoginError::Client(format!(
                "invalid vault address {:?}",
                config.addr
            )));
        }
        if let Some(ns) = &config.namespace
            && !is_header_safe(ns)
        {
            return Err(LoginError::Client(format!(
                "VAULT_NAMESPACE {ns:?} is not a valid header value"
            )));
        }
        if let Auth::Token(t) = &config.auth
            && !is_header_safe(t.expose())
        {
            return Err(LoginError::Client(
                "VAULT_TOKEN is not a valid header value".to_owned(),
            ));
        }
        let source = Self {
            config,
            mounts: SecretMounts::default(),
            described: Default::default(),
            jwt: Default::default(),
            session: RwLock::new(Slot::default()),
            logins: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        source.build_client("")?;
        Ok(source)
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Placeholders may read only these mounts (see [`super::mounts`]).
    #[must_use]
    pub fn with_mounts(mut self, mounts: SecretMounts) -> Self {
        self.mounts = mounts;
        self
    }

    /// Successful logins so far (token auth never logs in).
    pub fn login_count(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Every setting explicit: vaultrs' defaults would read `VAULT_*` from the process env.
    fn build_client(&self, token: &str) -> Result<VaultClient, LoginError> {
        let c = &self.config;
        let identity = match (&c.tls.client_cert, &c.tls.client_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p)
                        .map_err(|e| LoginError::Client(format!("{}: {e}", p.display())))
                };
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                Some(vaultrs::client::Identity::from_pem(&pem).map_err(|e| {
                    LoginError::Client(format!(
                        "client certificate {} / key {}: {}",
                        cert.display(),
                        key.display(),
                        crate::errors::chain(&e)
                    ))
                })?)
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
            .timeout(Some(c.timeout))
            .namespace(c.namespace.clone());
        let settings = b.build().map_err(|e| LoginError::Client(e.to_string()))?;
        VaultClient::new(settings).map_err(|e| LoginError::Client(describe(&e)))
    }

    async fn login(&self) -> Result<Session, LoginError> {
        let started = Instant::now();
        let (method, mount, result) = match &self.config.auth {
            Auth::Token(t) => return Ok(Session::new(self.build_client(t.expose())?, 0, false)),
            Auth::AppRole {
                role_id,
                secret_id,
                mount,
            } => {
                let client = self.build_client("")?;
                (
                    "approle",
                    mount,
                    vaultrs::auth::approle::login(&client, mount, role_id, secret_id.expose())
                        .await
                        .map(|i| (i.client_token, i.lease_duration, i.renewable))
                        .map_err(|e| login_failure(&e)),
                )
            }
            Auth::UserPass {
                username,
                password,
                mount,
            } => {
                let client = self.build_client("")?;
                (
                    "userpass",
                    mount,
                    vaultrs::auth::userpass::login(&client, mount, username, password.expose())
                        .await
                        .map(|i| (i.client_token, i.lease_duration, i.renewable))
                        .map_err(|e| login_failure(&e)),
                )
            }
            Auth::Kubernetes {
                role,
                jwt_path,
                mount,
            } => {
                let jwt_err = |reason: String| LoginError::Jwt {
                    path: jwt_path.display().to_string(),
                    reason,
                };
                let jwt = tokio::fs::read_to_string(jwt_path)
                    .await
                    .map_err(|e| jwt_err(e.to_string()))?;
                if jwt.trim().is_empty() {
                    return Err(jwt_err("the file is empty".to_owned()));
                }
                if let Ok(mut kept) = self.jwt.lock() {
                    *kept = Some(Sensitive::new(jwt.trim()));
                }
                let client = self.build_client("")?;
                (
                    "kubernetes",
                    mount,
                    vaultrs::auth::kubernetes::login(&client, mount, role, jwt.trim())
                        .await
                        .map(|i| (i.client_token, i.lease_duration, i.renewable))
                        .map_err(|e| login_failure(&e)),
                )
            }
            Auth::GitHub { token, mount } => {
                let client = self.build_client("")?;
                (
                    "github",
                    mount,
                    github_login(&client, mount, token.expose()).await,
                )
            }
        };
        let rejected = |reason: String| LoginError::Rejected {
            method,
            mount: mount.clone(),
            reason,
        };
        let outcome = result
            .as_ref()
            .map_or_else(|(r, _)| *r, |_| VaultResult::Ok);
        metrics::vault_call(VaultOp::Login, outcome, started.elapsed());
        let (token, ttl, renewable) = result.map_err(|(_, reason)| rejected(reason))?;
        if !is_header_safe(&token) {
            return Err(rejected("vault returned an unusable token".to_owned()));
        }
        let mut client = self.build_client("")?;
        vaultrs::client::Client::set_token(&mut client, &token);
        self.logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(method, mount = %mount, ttl_s = ttl, "logged in to vault");
        Ok(Session::new(client, ttl, renewable))
    }

    /// Renews the session's token; `None` if Vault refuses (then log in again).
    async fn renew(&self, session: &Session) -> Option<Session> {
        if !session.renewable {
            return None;
        }
        let started = Instant::now();
        let renewed = vaultrs::token::renew_self(session.client.as_ref(), None).await;
        let outcome = renewed
            .as_ref()
            .map_or_else(call_result, |_| VaultResult::Ok);
        metrics::vault_call(VaultOp::Renew, outcome, started.elapsed());
        match renewed {
            // Renewal cannot extend past the token's max TTL; a short grant means: log in soon.
            Ok(info) if info.lease_duration > 0 => {
                tracing::debug!(ttl_s = info.lease_duration, "renewed vault token");
                Some(Session::with_ttl(
                    session.client.clone(),
                    info.lease_duration,
                    info.renewable,
                ))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::info!(error = %describe(&e), "vault token renewal failed; logging in again");
                None
            }
        }
    }

    /// The shared client: logs in if there is none, renews or logs in again when the token is
    /// due. Only one caller does that at a time; the others wait and reuse its result, or its
    /// error. While a due token is still valid, a failed refresh keeps it in use (logged) and
    /// is tried again a few seconds later.
    async fn client(&self) -> Result<Arc<VaultClient>, LoginError> {
        // Before any lock: a reader queued behind a failing login counts as waiting for it.
        let seen = self.failures.load(Ordering::Acquire);
        if let Some(s) = self.session.read().await.current.as_ref()
            && !s.due()
        {
            return Ok(s.client.clone());
        }
        let mut slot = self.session.write().await;
        if let Some((n, err)) = &slot.failure
            && *n > seen
        {
            return Err(err.clone());
        }
        let next = match slot.current.as_ref() {
            Some(s) if !s.due() => return Ok(s.client.clone()),
            Some(s) => match self.renew(s).await {
                Some(renewed) => Ok(renewed),
                None => self.login().await,
            },
            None => self.login().await,
        };
        match next {
            Ok(next) => {
                let client = next.client.clone();
                *slot = Slot {
                    current: Some(next),
                    failure: None,
                };
                Ok(client)
            }
            Err(e) => {
                if let Some(s) = slot.current.as_mut()
                    && s.still_valid()
                {
                    tracing::warn!(error = %e, "vault login failed; the current token is still valid and stays in use");
                    let retry = Instant::now() + REFRESH_RETRY;
                    s.refresh_at = Some(s.expires_at.map_or(retry, |t| t.min(retry)));
                    return Ok(s.client.clone());
                }
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                slot.failure = Some((n, e.clone()));
                Err(e)
            }
        }
    }

    /// For readiness: the shared session (logging in only if there is none or it is due, like
    /// a read), then one `auth/token/lookup-self` with its token, which shows that Vault answers
    /// and still accepts the token. A token Vault refuses (403) is dropped and, for methods that
    /// log in, replaced by one fresh login, whose success is the answer. So one call makes at
    /// most one login attempt; errors name the method and mount, never a credential.
    pub async fn check_login(&self) -> Result<(), LoginError> {
        let client = self.client().await?;
        let answer = self
            .get(
                &client,
                "auth/token/lookup-self",
                None,
                VaultOp::TokenLookup,
            )
            .await
            .map_err(LoginError::Check)?;
        match answer.status {
            200..=299 => Ok(()),
            403 if !matches!(self.config.auth, Auth::Token(_)) => {
                self.invalidate(&client).await;
                self.client().await.map(|_| ())
            }
            status => Err(LoginError::Check(status_message(status, &answer.body))),
        }
    }

    /// Forgets `stale` (if still current) so the next `client()` logs in again.
    async fn invalidate(&self, stale: &Arc<VaultClient>) {
        let mut slot = self.session.write().await;
        if slot
            .current
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.client, stale))
        {
            slot.current = None;
        }
    }

    /// `GET /v1/<path>[?version=N]`; `Err` only for transport failures. Counted in the
    /// metrics as one `op` call with its final result (retries counted apart).
    async fn get(
        &self,
        client: &VaultClient,
        path: &str,
        version: Option<u64>,
        op: VaultOp,
    ) -> Result<Answer, String> {
        let started = Instant::now();
        let result = self.get_retrying(client, path, version, op).await;
        let outcome = match &result {
            Ok(answer) => VaultResult::of_status(answer.status),
            Err(Failure::Timeout(_)) => VaultResult::Timeout,
            Err(Failure::Transport(_)) => VaultResult::Unreachable,
            Err(Failure::Answer(_)) => VaultResult::Error,
        };
        metrics::vault_call(op, outcome, started.elapsed());
        result.map_err(Failure::into_message)
    }

    async fn get_retrying(
        &self,
        client: &VaultClient,
        path: &str,
        version: Option<u64>,
        op: VaultOp,
    ) -> Result<Answer, Failure> {
        let mut url = api_url(client, path).map_err(Failure::Answer)?;
        if let Some(v) = version {
            url.query_pairs_mut().append_pair("version", &v.to_string());
        }
        let headers = headers(client).map_err(Failure::Answer)?;
        let get = || client.http.http.get(url.clone()).headers(headers.clone());
        let mut retries = 0;
        loop {
            let result = match send(get(), self.config.timeout).await {
                // A GET is idempotent: one more try when a pooled connection turned out dead
                // (Vault restarted, a proxy closed it). Timeouts are not retried.
                Err(Failure::Transport(_)) => send(get(), self.config.timeout).await,
                other => other,
            };
            match result {
                Ok(answer) if is_transient(answer.status) && retries < self.config.max_retries => {
                    retries += 1;
                    metrics::VAULT_RETRIES.inc([op.name()]);
                    // 750 ms of waiting in all with the default two retries; a request's
                    // deadline cancels it sooner.
                    tokio::time::sleep(RETRY_WAIT * retries).await;
                }
                other => return other,
            }
        }
    }
}

/// Wait before the n-th retry: n × this.
const RETRY_WAIT: Duration = Duration::from_millis(250);

/// Answers worth asking again: rate limited, or a server-side failure that is often brief
/// (sealed or standby during a restart, overloaded). 501 (not implemented) is not brief.
fn is_transient(status: u16) -> bool {
    status == 429 || ((500..600).contains(&status) && status != 501)
}

/// `<VAULT_ADDR>/v1/<path>`, each path segment percent-encoded (no query or fragment can be
/// smuggled in through a path).
fn api_url(client: &VaultClient, path: &str) -> Result<reqwest::Url, String> {
    let mut url = client.settings.address.clone();
    url.path_segments_mut()
        .map_err(|()| "vault address cannot carry a path".to_owned())?
        .pop_if_empty()
        .push("v1")
        .extend(path.split('/'));
    Ok(url)
}

/// The headers vaultrs' middleware would add; the token header is marked sensitive.
fn headers(client: &VaultClient) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    h.insert("x-vault-request", HeaderValue::from_static("true"));
    if !client.settings.token.is_empty() {
        let mut v = HeaderValue::from_str(&client.settings.token)
            .map_err(|_| "the vault token is not a valid header value".to_owned())?;
        v.set_sensitive(true);
        h.insert("x-vault-token", v);
    }
    if let Some(ns) = &client.settings.namespace {
        let v = HeaderValue::from_str(ns)
            .map_err(|_| format!("namespace {ns:?} is not a valid header value"))?;
        h.insert("x-vault-namespace", v);
    }
    // Names come from the repo-server; one that is no header value is simply not sent.
    if let Ok(Some(origin)) = ORIGIN.try_with(|o| HeaderValue::from_str(o).ok()) {
        h.insert("x-avp-sidecar-app", origin);
    }
    Ok(h)
}

/// Why a request got no usable answer.
enum Failure {
    /// No answer in time.
    Timeout(String),
    /// Could not connect, or the connection broke.
    Transport(String),
    /// An answer we refuse to read.
    Answer(String),
}

impl Failure {
    fn result(&self) -> VaultResult {
        match self {
            Failure::Timeout(_) => VaultResult::Timeout,
            Failure::Transport(_) => VaultResult::Unreachable,
            Failure::Answer(_) => VaultResult::Error,
        }
    }

    fn into_message(self) -> String {
        match self {
            Failure::Timeout(m) | Failure::Transport(m) | Failure::Answer(m) => m,
        }
    }
}

/// Sends and reads the body (capped). The body is JSON or `Null`.
async fn send(request: reqwest::RequestBuilder, timeout: Duration) -> Result<Answer, Failure> {
    let resp = request.send().await.map_err(|e| transport(&e, timeout))?;
    let status = resp.status().as_u16();
    let bytes = super::body::read_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            super::body::BodyError::Transport(e) => transport(&e, timeout),
            too_large @ super::body::BodyError::TooLarge { .. } => {
                Failure::Answer(format!("HTTP {status}: {too_large}"))
            }
        })?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer { status, body })
}

/// GitHub login (vaultrs has none): `POST auth/<mount>/login {"token": ...}`.
async fn github_login(
    client: &VaultClient,
    mount: &str,
    token: &str,
) -> Result<(String, u64, bool), (VaultResult, String)> {
    let ours = |message: String| (VaultResult::Error, message);
    let url = api_url(client, &format!("auth/{mount}/login")).map_err(ours)?;
    let body = serde_json::to_vec(&serde_json::json!({ "token": token }))
        .map_err(|e| ours(format!("encoding login request: {e}")))?;
    let mut h = headers(client).map_err(ours)?;
    h.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let timeout = client.settings.timeout.unwrap_or(Duration::ZERO);
    let answer = send(client.http.http.post(url).headers(h).body(body), timeout)
        .await
        .map_err(|f| (f.result(), f.into_message()))?;
    if !(200..300).contains(&answer.status) {
        return Err((
            login_status(answer.status),
            status_message(answer.status, &answer.body),
        ));
    }
    let auth = answer.body.get("auth");
    let token = auth
        .and_then(|a| a.get("client_token"))
        .and_then(Value::as_str)
        .ok_or_else(|| ours("the response has no auth.client_token".to_owned()))?;
    let ttl = auth
        .and_then(|a| a.get("lease_duration"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let renewable = auth
        .and_then(|a| a.get("renewable"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((token.to_owned(), ttl, renewable))
}

/// A transport error: what failed and why, without URL or headers.
fn transport(e: &reqwest::Error, timeout: Duration) -> Failure {
    if e.is_timeout() {
        return Failure::Timeout(format!(
            "no answer from vault within {timeout:?} (VAULT_CLIENT_TIMEOUT)"
        ));
    }
    let what = if e.is_connect() {
        "cannot connect to vault"
    } else {
        "request to vault failed"
    };
    let mut msg = what.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::Transport(msg)
}

/// `HTTP <status>[: <vault's errors>]`, whitespace collapsed, length capped.
fn status_message(status: u16, body: &Value) -> String {
    let errors: Vec<&str> = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let text = errors.join("; ");
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        format!("HTTP {status}")
    } else if text.chars().count() > MAX_ERROR_CHARS {
        let cut: String = text.chars().take(MAX_ERROR_CHARS).collect();
        format!("HTTP {status}: {cut}...")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// A vaultrs error as text. vaultrs' errors carry URLs, statuses and Vault's messages, never
/// request bodies or headers.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            let body = serde_json::json!({ "errors": errors });
            status_message(*code, &body)
        }
        other => crate::errors::chain(other),
    }
}

/// A refused login is answered 400 (approle, userpass: "invalid credentials"), 401 or 403.
fn login_status(status: u16) -> VaultResult {
    match status {
        400 | 401 | 403 => VaultResult::Denied,
        other => VaultResult::of_status(other),
    }
}

/// A vaultrs call's failure as a metrics result: Vault's status, or why there was none (found
/// in the cause chain: vaultrs wraps reqwest's error).
fn call_result(e: &ClientError) -> VaultResult {
    if let ClientError::APIError { code, .. } = e {
        return VaultResult::of_status(*code);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return if r.is_timeout() {
                VaultResult::Timeout
            } else if r.is_connect() || r.is_request() {
                VaultResult::Unreachable
            } else {
                VaultResult::Error
            };
        }
        cause = c.source();
    }
    VaultResult::Error
}

/// A failed vaultrs login: its metrics result and its message.
fn login_failure(e: &ClientError) -> (VaultResult, String) {
    let result = match e {
        ClientError::APIError { code, .. } => login_status(*code),
        other => call_result(other),
    };
    (result, describe(e))
}

/// Whether a path names a `data` segment after its first (the mount's) segment.
fn has_data_segment(path: &str) -> bool {
    path.split('/').skip(1).any(|s| s == "data")
}

/// Vault's answer in AVP's terms (`pkg/backends/vault.go`, vault/api `Logical().Read`).
fn interpret(req: &SecretRequest, answer: Answer) -> Result<SecretData, ReadError> {
    let backend = |message: String| ReadError::Backend {
        path: req.path.clone(),
        message,
    };
    match answer.status {
        200..=299 | 404 => {}
        403 => return Err(ReadError::PermissionDenied(req.path.clone())),
        status => return Err(backend(status_message(status, &answer.body))),
    }
    let data = answer.body.get("data").filter(|d| !d.is_null());
    let warnings = answer
        .body
        .get("warnings")
        .and_then(Value::as_array)
        .is_some_and(|w| !w.is_empty());
    // vault/api returns no secret for a 404 whose body has neither data nor warnings.
    if answer.status == 404 && data.is_none() && !warnings {
        return Err(ReadError::NotFound(req.clone()));
    }
    match req.kv_version {
        KvVersion::V1 => match data {
            Some(Value::Object(m)) => Ok(SecretData::new(m.clone())),
            None => Err(ReadError::NotFound(req.clone())),
            Some(_) => Err(backend("vault returned data that is not a map".to_owned())),
        },
        KvVersion::V2 => {
            let empty = Map::new();
            let map = match data {
                Some(Value::Object(m)) => m,
                None => &empty,
                Some(_) => return Err(backend("vault returned data that is not a map".to_owned())),
            };
            match map.get("data") {
                Some(Value::Object(inner)) => Ok(SecretData::new(inner.clone()).with_version(
                    map.get("metadata")
                        .and_then(|m| m.get("version"))
                        .and_then(Value::as_u64),
                )),
                Some(Value::Null) => Err(ReadError::VersionDeleted {
                    path: req.path.clone(),
                    version: req.version.clone().unwrap_or_else(|| {
                        map.get("metadata")
                            .and_then(|m| m.get("version"))
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    }),
                }),
                Some(_) => Err(backend(
                    "vault returned data.data that is not a map".to_owned(),
                )),
                // AVP: `len(secret.Data) == 0`, i.e. a warnings-only answer.
                None if map.is_empty() => Err(ReadError::MissingDataSegment(req.path.clone())),
                None => Err(backend(
                    "could not get data from vault, check that kv-v2 is the correct engine"
                        .to_owned(),
                )),
            }
        }
    }
}

#[async_trait::async_trait]
impl SecretSource for VaultSource {
    async fn read(&self, req: &SecretRequest) -> Result<SecretData, ReadError> {
        let backend = |message: String| ReadError::Backend {
            path: req.path.clone(),
            message,
        };
        let path = req.path.trim_matches('/');
        if !is_clean_path(path) {
            return Err(backend(
                "invalid vault path (empty, '.' or '..' segments, whitespace, control characters, '?', '#' and '%' are not allowed)"
                    .to_owned(),
            ));
        }
        self.precheck(req)?;
        // No KV v2 read can succeed without `data/` after the mount; say so without asking
        // Vault (which would often answer 403: reader policies cover `<mount>/data/*`).
        if req.kv_version == KvVersion::V2 && !has_data_segment(path) {
            return Err(ReadError::MissingDataSegment(req.path.clone()));
        }
        let version = match (req.kv_version, &req.version) {
            (KvVersion::V2, Some(v)) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| backend(format!("secret version {v:?} is not a number")))?,
            ),
            _ => None,
        };
        let described = self.admit(path, req.kv_version).await?;
        let (answer, client) = self
            .get_relogin(path, version, VaultOp::Read)
            .await
            .map_err(backend)?;
        undescribed(path, described, &answer)?;
        let data = interpret(req, answer)?;
        if self.holds_credential(&data, &client) {
            metrics::SECRET_READS_REFUSED.inc([]);
            return Err(ReadError::OwnCredentials(req.path.clone()));
        }
        Ok(data)
    }

    fn precheck(&self, req: &SecretRequest) -> Result<(), ReadError> {
        self.mounts
            .check(&req.path, req.kv_version)
            .map(drop)
            .map_err(|e| {
                metrics::SECRET_READS_REFUSED.inc([]);
                ReadError::Refused(e)
            })
    }

    async fn metadata(&self, req: &SecretRequest) -> Result<Option<KvMetadata>, ReadError> {
        let backend = |message: String| ReadError::Backend {
            path: req.path.clone(),
            message,
        };
        let path = req.path.trim_matches('/');
        if !is_clean_path(path) {
            return Err(backend("invalid vault path".to_owned()));
        }
        let described = self.admit(path, req.kv_version).await?;
        if req.kv_version == KvVersion::V1 {
            return Ok(None);
        }
        // `<mount>/data/<rest>` → `<mount>/metadata/<rest>`.
        let mut segments: Vec<&str> = path.split('/').collect();
        let Some(data) = segments.iter().skip(1).position(|s| *s == "data") else {
            return Err(ReadError::MissingDataSegment(req.path.clone()));
        };
        segments[data + 1] = "metadata";
        let (answer, _) = self
            .get_relogin(&segments.join("/"), None, VaultOp::Metadata)
            .await
            .map_err(backend)?;
        undescribed(path, described, &answer)?;
        match answer.status {
            200..=299 => {}
            404 => return Err(ReadError::NotFound(req.clone())),
            403 => return Err(ReadError::PermissionDenied(req.path.clone())),
            status => return Err(backend(status_message(status, &answer.body))),
        }
        let data = &answer.body["data"];
        let current_version = data["current_version"]
            .as_u64()
            .ok_or_else(|| backend("vault metadata has no current_version".to_owned()))?;
        let mut live_versions: Vec<u64> = data["versions"]
            .as_object()
            .map(|versions| {
                versions
                    .iter()
                    .filter(|(_, v)| {
                        v["destroyed"] != Value::Bool(true)
                            && v["deletion_time"].as_str().unwrap_or("").is_empty()
                    })
                    .filter_map(|(k, _)| k.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        live_versions.sort_unstable();
        Ok(Some(KvMetadata {
            current_version,
            live_versions,
        }))
    }

    /// `POST sys/capabilities-self {"paths": [path]}`: lets `check` tell "may read the data
    /// but not the metadata" from "may not read" without reading a value.
    async fn capabilities(&self, path: &str) -> Result<Option<Vec<String>>, ReadError> {
        let backend = |message: String| ReadError::Backend {
            path: path.to_owned(),
            message,
        };
        let clean = path.trim_matches('/');
        if !is_clean_path(clean) {
            return Err(backend("invalid vault path".to_owned()));
        }
        let client = self.client().await.map_err(|e| backend(e.to_string()))?;
        let url = api_url(&client, "sys/capabilities-self").map_err(backend)?;
        let mut h = headers(&client).map_err(backend)?;
        h.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = serde_json::json!({ "paths": [clean] }).to_string();
        let started = Instant::now();
        let sent = send(
            client.http.http.post(url).headers(h).body(body),
            self.config.timeout,
        )
        .await;
        let outcome = match &sent {
            Ok(answer) => VaultResult::of_status(answer.status),
            Err(f) => f.result(),
        };
        metrics::vault_call(VaultOp::Capabilities, outcome, started.elapsed());
        let answer = sent.map_err(|f| backend(f.into_message()))?;
        match answer.status {
            200..=299 => {}
            403 => return Err(ReadError::PermissionDenied(path.to_owned())),
            status => return Err(backend(status_message(status, &answer.body))),
        }
        // Vault answers `{"<path>": [...], "capabilities": [...]}` (and the same under `data`).
        let body = &answer.body;
        let list = [&body[clean], &body["data"][clean], &body["capabilities"]]
            .into_iter()
            .find_map(Value::as_array)
            .ok_or_else(|| backend("vault's capabilities answer has no list".to_owned()))?;
        Ok(Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl VaultSource {
    /// `get`, logging in again once on a 403 when our token itself is no longer valid (revoked
    /// or expired early). Most 403s are real denials for a path (reader policies often cover
    /// only `<mount>/data/*`); `lookup-self` tells them apart without creating a new token, so a
    /// tenant naming a forbidden path cannot make the sidecar log in on every render. Returns
    /// the client that got the answer (its token is what the answer must not contain).
    async fn get_relogin(
        &self,
        path: &str,
        version: Option<u64>,
        op: VaultOp,
    ) -> Result<(Answer, Arc<VaultClient>), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let answer = self.get(&client, path, version, op).await?;
        if answer.status == 403
            && !matches!(self.config.auth, Auth::Token(_))
            && self
                .get(
                    &client,
                    "auth/token/lookup-self",
                    None,
                    VaultOp::TokenLookup,
                )
                .await
                .is_ok_and(|me| me.status == 403)
        {
            self.invalidate(&client).await;
            let client = self.client().await.map_err(|e| e.to_string())?;
            let answer = self.get(&client, path, version, op).await?;
            return Ok((answer, client));
        }
        Ok((answer, client))
    }

    /// The mount rules ([`super::mounts`]) for a read of `path` as `read_as`: system mounts
    /// and unlisted mounts refused without a call; without a list, the mount is described by
    /// Vault once per [`MOUNT_TTL`] and must be KV of the version read. `Ok(false)`: Vault
    /// would not describe it (403: no capability under the path, or no such mount); the read
    /// may go ahead for AVP's "not found"/"permission denied", but a 2xx answer to it must be
    /// refused ([`undescribed`]).
    async fn admit(&self, path: &str, read_as: KvVersion) -> Result<bool, ReadError> {
        let refused = |e| {
            metrics::SECRET_READS_REFUSED.inc([]);
            ReadError::Refused(e)
        };
        match self.mounts.check(path, read_as).map_err(refused)? {
            Verdict::Listed(_) => return Ok(true),
            Verdict::Discover => {}
        }
        let known = self.described.lock().ok().and_then(|seen| {
            seen.iter()
                .find(|(d, at)| at.elapsed() < MOUNT_TTL && d.covers(path))
                .map(|(d, _)| d.clone())
        });
        let described = match known {
            Some(d) => d,
            None => match self.describe(path).await? {
                Some(d) => d,
                None => return Ok(false),
            },
        };
        described.check(path, read_as).map_err(refused)?;
        Ok(true)
    }

    /// `GET sys/internal/ui/mounts/<path>`: Vault's description of the mount `path` is on
    /// (what the `vault kv` CLI asks; Vault answers for any path the token has a capability
    /// under). `None` on a 403.
    async fn describe(&self, path: &str) -> Result<Option<Described>, ReadError> {
        // A failed login is the read's failure, reported as such.
        self.client().await.map_err(|e| ReadError::Backend {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let backend = |message: String| ReadError::Backend {
            path: path.to_owned(),
            message: format!(
                "could not tell which secrets engine it is on (GET sys/internal/ui/mounts: {message}); the operator can list the mounts with --secret-mounts"
            ),
        };
        let (answer, _) = self
            .get_relogin(
                &format!("sys/internal/ui/mounts/{path}"),
                None,
                VaultOp::DescribeMount,
            )
            .await
            .map_err(backend)?;
        match answer.status {
            200..=299 => {}
            403 => return Ok(None),
            status => return Err(backend(status_message(status, &answer.body))),
        }
        let described = Described::from_answer(&answer.body["data"])
            .ok_or_else(|| backend("the answer names no mount path or type".to_owned()))?;
        if described.covers(path)
            && let Ok(mut seen) = self.described.lock()
        {
            seen.retain(|(d, at)| at.elapsed() < MOUNT_TTL && d.mount != described.mount);
            seen.push((described.clone(), Instant::now()));
        }
        Ok(Some(described))
    }

    /// Whether a string in `data` is, or contains, a credential this source uses: the token
    /// `client` sent, or what it logs in with. A path that answers with those (a token
    /// lookup, a wrapped or copied token) must not reach a manifest, whatever the mount rules
    /// let through.
    fn holds_credential(&self, data: &SecretData, client: &VaultClient) -> bool {
        let jwt = self.jwt.lock().ok().and_then(|j| j.clone());
        let mut credentials = vec![client.settings.token.as_str()];
        match &self.config.auth {
            Auth::Token(t) => credentials.push(t.expose()),
            Auth::AppRole { secret_id, .. } => credentials.push(secret_id.expose()),
            Auth::UserPass { password, .. } => credentials.push(password.expose()),
            Auth::GitHub { token, .. } => credentials.push(token.expose()),
            Auth::Kubernetes { .. } => credentials.extend(jwt.as_ref().map(Sensitive::expose)),
        }
        credentials.retain(|c| !c.is_empty());
        data.values()
            .values()
            .any(|v| contains_any(v, &credentials))
    }
}

/// A successful answer for a path whose mount Vault would not describe is refused: its engine
/// is unknown. (Vault answers the description for every path the token can use, so this is not
/// expected; refusing keeps the rule "KV only" without exceptions.)
fn undescribed(path: &str, described: bool, answer: &Answer) -> Result<(), ReadError> {
    if described || !(200..=299).contains(&answer.status) {
        return Ok(());
    }
    metrics::SECRET_READS_REFUSED.inc([]);
    Err(ReadError::Refused(super::mounts::MountError::Undescribed {
        path: path.to_owned(),
    }))
}

/// Whether any string in `value` equals a credential, or contains one that is long enough to
/// recognise inside other text.
fn contains_any(value: &Value, credentials: &[&str]) -> bool {
    match value {
        Value::String(s) => credentials
            .iter()
            .any(|c| s == c || (c.len() >= MIN_SUBSTRING_CREDENTIAL && s.contains(c))),
        Value::Array(items) => items.iter().any(|v| contains_any(v, credentials)),
        Value::Object(map) => map.values().any(|v| contains_any(v, credentials)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::mounts::MountError;
    use crate::secrets::settings::Tls;
    use serde_json::json;

    fn req(path: &str, kv: KvVersion, version: Option<&str>) -> SecretRequest {
        SecretRequest {
            path: path.to_owned(),
            kv_version: kv,
            version: version.map(str::to_owned),
        }
    }

    fn answer(status: u16, body: Value) -> Answer {
        Answer { status, body }
    }

    fn config(addr: &str, auth: Auth, timeout: Duration) -> VaultConfig {
        VaultConfig {
            addr: addr.to_owned(),
            namespace: None,
            auth,
            kv_version: KvVersion::V2,
            path_validation: None,
            tls: Tls::default(),
            timeout,
            max_retries: crate::secrets::settings::DEFAULT_MAX_RETRIES,
        }
    }

    /// A source for scripted answers: `secret/` listed as KV v2, so no mount lookup comes
    /// before the answers a test scripts.
    fn fake_source(c: VaultConfig) -> Result<VaultSource, LoginError> {
        let mounts = SecretMounts::parse(&["secret=2".into()]).expect("valid");
        VaultSource::new(c).map(|s| s.with_mounts(mounts))
    }

    fn mount_answer(path: &str, kind: &str, version: &str) -> (u16, String) {
        let body = json!({"data": {"path": path, "type": kind, "options": {"version": version}}});
        (200, body.to_string())
    }

    #[tokio::test]
    async fn mounts_are_described_once_and_only_kv_is_read() {
        let kv2 = (
            200,
            json!({"data": {"data": {"k": "v"}, "metadata": {"version": 1}}}).to_string(),
        );
        let server = crate::secrets::fake_http::Server::start(vec![
            mount_answer("team/kv/", "kv", "2"),
            kv2.clone(),
            kv2,
            mount_answer("transit/", "transit", ""),
            (
                403,
                json!({"errors": ["preflight capability check returned 403"]}).to_string(),
            ),
            (403, json!({"errors": ["permission denied"]}).to_string()),
        ])
        .await;
        let token = Auth::Token(Sensitive::new("tok"));
        let source =
            VaultSource::new(config(&server.addr, token, Duration::from_secs(5))).expect("source");
        for path in ["team/kv/data/a", "team/kv/data/b"] {
            source
                .read(&req(path, KvVersion::V2, None))
                .await
                .expect("kv read");
        }
        // Known mount, wrong version: refused without a call.
        let e = source
            .read(&req("team/kv/data/a", KvVersion::V1, None))
            .await
            .expect_err("v1 on v2");
        assert!(
            matches!(e, ReadError::Refused(MountError::KvVersion { .. })),
            "{e}"
        );
        let e = source
            .read(&req("transit/keys/k", KvVersion::V1, None))
            .await
            .expect_err("transit");
        assert!(
            matches!(e, ReadError::Refused(MountError::NotKv { .. })),
            "{e}"
        );
        let e = source
            .read(&req("hidden/x", KvVersion::V1, None))
            .await
            .expect_err("403");
        assert_eq!(e, ReadError::PermissionDenied("hidden/x".into()));
        // System mounts: refused before any call, by precheck and by read.
        let lookup = req("auth/token/lookup-self", KvVersion::V1, None);
        assert!(matches!(
            source.precheck(&lookup),
            Err(ReadError::Refused(MountError::Reserved {
                mount: "auth",
                ..
            }))
        ));
        assert!(source.read(&lookup).await.is_err());
        let seen = server.requests().await;
        let lines: Vec<&str> = seen.iter().filter_map(|r| r.lines().next()).collect();
        assert_eq!(
            lines,
            [
                "GET /v1/sys/internal/ui/mounts/team/kv/data/a HTTP/1.1",
                "GET /v1/team/kv/data/a HTTP/1.1",
                "GET /v1/team/kv/data/b HTTP/1.1",
                "GET /v1/sys/internal/ui/mounts/transit/keys/k HTTP/1.1",
                "GET /v1/sys/internal/ui/mounts/hidden/x HTTP/1.1",
                "GET /v1/hidden/x HTTP/1.1",
            ]
        );
    }

    #[tokio::test]
    async fn answers_holding_our_credentials_are_refused() {
        let holding = |v: &str| {
            (
                200,
                json!({"data": {"data": {"k": v}, "metadata": {"version": 1}}}).to_string(),
            )
        };
        let server = crate::secrets::fake_http::Server::start(vec![
            holding("hvs.static-token-1234"),
            holding("prefix hvs.static-token-1234 suffix"),
            holding("hvs.static"),
        ])
        .await;
        let token = Auth::Token(Sensitive::new("hvs.static-token-1234"));
        let source =
            fake_source(config(&server.addr, token, Duration::from_secs(5))).expect("source");
        for _ in 0..2 {
            let e = source
                .read(&req("secret/data/a", KvVersion::V2, None))
                .await
                .expect_err("own token");
            assert_eq!(
                e.to_string(),
                "vault's answer for secret/data/a contains this sidecar's own vault credentials; refused (placeholders may read secrets only)"
            );
        }
        // Part of a credential is not the credential.
        source
            .read(&req("secret/data/a", KvVersion::V2, None))
            .await
            .expect("unrelated value");

        // A short credential counts only as a whole value; the token a login returned counts.
        let server = crate::secrets::fake_http::Server::start(vec![
            (200, json!({"auth": {"client_token": "tok-from-login", "lease_duration": 600, "renewable": true}}).to_string()),
            holding("xpwx"),
            holding("pw"),
            holding("tok-from-login"),
        ])
        .await;
        let github = Auth::GitHub {
            token: Sensitive::new("pw"),
            mount: "github".into(),
        };
        let source =
            fake_source(config(&server.addr, github, Duration::from_secs(5))).expect("source");
        let a = req("secret/data/a", KvVersion::V2, None);
        source
            .read(&a)
            .await
            .expect("contains a short password: not recognised");
        assert!(matches!(
            source.read(&a).await,
            Err(ReadError::OwnCredentials(_))
        ));
        assert!(
            matches!(source.read(&a).await, Err(ReadError::OwnCredentials(_))),
            "login token"
        );
    }

    #[test]
    fn interpret_kv2_answers() {
        let r = req("secret/data/app", KvVersion::V2, None);
        let ok = interpret(
            &r,
            answer(
                200,
                json!({"data": {"data": {"k": 1}, "metadata": {"version": 3}}}),
            ),
        )
        .expect("ok");
        assert_eq!(ok.get("k"), Some(&json!(1)));
        let deleted =
            json!({"data": {"data": null, "metadata": {"version": 3, "deletion_time": "t"}}});
        assert_eq!(
            interpret(&r, answer(404, deleted.clone())),
            Err(ReadError::VersionDeleted {
                path: "secret/data/app".into(),
                version: "3".into()
            })
        );
        let v = req("secret/data/app", KvVersion::V2, Some("1"));
        assert_eq!(
            interpret(&v, answer(404, deleted)),
            Err(ReadError::VersionDeleted {
                path: "secret/data/app".into(),
                version: "1".into()
            })
        );
        assert_eq!(
            interpret(&v, answer(404, json!({"errors": []}))),
            Err(ReadError::NotFound(v.clone()))
        );
        assert_eq!(
            interpret(&r, answer(404, Value::Null)),
            Err(ReadError::NotFound(r.clone()))
        );
        let no_data = req("secret/app", KvVersion::V2, None);
        assert_eq!(
            interpret(
                &no_data,
                answer(
                    404,
                    json!({"data": null, "warnings": ["Invalid path for a versioned K/V"]})
                )
            ),
            Err(ReadError::MissingDataSegment("secret/app".into()))
        );
        let kv1_in_v2 = interpret(&no_data, answer(200, json!({"data": {"k": "v"}})))
            .expect_err("kv1 in v2 mode");
        assert!(
            kv1_in_v2
                .to_string()
                .contains("kv-v2 is the correct engine")
        );
        assert!(!kv1_in_v2.to_string().contains("\"v\""));
        assert_eq!(
            interpret(&r, answer(403, json!({"errors": ["permission denied"]}))),
            Err(ReadError::PermissionDenied("secret/data/app".into()))
        );
        let sealed =
            interpret(&r, answer(503, json!({"errors": ["Vault is sealed"]}))).expect_err("sealed");
        assert_eq!(
            sealed.to_string(),
            "vault read of secret/data/app failed: HTTP 503: Vault is sealed"
        );
        for weird in [json!({"data": "x"}), json!({"data": {"data": [1]}})] {
            assert!(matches!(
                interpret(&r, answer(200, weird)),
                Err(ReadError::Backend { .. })
            ));
        }
    }

    #[test]
    fn interpret_kv1_answers() {
        let r = req("kv1/app", KvVersion::V1, Some("7"));
        let ok = interpret(
            &r,
            answer(200, json!({"data": {"data": {"x": 1}, "k": "v"}})),
        )
        .expect("ok");
        assert_eq!(ok.values().len(), 2, "KV v1 returns data as is");
        assert_eq!(
            interpret(&r, answer(404, json!({"errors": []}))),
            Err(ReadError::NotFound(r.clone()))
        );
    }

    #[test]
    fn status_messages_are_short_and_flat() {
        let long = "x".repeat(1000);
        let m = status_message(500, &json!({"errors": [format!("a\n\tb {long}")]}));
        assert!(m.starts_with("HTTP 500: a b xxx"), "{m}");
        assert!(m.len() < MAX_ERROR_CHARS + 20);
        assert_eq!(status_message(404, &Value::Null), "HTTP 404");
    }

    #[test]
    fn data_segments() {
        assert!(has_data_segment("secret/data/app"));
        assert!(has_data_segment("team/kv/data/app"));
        assert!(!has_data_segment("secret/app"));
        assert!(!has_data_segment("data/app"));
    }

    #[test]
    fn new_rejects_what_would_panic_in_vaultrs() {
        let token = |t: &str| Auth::Token(Sensitive::new(t));
        assert!(VaultSource::new(config("not a url", token("t"), Duration::from_secs(1))).is_err());
        assert!(
            VaultSource::new(config("http://v:1", token("a\nb"), Duration::from_secs(1))).is_err()
        );
        let mut c = config("http://v:1", token("t"), Duration::from_secs(1));
        c.namespace = Some("a\r\nb".into());
        assert!(VaultSource::new(c).is_err());
        let mut c = config("https://v:1", token("t"), Duration::from_secs(1));
        c.tls.ca_certs = vec!["/nonexistent/ca.pem".into()];
        let err = VaultSource::new(c).expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn bad_paths_and_versions_are_refused_before_any_request() {
        // Port 9 (discard) on a closed address: nothing is sent for these requests anyway.
        let source = fake_source(config(
            "http://127.0.0.1:9",
            Auth::Token(Sensitive::new("t")),
            Duration::from_secs(1),
        ))
        .expect("source");
        for path in [
            "secret/data/../x",
            "secret//data/x",
            "",
            "secret/data/a b",
            "secret/data/x?y=1",
            "s/data/%2e",
        ] {
            let err = source
                .read(&req(path, KvVersion::V2, None))
                .await
                .expect_err(path);
            assert!(
                err.to_string().contains("invalid vault path"),
                "{path}: {err}"
            );
        }
        assert_eq!(
            source.read(&req("secret/app", KvVersion::V2, None)).await,
            Err(ReadError::MissingDataSegment("secret/app".into())),
            "no request for a KV v2 path without data/"
        );
        let err = source
            .read(&req("secret/data/x", KvVersion::V2, Some("abc")))
            .await
            .expect_err("version");
        assert!(
            err.to_string()
                .contains("secret version \"abc\" is not a number"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unresponsive_vault_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accept connections and never answer.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let source = fake_source(config(
            &format!("http://{addr}"),
            Auth::Token(Sensitive::new("tok-never-shown")),
            Duration::from_millis(500),
        ))
        .expect("source");
        let started = std::time::Instant::now();
        let err = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await
            .expect_err("timeout");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        assert!(msg.contains("no answer from vault within 500ms"), "{msg}");
        assert!(
            msg.starts_with("vault read of secret/data/app failed"),
            "{msg}"
        );
        assert!(!msg.contains("tok-never-shown"));
        hold.abort();
    }

    #[tokio::test]
    async fn github_login_posts_the_token_and_uses_the_returned_one() {
        let server = crate::secrets::fake_http::Server::start(vec![
            (
                200,
                json!({"auth": {"client_token": "gh-issued-token", "lease_duration": 3600, "renewable": true}})
                    .to_string(),
            ),
            (200, json!({"data": {"data": {"k": "v"}, "metadata": {"version": 1}}}).to_string()),
        ])
        .await;
        let mut c = config(
            &server.addr,
            Auth::GitHub {
                token: Sensitive::new("ghp_personal"),
                mount: "gh".into(),
            },
            Duration::from_secs(5),
        );
        c.namespace = Some("team-a".into());
        let source = fake_source(c).expect("source");
        let data = source
            .read(&req("secret/data/app", KvVersion::V2, Some("1")))
            .await
            .expect("read");
        assert_eq!(data.get("k"), Some(&json!("v")));
        assert_eq!(source.login_count(), 1);
        let seen = server.requests().await;
        assert_eq!(seen.len(), 2);
        assert_request(&seen[0], "POST /v1/auth/gh/login ");
        assert!(
            seen[0].contains("{\"token\":\"ghp_personal\"}"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("x-vault-namespace: team-a")
        );
        assert_request(&seen[1], "GET /v1/secret/data/app?version=1 ");
        assert!(
            seen[1]
                .to_ascii_lowercase()
                .contains("x-vault-token: gh-issued-token")
        );
        assert!(!format!("{source:?}").contains("ghp_personal"));
    }

    #[tokio::test]
    async fn transient_answers_are_retried_twice() {
        let sealed = || (503, json!({"errors": ["Vault is sealed"]}).to_string());
        let ok = (
            200,
            json!({"data": {"data": {"k": "v"}, "metadata": {"version": 4}}}).to_string(),
        );
        let token = || Auth::Token(Sensitive::new("tok"));
        let server =
            crate::secrets::fake_http::Server::start(vec![sealed(), (429, String::new()), ok])
                .await;
        let source =
            fake_source(config(&server.addr, token(), Duration::from_secs(5))).expect("source");
        let data = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await
            .expect("third try answers");
        assert_eq!(data.version(), Some(4));
        assert_eq!(server.requests().await.len(), 3);

        let server =
            crate::secrets::fake_http::Server::start(vec![sealed(), sealed(), sealed(), sealed()])
                .await;
        let source =
            fake_source(config(&server.addr, token(), Duration::from_secs(5))).expect("source");
        let err = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await
            .expect_err("still sealed");
        assert_eq!(
            err.to_string(),
            "vault read of secret/data/app failed: HTTP 503: Vault is sealed"
        );
        assert_eq!(server.requests().await.len(), 3, "two retries, no more");

        // VAULT_MAX_RETRIES=0: one try.
        let server = crate::secrets::fake_http::Server::start(vec![sealed(), sealed()]).await;
        let source = fake_source(VaultConfig {
            max_retries: 0,
            ..config(&server.addr, token(), Duration::from_secs(5))
        })
        .expect("source");
        assert!(
            source
                .read(&req("secret/data/app", KvVersion::V2, None))
                .await
                .is_err()
        );
        assert_eq!(server.requests().await.len(), 1);

        // Not transient: answered at once.
        let server = crate::secrets::fake_http::Server::start(vec![(501, String::new())]).await;
        let source =
            fake_source(config(&server.addr, token(), Duration::from_secs(5))).expect("source");
        assert!(
            source
                .read(&req("secret/data/app", KvVersion::V2, None))
                .await
                .is_err()
        );
        assert_eq!(server.requests().await.len(), 1);
    }

    #[tokio::test]
    async fn github_login_failure_names_mount_not_token() {
        let server = crate::secrets::fake_http::Server::start(vec![(
            400,
            json!({"errors": ["failed to verify token"]}).to_string(),
        )])
        .await;
        let source = fake_source(config(
            &server.addr,
            Auth::GitHub {
                token: Sensitive::new("ghp_personal"),
                mount: "github".into(),
            },
            Duration::from_secs(5),
        ))
        .expect("source");
        let err = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await
            .expect_err("login fails");
        assert_eq!(
            err.to_string(),
            "vault read of secret/data/app failed: vault login (github at auth/github) failed: HTTP 400: failed to verify token"
        );
    }

    /// A request the fake server recorded begins with `line` (method, path, query).
    fn assert_request(seen: &str, line: &str) {
        assert!(seen.starts_with(line), "{line:?} expected, got:\n{seen}");
    }

    /// An AppRole source against a fake server (the login is the server's first answer).
    fn approle_source(addr: &str) -> VaultSource {
        fake_source(config(
            addr,
            Auth::AppRole {
                role_id: "role".into(),
                secret_id: Sensitive::new("secret"),
                mount: "approle".into(),
            },
            Duration::from_secs(5),
        ))
        .expect("source")
    }

    #[tokio::test]
    async fn chunked_answers_without_a_length_are_read_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let big = "x".repeat(50_000);
        let body = json!({"data": {"data": {"k": big}, "metadata": {"version": 1}}}).to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            );
            for piece in body.as_bytes().chunks(3000) {
                out.push_str(&format!("{:x}\r\n", piece.len()));
                out.push_str(std::str::from_utf8(piece).expect("ascii"));
                out.push_str("\r\n");
            }
            out.push_str("0\r\n\r\n");
            s.write_all(out.as_bytes()).await.expect("write");
        });
        let source = fake_source(config(
            &addr,
            Auth::Token(Sensitive::new("tok")),
            Duration::from_secs(5),
        ))
        .expect("source");
        let data = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await
            .expect("read");
        assert_eq!(
            data.get("k").and_then(Value::as_str).map(str::len),
            Some(50_000)
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_a_still_valid_token() {
        let refused = json!({"errors": ["vault is busy"]}).to_string();
        let data = json!({"data": {"data": {"k": "v"}, "metadata": {"version": 1}}}).to_string();
        // renew-self refused, login refused, then two reads with the old token.
        let server = crate::secrets::fake_http::Server::start(vec![
            (500, refused.clone()),
            (400, refused),
            (200, data.clone()),
            (200, data),
        ])
        .await;
        let source = approle_source(&server.addr);
        // A token past its refresh point with a minute left.
        let now = Instant::now();
        source.session.write().await.current = Some(Session {
            client: Arc::new(source.build_client("old-token").expect("client")),
            refresh_at: Some(now - Duration::from_secs(1)),
            expires_at: Some(now + Duration::from_secs(60)),
            renewable: true,
        });
        for _ in 0..2 {
            source
                .read(&req("secret/data/app", KvVersion::V2, None))
                .await
                .expect("the old token still reads");
        }
        let seen = server.requests().await;
        assert_eq!(seen.len(), 4, "no second refresh within the retry interval");
        assert_request(&seen[0], "POST /v1/auth/token/renew-self ");
        assert_request(&seen[1], "POST /v1/auth/approle/login ");
        assert!(seen[3].contains("old-token"));
    }

    #[tokio::test]
    async fn readers_waiting_on_a_failed_login_share_its_error() {
        let rejected = json!({"errors": ["invalid role or secret ID"]}).to_string();
        // One rejection, then a second one for the caller that comes after the failure.
        let server = crate::secrets::fake_http::Server::start(vec![
            (400, rejected.clone()),
            (400, rejected),
        ])
        .await;
        let source = approle_source(&server.addr);
        let reads = (0..10).map(|i| {
            let source = &source;
            async move {
                source
                    .read(&req(&format!("secret/data/app{i}"), KvVersion::V2, None))
                    .await
            }
        });
        for result in futures::future::join_all(reads).await {
            let msg = result.expect_err("login fails").to_string();
            assert!(
                msg.contains("vault login (approle at auth/approle) failed: HTTP 400"),
                "{msg}"
            );
        }
        assert_eq!(
            server.requests().await.len(),
            1,
            "one login for ten waiting readers"
        );
        // Failures are not cached: a later read tries again.
        let _ = source
            .read(&req("secret/data/app", KvVersion::V2, None))
            .await;
        assert_eq!(server.requests().await.len(), 2);
    }
}

/// Against a real OpenBao dev server, started per test on a free port (see [`bao`]).
#[cfg(test)]
mod bao_tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::VaultSource;
    use super::bao::Bao;
    use crate::secrets::settings::VaultConfig;
    use crate::secrets::{KvVersion, ReadError, SecretRequest, SecretSource};

    /// Every value and credential the seed writes; none may appear in an error or `Debug`.
    const SECRET_VALUES: [&str; 8] = [
        "s3cr3t-one",
        "s3cr3t-two",
        "s3cr3t-three",
        "gone-value",
        "forbidden-value",
        "legacy-value",
        "ns-value",
        "alice-password-9",
    ];

    struct Seeded {
        bao: Bao,
        role_id: String,
        secret_id: String,
        token: String,
    }

    impl Seeded {
        /// Everything that must never be printed.
        fn secrets(&self) -> Vec<String> {
            let mut all: Vec<String> = SECRET_VALUES.iter().map(|s| s.to_string()).collect();
            all.extend([
                self.secret_id.clone(),
                self.token.clone(),
                super::bao::ROOT_TOKEN.into(),
            ]);
            all
        }

        fn assert_clean(&self, text: &str) {
            for s in self.secrets() {
                assert!(!text.contains(&s), "secret {s:?} leaked into: {text}");
            }
        }

        fn source(&self, settings: &[(&str, &str)]) -> VaultSource {
            let mut env: HashMap<String, String> = HashMap::from([
                ("AVP_TYPE".into(), "vault".into()),
                ("VAULT_ADDR".into(), self.bao.addr.clone()),
            ]);
            env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let config = VaultConfig::from_lookup(&env).expect("config");
            let source = VaultSource::new(config).expect("source");
            self.assert_clean(&format!("{source:?} {:?}", source.config()));
            source
        }

        fn approle(&self) -> VaultSource {
            self.source(&[
                ("AVP_AUTH_TYPE", "approle"),
                ("AVP_ROLE_ID", &self.role_id),
                ("AVP_SECRET_ID", &self.secret_id),
            ])
        }

        fn token_source(&self) -> VaultSource {
            self.source(&[("AVP_AUTH_TYPE", "token"), ("VAULT_TOKEN", &self.token)])
        }
    }

    async fn seeded() -> Seeded {
        seed(Bao::start().await).await
    }

    async fn seed(bao: Bao) -> Seeded {
        bao.api(
            "POST",
            "sys/mounts/kv1",
            json!({"type": "kv", "options": {"version": "1"}}),
        )
        .await;
        for password in ["s3cr3t-one", "s3cr3t-two"] {
            bao.api(
                "POST",
                "secret/data/app",
                json!({"data": {"password": password}}),
            )
            .await;
        }
        bao.api(
            "POST",
            "secret/data/app",
            json!({"data": {"password": "s3cr3t-three", "user": "alice", "port": 5432, "enabled": true}}),
        )
        .await;
        bao.api("POST", "secret/delete/app", json!({"versions": [1]}))
            .await;
        bao.api(
            "POST",
            "secret/data/gone",
            json!({"data": {"k": "gone-value"}}),
        )
        .await;
        bao.api("POST", "secret/destroy/gone", json!({"versions": [1]}))
            .await;
        bao.api(
            "POST",
            "secret/data/deleted-latest",
            json!({"data": {"k": "gone-value"}}),
        )
        .await;
        bao.api("DELETE", "secret/data/deleted-latest", Value::Null)
            .await;
        bao.api(
            "POST",
            "secret/data/forbidden",
            json!({"data": {"k": "forbidden-value"}}),
        )
        .await;
        bao.api("POST", "kv1/legacy", json!({"key": "legacy-value", "n": 7}))
            .await;
        bao.api("POST", "kv1/data/flat", json!({"key": "legacy-value"}))
            .await;
        bao.api(
            "POST",
            "sys/policies/acl/reader",
            json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }\npath \"secret/data/forbidden\" { capabilities = [\"deny\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }\n"}),
        )
        .await;
        for method in ["approle", "userpass", "kubernetes"] {
            bao.api(
                "POST",
                &format!("sys/auth/{method}"),
                json!({"type": method}),
            )
            .await;
        }
        bao.api(
            "POST",
            "auth/approle/role/reader",
            json!({"token_policies": ["reader"], "token_ttl": "1h"}),
        )
        .await;
        let role_id = bao
            .api("GET", "auth/approle/role/reader/role-id", Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
        let secret_id = bao
            .api("POST", "auth/approle/role/reader/secret-id", Value::Null)
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_owned();
        bao.api(
            "POST",
            "auth/userpass/users/alice",
            json!({"password": "alice-password-9", "token_policies": ["reader"]}),
        )
        .await;
        let token = bao
            .api(
                "POST",
                "auth/token/create",
                json!({"policies": ["reader"], "ttl": "1h"}),
            )
            .await["auth"]["client_token"]
            .as_str()
            .expect("token")
            .to_owned();
        Seeded {
            bao,
            role_id,
            secret_id,
            token,
        }
    }

    fn req(path: &str, kv: KvVersion, version: Option<&str>) -> SecretRequest {
        SecretRequest {
            path: path.to_owned(),
            kv_version: kv,
            version: version.map(str::to_owned),
        }
    }

    fn v2(path: &str) -> SecretRequest {
        req(path, KvVersion::V2, None)
    }

    #[tokio::test]
    async fn token_auth_reads_kv2_versions_and_kv1() {
        let s = seeded().await;
        let source = s.token_source();
        let latest = source.read(&v2("secret/data/app")).await.expect("latest");
        assert_eq!(latest.values()["password"], json!("s3cr3t-three"));
        assert_eq!(latest.values()["port"], json!(5432), "JSON types are kept");
        assert_eq!(latest.values()["enabled"], json!(true));
        assert!(
            !latest.values().contains_key("nope"),
            "a missing key is the engine's business"
        );
        assert!(!format!("{latest:?}").contains("s3cr3t"));
        assert_eq!(latest.version(), Some(3), "the KV v2 version read");
        let old = source
            .read(&req("/secret/data/app/", KvVersion::V2, Some("2")))
            .await
            .expect("version 2");
        assert_eq!(old.values()["password"], json!("s3cr3t-two"));
        assert_eq!(old.version(), Some(2));
        let kv1 = source
            .read(&req("kv1/legacy", KvVersion::V1, Some("5")))
            .await
            .expect("kv1 ignores versions");
        assert_eq!(kv1.values()["key"], json!("legacy-value"));
        assert_eq!(kv1.values()["n"], json!(7));
        assert_eq!(kv1.version(), None);
        let meta = source
            .metadata(&v2("secret/data/app"))
            .await
            .expect("metadata")
            .expect("kv v2 has metadata");
        assert_eq!(meta.current_version, 3);
        assert_eq!(
            meta.live_versions,
            [2, 3],
            "version 1 is deleted in the seed"
        );
        assert_eq!(
            source
                .metadata(&req("kv1/legacy", KvVersion::V1, None))
                .await
                .expect("kv1"),
            None
        );
        assert!(matches!(
            source.metadata(&v2("secret/data/nope")).await,
            Err(ReadError::NotFound(_))
        ));
        assert_eq!(source.login_count(), 0, "token auth never logs in");
    }

    #[tokio::test]
    async fn kv_errors_match_avp() {
        let s = seeded().await;
        let source = s.token_source();
        let cases: Vec<(SecretRequest, ReadError)> = vec![
            (
                v2("secret/data/missing"),
                ReadError::NotFound(v2("secret/data/missing")),
            ),
            (
                req("secret/data/app", KvVersion::V2, Some("99")),
                ReadError::NotFound(req("secret/data/app", KvVersion::V2, Some("99"))),
            ),
            (
                req("secret/data/app", KvVersion::V2, Some("1")),
                ReadError::VersionDeleted {
                    path: "secret/data/app".into(),
                    version: "1".into(),
                },
            ),
            (
                req("secret/data/gone", KvVersion::V2, Some("1")),
                ReadError::VersionDeleted {
                    path: "secret/data/gone".into(),
                    version: "1".into(),
                },
            ),
            (
                v2("secret/data/deleted-latest"),
                ReadError::VersionDeleted {
                    path: "secret/data/deleted-latest".into(),
                    version: "1".into(),
                },
            ),
            (
                v2("secret/app"),
                ReadError::MissingDataSegment("secret/app".into()),
            ),
            (
                req("kv1/missing", KvVersion::V1, None),
                ReadError::NotFound(req("kv1/missing", KvVersion::V1, None)),
            ),
            (
                // OpenBao checks ACLs before routing: an unknown mount is denied, not missing.
                v2("no-such-mount/data/x"),
                ReadError::PermissionDenied("no-such-mount/data/x".into()),
            ),
            (
                v2("secret/data/forbidden"),
                ReadError::PermissionDenied("secret/data/forbidden".into()),
            ),
        ];
        for (r, want) in cases {
            let got = source.read(&r).await.expect_err(&r.path);
            assert_eq!(got, want, "{r}");
            s.assert_clean(&got.to_string());
        }
        assert!(
            ReadError::NotFound(req("secret/data/app", KvVersion::V2, Some("99")))
                .to_string()
                .contains("version 99")
        );
        let root = s.source(&[
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", super::bao::ROOT_TOKEN),
        ]);
        assert_eq!(
            root.read(&v2("no-such-mount/data/x")).await,
            Err(ReadError::NotFound(v2("no-such-mount/data/x")))
        );
        // KV v2 mode on a KV v1 mount: AVP says "check that kv-v2 is the correct engine" after
        // reading; the mount's description says so before, naming both versions.
        let err = source
            .read(&v2("kv1/data/flat"))
            .await
            .expect_err("kv1 as kv2");
        assert!(
            err.to_string().contains(
                "is on mount kv1/, which is KV version 1, but the placeholder reads it as version 2"
            ),
            "{err}"
        );
        s.assert_clean(&err.to_string());
        // A system path: refused before Vault is asked.
        let err = source
            .read(&v2("sys/mounts/kv1/tune"))
            .await
            .expect_err("not a kv path");
        assert!(matches!(err, ReadError::Refused(_)), "{err}");
        s.assert_clean(&err.to_string());
    }

    #[tokio::test]
    async fn approle_logs_in_once_for_concurrent_reads() {
        let s = seeded().await;
        let source = std::sync::Arc::new(s.approle());
        let reads = (0..16).map(|i| {
            let source = source.clone();
            tokio::spawn(async move {
                let path = if i % 2 == 0 {
                    "secret/data/app"
                } else {
                    "kv1/legacy"
                };
                let kv = if i % 2 == 0 {
                    KvVersion::V2
                } else {
                    KvVersion::V1
                };
                source.read(&req(path, kv, None)).await
            })
        });
        for r in reads {
            r.await.expect("join").expect("read");
        }
        assert_eq!(source.login_count(), 1);
    }

    #[tokio::test]
    async fn userpass_login_and_rejected_credentials() {
        let s = seeded().await;
        let good = s.source(&[
            ("AVP_AUTH_TYPE", "userpass"),
            ("AVP_USERNAME", "alice"),
            ("AVP_PASSWORD", "alice-password-9"),
        ]);
        assert_eq!(
            good.read(&v2("secret/data/app"))
                .await
                .expect("read")
                .values()["user"],
            json!("alice")
        );
        assert_eq!(good.login_count(), 1);
        let bad = s.source(&[
            ("AVP_AUTH_TYPE", "userpass"),
            ("AVP_USERNAME", "alice"),
            ("AVP_PASSWORD", "wrong-password-1"),
        ]);
        let err = bad
            .read(&v2("secret/data/app"))
            .await
            .expect_err("bad password");
        let msg = err.to_string();
        assert!(
            msg.starts_with("vault read of secret/data/app failed: vault login (userpass at auth/userpass) failed: HTTP 400"),
            "{msg}"
        );
        assert!(!msg.contains("wrong-password-1"), "{msg}");
        s.assert_clean(&msg);
        let bad_role = s.source(&[
            ("AVP_AUTH_TYPE", "approle"),
            ("AVP_ROLE_ID", &s.role_id),
            ("AVP_SECRET_ID", "not-the-secret-id"),
        ]);
        let msg = bad_role
            .read(&v2("secret/data/app"))
            .await
            .expect_err("bad secret id")
            .to_string();
        assert!(
            msg.contains("vault login (approle at auth/approle) failed"),
            "{msg}"
        );
        assert!(!msg.contains("not-the-secret-id"), "{msg}");
    }

    #[tokio::test]
    async fn kubernetes_login_errors_name_the_file_not_its_content() {
        let s = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = dir.path().join("token");
        std::fs::write(&jwt, "header.jwt-content-secret.sig\n").expect("write");
        let jwt_path = jwt.display().to_string();
        let source = s.source(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
            ("AVP_K8S_TOKEN_PATH", &jwt_path),
        ]);
        // The kubernetes method is enabled but not configured: Vault refuses the login.
        let msg = source
            .read(&v2("secret/data/app"))
            .await
            .expect_err("unconfigured k8s auth")
            .to_string();
        assert!(
            msg.contains("vault login (kubernetes at auth/kubernetes) failed"),
            "{msg}"
        );
        assert!(!msg.contains("jwt-content-secret"), "{msg}");
        let missing = s.source(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
            ("AVP_K8S_TOKEN_PATH", "/nonexistent/token"),
        ]);
        let msg = missing
            .read(&v2("secret/data/app"))
            .await
            .expect_err("no jwt")
            .to_string();
        assert!(
            msg.contains("reading kubernetes service account token /nonexistent/token"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn permission_denied_and_revoked_tokens() {
        let s = seeded().await;
        let approle = s.approle();
        assert_eq!(
            approle.read(&v2("secret/data/forbidden")).await,
            Err(ReadError::PermissionDenied("secret/data/forbidden".into()))
        );
        assert_eq!(
            approle.login_count(),
            1,
            "a 403 with a valid token is a denial, not a reason to log in again"
        );
        // Revoke every token issued by the approle login: the next read logs in again.
        s.bao
            .api(
                "POST",
                "sys/leases/revoke-prefix/auth/approle/login",
                Value::Null,
            )
            .await;
        let data = approle
            .read(&v2("secret/data/app"))
            .await
            .expect("re-login");
        assert_eq!(data.values()["user"], json!("alice"));
        assert_eq!(approle.login_count(), 2);
        // A static token is never replaced: once revoked, reads are denied.
        let token = s.token_source();
        token
            .read(&v2("secret/data/app"))
            .await
            .expect("token works");
        s.bao
            .api("POST", "auth/token/revoke", json!({"token": s.token}))
            .await;
        let err = token
            .read(&v2("secret/data/app"))
            .await
            .expect_err("revoked");
        assert_eq!(err, ReadError::PermissionDenied("secret/data/app".into()));
        assert_eq!(token.login_count(), 0);
    }

    #[tokio::test]
    async fn short_lived_tokens_are_replaced() {
        let s = seeded().await;
        s.bao
            .api(
                "POST",
                "auth/approle/role/short",
                json!({"token_policies": ["reader"], "token_ttl": "2s", "token_max_ttl": "2s"}),
            )
            .await;
        let role_id = s
            .bao
            .api("GET", "auth/approle/role/short/role-id", Value::Null)
            .await["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
        let secret_id = s
            .bao
            .api("POST", "auth/approle/role/short/secret-id", Value::Null)
            .await["data"]["secret_id"]
            .as_str()
            .expect("secret_id")
            .to_owned();
        let source = s.source(&[
            ("AVP_AUTH_TYPE", "approle"),
            ("AVP_ROLE_ID", &role_id),
            ("AVP_SECRET_ID", &secret_id),
        ]);
        source.read(&v2("secret/data/app")).await.expect("first");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        source
            .read(&v2("secret/data/app"))
            .await
            .expect("after expiry");
        assert_eq!(source.login_count(), 2);
    }

    #[tokio::test]
    async fn namespace_is_sent() {
        let s = seeded().await;
        s.bao.api("POST", "sys/namespaces/team-a", json!({})).await;
        s.bao
            .api_ns(
                "team-a",
                "POST",
                "sys/mounts/secret",
                json!({"type": "kv", "options": {"version": "2"}}),
            )
            .await;
        s.bao
            .api_ns(
                "team-a",
                "POST",
                "secret/data/app",
                json!({"data": {"k": "ns-value"}}),
            )
            .await;
        let in_ns = s.source(&[
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", super::bao::ROOT_TOKEN),
            ("VAULT_NAMESPACE", "team-a"),
        ]);
        assert_eq!(
            in_ns
                .read(&v2("secret/data/app"))
                .await
                .expect("in namespace")
                .values()["k"],
            json!("ns-value")
        );
        let root = s.source(&[
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", super::bao::ROOT_TOKEN),
        ]);
        assert_eq!(
            root.read(&v2("secret/data/app"))
                .await
                .expect("root")
                .values()["user"],
            json!("alice")
        );
    }

    #[tokio::test]
    async fn vault_stopped_is_a_clear_bounded_error() {
        let mut s = seeded().await;
        let source = s.approle();
        source.read(&v2("secret/data/app")).await.expect("up");
        s.bao.stop();
        let started = std::time::Instant::now();
        let err = source.read(&v2("secret/data/app")).await.expect_err("down");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("vault read of secret/data/app failed: cannot connect to vault"),
            "{msg}"
        );
        s.assert_clean(&msg);
        // A fresh source (login needed) fails the same way.
        let fresh = s.approle();
        let msg = fresh
            .read(&v2("secret/data/app"))
            .await
            .expect_err("down")
            .to_string();
        assert!(
            msg.contains("vault login (approle at auth/approle) failed"),
            "{msg}"
        );
        s.assert_clean(&msg);
    }

    #[tokio::test]
    async fn tls_verification_ca_and_client_identity() {
        let s = seed(Bao::start_tls().await).await;
        let ca = s.bao.tls_file("vault-ca.pem");
        let token = [
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", s.token.as_str()),
        ];
        fn with<'a>(
            token: &[(&'a str, &'a str)],
            extra: &[(&'a str, &'a str)],
        ) -> Vec<(&'a str, &'a str)> {
            token.iter().chain(extra).copied().collect()
        }
        let untrusted = s.source(&with(&token, &[]));
        let msg = untrusted
            .read(&v2("secret/data/app"))
            .await
            .expect_err("unknown CA")
            .to_string();
        assert!(msg.contains("certificate"), "{msg}");
        s.assert_clean(&msg);
        let trusted = s.source(&with(&token, &[("VAULT_CACERT", &ca)]));
        assert_eq!(
            trusted
                .read(&v2("secret/data/app"))
                .await
                .expect("with CA")
                .values()["user"],
            json!("alice")
        );
        let ca_dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&ca, ca_dir.path().join("ca.pem")).expect("copy");
        let ca_path = ca_dir.path().display().to_string();
        let by_dir = s.source(&with(&token, &[("VAULT_CAPATH", &ca_path)]));
        by_dir
            .read(&v2("secret/data/app"))
            .await
            .expect("with CA dir");
        let skip = s.source(&with(&token, &[("VAULT_SKIP_VERIFY", "true")]));
        skip.read(&v2("secret/data/app"))
            .await
            .expect("skip verify");
        // A client identity is loaded and offered (the dev server does not require one).
        let cert = s.bao.tls_file("vault-cert.pem");
        let key = s.bao.tls_file("vault-key.pem");
        let mtls = s.source(&with(
            &token,
            &[
                ("VAULT_CACERT", &ca),
                ("VAULT_CLIENT_CERT", &cert),
                ("VAULT_CLIENT_KEY", &key),
            ],
        ));
        mtls.read(&v2("secret/data/app"))
            .await
            .expect("with identity");
    }
}

/// A real OpenBao dev server for tests: started on a free port, stopped on drop.
///
/// Self-contained on purpose (std, tokio, reqwest, tempfile). The binary is `$BAO_BIN`, else
/// `<crate>/.tools/bin/bao` (installed by `scripts/install-tools.sh`), else `bao` on `PATH`;
/// without one the test fails saying so: it never skips silently.
#[cfg(test)]
pub(crate) mod bao {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    pub(crate) const ROOT_TOKEN: &str = "root-token-for-tests";

    pub(crate) struct Bao {
        pub addr: String,
        child: Option<Child>,
        dir: tempfile::TempDir,
        http: reqwest::Client,
    }

    fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("BAO_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "BAO_BIN={} is not a file", p.display());
            return p;
        }
        let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/bao");
        if local.is_file() {
            return local;
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("bao"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "OpenBao is needed for this test and was not found: run scripts/install-tools.sh \
                     (installs .tools/bin/bao), put `bao` on PATH, or set BAO_BIN"
                )
            })
    }

    /// A port whose successor is free too (the dev server also binds port+1 for clustering).
    fn free_port_pair() -> u16 {
        for _ in 0..200 {
            let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
                continue;
            };
            let Ok(port) = l.local_addr().map(|a| a.port()) else {
                continue;
            };
            if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                return port;
            }
        }
        panic!("no free pair of TCP ports on 127.0.0.1");
    }

    impl Bao {
        pub(crate) async fn start() -> Bao {
            Self::launch(false).await
        }

        /// With `-dev-tls`: a generated CA and certificate (for 127.0.0.1) in [`Bao::tls_file`].
        pub(crate) async fn start_tls() -> Bao {
            Self::launch(true).await
        }

        async fn launch(tls: bool) -> Bao {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let bin = binary();
            let mut last_log = String::new();
            // Another process may take the port between our probe and bao's bind: retry.
            for _ in 0..5 {
                let dir = tempfile::tempdir().expect("tempdir");
                let port = free_port_pair();
                let log = std::fs::File::create(dir.path().join("bao.log")).expect("log file");
                let mut cmd = Command::new(&bin);
                cmd.args([
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    &format!("-dev-root-token-id={ROOT_TOKEN}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .env("HOME", dir.path())
                .env_remove("VAULT_ADDR")
                .env_remove("BAO_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
                if tls {
                    let certs = dir.path().join("tls");
                    std::fs::create_dir(&certs).expect("tls dir");
                    cmd.args([
                        "-dev-tls",
                        &format!("-dev-tls-cert-dir={}", certs.display()),
                    ]);
                }
                let child = cmd
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
                let scheme = if tls { "https" } else { "http" };
                let http = reqwest::Client::builder()
                    .tls_danger_accept_invalid_certs(true)
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("http client");
                let mut bao = Bao {
                    addr: format!("{scheme}://127.0.0.1:{port}"),
                    child: Some(child),
                    dir,
                    http,
                };
                if bao.wait_ready().await {
                    return bao;
                }
                last_log = bao.log();
                bao.stop();
            }
            panic!("OpenBao dev server did not start; last log:\n{last_log}");
        }

        async fn wait_ready(&mut self) -> bool {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(child) = self.child.as_mut()
                    && !matches!(child.try_wait(), Ok(None))
                {
                    return false;
                }
                let health = self
                    .http
                    .get(format!("{}/v1/sys/health", self.addr))
                    .send()
                    .await;
                if health.is_ok_and(|r| r.status().is_success()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }

        pub(crate) fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
        }

        /// A file of `-dev-tls` mode (`vault-ca.pem`, `vault-cert.pem`, `vault-key.pem`).
        pub(crate) fn tls_file(&self, name: &str) -> String {
            self.dir.path().join("tls").join(name).display().to_string()
        }

        /// An API call with the root token; panics unless it succeeds. Returns the JSON body.
        pub(crate) async fn api(&self, method: &str, path: &str, body: Value) -> Value {
            self.call(None, method, path, body).await
        }

        /// Like [`Bao::api`], in a namespace.
        pub(crate) async fn api_ns(
            &self,
            ns: &str,
            method: &str,
            path: &str,
            body: Value,
        ) -> Value {
            self.call(Some(ns), method, path, body).await
        }

        async fn call(&self, ns: Option<&str>, method: &str, path: &str, body: Value) -> Value {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut req = self
                .http
                .request(method.clone(), format!("{}/v1/{path}", self.addr))
                .header("x-vault-token", ROOT_TOKEN);
            if let Some(ns) = ns {
                req = req.header("x-vault-namespace", ns);
            }
            if !body.is_null() {
                req = req
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(
                status.is_success(),
                "{method} {path}: HTTP {status}: {text}"
            );
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }

        /// Stops the server (idempotent).
        pub(crate) fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Bao {
        fn drop(&mut self) {
            self.stop();
        }
    }
}
