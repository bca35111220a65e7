//! Vault settings by argocd-vault-plugin's variable names, parsed and validated once.
//!
//! Owns: reading the operator's sources (process env, the `-c` config file, a Kubernetes
//! Secret's values handed in by `kube`), their precedence, validation of every value, AVP's
//! error texts for missing credentials.
//! Must not: talk to Vault or Kubernetes, read the process environment anywhere but
//! [`from_process_env`], or print a credential (they live in [`Sensitive`]).
//!
//! Precedence, highest first: the operator's process env, the config file, a Kubernetes Secret
//! (`-s`/`AVP_SECRET`, operator-allowlisted), defaults (`AVP_KV_VERSION=2`).
//!
//! **Tenant safety, deliberately stricter than AVP.** AVP strips `ARGOCD_ENV_` from the
//! Application's plugin env and gives those values the highest precedence, so whoever edits an
//! Application can point the plugin at their own Vault (harvesting its AppRole secret or service
//! account JWT), switch auth method, send any readable file as a "JWT" (`AVP_K8S_TOKEN_PATH`),
//! turn off TLS verification or `AVP_PATH_VALIDATION`. Here no layer is ever built from request
//! env (see `context::RequestEnv::ignored_operator_names`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::secrets::KvVersion;

/// A credential: `Debug` and `Display` print `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Sensitive {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the sidecar logs in to Vault (`AVP_AUTH_TYPE`). Mounts are stored without AVP's `auth/`
/// prefix (`approle`, `team/k8s`).
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
    GitHub {
        token: Sensitive,
        mount: String,
    },
}

impl Auth {
    /// The `AVP_AUTH_TYPE` value for this method.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Token(_) => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "k8s",
            Auth::UserPass { .. } => "userpass",
            Auth::GitHub { .. } => "github",
        }
    }

    /// The auth mount (without `auth/`), `None` for token auth.
    pub fn mount(&self) -> Option<&str> {
        match self {
            Auth::Token(_) => None,
            Auth::AppRole { mount, .. }
            | Auth::Kubernetes { mount, .. }
            | Auth::UserPass { mount, .. }
            | Auth::GitHub { mount, .. } => Some(mount),
        }
    }
}

/// TLS settings (`VAULT_CACERT`, `VAULT_CAPATH`, `VAULT_CLIENT_CERT`/`_KEY`,
/// `VAULT_SKIP_VERIFY`). `ca_certs` holds `VAULT_CACERT` and then every file of `VAULT_CAPATH`
/// (each must be PEM, as for the Vault Go client). Used only for `https://` addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    pub ca_certs: Vec<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub skip_verify: bool,
}

/// Everything needed to reach and log in to Vault, validated.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub addr: String,
    /// `X-Vault-Namespace`; checked to be a valid header value.
    pub namespace: Option<String>,
    pub auth: Auth,
    /// Default engine version for paths without a `kv-version` annotation.
    pub kv_version: KvVersion,
    /// `AVP_PATH_VALIDATION`, matched unanchored against every path (as AVP's `MatchString`).
    pub path_validation: Option<regex::Regex>,
    pub tls: Tls,
    /// Per HTTP request to Vault (`VAULT_CLIENT_TIMEOUT`, default 10 s).
    pub timeout: Duration,
    /// More tries after a 429 or 5xx answer (`VAULT_MAX_RETRIES`, default 2 as Vault's Go
    /// client).
    pub max_retries: u32,
}

/// Default `VAULT_MAX_RETRIES` (Vault's Go client's).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// More retries would outlast any render's deadline.
const MAX_MAX_RETRIES: u32 = 10;

/// Default `VAULT_CLIENT_TIMEOUT`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `AVP_K8S_TOKEN_PATH`.
pub const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The setting that turns the Vault backend on.
pub const AVP_TYPE: &str = "AVP_TYPE";

/// argocd-vault-plugin backends other than Vault (for a clearer error than "unknown").
const OTHER_AVP_BACKENDS: [&str; 10] = [
    "ibmsecretsmanager",
    "awssecretsmanager",
    "gcpsecretmanager",
    "azurekeyvault",
    "sops",
    "yandexcloudlockbox",
    "1passwordconnect",
    "keepersecretsmanager",
    "delineasecretserver",
    "kubernetessecret",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error(
        "must provide a supported vault type, received {0:?} (avp-sidecar supports AVP_TYPE=vault)"
    )]
    UnsupportedType(String),
    #[error(
        "AVP_TYPE={0:?} is an argocd-vault-plugin backend that avp-sidecar does not support (only AVP_TYPE=vault)"
    )]
    UnsupportedBackend(String),
    #[error("must provide a supported authentication type, received {0:?}")]
    UnsupportedAuth(String),
    /// AVP's own message for a missing credential.
    #[error("{0}")]
    MissingCredential(&'static str),
    /// A credential that cannot be sent as given; names the setting, never the value.
    #[error(
        "{0} contains characters not allowed in an HTTP header (whitespace or control characters?)"
    )]
    BadCredential(&'static str),
    #[error("VAULT_ADDR must be an http(s) URL such as https://vault.example.com:8200, got {0:?}")]
    BadAddr(String),
    #[error("unsupported kvVersion specified: AVP_KV_VERSION={0:?} (must be 1 or 2)")]
    BadKvVersion(String),
    #[error("{0:?} is not a valid regular expression: {1}")]
    BadPathValidation(String, String),
    #[error("VAULT_NAMESPACE {0:?} contains characters not allowed in an HTTP header")]
    BadNamespace(String),
    #[error("invalid {name}: {value:?}")]
    BadValue { name: &'static str, value: String },
    /// A setting the Vault Go client reads that we deliberately do not emulate.
    #[error("{name} is not supported by avp-sidecar: {hint}")]
    Unsupported {
        name: &'static str,
        hint: &'static str,
    },
    #[error("VAULT_CLIENT_CERT and VAULT_CLIENT_KEY must be set together")]
    HalfClientIdentity,
    #[error("reading config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Looks up a setting by name in the layered sources.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;

    /// The first of `names` (blank values skipped) in the highest layer that sets any of
    /// them. For settings that stand in for one another (an agent's address for Vault's): a
    /// lower layer must not override a higher one through the other name.
    fn get_first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|n| {
            self.get(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*n, v))
        })
    }
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// The operator's process environment. The only place this module reads it.
pub fn from_process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The sources of settings, highest precedence first: a project's settings file, the operator's env, the config file, a Kubernetes Secret's values. Empty values count as unset
/// (viper's default), so an empty variable cannot blank out a lower layer's value. `Debug`
/// prints names only: the layers hold credentials.
#[derive(Clone, Default)]
pub struct Layered {
    /// A project's own settings file (`--project-vault-config`), above everything else.
    pub project: HashMap<String, String>,
    pub env: HashMap<String, String>,
    pub file: HashMap<String, String>,
    pub secret: HashMap<String, String>,
}

impl fmt::Debug for Layered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn names(m: &HashMap<String, String>) -> Vec<&String> {
            let mut k: Vec<&String> = m.keys().collect();
            k.sort();
            k
        }
        f.debug_struct("Layered")
            .field("project", &names(&self.project))
            .field("env", &format_args!("{} variables", self.env.len()))
            .field("file", &names(&self.file))
            .field("secret", &names(&self.secret))
            .finish()
    }
}

impl Layered {
    /// The given operator env plus the optional config file (`-c`).
    pub fn new(env: HashMap<String, String>, file: Option<&Path>) -> Result<Self, SettingsError> {
        Ok(Self {
            env,
            file: match file {
                Some(p) => read_file(p)?,
                None => HashMap::new(),
            },
            ..Self::default()
        })
    }

    /// The process environment plus the optional config file. Never request env.
    pub fn from_process(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::new(from_process_env(), file)
    }

    /// The same layers with a Secret's values underneath.
    #[must_use]
    pub fn with_secret(&self, secret: HashMap<String, String>) -> Self {
        Self {
            secret,
            ..self.clone()
        }
    }

    /// The same layers with a project's settings file on top (its own Vault identity).
    pub fn with_project_file(&self, file: &Path) -> Result<Self, SettingsError> {
        Ok(Self {
            project: read_file(file)?,
            ..self.clone()
        })
    }

    /// Whether any Vault setting is present at all (else substitution has no backend).
    pub fn configured(&self) -> bool {
        self.get(AVP_TYPE).is_some()
    }
}

impl Lookup for Layered {
    fn get(&self, name: &str) -> Option<String> {
        [&self.project, &self.env, &self.file, &self.secret]
            .into_iter()
            .find_map(|layer| layer.get(name).filter(|v| !v.is_empty()))
            .cloned()
    }

    fn get_first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        [&self.project, &self.env, &self.file, &self.secret]
            .into_iter()
            .find_map(|layer| layer.get_first(names))
    }
}

/// Reads `-c FILE` by extension: `.json` (serde_json), `.yaml`/`.yml` (a mapping; the first
/// non-empty document), anything else `KEY=VALUE` lines (`#` comments, optional `export `,
/// optional quotes). Keys are case-insensitive (upper-cased), as in viper. Values must be
/// scalars; `null` means unset.
pub fn read_file(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    let err = |reason: String| SettingsError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "json" => {
            let doc: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
            mapping(doc).map_err(err)
        }
        "yaml" | "yml" => {
            let doc = crate::yaml::parse_documents(&text)
                .map_err(|e| err(e.to_string()))?
                .into_iter()
                .find(|d| !d.is_null())
                .unwrap_or(Value::Null);
            mapping(doc).map_err(err)
        }
        _ => parse_env_file(&text).map_err(err),
    }
}

/// A JSON/YAML document as settings: a mapping of scalars.
fn mapping(doc: Value) -> Result<HashMap<String, String>, String> {
    let map = match doc {
        Value::Object(map) => map,
        Value::Null => return Ok(HashMap::new()),
        _ => return Err("expected a mapping of settings".to_owned()),
    };
    let mut out = HashMap::new();
    for (k, v) in map {
        let v = match v {
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                return Err(format!("{k} must be a string, number or bool"));
            }
        };
        out.insert(k.to_uppercase(), v);
    }
    Ok(out)
}

/// `KEY=VALUE` lines. A malformed line is an error naming its number (not its text, which
/// could be a pasted credential).
fn parse_env_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: invalid key", i + 1));
        }
        let v = v.trim();
        let v = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| v.strip_prefix(*open)?.strip_suffix(*close))
            .unwrap_or(v);
        out.insert(k.to_uppercase(), v.to_owned());
    }
    Ok(out)
}

/// A value that must be present and non-blank.
fn required(l: &dyn Lookup, name: &str) -> Option<String> {
    l.get(name).filter(|v| !v.trim().is_empty())
}

/// A credential sent in a header (`X-Vault-Token`): surrounding whitespace is dropped (files
/// and Secrets often end in a newline), the rest must be visible ASCII.
fn header_credential(name: &'static str, v: String) -> Result<Sensitive, SettingsError> {
    let v = v.trim();
    if is_header_safe(v) {
        Ok(Sensitive::new(v))
    } else {
        Err(SettingsError::BadCredential(name))
    }
}

/// Non-empty visible ASCII: always a valid HTTP header value (vaultrs panics on invalid ones).
pub fn is_header_safe(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// The auth mount: the specific setting, else `AVP_MOUNT_PATH`, else AVP's default. AVP takes
/// it with its `auth/` prefix; vaultrs and our requests want it without.
fn auth_mount(
    l: &dyn Lookup,
    specific: Option<&'static str>,
    default: &str,
) -> Result<String, SettingsError> {
    let (name, raw) = match specific.and_then(|k| l.get(k).map(|v| (k, v))) {
        Some(found) => found,
        None => match l.get("AVP_MOUNT_PATH") {
            Some(v) => ("AVP_MOUNT_PATH", v),
            None => ("AVP_MOUNT_PATH", default.to_owned()),
        },
    };
    let trimmed = raw.trim().trim_matches('/');
    let mount = match trimmed {
        "auth" => "",
        _ => trimmed.strip_prefix("auth/").unwrap_or(trimmed),
    };
    if is_clean_path(mount) {
        Ok(mount.to_owned())
    } else {
        Err(SettingsError::BadValue { name, value: raw })
    }
}

/// Non-empty `/`-separated segments, none empty, `.` or `..`, no whitespace, control
/// characters, `?`, `#` or `%`.
pub fn is_clean_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
        && p.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '?' | '#' | '%'))
}

/// Go's `strconv.ParseBool`, which the Vault client uses for `VAULT_SKIP_VERIFY`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_addr(raw: Option<String>) -> Result<String, SettingsError> {
    let raw = raw.unwrap_or_default();
    let addr = raw.trim().trim_end_matches('/');
    let bad = || SettingsError::BadAddr(raw.clone());
    let url = reqwest::Url::parse(addr).map_err(|_| bad())?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if ok { Ok(addr.to_owned()) } else { Err(bad()) }
}

/// `VAULT_AGENT_ADDR`: an http(s) listener of Vault Agent or Vault Proxy. Go's client also
/// dials `unix://` sockets; ours does not.
fn parse_agent_addr(raw: String) -> Result<String, SettingsError> {
    if raw.trim().starts_with("unix://") {
        return Err(SettingsError::Unsupported {
            name: "VAULT_AGENT_ADDR",
            hint: "give the agent a TCP listener (e.g. 127.0.0.1:8100) and set VAULT_AGENT_ADDR=http://127.0.0.1:8100",
        });
    }
    parse_addr(Some(raw.clone())).map_err(|_| SettingsError::BadValue {
        name: "VAULT_AGENT_ADDR",
        value: raw,
    })
}

fn parse_kv_version(raw: Option<String>) -> Result<KvVersion, SettingsError> {
    match raw.as_deref().map(str::trim) {
        None | Some("2") => Ok(KvVersion::V2),
        Some("1") => Ok(KvVersion::V1),
        Some(_) => Err(SettingsError::BadKvVersion(raw.unwrap_or_default())),
    }
}

fn parse_path_validation(raw: Option<String>) -> Result<Option<regex::Regex>, SettingsError> {
    raw.map(|re| {
        regex::Regex::new(&re)
            .map_err(|e| SettingsError::BadPathValidation(re.clone(), e.to_string()))
    })
    .transpose()
}

fn parse_namespace(raw: Option<String>) -> Result<Option<String>, SettingsError> {
    match raw {
        None => Ok(None),
        Some(ns) => {
            let trimmed = ns.trim().trim_matches('/');
            if trimmed.is_empty() {
                Ok(None)
            } else if is_header_safe(trimmed) {
                Ok(Some(trimmed.to_owned()))
            } else {
                Err(SettingsError::BadNamespace(ns))
            }
        }
    }
}

fn parse_timeout(raw: Option<String>) -> Result<Duration, SettingsError> {
    match raw {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => parse_duration(&v).ok_or(SettingsError::BadValue {
            name: "VAULT_CLIENT_TIMEOUT",
            value: v,
        }),
    }
}

impl VaultConfig {
    /// Reads and validates every setting. Check order and missing-credential texts follow
    /// AVP (`pkg/config/config.go`, `pkg/auth/vault/*.go`).
    pub fn from_lookup(l: &dyn Lookup) -> Result<Self, SettingsError> {
        let kind = l.get(AVP_TYPE).unwrap_or_default();
        match kind.trim() {
            "vault" => {}
            other if OTHER_AVP_BACKENDS.contains(&other) => {
                return Err(SettingsError::UnsupportedBackend(other.to_owned()));
            }
            _ => return Err(SettingsError::UnsupportedType(kind)),
        }
        // As in Vault's Go client, an agent's address wins over Vault's, within one layer.
        let addr = match l.get_first(&["VAULT_AGENT_ADDR", "VAULT_ADDR"]) {
            Some(("VAULT_AGENT_ADDR", agent)) => parse_agent_addr(agent)?,
            other => parse_addr(other.map(|(_, addr)| addr))?,
        };
        let auth = parse_auth(l)?;
        let kv_version = parse_kv_version(l.get("AVP_KV_VERSION"))?;
        let path_validation = parse_path_validation(l.get("AVP_PATH_VALIDATION"))?;
        let namespace = parse_namespace(l.get("VAULT_NAMESPACE"))?;
        refuse_unsupported(l)?;
        let tls = parse_tls(l)?;
        let timeout = parse_timeout(l.get("VAULT_CLIENT_TIMEOUT"))?;
        let max_retries = parse_max_retries(l.get("VAULT_MAX_RETRIES"))?;
        Ok(Self {
            addr,
            namespace,
            auth,
            kv_version,
            path_validation,
            tls,
            timeout,
            max_retries,
        })
    }
}

/// `AVP_AUTH_TYPE` and its credentials, with AVP's texts for missing ones.
fn parse_auth(l: &dyn Lookup) -> Result<Auth, SettingsError> {
    let auth_type = l.get("AVP_AUTH_TYPE").unwrap_or_default();
    Ok(match auth_type.trim() {
        "token" => {
            let token = required(l, "VAULT_TOKEN").ok_or(SettingsError::MissingCredential(
                "VAULT_TOKEN for token authentication cannot be empty",
            ))?;
            Auth::Token(header_credential("VAULT_TOKEN", token)?)
        }
        "approle" => match (required(l, "AVP_ROLE_ID"), required(l, "AVP_SECRET_ID")) {
            (Some(role_id), Some(secret_id)) => Auth::AppRole {
                role_id,
                secret_id: Sensitive::new(secret_id),
                mount: auth_mount(l, None, "auth/approle")?,
            },
            _ => {
                return Err(SettingsError::MissingCredential(
                    "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
                ));
            }
        },
        "github" => Auth::GitHub {
            token: Sensitive::new(required(l, "AVP_GITHUB_TOKEN").ok_or(
                SettingsError::MissingCredential(
                    "AVP_GITHUB_TOKEN for github authentication cannot be empty",
                ),
            )?),
            mount: auth_mount(l, None, "auth/github")?,
        },
        "k8s" => Auth::Kubernetes {
            role: required(l, "AVP_K8S_ROLE").ok_or(SettingsError::MissingCredential(
                "AVP_K8S_ROLE cannot be empty when using Kubernetes Auth",
            ))?,
            jwt_path: l
                .get("AVP_K8S_TOKEN_PATH")
                .unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.to_owned())
                .into(),
            mount: auth_mount(l, Some("AVP_K8S_MOUNT_PATH"), "auth/kubernetes")?,
        },
        "userpass" => match (required(l, "AVP_USERNAME"), required(l, "AVP_PASSWORD")) {
            (Some(username), Some(password)) => Auth::UserPass {
                username,
                password: Sensitive::new(password),
                mount: auth_mount(l, None, "auth/userpass")?,
            },
            _ => {
                return Err(SettingsError::MissingCredential(
                    "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty",
                ));
            }
        },
        _ => return Err(SettingsError::UnsupportedAuth(auth_type)),
    })
}

/// Vault client settings avp-sidecar does not implement: refused with what to do instead,
/// rather than silently ignored.
fn refuse_unsupported(l: &dyn Lookup) -> Result<(), SettingsError> {
    for (name, hint) in [
        (
            "VAULT_TLS_SERVER_NAME",
            "use the name on Vault's certificate in VAULT_ADDR",
        ),
        (
            "VAULT_CACERT_BYTES",
            "write the CA bundle to a file and set VAULT_CACERT",
        ),
        (
            "VAULT_HTTP_PROXY",
            "set HTTPS_PROXY or HTTP_PROXY (and NO_PROXY) in the sidecar's environment; its Vault client uses them",
        ),
        (
            "VAULT_PROXY_ADDR",
            "set HTTPS_PROXY or HTTP_PROXY (and NO_PROXY) in the sidecar's environment; its Vault client uses them",
        ),
        (
            "VAULT_SRV_LOOKUP",
            "put Vault's host and port in VAULT_ADDR",
        ),
        (
            "VAULT_WRAP_TTL",
            "response wrapping would hand the sidecar wrapping tokens instead of secrets; unset it",
        ),
        (
            "VAULT_MFA",
            "give the sidecar an auth method without MFA (AppRole, Kubernetes)",
        ),
        (
            "VAULT_RATE_LIMIT",
            "bound the calls to Vault with --vault-max-in-flight",
        ),
    ] {
        if l.get(name).is_some_and(|v| !v.trim().is_empty()) {
            return Err(SettingsError::Unsupported { name, hint });
        }
    }
    Ok(())
}

/// `VAULT_SKIP_VERIFY`, `VAULT_CACERT`, `VAULT_CAPATH` (every file in it, sorted) and the
/// client identity (both halves or neither).
fn parse_tls(l: &dyn Lookup) -> Result<Tls, SettingsError> {
    let skip_verify = match l.get("VAULT_SKIP_VERIFY") {
        None => false,
        Some(v) => parse_bool(v.trim()).ok_or(SettingsError::BadValue {
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
            .map_err(|e| SettingsError::File {
                path: dir.clone(),
                reason: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        ca_certs.extend(files);
    }
    let (client_cert, client_key) = match (l.get("VAULT_CLIENT_CERT"), l.get("VAULT_CLIENT_KEY")) {
        (Some(c), Some(k)) => (Some(PathBuf::from(c)), Some(PathBuf::from(k))),
        (None, None) => (None, None),
        _ => return Err(SettingsError::HalfClientIdentity),
    };
    Ok(Tls {
        ca_certs,
        client_cert,
        client_key,
        skip_verify,
    })
}

/// `VAULT_MAX_RETRIES`: at most `MAX_MAX_RETRIES`, so a typo cannot stall every render.
fn parse_max_retries(v: Option<String>) -> Result<u32, SettingsError> {
    let Some(v) = v else {
        return Ok(DEFAULT_MAX_RETRIES);
    };
    v.trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX_MAX_RETRIES)
        .ok_or(SettingsError::BadValue {
            name: "VAULT_MAX_RETRIES",
            value: v,
        })
}

/// Go's `time.ParseDuration` for non-negative values (`30s`, `1m30s`, `1.5s`, `500ms`), plus a
/// bare number meaning seconds (Vault's `parseutil.ParseDurationSecond`). Zero is refused:
/// it would mean "wait forever".
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().ok()?)).filter(|d| !d.is_zero());
    }
    let mut rest = v;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let n: f64 = num.parse().ok()?;
        let nanos = n * nanos_per_unit;
        // A day is plenty for a request timeout; refuse absurd values instead of overflowing.
        if !nanos.is_finite() || nanos > 86_400e9 {
            return None;
        }
        // Digits and dots only (no sign), finite and at most a day: the cast cannot wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nanos = nanos as u64;
        total = total.checked_add(Duration::from_nanos(nanos))?;
        rest = tail;
    }
    Some(total).filter(|d| !d.is_zero() && *d <= Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<VaultConfig, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VaultConfig::from_lookup(&map)
    }

    const BASE: [(&str, &str); 2] = [
        ("AVP_TYPE", "vault"),
        ("VAULT_ADDR", "http://127.0.0.1:8200"),
    ];
    const TOKEN: [(&str, &str); 2] = [("AVP_AUTH_TYPE", "token"), ("VAULT_TOKEN", "t0ken")];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        BASE.iter().copied().chain(extra.iter().copied()).collect()
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn approle_with_default_and_custom_mount() {
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
            ("AVP_AUTH_TYPE", "approle"),
            ("AVP_ROLE_ID", "r"),
            ("AVP_SECRET_ID", "s"),
            ("AVP_MOUNT_PATH", "/auth/team/approle/"),
        ]))
        .expect("ok");
        assert_eq!(c.auth.mount(), Some("team/approle"));
    }

    #[test]
    fn userpass_and_github() {
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
            ("AVP_AUTH_TYPE", "github"),
            ("AVP_GITHUB_TOKEN", "ghp_x"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::GitHub {
                token: Sensitive::new("ghp_x"),
                mount: "github".into()
            }
        );
        assert_eq!(c.auth.kind(), "github");
    }

    #[test]
    fn kubernetes_defaults_and_mount_priority() {
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::Kubernetes {
                role: "argocd".into(),
                jwt_path: DEFAULT_K8S_TOKEN_PATH.into(),
                mount: "kubernetes".into()
            }
        );
        // AVP_K8S_MOUNT_PATH wins over AVP_MOUNT_PATH.
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
            ("AVP_MOUNT_PATH", "auth/general"),
            ("AVP_K8S_MOUNT_PATH", "auth/k8s-prod"),
            ("AVP_K8S_TOKEN_PATH", "/tmp/jwt"),
        ]))
        .expect("ok");
        assert_eq!(
            c.auth,
            Auth::Kubernetes {
                role: "argocd".into(),
                jwt_path: "/tmp/jwt".into(),
                mount: "k8s-prod".into()
            }
        );
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "k8s"),
            ("AVP_K8S_ROLE", "argocd"),
            ("AVP_MOUNT_PATH", "auth/general"),
        ]))
        .expect("ok");
        assert_eq!(c.auth.mount(), Some("general"));
    }

    #[test]
    fn token_auth_and_defaults() {
        let c = cfg(&with(&[
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", " s.x\n"),
        ]))
        .expect("ok");
        assert_eq!(c.auth, Auth::Token(Sensitive::new("s.x")));
        assert_eq!(c.auth.mount(), None);
        assert_eq!(c.kv_version, KvVersion::V2);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.namespace, None);
        assert!(c.path_validation.is_none());
        assert_eq!(c.tls, Tls::default());
        let err = cfg(&with(&[("AVP_AUTH_TYPE", "token"), ("VAULT_TOKEN", "a b")]))
            .expect_err("space in token");
        assert_eq!(err, SettingsError::BadCredential("VAULT_TOKEN"));
        assert!(!err.to_string().contains("a b"));
    }

    #[test]
    fn missing_credentials_use_avp_messages() {
        for (auth, extra, message) in [
            (
                "approle",
                ("AVP_ROLE_ID", "r"),
                "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
            ),
            (
                "approle",
                ("AVP_SECRET_ID", "s"),
                "AVP_ROLE_ID and AVP_SECRET_ID for approle authentication cannot be empty",
            ),
            (
                "token",
                ("VAULT_TOKEN", "  "),
                "VAULT_TOKEN for token authentication cannot be empty",
            ),
            (
                "k8s",
                ("AVP_K8S_MOUNT_PATH", "auth/k"),
                "AVP_K8S_ROLE cannot be empty when using Kubernetes Auth",
            ),
            (
                "userpass",
                ("AVP_USERNAME", "u"),
                "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty",
            ),
            (
                "userpass",
                ("AVP_PASSWORD", "p"),
                "AVP_USERNAME and AVP_PASSWORD for userpass authentication cannot be empty",
            ),
            (
                "github",
                ("AVP_MOUNT_PATH", "auth/gh"),
                "AVP_GITHUB_TOKEN for github authentication cannot be empty",
            ),
        ] {
            let err = cfg(&with(&[("AVP_AUTH_TYPE", auth), extra])).expect_err(auth);
            assert_eq!(err, SettingsError::MissingCredential(message), "{auth}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn backend_and_auth_type_errors() {
        assert_eq!(
            cfg(&with(&[("AVP_AUTH_TYPE", "iam")])).err(),
            Some(SettingsError::UnsupportedAuth("iam".into()))
        );
        assert_eq!(
            cfg(&BASE).err(),
            Some(SettingsError::UnsupportedAuth(String::new()))
        );
        let err = cfg(&[("AVP_TYPE", " awssecretsmanager ")]).expect_err("aws");
        assert_eq!(
            err,
            SettingsError::UnsupportedBackend("awssecretsmanager".into())
        );
        assert!(err.to_string().contains("does not support"), "{err}");
        assert!(matches!(
            cfg(&[("AVP_TYPE", "vaulty")]),
            Err(SettingsError::UnsupportedType(_))
        ));
        assert!(matches!(cfg(&[]), Err(SettingsError::UnsupportedType(_))));
        // AVP_TYPE is trimmed, as in AVP.
        let mut pairs = vec![("AVP_TYPE", " vault\n"), ("VAULT_ADDR", "https://v:8200/")];
        pairs.extend(TOKEN);
        assert_eq!(cfg(&pairs).expect("ok").addr, "https://v:8200");
    }

    #[test]
    fn addresses() {
        for bad in [
            "",
            "127.0.0.1:8200",
            "ftp://v",
            "http://",
            "http://[",
            "https://user:pw@v",
            "https://v?x=1",
        ] {
            let mut pairs = vec![("AVP_TYPE", "vault"), ("VAULT_ADDR", bad)];
            pairs.extend(TOKEN);
            let err = cfg(&pairs).expect_err(bad);
            assert!(matches!(err, SettingsError::BadAddr(_)), "{bad}: {err}");
        }
        let mut pairs = vec![
            ("AVP_TYPE", "vault"),
            ("VAULT_ADDR", "https://v.example/prefix/"),
        ];
        pairs.extend(TOKEN);
        assert_eq!(cfg(&pairs).expect("ok").addr, "https://v.example/prefix");
    }

    #[test]
    fn go_client_settings_honoured_or_refused() {
        // VAULT_AGENT_ADDR wins over VAULT_ADDR, as in Vault's Go client.
        let mut pairs = with(&TOKEN);
        pairs.push(("VAULT_AGENT_ADDR", "http://127.0.0.1:8100/"));
        let c = cfg(&pairs).expect("agent");
        assert_eq!(c.addr, "http://127.0.0.1:8100");
        assert_eq!(c.max_retries, DEFAULT_MAX_RETRIES);
        pairs.push(("VAULT_MAX_RETRIES", "0"));
        assert_eq!(cfg(&pairs).expect("no retries").max_retries, 0);
        for (name, value, needle) in [
            ("VAULT_AGENT_ADDR", "unix:///run/agent.sock", "TCP listener"),
            (
                "VAULT_AGENT_ADDR",
                "127.0.0.1:8100",
                "invalid VAULT_AGENT_ADDR",
            ),
            ("VAULT_MAX_RETRIES", "-1", "invalid VAULT_MAX_RETRIES"),
            ("VAULT_MAX_RETRIES", "11", "invalid VAULT_MAX_RETRIES"),
            ("VAULT_HTTP_PROXY", "http://proxy:3128", "HTTPS_PROXY"),
            ("VAULT_PROXY_ADDR", "http://proxy:3128", "HTTPS_PROXY"),
            ("VAULT_SRV_LOOKUP", "true", "VAULT_ADDR"),
            ("VAULT_WRAP_TTL", "5m", "wrapping"),
            ("VAULT_MFA", "totp:123", "MFA"),
            ("VAULT_RATE_LIMIT", "10", "--vault-max-in-flight"),
        ] {
            let mut pairs = with(&TOKEN);
            pairs.push((name, value));
            let err = cfg(&pairs).expect_err(name).to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
        // Set but empty means unset, as in Go.
        let mut pairs = with(&TOKEN);
        pairs.extend([("VAULT_WRAP_TTL", ""), ("VAULT_AGENT_ADDR", " ")]);
        cfg(&pairs).expect("empty values are unset");
    }

    #[test]
    fn validation_of_values() {
        let bad: [(&str, &str); 11] = [
            ("AVP_KV_VERSION", "3"),
            ("AVP_PATH_VALIDATION", "(?!x)"),
            ("VAULT_NAMESPACE", "team\nX-Evil: 1"),
            ("VAULT_NAMESPACE", "team a"),
            ("VAULT_SKIP_VERIFY", "maybe"),
            ("VAULT_CLIENT_TIMEOUT", "soon"),
            ("VAULT_CLIENT_TIMEOUT", "0"),
            ("VAULT_CLIENT_TIMEOUT", "-1s"),
            ("VAULT_TLS_SERVER_NAME", "vault"),
            ("VAULT_CLIENT_CERT", "/c.pem"),
            ("VAULT_CAPATH", "/nonexistent/ca/dir"),
        ];
        for b in bad {
            let mut pairs = with(&TOKEN);
            pairs.push(b);
            let err = cfg(&pairs).expect_err(b.0);
            assert!(!err.to_string().is_empty(), "{b:?}");
        }
        let mut pairs = with(&TOKEN);
        pairs.extend([
            ("AVP_KV_VERSION", "1"),
            ("VAULT_SKIP_VERIFY", "true"),
            ("VAULT_CLIENT_TIMEOUT", "500ms"),
            ("AVP_PATH_VALIDATION", "^secret/"),
            ("VAULT_NAMESPACE", "team-a/child/"),
            ("VAULT_CACERT", "/etc/ca.pem"),
            ("VAULT_CLIENT_CERT", "/c.pem"),
            ("VAULT_CLIENT_KEY", "/k.pem"),
        ]);
        let c = cfg(&pairs).expect("ok");
        assert_eq!(c.kv_version, KvVersion::V1);
        assert!(c.tls.skip_verify);
        assert_eq!(c.tls.ca_certs, vec![PathBuf::from("/etc/ca.pem")]);
        assert_eq!(c.tls.client_key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.namespace.as_deref(), Some("team-a/child"));
        assert!(
            c.path_validation
                .is_some_and(|r| r.is_match("secret/data/x"))
        );
    }

    #[test]
    fn bad_mounts_are_rejected() {
        for mount in ["auth/../sys", "auth/a b", "auth/", "auth/x?y"] {
            let err = cfg(&with(&[
                ("AVP_AUTH_TYPE", "approle"),
                ("AVP_ROLE_ID", "r"),
                ("AVP_SECRET_ID", "s"),
                ("AVP_MOUNT_PATH", mount),
            ]))
            .expect_err(mount);
            assert!(
                matches!(
                    err,
                    SettingsError::BadValue {
                        name: "AVP_MOUNT_PATH",
                        ..
                    }
                ),
                "{mount}: {err}"
            );
        }
    }

    #[test]
    fn ca_path_files_are_added_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.pem", "a.pem"] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let path = dir.path().display().to_string();
        let mut pairs: Vec<(&str, &str)> = with(&TOKEN);
        pairs.push(("VAULT_CACERT", "/first.pem"));
        pairs.push(("VAULT_CAPATH", &path));
        let c = cfg(&pairs).expect("ok");
        assert_eq!(
            c.tls.ca_certs,
            vec![
                PathBuf::from("/first.pem"),
                dir.path().join("a.pem"),
                dir.path().join("b.pem")
            ]
        );
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        for bad in [
            "",
            "s",
            "1x",
            "1..5s",
            "0s",
            "99999h",
            "1 s",
            ".s",
            "18446744073709551616",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_never_in_debug_or_display() {
        for (auth, extra) in [
            (
                "approle",
                [("AVP_ROLE_ID", "r"), ("AVP_SECRET_ID", "super-secret-id")],
            ),
            (
                "userpass",
                [("AVP_USERNAME", "u"), ("AVP_PASSWORD", "super-secret-id")],
            ),
            ("token", [("VAULT_TOKEN", "super-secret-id"), ("X", "")]),
            (
                "github",
                [("AVP_GITHUB_TOKEN", "super-secret-id"), ("X", "")],
            ),
        ] {
            let mut pairs = with(&[("AVP_AUTH_TYPE", auth)]);
            pairs.extend(extra);
            let c = cfg(&pairs).expect(auth);
            assert!(!format!("{c:?}").contains("super-secret-id"), "{auth}");
        }
        let s = Sensitive::new("super-secret-id");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "super-secret-id");
    }

    #[test]
    fn precedence_project_over_env_over_file_over_secret() {
        let layered = Layered {
            project: HashMap::new(),
            env: map(&[("VAULT_ADDR", "http://env:8200"), ("AVP_KV_VERSION", "")]),
            file: map(&[("VAULT_ADDR", "http://file:8200"), ("AVP_KV_VERSION", "1")]),
            secret: map(&[
                ("VAULT_ADDR", "http://secret:8200"),
                ("AVP_AUTH_TYPE", "k8s"),
                ("AVP_KV_VERSION", "2"),
            ]),
        };
        assert_eq!(
            layered.get("VAULT_ADDR").as_deref(),
            Some("http://env:8200")
        );
        // An empty env value does not blank out the file's.
        assert_eq!(layered.get("AVP_KV_VERSION").as_deref(), Some("1"));
        assert_eq!(layered.get("AVP_AUTH_TYPE").as_deref(), Some("k8s"));
        assert_eq!(layered.get("AVP_TYPE"), None);
        assert!(!layered.configured());
        let with_secret = layered.with_secret(map(&[("AVP_TYPE", "vault")]));
        assert!(with_secret.configured());
        assert_eq!(
            with_secret.get("AVP_AUTH_TYPE"),
            None,
            "with_secret replaces the secret layer"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("team.env");
        std::fs::write(
            &file,
            "VAULT_ADDR=http://team:8200\nAVP_AUTH_TYPE=approle\n",
        )
        .expect("write");
        let team = layered.with_project_file(&file).expect("project file");
        assert_eq!(team.get("VAULT_ADDR").as_deref(), Some("http://team:8200"));
        assert_eq!(team.get("AVP_AUTH_TYPE").as_deref(), Some("approle"));
        assert_eq!(team.get("AVP_KV_VERSION").as_deref(), Some("1"));
        assert!(
            layered
                .with_project_file(&dir.path().join("missing"))
                .is_err()
        );
    }

    #[test]
    fn agent_address_is_chosen_within_a_layer() {
        let token = [
            ("AVP_TYPE", "vault"),
            ("AVP_AUTH_TYPE", "token"),
            ("VAULT_TOKEN", "t"),
        ];
        let addr = |layered: Layered| VaultConfig::from_lookup(&layered).expect("ok").addr;
        // A config Secret's agent address cannot redirect the operator's pinned VAULT_ADDR.
        let pinned = Layered {
            env: map(&[&token[..], &[("VAULT_ADDR", "https://vault.corp:8200")]].concat()),
            secret: map(&[("VAULT_AGENT_ADDR", "http://evil:8100")]),
            ..Default::default()
        };
        assert_eq!(addr(pinned), "https://vault.corp:8200");
        // The env's agent does not take over a project file's own VAULT_ADDR.
        let project = Layered {
            project: map(&[("VAULT_ADDR", "https://team.vault:8200")]),
            env: map(&[&token[..], &[("VAULT_AGENT_ADDR", "http://127.0.0.1:8100")]].concat()),
            ..Default::default()
        };
        assert_eq!(addr(project), "https://team.vault:8200");
        // In one layer the agent wins; a blank one counts as unset.
        let both = Layered {
            env: map(&[
                &token[..],
                &[
                    ("VAULT_ADDR", "https://vault.corp:8200"),
                    ("VAULT_AGENT_ADDR", "http://127.0.0.1:8100"),
                ],
            ]
            .concat()),
            file: map(&[("VAULT_AGENT_ADDR", " ")]),
            ..Default::default()
        };
        assert_eq!(addr(both), "http://127.0.0.1:8100");
    }

    #[test]
    fn layered_new_reads_the_file_under_the_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("avp.json");
        std::fs::write(
            &file,
            r#"{"AVP_TYPE":"vault","vault_addr":"http://file:8200","AVP_AUTH_TYPE":"token","VAULT_TOKEN":"ft"}"#,
        )
        .expect("write");
        let layered =
            Layered::new(map(&[("VAULT_ADDR", "http://env:8200")]), Some(&file)).expect("ok");
        let c = VaultConfig::from_lookup(&layered).expect("config");
        assert_eq!(c.addr, "http://env:8200");
        assert_eq!(c.auth, Auth::Token(Sensitive::new("ft")));
        assert!(matches!(
            Layered::new(HashMap::new(), Some(&dir.path().join("missing.yaml"))),
            Err(SettingsError::File { .. })
        ));
    }

    #[test]
    fn file_formats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let yaml = read_file(&write(
            "avp.yaml",
            "# c\n---\nAVP_TYPE: vault\nvault_addr: http://file:8200\nAVP_KV_VERSION: 1\nVAULT_SKIP_VERIFY: yes\nVAULT_NAMESPACE: ~\n",
        ))
        .expect("yaml");
        assert_eq!(
            yaml,
            map(&[
                ("AVP_TYPE", "vault"),
                ("VAULT_ADDR", "http://file:8200"),
                ("AVP_KV_VERSION", "1"),
                ("VAULT_SKIP_VERIFY", "true"),
            ])
        );
        let json =
            read_file(&write("avp.JSON", r#"{"avp_kv_version": 1, "x": false}"#)).expect("json");
        assert_eq!(json, map(&[("AVP_KV_VERSION", "1"), ("X", "false")]));
        let env = read_file(&write(
            "avp.env",
            "# c\n\nexport AVP_TYPE=vault\nVAULT_ADDR=\"http://envfile:8200\"\nAVP_PASSWORD='a=b'\n",
        ))
        .expect("env file");
        assert_eq!(
            env,
            map(&[
                ("AVP_TYPE", "vault"),
                ("VAULT_ADDR", "http://envfile:8200"),
                ("AVP_PASSWORD", "a=b"),
            ])
        );
        assert!(
            read_file(&write("empty.yaml", "# nothing\n"))
                .expect("empty")
                .is_empty()
        );
        for (name, text) in [
            ("list.yaml", "- a\n- b\n"),
            ("nested.yml", "VAULT_ADDR:\n  x: 1\n"),
            ("broken.json", "{"),
            ("array.json", "[1]"),
            ("broken.yaml", "a: [\n"),
        ] {
            assert!(
                matches!(
                    read_file(&write(name, text)),
                    Err(SettingsError::File { .. })
                ),
                "{name}"
            );
        }
        let err = read_file(&write("bad.env", "AVP_TYPE=vault\nhvs.pasted-token\n"))
            .expect_err("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(!err.to_string().contains("pasted-token"), "{err}");
    }
}
