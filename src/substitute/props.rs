//! Property tests of the placeholder grammar, modifiers, jsonPath and the two-phase engine:
//! arbitrary input never panics, placeholder-free documents pass through unchanged, generated
//! placeholders are found with the right path and key, and inserted values are not re-read.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::annotations::{IGNORE, KV_VERSION, PATH, REMOVE_MISSING, SECRET_VERSION};
use super::*;
use crate::secrets::{KvVersion, ReadError, SecretData, SecretRequest};

/// Pieces that make up placeholder-like text, so random strings often come close to the grammar.
const FRAGMENTS: &[&str] = &[
    "<",
    ">",
    "<path:",
    "path:",
    "#",
    "|",
    " | ",
    " ",
    "a",
    "k",
    "x",
    "s/t",
    "secret/data/app",
    "base64encode",
    "base64decode",
    "jsonPath",
    "{.x}",
    "{.x[0]}",
    "{range .}{.}{end}",
    "{",
    "}",
    "jsonParse",
    "yamlParse",
    "indent",
    " 2",
    " -1",
    " 999",
    "sha256sum",
    "\n",
    "\t",
    "PGs+",
    "e30=",
    "é",
    "''",
    "\"",
];

/// Keys secrets and generic placeholders use in these tests.
const KEYS: &[&str] = &["k", "x", "a", "data"];

fn fragment_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..12).prop_map(|parts| parts.concat())
}

/// Arbitrary strings, placeholder-ish strings, and a few well-formed placeholders.
fn fuzz_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => any::<String>(),
        5 => fragment_text(),
        2 => (prop::sample::select(KEYS), prop::sample::select(MODIFIERS))
            .prop_map(|(k, m)| format!("<{k}{m}>")),
        2 => (prop::sample::select(&["s/t", "a", "secret/data/app"][..]), prop::sample::select(KEYS),
              prop::sample::select(MODIFIERS))
            .prop_map(|(p, k, m)| format!("x<path:{p}#{k}{m}>y")),
    ]
    .boxed()
}

/// Modifier chains, valid or not for a given value.
const MODIFIERS: &[&str] = &[
    "",
    " | base64encode",
    " | base64decode",
    " | jsonPath {.x}",
    " | jsonParse",
    " | yamlParse",
    " | indent 4",
    " | sha256sum",
    " | base64encode | base64decode",
    " | jsonParse | jsonPath {.x}",
    " |",
    " | nope",
];

/// A JSON tree whose strings come from `text`.
fn json_value(text: BoxedStrategy<String>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        text.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A manifest: a kind, optional AVP annotations and a body of arbitrary values.
fn manifest(
    text: BoxedStrategy<String>,
    annotation_names: &'static [&'static str],
) -> impl Strategy<Value = Value> {
    let annotation = (
        prop::sample::select(annotation_names),
        prop_oneof![
            Just(Value::from("")),
            Just(Value::from("s/t")),
            Just(Value::from("true")),
            Just(Value::from("1")),
            Just(Value::from("2")),
            Just(Value::from(3)),
            text.clone().prop_map(Value::String),
        ],
    );
    (
        prop::sample::select(&["Secret", "ConfigMap", "Deployment", ""][..]),
        prop::collection::vec(annotation, 0..4),
        json_value(text.clone()),
        json_value(text),
    )
        .prop_map(|(kind, annotations, data, spec)| {
            let annotations: Map<String, Value> = annotations
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            json!({
                "kind": kind,
                "metadata": { "name": "m", "annotations": annotations },
                "data": data,
                "spec": { "list": [spec.clone(), [spec.clone()]], "value": spec },
            })
        })
}

/// Every AVP annotation and an unrelated one.
const ALL_ANNOTATIONS: &[&str] = &[
    PATH,
    IGNORE,
    KV_VERSION,
    SECRET_VERSION,
    REMOVE_MISSING,
    "example.com/other",
];

/// A secret store: every path holds `data`, except those in `missing`, which are not found.
fn fetch(requests: &BTreeSet<SecretRequest>, data: &SecretData, missing: &[String]) -> Fetched {
    requests
        .iter()
        .map(|r| {
            let result = if missing.contains(&r.path) {
                Err(ReadError::NotFound(r.clone()))
            } else {
                Ok(data.clone())
            };
            (r.clone(), result)
        })
        .collect()
}

fn secret_data() -> impl Strategy<Value = SecretData> {
    let value = prop_oneof![
        json_value(fuzz_text()),
        Just(json!("{\"x\": \"from json\"}")),
        Just(json!({"x": [1, "two"]})),
        Just(json!("eDogMQo=")),
        Just(json!("<path:s/t#k>")),
    ];
    prop::collection::vec((prop::sample::select(KEYS), value), 0..5).prop_map(|entries| {
        SecretData::new(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    })
}

/// Whether a string is text the engine could read a placeholder from: a `<`, directly or in the
/// base64-decoded form a Secret value is also searched in.
fn could_hold_placeholder(s: &str) -> bool {
    s.contains('<') || modifiers::go_base64_decode(s).is_some_and(|bytes| bytes.contains(&b'<'))
}

fn any_string(value: &Value, f: &impl Fn(&str) -> bool) -> bool {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().any(|v| any_string(v, f)),
        Value::Object(map) => map.iter().any(|(k, v)| f(k) || any_string(v, f)),
        _ => false,
    }
}

fn inline_request(path: &str, version: Option<&str>) -> SecretRequest {
    SecretRequest {
        path: path.to_owned(),
        kv_version: KvVersion::V2,
        version: version.map(str::to_owned),
    }
}

fn secret_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_.-]{1,8}", 1..4).prop_map(|parts| parts.join("/"))
}

/// Keys as they appear in real manifests: no `#`, `|`, `<`, `>` or spaces.
fn secret_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,12}"
}

/// Text around a placeholder that cannot start or end one.
fn plain_text() -> impl Strategy<Value = String> {
    "[^<>#|\n]{0,16}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Finding and parsing placeholders in any text never panics, in either mode, and every
    /// match is a `<...>` slice of one line.
    #[test]
    fn grammar_never_panics(text in fuzz_text()) {
        for mode in [Mode::Generic, Mode::InlineOnly] {
            for m in placeholder::find(&text, mode) {
                prop_assert!(m.as_str().starts_with('<') && m.as_str().ends_with('>'));
                let ph = Placeholder::parse(m.as_str());
                prop_assert!(m.as_str().contains(ph.name));
            }
        }
        let _ = placeholder::contains_any(&text);
    }

    /// Any modifier chain over any value returns a value or a typed error.
    #[test]
    fn modifiers_never_panic(value in json_value(fuzz_text()), chain in fragment_text()) {
        let segments: Vec<&str> = chain.split('|').collect();
        let _ = modifiers::apply(value, &segments, &AliasBudget::for_output(0));
    }

    /// Any jsonPath template over any data renders or fails with a message.
    #[test]
    fn jsonpath_never_panics(
        template in prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(&[
                "{", "}", ".", "..", "x", "a", "[", "]", "*", "0", "-1", ":", ",", "'", "\"",
                "$", "@", "?(", ")", "==", "<", "range ", "end", " ", "\\",
            ][..]), 0..16).prop_map(|parts| parts.concat()),
        ],
        data in json_value(fuzz_text()),
    ) {
        if let Ok(parsed) = jsonpath::parse(&template) {
            let _ = jsonpath::render_parsed(&parsed, &data);
        }
    }

    /// collect and apply on arbitrary documents and secrets return Ok or a typed error.
    #[test]
    fn engine_never_panics(
        docs in prop::collection::vec(
            prop_oneof![4 => manifest(fuzz_text(), ALL_ANNOTATIONS), 1 => json_value(fuzz_text())],
            0..4,
        ),
        data in secret_data(),
        missing in prop::collection::vec(prop::sample::select(&["s/t", "a", "secret/data/app"][..]).prop_map(str::to_owned), 0..2),
        validate in any::<bool>(),
    ) {
        let opts = Options {
            default_kv_version: KvVersion::V2,
            path_validation: validate.then(|| regex::Regex::new("^s/").expect("valid regex")),
            ..Options::default()
        };
        match collect(&docs, &opts) {
            Ok(requests) => {
                let fetched = fetch(&requests, &data, &missing);
                let _ = apply(docs.clone(), &opts, &fetched, &AliasBudget::for_output(0));
                // Results missing altogether are a caller bug, reported as such, not a panic.
                let _ = apply(docs, &opts, &Fetched::new(), &AliasBudget::for_output(0));
            }
            Err(e) => prop_assert!(!e.problems.is_empty()),
        }
    }

    /// `plan` + `apply_planned` (the server's path, on documents shared with the render cache)
    /// give exactly what `collect` + `apply` give; the documents they say they leave alone are
    /// passed on as the same `Arc`, and the shared input is never changed.
    #[test]
    fn planned_apply_is_apply(
        docs in prop::collection::vec(
            prop_oneof![4 => manifest(fuzz_text(), ALL_ANNOTATIONS), 1 => json_value(fuzz_text())],
            0..4,
        ),
        data in secret_data(),
        missing in prop::collection::vec(prop::sample::select(&["s/t", "a", "secret/data/app"][..]).prop_map(str::to_owned), 0..2),
    ) {
        let opts = Options { default_kv_version: KvVersion::V2, ..Options::default() };
        let shared: Vec<Arc<Value>> = docs.iter().cloned().map(Arc::new).collect();
        let planned = match (collect(&docs, &opts), plan(&shared, &opts)) {
            (Ok(requests), Ok(planned)) => {
                prop_assert_eq!(&requests, planned.requests());
                planned
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a, b);
                return Ok(());
            }
            (a, b) => {
                return Err(TestCaseError::fail(format!("collect {a:?} but plan {b:?}")));
            }
        };
        let fetched = fetch(planned.requests(), &data, &missing);
        let budget = AliasBudget::for_output(0);
        let expected = apply(docs.clone(), &opts, &fetched, &budget);
        let got = apply_planned(shared.clone(), &planned, &opts, &fetched, &budget);
        match (expected, got) {
            (Ok(expected), Ok(got)) => {
                let got_values: Vec<Value> = got.iter().map(|d| (**d).clone()).collect();
                prop_assert_eq!(&expected, &got_values);
                for (index, (before, after)) in shared.iter().zip(&got).enumerate() {
                    prop_assert_eq!(!planned.changes(index), Arc::ptr_eq(before, after));
                }
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => {
                return Err(TestCaseError::fail(format!("apply {a:?} but apply_planned {b:?}")));
            }
        }
        let input: Vec<Value> = shared.iter().map(|d| (**d).clone()).collect();
        prop_assert_eq!(input, docs);
    }

    /// Documents with no `<` anywhere (also none hidden in base64) need no reads and come out
    /// of apply unchanged, also when applied twice. remove-missing is left out: on a kind other
    /// than Secret/ConfigMap it is an error even without placeholders.
    #[test]
    fn placeholder_free_documents_are_unchanged(
        docs in prop::collection::vec(
            prop_oneof![
                4 => manifest("[^<]{0,24}".boxed(), &ALL_ANNOTATIONS[..4]),
                1 => json_value("[^<]{0,24}".boxed()),
            ],
            0..4,
        ),
        data in secret_data(),
    ) {
        prop_assume!(!docs.iter().any(|d| any_string(d, &could_hold_placeholder)));
        let opts = Options::default();
        let requests = collect(&docs, &opts).expect("no placeholders, no errors");
        prop_assert!(requests.is_empty());
        let fetched = fetch(&requests, &data, &[]);
        let once = apply(docs.clone(), &opts, &fetched, &AliasBudget::for_output(0)).expect("no placeholders, no errors");
        prop_assert_eq!(&once, &docs);
        let twice = apply(once, &opts, &fetched, &AliasBudget::for_output(0)).expect("no placeholders, no errors");
        prop_assert_eq!(twice, docs);
    }

    /// A generated inline placeholder is found whole in surrounding text and parses to its path,
    /// key, version and modifiers.
    #[test]
    fn inline_placeholders_are_found(
        before in plain_text(),
        after in plain_text(),
        path in secret_path(),
        key in secret_key(),
        version in prop::option::of("[0-9]{1,3}"),
        modifier in prop::sample::select(MODIFIERS),
    ) {
        let name = match &version {
            Some(v) => format!("path:{path}#{key}#{v}"),
            None => format!("path:{path}#{key}"),
        };
        let placeholder = format!("<{name}{modifier}>");
        let text = format!("{before}{placeholder}{after}");
        for mode in [Mode::Generic, Mode::InlineOnly] {
            let found: Vec<&str> = placeholder::find(&text, mode).map(|m| m.as_str()).collect();
            prop_assert_eq!(&found, &[placeholder.as_str()], "{:?} in {:?}", mode, text);
        }
        let parsed = Placeholder::parse(&placeholder);
        prop_assert_eq!(parsed.name, name.as_str());
        prop_assert_eq!(
            parsed.source,
            Source::Inline { path: &path, key: &key, version: version.as_deref().unwrap_or("") }
        );
        let want_modifiers: Vec<&str> = modifier.split('|').skip(1).collect();
        prop_assert_eq!(parsed.modifiers, want_modifiers);
    }

    /// A generic `<key>` is found only when the path annotation is present (generic mode).
    #[test]
    fn generic_placeholders_are_found(
        before in plain_text(),
        after in plain_text(),
        key in secret_key(),
        modifier in prop::sample::select(MODIFIERS),
    ) {
        let placeholder = format!("<{key}{modifier}>");
        let text = format!("{before}{placeholder}{after}");
        let found: Vec<&str> = placeholder::find(&text, Mode::Generic).map(|m| m.as_str()).collect();
        prop_assert_eq!(&found, &[placeholder.as_str()]);
        prop_assert_eq!(placeholder::find(&text, Mode::InlineOnly).count(), 0);
        prop_assert_eq!(Placeholder::parse(&placeholder).source, Source::Generic { key: &key });
    }

    /// End to end: collect asks for exactly the placeholder's path and version, and apply puts
    /// the (modified) value in place of the placeholder. A value holding `<...>` text, even a
    /// valid placeholder, is inserted as is: the store has nothing else, so a second lookup would
    /// be an error.
    #[test]
    fn engine_substitutes_once(
        before in plain_text(),
        after in plain_text(),
        path in secret_path(),
        key in secret_key(),
        version in prop::option::of("[0-9]{1,3}"),
        value in prop_oneof![
            "[^\n]{0,24}",
            "<path:[a-z]{1,4}#[a-z]{1,4}>",
            "<[a-z]{0,4}>",
            ".*<.*>.*",
        ],
        modifier in prop::sample::select(&["", " | base64encode", " | jsonPath {.x}", " | sha256sum"][..]),
        kind in prop::sample::select(&["Deployment", "ConfigMap"][..]),
        generic in any::<bool>(),
    ) {
        let (placeholder, annotations, request) = if generic {
            let annotations = match &version {
                Some(v) => json!({ PATH: path, SECRET_VERSION: v }),
                None => json!({ PATH: path }),
            };
            (format!("<{key}{modifier}>"), annotations, inline_request(&path, version.as_deref()))
        } else {
            let name = match &version {
                Some(v) => format!("path:{path}#{key}#{v}"),
                None => format!("path:{path}#{key}"),
            };
            (format!("<{name}{modifier}>"), json!({}), inline_request(&path, version.as_deref()))
        };
        // jsonPath reads `.x` from the secret's JSON object value.
        let (stored, inserted) = match modifier {
            " | base64encode" => (json!(value), modifiers::base64_encode(value.as_bytes())),
            " | jsonPath {.x}" => (json!({ "x": value }), value.clone()),
            " | sha256sum" => {
                let hex = Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
                (json!(value), hex)
            }
            _ => (json!(value), value.clone()),
        };
        let doc = json!({
            "kind": kind,
            "metadata": { "name": "m", "annotations": annotations },
            "data": { "field": format!("{before}{placeholder}{after}") },
        });
        let opts = Options::default();
        let requests = collect(std::slice::from_ref(&doc), &opts).expect("valid placeholder");
        prop_assert_eq!(&requests, &BTreeSet::from([request.clone()]));
        let mut secret = Map::new();
        secret.insert(key.clone(), stored);
        let fetched = Fetched::from([(request, Ok(SecretData::new(secret)))]);
        let out = apply(vec![doc], &opts, &fetched, &AliasBudget::for_output(0)).expect("all values present");
        prop_assert_eq!(&out[0]["data"]["field"], &json!(format!("{before}{inserted}{after}")));
    }
}

use sha2::{Digest as _, Sha256};

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The allocation-free pre-check never says "no `<`" for a value whose decode holds one:
    /// encoded bytes (with `\r`/`\n` sprinkled in, as Go skips them) and near-base64 strings.
    #[test]
    fn base64_precheck_never_misses_an_angle(
        bytes in proptest::collection::vec(prop_oneof![Just(b'<'), any::<u8>()], 0..40),
        breaks in proptest::collection::vec(0usize..64, 0..3),
        noise in "[A-Za-z0-9+/=<\r\n]{0,24}",
    ) {
        let mut encoded = modifiers::base64_encode(&bytes);
        for at in breaks {
            let at = at.min(encoded.len());
            encoded.insert(at, '\n');
        }
        for text in [encoded.as_str(), noise.as_str()] {
            if modifiers::go_base64_decode(text).is_some_and(|d| d.contains(&b'<')) {
                prop_assert!(modifiers::base64_may_decode_to_angle(text), "{text:?}");
            }
        }
        prop_assert_eq!(
            modifiers::base64_may_decode_to_angle(&modifiers::base64_encode(&bytes)),
            bytes.contains(&b'<')
        );
    }
}
