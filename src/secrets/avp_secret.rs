//! AVP's `-s [namespace:]name` / `AVP_SECRET`: Vault settings kept in a Kubernetes Secret, read
//! with one GET through the Kubernetes client (`crate::kube`).
//!
//! Owns: parsing `[namespace:]name` (default namespace `argocd`, as AVP), the operator's
//! allowlist of Secrets ([`SecretPolicy`]), and fetching and decoding one Secret's `data` into
//! setting names and values for the config layer (`config::Layered::with_secret`).
//! Must not: decide precedence or validate settings (that is `config`), or put a Secret's
//! values or the service-account token in an error or log line (errors name the Secret, the
//! key and the HTTP status).
//!
//! Which Secrets a request may name is the operator's decision (`SecretPolicy`, optionally per
//! Argo CD project): AVP reads whatever the Application names, so any tenant could use the
//! sidecar's service account to load another team's Vault credentials.

use base64::Engine as _;
use serde_json::Value;
use std::collections::HashMap;

use crate::config::per_project::{PerProjectError, ProjectRules, Reason};
use crate::kube::{GetError, KubeApi, SetupError};
use crate::names::{is_dns_label, is_dns_subdomain};

/// Default namespace when the name has none, as in AVP.
pub(crate) const DEFAULT_NAMESPACE: &str = "argocd";
/// A Secret is at most 1 MiB; its JSON with base64 values is a bit larger.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

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
    /// No client could be built (not in a cluster, unreadable CA or token file).
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("secret {secret} not found or not readable: HTTP {status}{}", status_hint(*.status))]
    Status { secret: String, status: u16 },
    #[error("secret {secret}: key {key} is not valid base64 or UTF-8")]
    Decode { secret: String, key: String },
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (the service-account token was rejected)",
        403 => " (may the sidecar's service account get this Secret?)",
        _ => "",
    }
}

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, KubeError> {
        let s = s.trim();
        let (namespace, name) = s.split_once(':').unwrap_or((DEFAULT_NAMESPACE, s));
        if is_dns_label(namespace, 63) && is_dns_subdomain(name) {
            Ok(Self {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(KubeError::BadName(s.to_owned()))
        }
    }
}

/// Operator rules `[project=]namespace:name` (`--avp-secret-allow`), each part a glob where `*`
/// matches anything; the project is a glob too (`*`, the key of rules without a project,
/// matches every project).
#[derive(Clone, Debug, Default)]
pub struct SecretPolicy {
    rules: ProjectRules<String>,
}

impl SecretPolicy {
    /// `[project=]namespace:name` rules, comma-separated or one per entry, by the per-project
    /// item rule of [`crate::config::per_project`]. A secret pattern without a `namespace:`
    /// part (or with an empty one) is refused: it could never match, and keeping it silently
    /// would hide the mistake.
    pub fn parse(rules: &[String]) -> Result<Self, PerProjectError> {
        let rules = ProjectRules::parse("--avp-secret-allow", rules, |secret| {
            let valid = secret == "*"
                || secret
                    .split_once(':')
                    .is_some_and(|(ns, name)| !ns.trim().is_empty() && !name.trim().is_empty());
            if valid {
                Ok(secret.to_owned())
            } else {
                Err(Reason::Expected(
                    "namespace:name (`*` matches any characters)".into(),
                ))
            }
        })?;
        Ok(Self { rules })
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

/// The Secret's `data`, decoded, keys upper-cased (AVP reads them as config keys).
pub(crate) async fn read(
    api: &KubeApi,
    secret: &SecretName,
) -> Result<HashMap<String, String>, KubeError> {
    let path = format!(
        "/api/v1/namespaces/{}/secrets/{}",
        secret.namespace, secret.name
    );
    let body = api
        .get_json(&path, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            GetError::Failed(reason) => KubeError::Api {
                secret: secret.to_string(),
                reason,
            },
            GetError::Status(status) => KubeError::Status {
                secret: secret.to_string(),
                status,
            },
        })?;
    decode_data(secret, &body)
}

/// A Secret object's `data` as settings: keys upper-cased (viper is case-insensitive), values
/// base64-decoded UTF-8 without trailing newlines (files made with `--from-file` end in one).
/// AVP marshals the same map to YAML and reads it back, which keeps every value a string.
fn decode_data(secret: &SecretName, body: &Value) -> Result<HashMap<String, String>, KubeError> {
    let mut out = HashMap::new();
    let Some(data) = body.get("data").and_then(Value::as_object) else {
        return Ok(out);
    };
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
    Ok(out)
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
        let p = SecretPolicy::parse(&["team-a=team-a:avp-*".into(), "argocd:shared".into()])
            .expect("valid");
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
    #[test]
    fn policy_rules_are_validated_and_errors_name_project_and_secret() {
        for bad in ["avp-config", "=argocd:x", "team=", "team=:x", "ns:"] {
            let err = SecretPolicy::parse(&[bad.into()]).expect_err(bad);
            assert_eq!((err.flag, err.item.as_str()), ("--avp-secret-allow", bad));
        }
        let p = SecretPolicy::parse(&[" team-a = team-a:avp-* , *".into()]).expect("valid");
        assert!(p.allows("team-a", &SecretName::parse("team-a:avp-x").expect("name")));
        assert!(p.allows("other", &SecretName::parse("any:thing").expect("name")));
        let p = SecretPolicy::parse(&["team-a=team-a:avp-*".into()]).expect("valid");
        let err = p
            .check(
                "team-b",
                &SecretName::parse("team-a:avp-config").expect("name"),
            )
            .expect_err("denied");
        assert_eq!(
            err.to_string(),
            "project \"team-b\" may not use the AVP config secret team-a:avp-config (not allowed by the operator's --avp-secret-allow)"
        );
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[tokio::test]
    async fn reads_and_decodes_a_secret() {
        let body = serde_json::json!({"kind": "Secret", "data": {
            "avp_type": b64("vault"),
            "VAULT_ADDR": b64("http://vault:8200\n"),
            "AVP_SECRET_ID": b64("sid-value-123"),
        }})
        .to_string();
        let server = crate::secrets::fake_http::Server::start(vec![(200, body)]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "sa-token-xyz\n").expect("write");
        let api = KubeApi::new(Some(server.addr.clone()), Some(token)).expect("api");
        let data = read(&api, &SecretName::parse("team-a:avp").expect("name"))
            .await
            .expect("secret");
        assert_eq!(data.get("AVP_TYPE").map(String::as_str), Some("vault"));
        assert_eq!(
            data.get("VAULT_ADDR").map(String::as_str),
            Some("http://vault:8200")
        );
        assert_eq!(
            data.get("AVP_SECRET_ID").map(String::as_str),
            Some("sid-value-123")
        );
        let seen = server.requests().await;
        assert!(
            seen[0].starts_with("GET /api/v1/namespaces/team-a/secrets/avp HTTP/1.1"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer sa-token-xyz\r\n"),
            "{}",
            seen[0]
        );
    }

    #[tokio::test]
    async fn api_errors_name_the_secret_never_values_or_token() {
        let server = crate::secrets::fake_http::Server::start(vec![
            (404, "{}".into()),
            (403, "{}".into()),
            (
                200,
                serde_json::json!({"data": {"GOOD": b64("x"), "BAD": "not base64 sid-value-123"}})
                    .to_string(),
            ),
            (200, "<html>".into()),
        ])
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "sa-token-xyz").expect("write");
        let api = KubeApi::new(Some(server.addr.clone()), Some(token.clone())).expect("api");
        let name = SecretName::parse("avp").expect("name");
        let mut messages = Vec::new();
        for want in [
            "secret argocd:avp not found or not readable: HTTP 404",
            "secret argocd:avp not found or not readable: HTTP 403 (may the sidecar's service account get this Secret?)",
            "secret argocd:avp: key BAD is not valid base64 or UTF-8",
            "could not connect to the Kubernetes API to read secret argocd:avp: bad response",
        ] {
            let err = read(&api, &name).await.expect_err(want);
            assert!(err.to_string().starts_with(want), "{err}");
            messages.push(err.to_string());
        }
        std::fs::write(&token, "\n").expect("write");
        let err = read(&api, &name).await.expect_err("empty token");
        assert!(
            err.to_string().contains("not a usable bearer token"),
            "{err}"
        );
        let missing =
            KubeApi::new(Some(server.addr.clone()), Some(dir.path().join("none"))).expect("api");
        messages.push(
            read(&missing, &name)
                .await
                .expect_err("no token")
                .to_string(),
        );
        drop(server);
        let down = KubeApi::new(Some("http://127.0.0.1:1".into()), Some(token)).expect("api");
        std::fs::write(dir.path().join("token"), "sa-token-xyz").expect("write");
        let err = read(&down, &name).await.expect_err("down");
        assert!(
            err.to_string()
                .starts_with("could not connect to the Kubernetes API"),
            "{err}"
        );
        messages.push(err.to_string());
        for m in messages {
            assert!(
                !m.contains("sa-token-xyz") && !m.contains("sid-value-123"),
                "{m}"
            );
        }
    }
}
