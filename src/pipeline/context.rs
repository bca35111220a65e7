//! The request's environment as the repo-server sent it (`ARGOCD_APP_*`, `KUBE_*`,
//! `ARGOCD_ENV_*`, `PARAM_*`, ...). Values are tenant-controlled data: they are read here by
//! name and never interpreted as code or as operator configuration.

use std::borrow::Cow;

/// Ordered `NAME=VALUE` entries; on duplicates the last one wins, as with Go's `exec.Cmd.Env`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestEnv(Vec<(String, String)>);

/// Names the repo-server sets for every GenerateManifest call.
pub const APP_NAME: &str = "ARGOCD_APP_NAME";
pub const APP_NAMESPACE: &str = "ARGOCD_APP_NAMESPACE";
pub const APP_PROJECT: &str = "ARGOCD_APP_PROJECT_NAME";
pub const KUBE_VERSION: &str = "KUBE_VERSION";
pub const KUBE_API_VERSIONS: &str = "KUBE_API_VERSIONS";
/// Plugin env (`--plugin-env NAME=...`) arrives with this prefix.
pub const PLUGIN_ENV_PREFIX: &str = "ARGOCD_ENV_";
/// UI parameters (`spec.source.plugin.parameters`) arrive as `PARAM_<NAME>` (string values;
/// arrays as `PARAM_<NAME>_<i>`, maps as `PARAM_<NAME>_<KEY>`) ...
pub const PARAM_PREFIX: &str = "PARAM_";
/// ... and all of them together as JSON: `[{"name": ..., "string": ..., "array": [...],
/// "map": {...}}]` (Argo's `ApplicationSourcePluginParameters.Environ`).
pub const APP_PARAMETERS: &str = "ARGOCD_APP_PARAMETERS";

impl RequestEnv {
    /// Keeps entries with a non-empty name; empty values are kept (Argo ≥3.0 passes them).
    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(entries.into_iter().filter(|(k, _)| !k.is_empty()).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A value that is set and not blank.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A plugin env value: `plugin("IMAGE_TAG")` reads `ARGOCD_ENV_IMAGE_TAG`.
    pub fn plugin(&self, name: &str) -> Option<&str> {
        self.non_empty(&format!("{PLUGIN_ENV_PREFIX}{name}"))
    }

    /// A built-in plugin setting (`IMAGE_TAG`, `HELM_VALUE_FILES`, ...), from where Argo CD
    /// puts it. One precedence: a UI parameter wins over the plugin env, because the UI shows
    /// parameters and that is what a user expects to render:
    /// 1. `PARAM_<NAME>`, a string parameter, if not blank;
    /// 2. an array parameter named `<NAME>` in `ARGOCD_APP_PARAMETERS` (names compared as Argo
    ///    escapes them: upper case, `[^A-Z0-9_]` → `_`), its items joined with `,`;
    /// 3. `ARGOCD_ENV_<NAME>` (`plugin.env`), if not blank.
    ///
    /// Values are data, validated by whoever reads them, as before.
    pub fn setting(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(v) = self.non_empty(&format!("{PARAM_PREFIX}{name}")) {
            return Some(Cow::Borrowed(v));
        }
        if let Some(items) = self.array_parameter(name) {
            return Some(Cow::Owned(items.join(",")));
        }
        self.plugin(name).map(Cow::Borrowed)
    }

    /// The non-blank items of the array parameter `name` in `ARGOCD_APP_PARAMETERS`; `None`
    /// when there is none (or the JSON is not Argo's).
    fn array_parameter(&self, name: &str) -> Option<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Param {
            #[serde(default)]
            name: String,
            #[serde(default)]
            array: Option<Vec<String>>,
        }
        let params: Vec<Param> = serde_json::from_str(self.get(APP_PARAMETERS)?).ok()?;
        let items: Vec<String> = params
            .into_iter()
            .rev()
            .find(|p| escape_param_name(&p.name) == name)?
            .array?
            .into_iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        (!items.is_empty()).then_some(items)
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.0
    }

    /// The Argo CD project, set by the repo-server (not by tenants); empty if unknown.
    pub fn project(&self) -> &str {
        self.get(APP_PROJECT).unwrap_or("")
    }

    pub fn app_name(&self) -> &str {
        self.get(APP_NAME).unwrap_or("")
    }

    /// `<project>/<app>`, whom Vault's audit log is told a read is for; `None` without an app
    /// name (a `generate` run by hand).
    pub fn origin(&self) -> Option<String> {
        let app = self.non_empty(APP_NAME)?;
        Some(format!("{}/{app}", self.project()))
    }
}

/// A parameter name as Argo CD turns it into an env name (`escaped` in its
/// `ApplicationSourcePluginParameters.Environ`): upper case, anything but `A-Z0-9_` → `_`.
pub fn escape_param_name(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect()
}

/// The one rule for operator configuration versus requests: operator settings (Vault address,
/// auth, credentials, TLS, mounts, KV version, path validation; our own `AVP_SIDECAR_*` policy,
/// limits and tool paths; the tools' own `HELM_*`/`KUSTOMIZE_*`, `PATH` and the loader's
/// `LD_*`) come from flags, the process env and the `-c` file, read once at startup. The request
/// env is only ever read by name for app context (`ARGOCD_APP_*`, `KUBE_*`), the plugin env and
/// UI parameters the built-ins understand (`IMAGE_NAME`, `IMAGE_TAG`, `APP_REPO`, `HELM_VALUE_FILES`,
/// `HELM_VALUES`, `HELM_RELEASE_NAME`: validated data), and
/// `AVP_SECRET` (checked against the operator's allowlist), and the names the operator lists
/// in `--path-template-env` (only ever one safe path segment); children see it minus
/// [`is_reserved_name`]. This returns the names in a request that look like attempts to set an
/// operator setting (AVP would have honoured `ARGOCD_ENV_VAULT_ADDR` and friends), so they can
/// be reported; their values are never read.
pub fn ignored_operator_names(request: &RequestEnv) -> Vec<&str> {
    const SETTING_PREFIXES: &[&str] = &["VAULT_", "AVP_", "BAO_"];
    let mut names: Vec<&str> = request
        .entries()
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|name| {
            match name
                .strip_prefix(PLUGIN_ENV_PREFIX)
                .or_else(|| name.strip_prefix(PARAM_PREFIX))
            {
                Some(bare) => {
                    let bare = bare.to_ascii_uppercase();
                    bare != "AVP_SECRET" && SETTING_PREFIXES.iter().any(|p| bare.starts_with(p))
                }
                None => is_reserved_name(name),
            }
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Names a request may not override in a child's environment, even though the child env is
/// otherwise "server env, then request env" like Argo's: the request cannot redirect tools or
/// the dynamic loader.
pub fn is_reserved_name(name: &str) -> bool {
    const EXACT: &[&str] = &["PATH", "HOME", "TMPDIR", "SHELL", "USER", "IFS"];
    const PREFIXES: &[&str] = &["LD_", "HELM_", "KUSTOMIZE_", "VAULT_", "AVP_", "BAO_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Server variables never handed to kustomize and helm: credentials for Vault and our own
/// settings. (Operator-written command plugins get the whole server env, as in Argo CD, so
/// `| avp-sidecar generate -` works.)
pub fn is_private_server_name(name: &str) -> bool {
    const PREFIXES: &[&str] = &["VAULT_", "AVP_", "BAO_"];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The environment of a child process: the server's (minus private names), then the request's
/// (minus reserved names), then `extra` (set by us, always wins). Later entries override earlier.
pub fn child_env(
    server: &[(String, String)],
    request: &RequestEnv,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(slot) = out.iter_mut().find(|(name, _)| name == k) {
            slot.1 = v.to_owned();
        } else {
            out.push((k.to_owned(), v.to_owned()));
        }
    };
    for (k, v) in server.iter().filter(|(k, _)| !is_private_server_name(k)) {
        set(k, v);
    }
    for (k, v) in request
        .entries()
        .iter()
        .filter(|(k, _)| !is_reserved_name(k))
    {
        set(k, v);
    }
    for (k, v) in extra {
        set(k, v);
    }
    out
}

/// Request envs for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::RequestEnv;

    /// `pairs` as owned `(name, value)` entries.
    pub(crate) fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A request env of `pairs`.
    pub(crate) fn request_env(pairs: &[(&str, &str)]) -> RequestEnv {
        RequestEnv::new(self::pairs(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::pairs as env;
    use super::*;

    #[test]
    fn last_duplicate_wins_and_empty_names_dropped() {
        let e = RequestEnv::new(env(&[("A", "1"), ("", "x"), ("A", "2"), ("B", "")]));
        assert_eq!(e.get("A"), Some("2"));
        assert_eq!(e.get("B"), Some(""));
        assert_eq!(e.non_empty("B"), None);
        assert_eq!(e.entries().len(), 3);
    }

    #[test]
    fn settings_prefer_ui_parameters() {
        let params = r#"[{"name":"IMAGE_TAG","string":"ui"},{"name":"helm-value-files","array":["a.yaml"," b.yaml ",""]},{"name":"EMPTY","array":[]}]"#;
        let req = RequestEnv::new(env(&[
            ("ARGOCD_ENV_IMAGE_TAG", "env"),
            ("PARAM_IMAGE_TAG", "ui"),
            ("ARGOCD_ENV_IMAGE_NAME", "app"),
            ("PARAM_IMAGE_NAME", " "),
            ("ARGOCD_ENV_HELM_VALUE_FILES", "env.yaml"),
            ("ARGOCD_APP_PARAMETERS", params),
            ("ARGOCD_ENV_EMPTY", "fallback"),
        ]));
        assert_eq!(req.setting("IMAGE_TAG").as_deref(), Some("ui"));
        assert_eq!(
            req.setting("IMAGE_NAME").as_deref(),
            Some("app"),
            "blank parameter"
        );
        assert_eq!(
            req.setting("HELM_VALUE_FILES").as_deref(),
            Some("a.yaml,b.yaml")
        );
        assert_eq!(req.setting("EMPTY").as_deref(), Some("fallback"));
        assert_eq!(req.setting("NOPE"), None);
        let broken = RequestEnv::new(env(&[
            ("ARGOCD_APP_PARAMETERS", "{not json"),
            ("ARGOCD_ENV_HELM_VALUE_FILES", "env.yaml"),
        ]));
        assert_eq!(
            broken.setting("HELM_VALUE_FILES").as_deref(),
            Some("env.yaml")
        );
        assert_eq!(
            escape_param_name("helm.value-files 2"),
            "HELM_VALUE_FILES_2"
        );
    }

    #[test]
    fn operator_setting_attempts_are_named() {
        let req = RequestEnv::new(env(&[
            ("ARGOCD_APP_NAME", "web"),
            ("ARGOCD_ENV_VAULT_ADDR", "http://evil"),
            ("ARGOCD_ENV_avp_auth_type", "token"),
            ("ARGOCD_ENV_AVP_SIDECAR_LEAK_GUARD", "allow"),
            ("ARGOCD_ENV_AVP_SECRET", "team:cfg"),
            ("PARAM_AVP_SECRET", "team:cfg"),
            ("PARAM_VAULT_TOKEN", "x"),
            ("ARGOCD_ENV_IMAGE_TAG", "1.2.3"),
            ("ARGOCD_ENV_PATH", "/evil"),
            ("PATH", "/evil"),
            ("LD_PRELOAD", "/evil.so"),
            ("VAULT_ADDR", "http://evil"),
        ]));
        assert_eq!(
            ignored_operator_names(&req),
            [
                "ARGOCD_ENV_AVP_SIDECAR_LEAK_GUARD",
                "ARGOCD_ENV_VAULT_ADDR",
                "ARGOCD_ENV_avp_auth_type",
                "LD_PRELOAD",
                "PARAM_VAULT_TOKEN",
                "PATH",
                "VAULT_ADDR",
            ]
        );
    }

    #[test]
    fn child_env_order_and_filters() {
        let server = env(&[("PATH", "/bin"), ("VAULT_TOKEN", "s.secret"), ("LANG", "C")]);
        let req = RequestEnv::new(env(&[
            ("PATH", "/evil"),
            ("LANG", "de"),
            ("ARGOCD_ENV_X", "1; touch /tmp/x"),
            ("LD_PRELOAD", "/evil.so"),
        ]));
        let out = child_env(&server, &req, &env(&[("HELM_CACHE_HOME", "/w/h")]));
        assert_eq!(
            out,
            env(&[
                ("PATH", "/bin"),
                ("LANG", "de"),
                ("ARGOCD_ENV_X", "1; touch /tmp/x"),
                ("HELM_CACHE_HOME", "/w/h"),
            ])
        );
    }
}
