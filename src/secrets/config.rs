//! Vault settings by argocd-vault-plugin's variable names, parsed and validated once.
//!
//! Sources, highest precedence first: the operator's process environment, then the config file
//! (`-c`, YAML/JSON or `KEY=VALUE` lines). Deliberately stricter than AVP: the request's
//! `ARGOCD_ENV_*` variables (set by whoever edits the Application) are never consulted, so a
//! tenant cannot point the sidecar at their own Vault (harvesting its credentials), switch auth,
//! read files as "JWTs", or disable `AVP_PATH_VALIDATION`. AVP strips `ARGOCD_ENV_` and gives
//! those values the highest precedence.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::secrets::KvVersion;

/// A credential: `Debug`/`Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the sidecar logs in to Vault (`AVP_AUTH_TYPE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Token(Sensitive),
    AppRole {
        role_id: String,
        secret_id: Sensitive,
        mount: String,
    },
    Kubernetes {
        role: String,
        jwt_path: PathBuf,
        mount: String,
    },
    UserPass {
        username: String,
        password: Sensitive,
        mount: String,
    },
}

impl Auth {
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "k8s",
            Auth::UserPass { .. } => "userpass",
        }
    }
}

/// TLS settings (`VAULT_CACERT`, `VAULT_CAPATH`, `VAULT_CLIENT_CERT`/`KEY`, `VAULT_SKIP_VERIFY`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_certs: Vec<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub skip_verify: bool,
}

#[derive(Clone, Debug)]
pub struct VaultConfig {
    pub addr: String,
    pub namespace: Option<String>,
    pub auth: Auth,
    pub kv_version: KvVersion,
    pub path_validation: Option<regex::Regex>,
    pub tls: Tls,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(
        "must provide a supported vault type, received {0:?} (avp-sidecar supports AVP_TYPE=vault)"
    )]
    UnsupportedType(String),
    #[error("must provide a supported authentication type, received {0:?}")]
    UnsupportedAuth(String),
    #[error("{0}")]
    MissingCredential(&'static str),
    #[error("VAULT_ADDR must be set to an http(s) URL, got {0:?}")]
    BadAddr(String),
    #[error("unsupported kvVersion specified: AVP_KV_VERSION={0:?} (must be 1 or 2)")]
    BadKvVersion(String),
    #[error("{0:?} is not a valid regular expression: {1}")]
    BadPathValidation(String, String),
    #[error("VAULT_NAMESPACE {0:?} contains characters not allowed in an HTTP header")]
    BadNamespace(String),
    #[error("invalid {name}: {value:?}")]
    BadValue { name: &'static str, value: String },
    #[error("reading config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Looks up a setting by name in the layered sources.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Process env first, then the file's values, then a Kubernetes Secret's (`-s`/`AVP_SECRET`).
#[derive(Clone, Debug, Default)]
pub struct Layered {
    pub env: HashMap<String, String>,
    pub file: HashMap<String, String>,
    pub secret: HashMap<String, String>,
}

impl Layered {
    /// The operator's environment (and optional config file). Never request env.
    pub fn from_process(file: Option<&Path>) -> Result<Self, ConfigError> {
        Ok(Self {
            env: std::env::vars().collect(),
            file: match file {
                Some(p) => read_file(p)?,
                None => HashMap::new(),
            },
            secret: HashMap::new(),
        })
    }

    /// The same layers with a Secret's values underneath.
    pub fn with_secret(&self, secret: HashMap<String, String>) -> Self {
        Self {
            secret,
            ..self.clone()
        }
    }

    /// Whether any Vault setting is present at all (else substitution has no backend).
    pub fn configured(&self) -> bool {
        self.get(AVP_TYPE).is_some()
    }
}

impl Lookup for Layered {
    fn get(&self, name: &str) -> Option<String> {
        [&self.env, &self.file, &self.secret]
            .into_iter()
            .find_map(|layer| layer.get(name).filter(|v| !v.is_empty()))
            .cloned()
    }
}

pub const AVP_TYPE: &str = "AVP_TYPE";

/// Reads `-c FILE`: JSON or YAML mapping by extension, else `KEY=VALUE` lines (AVP accepts any
/// format viper reads; these are the ones in use). Keys are case-insensitive (upper-cased).
pub fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "yaml" | "yml" | "json") {
        let doc = crate::yaml::parse_documents(&text)
            .map_err(|e| err(e.to_string()))?
            .into_iter()
            .find(|d| !d.is_null());
        let Some(Value::Object(map)) = doc else {
            return Err(err("expected a mapping of settings".to_owned()));
        };
        map.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(err(format!("{k} must be a string, number or bool"))),
                };
                Ok((k.to_uppercase(), v))
            })
            .collect()
    } else {
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (
                    k.trim().trim_start_matches("export ").trim().to_uppercase(),
                    v.to_owned(),
                )
            })
            .collect())
    }
}

fn auth_mount(l: &dyn Lookup, specific: Option<&str>, default: &str) -> String {
    let raw = specific
        .and_then(|k| l.get(k))
        .or_else(|| l.get("AVP_MOUNT_PATH"))
        .unwrap_or_else(|| default.to_owned());
    // AVP takes the mount with its `auth/` prefix; vaultrs wants it without.
    raw.trim_matches('/')
        .strip_prefix("auth/")
        .unwrap_or(raw.trim_matches('/'))
        .to_owned()
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl VaultConfig {
    pub fn from_lookup(l: &dyn Lookup) -> Result<Self, ConfigError> {
        let kind = l.get(AVP_TYPE).unwrap_or_default();
        if kind.trim() != "vault" {
            return Err(ConfigError::UnsupportedType(kind));
        }
        let addr = l.get("VAULT_ADDR").unwrap_or_default();
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(ConfigError::BadAddr(addr));
        }
        let auth_type = l.get("AVP_AUTH_TYPE").unwrap_or_default();
        let auth = match auth_type.trim() {
            "token" => Auth::Token(Sensitive::new(l.get("VAULT_TOKEN").ok_or(
                ConfigError::MissingCredential(
                    "VAULT_TOKEN for token authentication cannot be empty",
                ),
            )?)),
            "approle" => match (l.get("AVP_ROLE_ID"), l.get("AVP_SECRET_ID")) {
                (Some(role_id), Some(secret_id)) => Auth::AppRole {
                    role_id,
                    secret_id: Sensitive::new(secret_id),
                    mount: auth_mount(l, None, "auth/approle"),
                },
                _ => {
                    return Err(ConfigError::MissingCredential(
                        "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
                    ));
                }
            },
            "k8s" => Auth::Kubernetes {
                role: l.get("AVP_K8S_ROLE").ok_or(ConfigError::MissingCredential(
                    "AVP_K8S_ROLE cannot be empty when using Kubernetes Auth",
                ))?,
                jwt_path: l
                    .get("AVP_K8S_TOKEN_PATH")
                    .unwrap_or_else(|| {
                        "/var/run/secrets/kubernetes.io/serviceaccount/token".to_owned()
                    })
                    .into(),
                mount: auth_mount(l, Some("AVP_K8S_MOUNT_PATH"), "auth/kubernetes"),
            },
            "userpass" => match (l.get("AVP_USERNAME"), l.get("AVP_PASSWORD")) {
                (Some(username), Some(password)) => Auth::UserPass {
                    username,
                    password: Sensitive::new(password),
                    mount: auth_mount(l, None, "auth/userpass"),
                },
                _ => {
                    return Err(ConfigError::MissingCredential(
                        "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty",
                    ));
                }
            },
            other => return Err(ConfigError::UnsupportedAuth(other.to_owned())),
        };
        let kv_version = match l.get("AVP_KV_VERSION").as_deref() {
            None | Some("2") => KvVersion::V2,
            Some("1") => KvVersion::V1,
            Some(other) => return Err(ConfigError::BadKvVersion(other.to_owned())),
        };
        let path_validation = l
            .get("AVP_PATH_VALIDATION")
            .map(|re| {
                regex::Regex::new(&re)
                    .map_err(|e| ConfigError::BadPathValidation(re.clone(), e.to_string()))
            })
            .transpose()?;
        let namespace = l.get("VAULT_NAMESPACE");
        if let Some(ns) = &namespace
            && !ns.bytes().all(|b| (0x21..0x7f).contains(&b))
        {
            return Err(ConfigError::BadNamespace(ns.clone()));
        }
        let skip_verify = match l.get("VAULT_SKIP_VERIFY") {
            None => false,
            Some(v) => parse_bool(&v).ok_or(ConfigError::BadValue {
                name: "VAULT_SKIP_VERIFY",
                value: v,
            })?,
        };
        let mut ca_certs: Vec<PathBuf> = l
            .get("VAULT_CACERT")
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if let Some(dir) = l.get("VAULT_CAPATH") {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| ConfigError::File {
                    path: dir.clone(),
                    reason: e.to_string(),
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            ca_certs.extend(files);
        }
        let timeout = match l.get("VAULT_CLIENT_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(v) => parse_duration(&v).ok_or(ConfigError::BadValue {
                name: "VAULT_CLIENT_TIMEOUT",
                value: v,
            })?,
        };
        Ok(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            namespace,
            auth,
            kv_version,
            path_validation,
            tls: Tls {
                ca_certs,
                client_cert: l.get("VAULT_CLIENT_CERT").map(PathBuf::from),
                client_key: l.get("VAULT_CLIENT_KEY").map(PathBuf::from),
                skip_verify,
            },
            timeout,
        })
    }
}

/// `30`, `30s`, `500ms`, `2m` (the forms Vault's `VAULT_CLIENT_TIMEOUT` takes in practice).
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
    .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<VaultConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VaultConfig::from_lookup(&move |k: &str| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("AVP_TYPE", "vault"),
        ("VAULT_ADDR", "http://127.0.0.1:8200"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().copied().chain(extra.iter().copied()).collect()
    }

    #[test]
    fn auth_types_and_mounts() {
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", " approle "),
            ("AVP_ROLE_ID", "r"),
            ("AVP_SECRET_ID", "s"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::AppRole {
                role_id: "r".into(),
                secret_id: Sensitive::new("s"),
                mount: "approle".into()
            }
        );
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "userpass"),
            ("AVP_USERNAME", "u"),
            ("AVP_PASSWORD", "p"),
            ("AVP_MOUNT_PATH", "auth/team-up"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::UserPass {
                username: "u".into(),
                password: Sensitive::new("p"),
                mount: "team-up".into()
            }
        );
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
            ("AVP_K8S_MOUNT_PATH", "auth/k8s-prod"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::Kubernetes {
                role: "argocd".into(),
                jwt_path: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
                mount: "k8s-prod".into()
            }
        );
        let c = cfg(&with(&[("AVP_AUTH_TYPE", "token"), ("VAULT_TOKEN", "s.x")])).expect("ok");
        assert_eq!(c.auth.kind(), "token");
        assert_eq!(c.kv_version, KvVersion::V2);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn missing_credentials_use_avp_messages() {
        for (auth, needle) in [
            ("approle", "AVP_ROLE_ID and AVP_SECRET_ID"),
            ("token", "VAULT_TOKEN for token authentication"),
            ("k8s", "AVP_K8S_ROLE cannot be empty"),
            ("userpass", "AVP_USERNAME and AVP_PASSWORD"),
        ] {
            let err = cfg(&with(&[("AVP_AUTH_TYPE", auth)])).expect_err(auth);
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(matches!(
            cfg(&with(&[("AVP_AUTH_TYPE", "github")])),
            Err(ConfigError::UnsupportedAuth(_))
        ));
        assert!(matches!(
            cfg(&[("AVP_TYPE", "awssecretsmanager")]),
            Err(ConfigError::UnsupportedType(_))
        ));
        assert!(matches!(
            cfg(&[
                ("AVP_TYPE", "vault"),
                ("VAULT_ADDR", "127.0.0.1:8200"),
                ("AVP_AUTH_TYPE", "token"),
                ("VAULT_TOKEN", "t")
            ]),
            Err(ConfigError::BadAddr(_))
        ));
    }

    #[test]
    fn validation_of_values() {
        let tok = [("AVP_AUTH_TYPE", "token"), ("VAULT_TOKEN", "t")];
        let bad: [(&str, &str); 5] = [
            ("AVP_KV_VERSION", "3"),
            ("AVP_PATH_VALIDATION", "(?!x)"),
            ("VAULT_NAMESPACE", "team\nX-Evil: 1"),
            ("VAULT_SKIP_VERIFY", "maybe"),
            ("VAULT_CLIENT_TIMEOUT", "soon"),
        ];
        for b in bad {
            let mut pairs = with(&tok);
            pairs.push(b);
            assert!(cfg(&pairs).is_err(), "{b:?}");
        }
        let mut pairs = with(&tok);
        pairs.extend([
            ("AVP_KV_VERSION", "1"),
            ("VAULT_SKIP_VERIFY", "true"),
            ("VAULT_CLIENT_TIMEOUT", "500ms"),
            ("AVP_PATH_VALIDATION", "^secret/"),
        ]);
        let c = cfg(&pairs).expect("ok");
        assert_eq!(c.kv_version, KvVersion::V1);
        assert!(c.tls.skip_verify);
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(
            c.path_validation
                .is_some_and(|r| r.is_match("secret/data/x"))
        );
    }

    #[test]
    fn credentials_never_in_debug() {
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "approle"),
            ("AVP_ROLE_ID", "r"),
            ("AVP_SECRET_ID", "super-secret-id"),
        ]))
        .expect("ok");
        assert!(!format!("{c:?}").contains("super-secret-id"));
    }

    #[test]
    fn env_wins_over_file_and_file_formats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = dir.path().join("avp.yaml");
        std::fs::write(
            &yaml,
            "AVP_TYPE: vault\nvault_addr: http://file:8200\nAVP_KV_VERSION: 1\n",
        )
        .expect("write");
        let env_file = dir.path().join("avp.env");
        std::fs::write(
            &env_file,
            "# c\nexport AVP_TYPE=vault\nVAULT_ADDR=\"http://envfile:8200\"\n",
        )
        .expect("write");
        let file = read_file(&yaml).expect("yaml");
        assert_eq!(
            file.get("VAULT_ADDR").map(String::as_str),
            Some("http://file:8200")
        );
        assert_eq!(file.get("AVP_KV_VERSION").map(String::as_str), Some("1"));
        let layered = Layered {
            env: HashMap::from([("VAULT_ADDR".into(), "http://env:8200".into())]),
            file,
            secret: HashMap::from([
                ("VAULT_ADDR".into(), "http://secret:8200".into()),
                ("AVP_AUTH_TYPE".into(), "k8s".into()),
            ]),
        };
        assert_eq!(layered.get("AVP_AUTH_TYPE").as_deref(), Some("k8s"));
        assert_eq!(
            layered.get("VAULT_ADDR").as_deref(),
            Some("http://env:8200")
        );
        assert!(layered.configured());
        let envf = read_file(&env_file).expect("env file");
        assert_eq!(
            envf.get("VAULT_ADDR").map(String::as_str),
            Some("http://envfile:8200")
        );
        assert_eq!(envf.get("AVP_TYPE").map(String::as_str), Some("vault"));
    }
}
