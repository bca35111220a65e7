//! AVP's `-s [namespace:]name` / `AVP_SECRET`: Vault settings kept in a Kubernetes Secret, read
//! with one plain HTTPS GET to the in-cluster API (service-account token and CA), no kube client.
//!
//! Which Secrets a request may name is the operator's decision (`SecretPolicy`, optionally per
//! Argo CD project): AVP reads whatever the Application names, so any tenant could use the
//! sidecar's service account to load another team's Vault credentials.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

/// Default namespace when the name has none, as in AVP.
pub const DEFAULT_NAMESPACE: &str = "argocd";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `[namespace:]name`, validated as Kubernetes names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KubeError {
    #[error("invalid secret name {0:?}: expected [namespace:]name")]
    BadName(String),
    #[error(
        "project {project:?} may not use the AVP config secret {secret} (not allowed by the operator's --avp-secret-allow)"
    )]
    NotAllowed { project: String, secret: String },
    #[error("could not connect to the Kubernetes API to read secret {secret}: {reason}")]
    Api { secret: String, reason: String },
    #[error("secret {secret} not found or not readable: HTTP {status}")]
    Status { secret: String, status: u16 },
    #[error("secret {secret}: key {key} is not valid base64 or UTF-8")]
    Decode { secret: String, key: String },
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, KubeError> {
        let s = s.trim();
        let (namespace, name) = s.split_once(':').unwrap_or((DEFAULT_NAMESPACE, s));
        if is_dns_name(namespace) && is_dns_name(name) {
            Ok(Self {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(KubeError::BadName(s.to_owned()))
        }
    }
}

/// Operator rules `[project=]namespace:name`, each part a glob where `*` matches anything.
#[derive(Clone, Debug, Default)]
pub struct SecretPolicy {
    rules: Vec<(String, String)>,
}

impl SecretPolicy {
    pub fn new(rules: &[String]) -> Self {
        Self {
            rules: rules
                .iter()
                .flat_map(|r| r.split(','))
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| match r.split_once('=') {
                    Some((project, secret)) => (project.to_owned(), secret.to_owned()),
                    None => ("*".to_owned(), r.to_owned()),
                })
                .collect(),
        }
    }

    pub fn allows(&self, project: &str, secret: &SecretName) -> bool {
        let full = secret.to_string();
        self.rules
            .iter()
            .any(|(p, s)| glob(p, project) && glob(s, &full))
    }

    pub fn check(&self, project: &str, secret: &SecretName) -> Result<(), KubeError> {
        if self.allows(project, secret) {
            Ok(())
        } else {
            Err(KubeError::NotAllowed {
                project: project.to_owned(),
                secret: secret.to_string(),
            })
        }
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for m in middle {
        match rest.find(m) {
            Some(i) => rest = &rest[i + m.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Where the API server is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct KubeApi {
    base: String,
    token_path: PathBuf,
    client: reqwest::Client,
}

impl KubeApi {
    /// In-cluster settings (`KUBERNETES_SERVICE_HOST`/`PORT`, the service-account token and CA),
    /// or `api_url` (with `token_path`) for tests and out-of-cluster use.
    pub fn new(api_url: Option<String>, token_path: Option<PathBuf>) -> Result<Self, KubeError> {
        let err = |reason: String| KubeError::Api {
            secret: "-".to_owned(),
            reason,
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let base = match api_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    err("KUBERNETES_SERVICE_HOST is not set (not running in a cluster?)".to_owned())
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
                let ca = std::fs::read(format!("{SA_DIR}/ca.crt"))
                    .map_err(|e| err(format!("{SA_DIR}/ca.crt: {e}")))?;
                let cert = reqwest::Certificate::from_pem(&ca).map_err(|e| err(e.to_string()))?;
                builder = builder.tls_certs_only([cert]);
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("https://{host}:{port}")
            }
        };
        Ok(Self {
            base,
            token_path: token_path.unwrap_or_else(|| PathBuf::from(format!("{SA_DIR}/token"))),
            client: builder.build().map_err(|e| err(e.to_string()))?,
        })
    }

    /// The Secret's `data`, decoded, keys upper-cased (AVP reads them as config keys).
    pub async fn secret_data(
        &self,
        secret: &SecretName,
    ) -> Result<HashMap<String, String>, KubeError> {
        let api = |reason: String| KubeError::Api {
            secret: secret.to_string(),
            reason,
        };
        // Projected service-account tokens rotate: read the file on every call.
        let token = tokio::fs::read_to_string(&self.token_path)
            .await
            .map_err(|e| api(format!("{}: {e}", self.token_path.display())))?;
        let url = format!(
            "{}/api/v1/namespaces/{}/secrets/{}",
            self.base, secret.namespace, secret.name
        );
        let resp = self
            .client
            .get(&url)
            .bearer_auth(token.trim())
            .send()
            .await
            .map_err(|e| api(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(KubeError::Status {
                secret: secret.to_string(),
                status: status.as_u16(),
            });
        }
        let bytes = resp.bytes().await.map_err(|e| api(e.to_string()))?;
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| api(format!("bad response: {e}")))?;
        let mut out = HashMap::new();
        if let Some(data) = body.get("data").and_then(Value::as_object) {
            for (k, v) in data {
                let decoded = v
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| KubeError::Decode {
                        secret: secret.to_string(),
                        key: k.clone(),
                    })?;
                out.insert(k.to_uppercase(), decoded.trim_end_matches('\n').to_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            SecretName::parse("vault-config").expect("ok"),
            SecretName {
                namespace: "argocd".into(),
                name: "vault-config".into()
            }
        );
        assert_eq!(
            SecretName::parse("team-a:avp").expect("ok").to_string(),
            "team-a:avp"
        );
        for bad in [
            "",
            "a:b:c",
            "../x",
            "ns:",
            ":x",
            "Upper",
            "a b",
            "ns:name/evil",
        ] {
            assert!(SecretName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy() {
        let p = SecretPolicy::new(&["team-a=team-a:avp-*".into(), "argocd:shared".into()]);
        let s = |x: &str| SecretName::parse(x).expect("valid");
        assert!(p.allows("team-a", &s("team-a:avp-config")));
        assert!(!p.allows("team-b", &s("team-a:avp-config")));
        assert!(p.allows("team-b", &s("shared")));
        assert!(!p.allows("team-b", &s("argocd:other")));
        assert!(!SecretPolicy::default().allows("x", &s("shared")));
        assert!(matches!(
            p.check("team-b", &s("team-a:avp-x")),
            Err(KubeError::NotAllowed { .. })
        ));
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abc"));
        assert!(glob("a*b*c", "a-b-c"));
        assert!(!glob("a*b*c", "a-c"));
        assert!(!glob("ab", "abc"));
        assert!(glob("*:avp", "ns:avp"));
    }
}
