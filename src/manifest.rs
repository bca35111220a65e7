//! Splits tool output into objects the way Argo's `kube.SplitYAMLToString` does (k8s
//! apimachinery `YAMLOrJSONDecoder`): a stream of JSON values if the first non-blank byte is
//! `{`, else multi-document YAML; empty and `null` documents are dropped; everything else is
//! passed on as is (the repo-server validates objects). Pure: no I/O.

use serde_json::Value;

use crate::yaml::{self, YamlError};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to unmarshal manifest: {0}")]
    Yaml(#[from] YamlError),
    #[error("failed to unmarshal manifest: {0}")]
    Json(#[from] serde_json::Error),
}

/// The objects in a tool's stdout, in order.
pub fn split_tool_output(stdout: &str) -> Result<Vec<Value>, ManifestError> {
    let docs = if stdout.trim_start().starts_with('{') {
        serde_json::Deserializer::from_str(stdout)
            .into_iter::<Value>()
            .collect::<Result<Vec<_>, _>>()?
    } else {
        yaml::parse_documents(stdout)?
    };
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The form we return in `ManifestResponse`: compact JSON, which the repo-server's decoder reads
/// with no YAML scalar ambiguity.
pub fn to_json_string(v: &Value) -> String {
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn helm_style_output() {
        let out = "---\n# Source: chart/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  flag: on\n  quoted: \"on\"\n---\n# Source: chart/templates/empty.yaml\n---\nnull\n---\napiVersion: v1\nkind: List\nitems: []\n";
        let docs = split_tool_output(out).expect("valid");
        assert_eq!(
            docs,
            vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"flag": true, "quoted": "on"}}),
                json!({"apiVersion": "v1", "kind": "List", "items": []}),
            ]
        );
    }

    #[test]
    fn json_stream() {
        let docs = split_tool_output("  {\"kind\":\"A\"}\n{\"kind\":\"B\"} null {\"kind\":\"C\"}")
            .expect("valid");
        assert_eq!(
            docs,
            vec![
                json!({"kind": "A"}),
                json!({"kind": "B"}),
                json!({"kind": "C"})
            ]
        );
        assert!(split_tool_output("{\"kind\": ").is_err());
    }

    #[test]
    fn empty_output_is_no_objects() {
        assert!(split_tool_output("").expect("ok").is_empty());
        assert!(
            split_tool_output("\n---\n# nothing\n")
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn errors_are_prefixed() {
        let err = split_tool_output("a: [\n").expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with("failed to unmarshal manifest: yaml: line"),
            "{err}"
        );
    }

    #[test]
    fn compact_json_out() {
        assert_eq!(
            to_json_string(&json!({"a": [1, "on"]})),
            r#"{"a":[1,"on"]}"#
        );
    }
}
