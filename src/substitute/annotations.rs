//! Reads the `avp.kubernetes.io/*` annotations of one manifest with AVP's parsing rules.
//!
//! Owns annotation names and value parsing (Go `strconv.ParseBool`, kv-version). It does not
//! decide what the annotations imply for reads or substitution; `mod.rs` does.

use serde_json::{Map, Value};

use crate::secrets::KvVersion;

/// Every AVP annotation starts with this.
pub(crate) const PREFIX: &str = "avp.kubernetes.io/";
pub(crate) const PATH: &str = "avp.kubernetes.io/path";
pub(crate) const IGNORE: &str = "avp.kubernetes.io/ignore";
pub(crate) const KV_VERSION: &str = "avp.kubernetes.io/kv-version";
pub(crate) const SECRET_VERSION: &str = "avp.kubernetes.io/secret-version";
pub(crate) const REMOVE_MISSING: &str = "avp.kubernetes.io/remove-missing";

/// The AVP annotations of one manifest, as AVP sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Annotations {
    /// `Some` when the path annotation key exists (even with an empty value): that alone turns on
    /// generic `<key>` placeholders.
    pub path: Option<String>,
    pub ignore: bool,
    /// Raw kv-version value; validated only when a read needs it, as in AVP.
    pub kv_version: Option<String>,
    /// Raw secret-version value; empty means latest.
    pub secret_version: String,
    pub remove_missing: bool,
}

impl Annotations {
    /// Reads `metadata.annotations` like apimachinery's `GetAnnotations`: if `metadata` or
    /// `annotations` is not a map, or if *any* annotation value is not a string (e.g. an unquoted
    /// `kv-version: 1`), AVP gets no annotations at all, so every AVP annotation is ignored.
    pub(crate) fn from_object(object: &Map<String, Value>) -> Self {
        let Some(map) = object
            .get("metadata")
            .and_then(Value::as_object)
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
        else {
            return Self::default();
        };
        if map.values().any(|v| !v.is_string()) {
            return Self::default();
        }
        let get = |name: &str| map.get(name).and_then(Value::as_str);
        Annotations {
            path: get(PATH).map(str::to_owned),
            ignore: get(IGNORE).and_then(parse_go_bool).unwrap_or(false),
            kv_version: get(KV_VERSION).map(str::to_owned),
            secret_version: get(SECRET_VERSION).unwrap_or_default().to_owned(),
            remove_missing: get(REMOVE_MISSING).and_then(parse_go_bool).unwrap_or(false),
        }
    }

    /// The KV version for this manifest's reads: the annotation when present (only `"1"` and
    /// `"2"` are valid, like AVP), else the configured default. `Err` carries the bad value.
    pub(crate) fn kv_version(&self, default: KvVersion) -> Result<KvVersion, String> {
        match self.kv_version.as_deref() {
            None => Ok(default),
            Some("1") => Ok(KvVersion::V1),
            Some("2") => Ok(KvVersion::V2),
            Some(other) => Err(other.to_owned()),
        }
    }
}

/// Go's `strconv.ParseBool`. AVP discards the error, so `None` means false to callers.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn annotations(meta: Value) -> Annotations {
        let doc = json!({ "kind": "Secret", "metadata": meta });
        Annotations::from_object(doc.as_object().expect("object"))
    }

    #[test]
    fn go_parse_bool() {
        let cases = [
            ("1", Some(true)),
            ("t", Some(true)),
            ("T", Some(true)),
            ("TRUE", Some(true)),
            ("true", Some(true)),
            ("True", Some(true)),
            ("0", Some(false)),
            ("f", Some(false)),
            ("FALSE", Some(false)),
            ("False", Some(false)),
            ("yes", None),
            ("tRUE", None),
            (" true", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_bool(input), want, "input {input:?}");
        }
    }

    #[test]
    fn reads_all_annotations() {
        let a = annotations(json!({ "annotations": {
            PATH: "secret/data/app",
            IGNORE: "True",
            KV_VERSION: "1",
            SECRET_VERSION: "3",
            REMOVE_MISSING: "t",
            "other": "x",
        }}));
        assert_eq!(
            a,
            Annotations {
                path: Some("secret/data/app".into()),
                ignore: true,
                kv_version: Some("1".into()),
                secret_version: "3".into(),
                remove_missing: true,
            }
        );
    }

    #[test]
    fn empty_path_still_counts_as_present() {
        let a = annotations(json!({ "annotations": { PATH: "" } }));
        assert_eq!(a.path.as_deref(), Some(""));
    }

    #[test]
    fn non_string_annotation_hides_all() {
        let cases = [
            json!({ "annotations": { PATH: "secret/x", KV_VERSION: 1 } }),
            json!({ "annotations": { PATH: "secret/x", "unrelated": true } }),
            json!({ "annotations": { PATH: "secret/x", "n": null } }),
            json!({ "annotations": null }),
            json!({ "annotations": [PATH] }),
            json!("metadata is not a map"),
            json!({}),
        ];
        for meta in cases {
            assert_eq!(annotations(meta.clone()), Annotations::default(), "{meta}");
        }
    }

    #[test]
    fn kv_version_values() {
        let with = |v: Option<&str>| Annotations {
            kv_version: v.map(str::to_owned),
            ..Annotations::default()
        };
        assert_eq!(with(None).kv_version(KvVersion::V1), Ok(KvVersion::V1));
        assert_eq!(with(None).kv_version(KvVersion::V2), Ok(KvVersion::V2));
        assert_eq!(with(Some("1")).kv_version(KvVersion::V2), Ok(KvVersion::V1));
        assert_eq!(with(Some("2")).kv_version(KvVersion::V1), Ok(KvVersion::V2));
        for bad in ["", "3", " 2", "v2", "02"] {
            assert_eq!(
                with(Some(bad)).kv_version(KvVersion::V2),
                Err(bad.to_owned())
            );
        }
    }
}
