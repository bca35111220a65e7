//! Property tests of tool-output splitting and the YAML reader/emitter it relies on: any text
//! splits or fails without panicking, and generated documents come back as they were, whether
//! emitted as YAML (with its go-yaml v2 quoting rules) or as a JSON stream.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

/// Text near YAML's syntax, so the parser's error paths are reached often.
const FRAGMENTS: &[&str] = &[
    "---",
    "--- ",
    "...",
    "\n",
    "\r\n",
    "  ",
    "- ",
    ": ",
    "a",
    "b: ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&x ",
    "*x",
    "<<: ",
    "!!int ",
    "!!binary ",
    "'",
    "\"",
    "#",
    "|",
    ">",
    "? ",
    "yes",
    "on",
    "~",
    "0777",
    "0x1F",
    "1e3",
    ".nan",
    "-.inf",
    "null",
    "é",
    "\t",
    "%YAML 1.1",
];

fn yaml_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24).prop_map(|p| p.concat()),
    ]
}

/// Numbers that read back as the same JSON number: integers, and floats with a fraction
/// (integral floats become integers on purpose, as Go's `json.Marshal` prints them).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        (any::<i32>(), 1u32..1000)
            .prop_map(|(i, d)| Value::from(f64::from(i) + f64::from(d) / 1024.0)),
    ]
}

/// Arbitrary strings (the emitter must quote every ambiguous one), and the YAML 1.1 words that
/// would change meaning if it did not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => prop::sample::select(&[
            "yes", "No", "on", "OFF", "y", "n", "~", "null", "0777", "0x1F", "1e3", "1_000",
            ".inf", "2001-12-14", "<<", "=", "- a", "a: b", "a #b", "---", "...", "|", "",
            " lead", "trail ", "multi\nline\n", "tab\there",
        ][..]).prop_map(str::to_owned),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|e| Value::Object(e.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A manifest-like top-level object (never null, so never dropped).
fn document() -> impl Strategy<Value = Value> {
    prop::collection::vec((text(), value()), 0..6).prop_map(|entries| {
        let mut map: Map<String, Value> = entries.into_iter().collect();
        map.insert("kind".to_owned(), Value::from("ConfigMap"));
        Value::Object(map)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text: a list of non-null values or an error, never a panic.
    #[test]
    fn split_never_panics(stdout in yaml_like()) {
        if let Ok(docs) = split_tool_output(&stdout, &crate::yaml::AliasBudget::for_output(stdout.len())) {
            prop_assert!(docs.iter().all(|d| !d.is_null()));
        }
        let _ = yaml::parse_documents(&stdout);
    }

    /// N documents emitted as YAML and joined with `---` lines split back into the same N.
    #[test]
    fn yaml_documents_round_trip(docs in prop::collection::vec(document(), 0..5), leading in any::<bool>()) {
        let mut stdout = String::new();
        for (i, doc) in docs.iter().enumerate() {
            if i > 0 || leading {
                stdout.push_str("---\n");
            }
            stdout.push_str(&yaml::to_yaml_string(doc));
        }
        let split = split_tool_output(&stdout, &crate::yaml::AliasBudget::for_output(stdout.len())).map_err(|e| TestCaseError::fail(format!("{e}\n{stdout}")))?;
        prop_assert_eq!(split, docs, "{}", stdout);
    }

    /// The same documents as a compact JSON stream (what a tool printing JSON produces).
    #[test]
    fn json_stream_round_trips(docs in prop::collection::vec(document(), 1..5), sep in "[ \n\t]{0,3}") {
        let stdout = docs.iter().map(to_json_string).collect::<Vec<_>>().join(&sep);
        let split = split_tool_output(&stdout, &crate::yaml::AliasBudget::for_output(stdout.len())).map_err(|e| TestCaseError::fail(format!("{e}\n{stdout}")))?;
        prop_assert_eq!(split, docs);
    }
}
