//! Which Vault mounts a placeholder may read: secret engines only.
//!
//! AVP reads whatever path a manifest names, with the sidecar's token. Vault's `default`
//! policy lets every token read `auth/token/lookup-self` (the token itself, as `id`) and its
//! own `cubbyhole/`, and many tokens can read `sys/` or `identity/` endpoints; a tenant's
//! `<path:auth/token/lookup-self#id>` in a Secret annotated `kv-version: "1"` returned the
//! sidecar's token. So, before anything is asked of Vault:
//!
//! - paths under Vault's fixed system mounts (`auth/`, `sys/`, `identity/`, `cubbyhole/`) are
//!   refused, always;
//! - with `--secret-mounts` (the operator's list), a path must be under a listed mount, read
//!   with the mount's KV version when the list gives one;
//! - without it, the Vault source asks `sys/internal/ui/mounts/<path>` once per mount (what the
//!   `vault kv` CLI asks; the `default` policy allows it for any path the token can use), and
//!   refuses engines other than KV (`kv`, `generic`) and reads whose KV version is not the
//!   mount's. That also covers namespaces given as a path prefix (`team/auth/...`), which the
//!   fixed list cannot see.

use std::fmt;

use super::KvVersion;

/// Vault's own mounts, at fixed paths in every Vault and OpenBao: never secret engines.
pub(crate) const RESERVED: [&str; 4] = ["auth", "sys", "identity", "cubbyhole"];

/// A secrets-engine mount, as the operator lists it or Vault describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount path without surrounding `/` (`secret`, `team-a/kv`).
    pub path: String,
    /// The KV version reads must use; `None`: not known (listed without one).
    pub kv: Option<KvVersion>,
}

impl Mount {
    /// Whether `path` (without surrounding `/`) is this mount or below it.
    fn contains(&self, path: &str) -> bool {
        path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.path)
    }
}

/// Why a placeholder may not read a path. Names the path, the mount and the rule; the
/// gRPC status is PERMISSION_DENIED.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error(
        "vault path {path} is under {mount}/, a Vault system mount, not a secrets engine; placeholders may read secrets only"
    )]
    Reserved { path: String, mount: &'static str },
    #[error(
        "vault path {path} is not under a secrets mount this sidecar reads (--secret-mounts: {listed})"
    )]
    NotListed { path: String, listed: String },
    #[error(
        "vault path {path} is on mount {mount}, a {engine:?} engine, not KV; placeholders may read KV secrets only (an operator can list other mounts with --secret-mounts)"
    )]
    NotKv {
        path: String,
        mount: String,
        engine: String,
    },
    #[error(
        "vault path {path} is on mount {mount}, which is KV version {mount_version}, but the placeholder reads it as version {read_as} (avp.kubernetes.io/kv-version or AVP_KV_VERSION)"
    )]
    KvVersion {
        path: String,
        mount: String,
        mount_version: u8,
        read_as: u8,
    },
    #[error(
        "vault path {path}: Vault would not describe its mount (sys/internal/ui/mounts answered 403), so it is not read; an operator can list the mounts with --secret-mounts"
    )]
    Undescribed { path: String },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid --secret-mounts entry {0:?}: expected MOUNT or MOUNT=1|2, not a Vault system mount ({reserved})", reserved = RESERVED.join(", "))]
pub struct BadMount(pub String);

/// The operator's `--secret-mounts`. Empty: every mount outside [`RESERVED`], each checked with
/// Vault (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMounts {
    listed: Vec<Mount>,
}

/// What the static check leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// A listed mount: nothing more to ask.
    Listed(&'a Mount),
    /// No list: ask Vault what the mount is.
    Discover,
}

/// `version` as the number people write (`1`, `2`).
pub(crate) fn kv_number(version: KvVersion) -> u8 {
    match version {
        KvVersion::V1 => 1,
        KvVersion::V2 => 2,
    }
}

impl SecretMounts {
    /// `MOUNT` or `MOUNT=1|2`, comma-separated or repeated.
    pub fn parse(rules: &[String]) -> Result<Self, BadMount> {
        let mut listed = Vec::new();
        for rule in crate::config::rule_items(rules) {
            let bad = || BadMount(rule.to_owned());
            let (path, kv) = match rule.split_once('=') {
                Some((path, "1")) => (path, Some(KvVersion::V1)),
                Some((path, "2")) => (path, Some(KvVersion::V2)),
                Some(_) => return Err(bad()),
                None => (rule, None),
            };
            let path = path.trim().trim_matches('/');
            if !super::settings::is_clean_path(path)
                || path.contains('*')
                || reserved(path).is_some()
            {
                return Err(bad());
            }
            listed.push(Mount {
                path: path.to_owned(),
                kv,
            });
        }
        Ok(Self { listed })
    }

    pub fn is_listed(&self) -> bool {
        !self.listed.is_empty()
    }

    /// The check made before any call to Vault: system mounts refused; with a list, the path
    /// must be under a listed mount (the longest that matches) and read with its KV version.
    pub fn check(&self, path: &str, read_as: KvVersion) -> Result<Verdict<'_>, MountError> {
        let path = path.trim_matches('/');
        if let Some(mount) = reserved(path) {
            return Err(MountError::Reserved {
                path: path.to_owned(),
                mount,
            });
        }
        if self.listed.is_empty() {
            return Ok(Verdict::Discover);
        }
        let mount = self
            .listed
            .iter()
            .filter(|m| m.contains(path))
            .max_by_key(|m| m.path.len())
            .ok_or_else(|| MountError::NotListed {
                path: path.to_owned(),
                listed: self
                    .listed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        check_version(path, mount, read_as)?;
        Ok(Verdict::Listed(mount))
    }
}

/// A read of `path` on `mount` must use the mount's KV version, where it is known.
pub(crate) fn check_version(
    path: &str,
    mount: &Mount,
    read_as: KvVersion,
) -> Result<(), MountError> {
    match mount.kv {
        Some(v) if v != read_as => Err(MountError::KvVersion {
            path: path.trim_matches('/').to_owned(),
            mount: mount.to_string(),
            mount_version: kv_number(v),
            read_as: kv_number(read_as),
        }),
        _ => Ok(()),
    }
}

/// The system mount `path` is under, if any. Case-insensitive: refusing `SYS/` costs nothing.
fn reserved(path: &str) -> Option<&'static str> {
    let first = path.split('/').next().unwrap_or_default();
    RESERVED
        .iter()
        .find(|r| r.eq_ignore_ascii_case(first))
        .copied()
}

/// Vault's description of a mount (`sys/internal/ui/mounts/<path>`): its path relative to the
/// namespace, its engine type, and for KV its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Described {
    pub mount: Mount,
    pub engine: String,
}

impl Described {
    /// From the answer's `data`: `{"path": "secret/", "type": "kv", "options": {"version": "2"}}`.
    /// `None` if it has no path or type.
    pub(crate) fn from_answer(data: &serde_json::Value) -> Option<Self> {
        let path = data.get("path")?.as_str()?.trim_matches('/').to_owned();
        let engine = data.get("type")?.as_str()?.to_owned();
        let kv = match engine.as_str() {
            // `generic` is KV's old name; a KV mount without options.version is version 1.
            "generic" => Some(KvVersion::V1),
            "kv" => Some(
                match data
                    .get("options")
                    .and_then(|o| o.get("version"))
                    .and_then(serde_json::Value::as_str)
                {
                    Some("2") => KvVersion::V2,
                    _ => KvVersion::V1,
                },
            ),
            _ => None,
        };
        Some(Self {
            mount: Mount { path, kv },
            engine,
        })
    }

    /// Whether this description may be reused for other paths under the same mount: only when
    /// its path is a prefix of the path asked about (with a namespace in the path, Vault
    /// answers relative to the namespace).
    pub(crate) fn covers(&self, path: &str) -> bool {
        !self.mount.path.is_empty() && self.mount.contains(path.trim_matches('/'))
    }

    /// KV with the right version, or the reason not.
    pub(crate) fn check(&self, path: &str, read_as: KvVersion) -> Result<(), MountError> {
        if self.mount.kv.is_none() {
            return Err(MountError::NotKv {
                path: path.trim_matches('/').to_owned(),
                mount: self.mount.to_string(),
                engine: self.engine.clone(),
            });
        }
        check_version(path, &self.mount, read_as)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list(rules: &[&str]) -> SecretMounts {
        SecretMounts::parse(&rules.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    #[test]
    fn system_mounts_are_refused_with_or_without_a_list() {
        for mounts in [SecretMounts::default(), list(&["secret=2"])] {
            for path in [
                "auth/token/lookup-self",
                "/auth/token/lookup-self",
                "SYS/mounts",
                "identity/entity/id/x",
                "cubbyhole/x",
                "cubbyhole",
            ] {
                assert!(
                    matches!(
                        mounts.check(path, KvVersion::V1),
                        Err(MountError::Reserved { .. })
                    ),
                    "{path}"
                );
            }
        }
        // A KV path that merely has such a segment further down is fine.
        assert_eq!(
            SecretMounts::default().check("secret/data/sys/x", KvVersion::V2),
            Ok(Verdict::Discover)
        );
    }

    #[test]
    fn listed_mounts_and_versions() {
        let m = list(&["secret=2", "kv1=1", "team/kv", " other/ "]);
        assert!(matches!(
            m.check("secret/data/app", KvVersion::V2),
            Ok(Verdict::Listed(Mount { path, .. })) if path == "secret"
        ));
        assert!(matches!(
            m.check("team/kv/data/x", KvVersion::V1),
            Ok(Verdict::Listed(Mount { path, .. })) if path == "team/kv"
        ));
        let e = m.check("secret/app", KvVersion::V1).expect_err("v1 on v2");
        assert_eq!(
            e.to_string(),
            "vault path secret/app is on mount secret/, which is KV version 2, but the placeholder reads it as version 1 (avp.kubernetes.io/kv-version or AVP_KV_VERSION)"
        );
        assert!(matches!(
            m.check("kv1/data/x", KvVersion::V2),
            Err(MountError::KvVersion { .. })
        ));
        // Segment-wise prefixes only: `secretx` is not under `secret`.
        let e = m
            .check("secretx/data/a", KvVersion::V2)
            .expect_err("unlisted");
        assert_eq!(
            e.to_string(),
            "vault path secretx/data/a is not under a secrets mount this sidecar reads (--secret-mounts: secret/, kv1/, team/kv/, other/)"
        );
        assert!(m.check("transit/keys/a", KvVersion::V1).is_err());
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in ["auth", "sys/x", "secret=3", "a/../b", "=2", "kv*"] {
            assert_eq!(
                SecretMounts::parse(&[bad.to_owned()]),
                Err(BadMount(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn descriptions_from_vault() {
        let kv2 = Described::from_answer(
            &json!({"path": "secret/", "type": "kv", "options": {"version": "2"}}),
        )
        .expect("kv2");
        assert_eq!(kv2.check("secret/data/a", KvVersion::V2), Ok(()));
        assert!(kv2.check("secret/data/a", KvVersion::V1).is_err());
        assert!(kv2.covers("secret/data/a") && !kv2.covers("secrets/data/a"));
        let kv1 = Described::from_answer(&json!({"path": "kv1/", "type": "kv", "options": null}))
            .expect("kv1");
        assert_eq!(kv1.mount.kv, Some(KvVersion::V1));
        let generic =
            Described::from_answer(&json!({"path": "old/", "type": "generic"})).expect("generic");
        assert_eq!(generic.mount.kv, Some(KvVersion::V1));
        let transit =
            Described::from_answer(&json!({"path": "transit/", "type": "transit"})).expect("t");
        assert_eq!(
            transit.check("transit/keys/k", KvVersion::V1).map_err(|e| e.to_string()),
            Err("vault path transit/keys/k is on mount transit/, a \"transit\" engine, not KV; placeholders may read KV secrets only (an operator can list other mounts with --secret-mounts)".to_owned())
        );
        assert!(Described::from_answer(&json!({"type": "kv"})).is_none());
    }
}
