//! A read-only view of what the engine would do with rendered documents, for `check`: every
//! placeholder with the read it resolves to (or why it cannot), the field it sits in, and the
//! text around it, using exactly the rules of `collect`/`apply` so the two cannot disagree.
//! Pure: no reads, no values.

use std::ops::Range;

use serde_json::{Map, Value};

use super::placeholder::{self, Mode, Placeholder, Source};
use super::{Kind, Manifest, ObjectRef, Options, Problem};
use crate::secrets::SecretRequest;

/// One non-ignored document as the engine sees it.
#[derive(Clone, Debug)]
pub struct InspectedDocument {
    pub object: ObjectRef,
    /// Whether bare `<KEY>` placeholders count here (path annotation present, or a default path).
    pub generic_mode: bool,
    /// Problems that stop the whole manifest (e.g. `remove-missing` on a Deployment).
    pub problems: Vec<Problem>,
    /// String fields that hold a placeholder or anything that might be meant as one (`<`, `{{`).
    pub fields: Vec<InspectedField>,
}

/// One string value of a document.
#[derive(Clone, Debug)]
pub struct InspectedField {
    /// Map keys from the document root; list elements repeat their list's key.
    pub path: Vec<String>,
    /// The text the engine searches: the value, or for a Secret the decoded text of a base64
    /// value that holds a placeholder (then `decoded` is true).
    pub text: String,
    pub decoded: bool,
    pub placeholders: Vec<InspectedPlaceholder>,
}

/// One placeholder occurrence.
#[derive(Clone, Debug)]
pub struct InspectedPlaceholder {
    /// Byte range in [`InspectedField::text`].
    pub range: Range<usize>,
    /// The placeholder as written, `<` … `>` and modifiers included.
    pub text: String,
    /// `path:p#k[#v]` or the bare key, as AVP names placeholders in errors.
    pub name: String,
    pub key: String,
    /// Written as `<path:...#key>` (else a bare key read from the annotation/default path).
    pub inline: bool,
    /// The read it needs; `Ok(None)` for a bare key whose path annotation is empty (always
    /// missing, as in AVP).
    pub request: Result<Option<SecretRequest>, Problem>,
}

/// Every non-ignored document with its placeholders. Non-object documents are skipped.
pub fn inspect(docs: &[Value], opts: &Options) -> Vec<InspectedDocument> {
    let mut out = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        let Value::Object(object) = doc else { continue };
        let manifest = Manifest::new(object, index, opts);
        if manifest.annotations.ignore {
            continue;
        }
        let mut problems = Vec::new();
        if manifest.annotations.remove_missing && manifest.kind == Kind::Other {
            problems.push(Problem::RemoveMissingNotAllowed);
        }
        let mut fields = Vec::new();
        let mut path = Vec::new();
        walk(object, &mut path, &mut |path, value| {
            let (text, decoded) = match manifest.decoded_secret_template(value) {
                Some(d) => (d, true),
                None => (value.to_owned(), false),
            };
            if !text.contains('<') && !text.contains("{{") {
                return;
            }
            let placeholders = placeholder::find(&text, manifest.mode)
                .map(|m| describe(&manifest, m.range(), m.as_str()))
                .collect();
            fields.push(InspectedField {
                path: path.to_vec(),
                text,
                decoded,
                placeholders,
            });
        });
        out.push(InspectedDocument {
            object: manifest.object.clone(),
            generic_mode: manifest.mode == Mode::Generic,
            problems,
            fields,
        });
    }
    out
}

fn describe(manifest: &Manifest<'_>, range: Range<usize>, matched: &str) -> InspectedPlaceholder {
    let ph = Placeholder::parse(matched);
    let (key, inline, request) = match ph.source {
        Source::Inline { path, key, version } => {
            (key, true, manifest.request(path, version).map(Some))
        }
        Source::Generic { key } => {
            let request = manifest.generic_path().and_then(|path| {
                path.map(|p| manifest.request(p, &manifest.annotations.secret_version))
                    .transpose()
            });
            (key, false, request)
        }
    };
    InspectedPlaceholder {
        range,
        text: matched.to_owned(),
        name: ph.name.to_owned(),
        key: key.to_owned(),
        inline,
        request,
    }
}

/// The strings `visit_strings` visits (same AVP rules), with their key path.
fn walk(object: &Map<String, Value>, path: &mut Vec<String>, f: &mut impl FnMut(&[String], &str)) {
    for (key, value) in object {
        path.push(key.clone());
        match value {
            Value::Object(inner) => walk(inner, path, f),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(inner) => walk(inner, path, f),
                        Value::String(s) => f(path, s),
                        _ => {}
                    }
                }
            }
            Value::String(s) => f(path, s),
            _ => {}
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_placeholders_with_requests_and_fields() {
        let docs = vec![
            json!({"kind": "Secret", "metadata": {"name": "s"},
                   "stringData": {"a": "x <path:kv/data/a#k> y", "b": "<b>plain</b>"}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "c",
                   "annotations": {"avp.kubernetes.io/path": "kv/data/c"}},
                   "data": {"u": "<user | base64encode>"}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "i",
                   "annotations": {"avp.kubernetes.io/ignore": "true"}},
                   "data": {"u": "<path:kv/data/i#k>"}}),
        ];
        let out = inspect(&docs, &Options::default());
        assert_eq!(out.len(), 2, "ignored documents are skipped");
        assert!(!out[0].generic_mode);
        assert_eq!(out[0].fields.len(), 2);
        let a = &out[0].fields[0];
        assert_eq!(a.path, ["stringData", "a"]);
        assert_eq!(a.placeholders.len(), 1);
        let p = &a.placeholders[0];
        assert_eq!(p.text, "<path:kv/data/a#k>");
        assert_eq!(&a.text[p.range.clone()], p.text);
        assert_eq!(p.key, "k");
        assert!(p.inline);
        let req = p.request.clone().expect("ok").expect("some");
        assert_eq!(req.path, "kv/data/a");
        assert!(out[0].fields[1].placeholders.is_empty());

        assert!(out[1].generic_mode);
        let p = &out[1].fields[0].placeholders[0];
        assert_eq!((p.key.as_str(), p.inline), ("user", false));
        assert_eq!(
            p.request.clone().expect("ok").expect("some").path,
            "kv/data/c"
        );
    }

    #[test]
    fn decodes_base64_secret_templates() {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("<path:kv/data/a#k | trim>");
        let docs = vec![json!({"kind": "Secret", "data": {"a": encoded}})];
        let out = inspect(&docs, &Options::default());
        let f = &out[0].fields[0];
        assert!(f.decoded);
        assert_eq!(f.placeholders[0].text, "<path:kv/data/a#k | trim>");
    }
}
