//! The one Kubernetes API client: plain HTTPS with the pod's service-account token and CA, no
//! kube client library. Two operations are all the sidecar needs: GET an object (AVP's `-s`
//! Secret, `secrets::avp_secret`) and JSON merge PATCH an object (rotation's refresh
//! annotation, `features::rotation`).
//!
//! Owns: where the API is (in-cluster env or an override), TLS trust, the bearer token (read
//! on every call: projected tokens rotate), timeouts and size caps.
//! Must not: build object paths from unchecked names (callers pass paths made from validated
//! names), or put the token or a response body in an error.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::secrets::body::{BodyError, read_capped};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the API server is and how to authenticate to it. Every part can be overridden (tests,
/// out-of-cluster use); the defaults are the in-cluster ones.
#[derive(Clone, Debug, Default)]
pub struct KubeSettings {
    /// Base URL; default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub api_url: Option<String>,
    /// Bearer token file, read on every call (projected tokens rotate); default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub token_path: Option<PathBuf>,
    /// CA bundle for an `https` API; default `.../serviceaccount/ca.crt` for the in-cluster
    /// URL, the system roots for an overridden one.
    pub ca_path: Option<PathBuf>,
}

/// No client could be built (not in a cluster, unreadable CA, bad URL).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("Kubernetes API client: {0}")]
pub struct SetupError(String);

/// Why a GET failed. Says what went wrong on the way, never the token or a response body.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GetError {
    /// Token file, transport, size cap or an answer that is not JSON.
    #[error("{0}")]
    Failed(String),
    /// The API answered with a non-2xx status.
    #[error("HTTP {0}")]
    Status(u16),
}

/// Why a patch of a Kubernetes object failed. Names the object and the HTTP status, never the
/// token.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    #[error("could not patch {object} through the Kubernetes API: {reason}")]
    Api { object: String, reason: String },
    #[error("patching {object}: HTTP {status}{}", patch_hint(*.status))]
    Status { object: String, status: u16 },
}

impl PatchError {
    /// The object does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

fn patch_hint(status: u16) -> &'static str {
    match status {
        401 => " (the service-account token was rejected)",
        403 => {
            " (may the sidecar's service account patch it? see sidecar/kustomize/avp-sidecar-rotation)"
        }
        404 => " (not found)",
        _ => "",
    }
}

/// A client for one API server.
#[derive(Clone, Debug)]
pub struct KubeApi {
    base: String,
    token_path: PathBuf,
    client: reqwest::Client,
}

impl KubeApi {
    /// In-cluster settings from the process env, or `api_url` (with `token_path`) for tests
    /// and out-of-cluster use.
    pub fn new(api_url: Option<String>, token_path: Option<PathBuf>) -> Result<Self, SetupError> {
        Self::from_settings(
            KubeSettings {
                api_url,
                token_path,
                ca_path: None,
            },
            &|name: &str| std::env::var(name).ok(),
        )
    }

    /// `env` supplies `KUBERNETES_SERVICE_HOST`/`_PORT` when `api_url` is not set.
    pub fn from_settings(
        settings: KubeSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (base, ca_path) = match settings.api_url {
            Some(url) => (url.trim_end_matches('/').to_owned(), settings.ca_path),
            None => in_cluster(settings.ca_path, env)?,
        };
        let url =
            reqwest::Url::parse(&base).map_err(|e| SetupError(format!("API URL {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SetupError(format!(
                "API URL {base:?} is not an http(s) URL"
            )));
        }
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(ca) = ca_path.filter(|_| url.scheme() == "https") {
            let unusable = |e: &dyn std::fmt::Display| SetupError(format!("{}: {e}", ca.display()));
            let pem = std::fs::read(&ca).map_err(|e| unusable(&e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(&e))?;
            builder = builder.tls_certs_only(certs);
        }
        Ok(Self {
            base,
            token_path: settings
                .token_path
                .unwrap_or_else(|| PathBuf::from(format!("{SA_DIR}/token"))),
            client: builder.build().map_err(|e| SetupError(e.to_string()))?,
        })
    }

    /// The JSON object at `path` (below the API root, e.g. `/api/v1/namespaces/x/secrets/y`),
    /// read with a size cap into a buffer that is wiped when freed (Secrets hold values).
    pub async fn get_json(&self, path: &str, max_bytes: usize) -> Result<Value, GetError> {
        let auth = self.bearer().await.map_err(GetError::Failed)?;
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| GetError::Failed(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(GetError::Status(status.as_u16()));
        }
        let bytes = read_capped(resp, max_bytes).await.map_err(|e| match e {
            BodyError::Transport(e) => GetError::Failed(error_chain(&e)),
            too_large @ BodyError::TooLarge { .. } => GetError::Failed(too_large.to_string()),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| GetError::Failed(format!("bad response: {e}")))
    }

    /// Applies a JSON merge patch (RFC 7386) to the object at `path` (below the API root, e.g.
    /// `/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/web`). The caller builds
    /// `path` from validated names. The response body is not needed and not read.
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<(), PatchError> {
        let api = |reason: String| PatchError::Api {
            object: path.to_owned(),
            reason,
        };
        let auth = self.bearer().await.map_err(api)?;
        let resp = self
            .client
            .patch(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(patch.to_string())
            .send()
            .await
            .map_err(|e| api(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(PatchError::Status {
                object: path.to_owned(),
                status: status.as_u16(),
            })
        }
    }

    /// The `Authorization` header (marked sensitive). Projected service-account tokens rotate:
    /// the file is read on every call.
    async fn bearer(&self) -> Result<reqwest::header::HeaderValue, String> {
        let token = tokio::fs::read_to_string(&self.token_path)
            .await
            .map_err(|e| format!("{}: {e}", self.token_path.display()))?;
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(format!(
                "{}: not a usable bearer token",
                self.token_path.display()
            ));
        }
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the service-account token is not a valid header value".to_owned())?;
        auth.set_sensitive(true);
        Ok(auth)
    }
}

/// The in-cluster API URL and CA from the pod's env and service-account mount.
fn in_cluster(
    ca_path: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Option<PathBuf>), SetupError> {
    let host = env("KUBERNETES_SERVICE_HOST")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            SetupError("KUBERNETES_SERVICE_HOST is not set (not running in a cluster?)".to_owned())
        })?;
    let port = env("KUBERNETES_SERVICE_PORT")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "443".to_owned());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let ca = ca_path.unwrap_or_else(|| PathBuf::from(format!("{SA_DIR}/ca.crt")));
    Ok((format!("https://{host}:{port}"), Some(ca)))
}

/// A reqwest error with its causes, without the URL.
fn error_chain(e: &reqwest::Error) -> String {
    let head = if e.is_timeout() {
        format!("no answer within {TIMEOUT:?}")
    } else {
        "request failed".to_owned()
    };
    crate::errors::chain_after(head, std::error::Error::source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_settings_come_from_the_given_env() {
        let none = |_: &str| None;
        let err = KubeApi::from_settings(KubeSettings::default(), &none).expect_err("no host");
        assert!(
            err.to_string()
                .contains("KUBERNETES_SERVICE_HOST is not set"),
            "{err}"
        );
        let env = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.0.0.1".to_owned());
        let err = KubeApi::from_settings(
            KubeSettings {
                ca_path: Some("/nonexistent/ca.crt".into()),
                ..KubeSettings::default()
            },
            &env,
        )
        .expect_err("no CA");
        assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
        let api = KubeApi::from_settings(
            KubeSettings {
                api_url: Some("http://127.0.0.1:1/".into()),
                ..KubeSettings::default()
            },
            &none,
        )
        .expect("override");
        assert_eq!(api.base, "http://127.0.0.1:1");
        assert!(
            KubeApi::from_settings(
                KubeSettings {
                    api_url: Some("file:///etc".into()),
                    ..KubeSettings::default()
                },
                &none
            )
            .is_err()
        );
    }
}
