//! Property test of the engine's promise that no error carries a secret value: random values
//! (regex metacharacters, JSON/YAML-ish fragments, invalid base64, non-UTF-8 after decoding,
//! numbers as strings, nested maps with random keys) go through every modifier's failure paths
//! via the public [`apply`], and neither the error (`Display`, `Debug`, the gRPC status Argo CD
//! shows), nor any log line written meanwhile, nor the metrics text contains any of them.
//!
//! Every generated value carries a random marker, so no template text, field text, key or fixed
//! message can contain it by accident; every string and key of length ≥ 6 inside a value (also
//! inside the structure parsed out of it) is checked too. Keys the templates name are shorter.

use std::io;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::secrets::SecretData;

/// Regex metacharacters and JSON/YAML-ish fragments values are made of.
const NOISE: &[&str] = &[
    "(", ")", "[", "]", "{", "}", "*", "+", "?", "\\", "^", "$", "|", ".", "\"", "'", ":", ",",
    "- ", "#", "\n", " ", "=~", "<", ">", "é", "\u{0}", "null", "true", "1e5", "-0", "!!str", "&a",
    "*a", "%", "\t", "a", "Z9", "{\"", "\":", "---\n", "(?P<", "\\p{",
];

/// Random filler, sometimes fully arbitrary.
fn noise() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(NOISE), 0..8).prop_map(|p| p.concat()),
        1 => any::<String>(),
    ]
    .boxed()
}

/// The marker every value carries: 12 characters no message or template can hold by chance.
/// It starts with `Q`, so text starting with it is never JSON.
fn marker() -> impl Strategy<Value = String> {
    "[A-Z][a-z0-9]{3}[A-Z][a-z0-9]{5}".prop_map(|m| format!("Qx{m}"))
}

/// A secret string: noise around a marker.
fn secret_text() -> impl Strategy<Value = String> {
    (noise(), marker(), noise()).prop_map(|(a, m, b)| format!("{a}{m}{b}"))
}

/// Noise without characters that could close or escape what a case opened.
fn tame_noise() -> impl Strategy<Value = String> {
    "[a-z0-9 (*+?^$|.:=~-]{0,12}"
}

/// A number long enough (≥ 10 digits) to be told apart from counts and columns in messages.
fn big_number() -> impl Strategy<Value = i64> {
    1_000_000_000i64..i64::MAX
}

/// A map key: marker first, then noise.
fn random_key() -> impl Strategy<Value = String> {
    (marker(), noise()).prop_map(|(m, n)| format!("{m}{n}"))
}

/// A secret structure: nested maps with random keys, lists and leaves.
fn tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => secret_text().prop_map(Value::String),
        2 => big_number().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((random_key(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A secret structure whose top level is a map.
fn object_tree() -> impl Strategy<Value = Value> {
    (
        random_key(),
        tree(),
        prop::collection::vec((random_key(), tree()), 0..3),
    )
        .prop_map(|(k, v, rest)| {
            let mut map = Map::new();
            map.insert(k, v);
            map.extend(rest);
            Value::Object(map)
        })
}

/// A leaf that is not a string.
fn non_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        big_number().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        object_tree(),
        prop::collection::vec(tree(), 0..3).prop_map(Value::Array),
    ]
}

/// A string that is never a valid regular expression: it ends in an unclosed class, opened
/// after an alphanumeric so it cannot be escaped.
fn bad_regex() -> impl Strategy<Value = String> {
    (noise(), marker()).prop_map(|(n, m)| format!("{n}{m}["))
}

/// One secret value and the modifier chain applied to it.
#[derive(Clone, Debug)]
struct Case {
    value: Value,
    chain: String,
    /// The case is built so that substitution fails.
    must_fail: bool,
}

fn case(value: Value, chain: &str, must_fail: bool) -> Case {
    Case {
        value,
        chain: chain.to_owned(),
        must_fail,
    }
}

/// `{"items": [{"n": .., "pw": .., "t": [..]}, ...]}`, as stored or as JSON text to parse.
fn items(entries: Vec<(Value, Value, Vec<Value>)>, as_text: bool) -> Value {
    let items: Vec<Value> = entries
        .into_iter()
        .map(|(n, pw, t)| json!({ "n": n, "pw": pw, "t": t }))
        .collect();
    let object = json!({ "items": items });
    if as_text {
        Value::String(object.to_string())
    } else {
        object
    }
}

/// With `as_text`, the chain starts by parsing the JSON text.
fn parsed(as_text: bool, rest: &str) -> String {
    if as_text {
        format!(" | jsonParse{rest}")
    } else {
        rest.to_owned()
    }
}

fn cases() -> impl Strategy<Value = Case> {
    let base64_invalid = (
        secret_text(),
        prop::sample::select(&["", " | base64encode |"][..]),
    )
        .prop_map(|(s, extra)| {
            // `!` is outside the base64 alphabet; a trailing `|` adds an empty modifier.
            case(
                Value::String(format!("{s}!")),
                &format!(" | base64decode{extra}"),
                true,
            )
        });
    let base64_not_utf8 = (secret_text(), any::<bool>()).prop_map(|(s, then_parse)| {
        let mut bytes = vec![0xff];
        bytes.extend_from_slice(s.as_bytes());
        let chain = if then_parse {
            " | base64decode | jsonParse"
        } else {
            " | base64decode"
        };
        case(Value::String(modifiers::base64_encode(&bytes)), chain, true)
    });
    let base64_then_bad_json = (marker(), noise()).prop_map(|(m, n)| {
        let text = format!("{m}{n}");
        case(
            Value::String(modifiers::base64_encode(text.as_bytes())),
            " | base64decode | jsonParse",
            true,
        )
    });
    let json_invalid = (
        marker(),
        noise(),
        0..3usize,
        prop::sample::select(
            &[
                " | jsonParse",
                " | jsonPath {.a}",
                " | jsonPath {.items[?(@.n == 'a')]}",
                " | base64encode | base64decode | jsonParse",
                " | yamlParse | jsonPath {.a}",
            ][..],
        ),
    )
        .prop_map(|(m, n, form, chain)| {
            // Each form is invalid JSON whatever the noise: a bare word first, an unquoted key,
            // a bare word in a list.
            let text = match form {
                0 => format!("{m}{n}"),
                1 => format!("{{{m}: 1}}{n}"),
                _ => format!("[\"{n:?}\", {m}]"),
            };
            // As YAML some of these parse; then the missing key fails.
            case(Value::String(text), chain, true)
        });
    let yaml_invalid = (marker(), tame_noise(), 0..3usize).prop_map(|(m, n, form)| {
        let text = match form {
            0 => format!("[{m}{n}"),
            1 => format!("{{{m}{n}: a"),
            _ => format!("\"{m}{n}"),
        };
        case(Value::String(text), " | yamlParse", true)
    });
    let yaml_null = (marker(), tame_noise())
        .prop_map(|(m, n)| case(Value::String(format!("# {m}{n}")), " | yamlParse", true));
    let missing_key = (
        tree(),
        prop::sample::select(&[0, 1, 2]),
        prop::sample::select(
            &[
                " | jsonPath {.zz}",
                " | jsonPath {.zz.yy}",
                " | jsonPath {.items[7]}",
                " | jsonPath {.zz[?(@.n)]}",
                " | jsonPath {range .zz}{.n}{end}",
                " | jsonPath {..zz}{.zz}",
            ][..],
        ),
    )
        .prop_map(|(tree, how, chain)| match how {
            0 => case(tree, chain, true),
            1 => case(Value::String(tree.to_string()), chain, true),
            _ => case(
                Value::String(tree.to_string()),
                &format!(" | yamlParse{chain}"),
                true,
            ),
        });
    let regex_from_value = (
        prop::collection::vec((secret_text(), bad_regex()), 1..3),
        any::<bool>(),
        prop::sample::select(&["{.items[?(@.n =~ @.pw)].n}", "{.items[?(@.n=~@.pw)]}"][..]),
    )
        .prop_map(|(entries, as_text, template)| {
            let entries = entries
                .into_iter()
                .map(|(n, pw)| (Value::String(n), Value::String(pw), Vec::new()))
                .collect();
            case(
                items(entries, as_text),
                &parsed(as_text, &format!(" | jsonPath {template}")),
                true,
            )
        });
    let regex_from_template =
        (prop::collection::vec(secret_text(), 1..3), any::<bool>()).prop_map(|(names, as_text)| {
            let entries = names
                .into_iter()
                .map(|n| (Value::String(n), Value::Null, Vec::new()))
                .collect();
            case(
                items(entries, as_text),
                &parsed(as_text, " | jsonPath {.items[?(@.n =~ '(x')].n}"),
                true,
            )
        });
    let type_mismatch = (
        prop::collection::vec((secret_text(), non_string()), 1..3),
        any::<bool>(),
        prop::sample::select(
            &[
                "{.items[?(@.n == @.pw)].n}",
                "{.items[?(@.n != @.pw)].n}",
                "{.items[?(@.n < @.pw)].n}",
                "{.items[?(@.pw <= @.n)].n}",
                "{.items[?(@.n =~ @.pw)].n}",
                "{.items[?(@.pw =~ @.n)].n}",
            ][..],
        ),
    )
        .prop_map(|(entries, as_text, template)| {
            let entries = entries
                .into_iter()
                .map(|(n, pw)| (Value::String(n), pw, Vec::new()))
                .collect();
            case(
                items(entries, as_text),
                &parsed(as_text, &format!(" | jsonPath {template}")),
                true,
            )
        });
    let several = (
        prop::collection::vec(
            (secret_text(), tree(), prop::collection::vec(tree(), 2..4)),
            1..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(entries, as_text)| {
            let entries = entries
                .into_iter()
                .map(|(n, pw, t)| (Value::String(n), pw, t))
                .collect();
            case(
                items(entries, as_text),
                &parsed(as_text, " | jsonPath {.items[?(@.t[*] == 'x')].n}"),
                true,
            )
        });
    // Any comparison of any values: fails or not, the error must not tell.
    let any_filter = (
        prop::collection::vec((tree(), tree(), prop::collection::vec(tree(), 0..3)), 0..3),
        any::<bool>(),
        prop::sample::select(
            &[
                "{.items[?(@.n == @.pw)].n}",
                "{.items[?(@.n < @.pw)].pw}",
                "{.items[?(@.n < 5)].t[1]}",
                "{.items[?(@.n =~ @.pw)].n}",
                "{.items[?(@.t)].t[*].n}",
                "{range .items[*]}{.n.zz}{end}",
                "{.items[*].t[?(@ == 'a')]}",
                "{.items[0].n[0]}",
                "{.items[?(@.n)]}",
            ][..],
        ),
    )
        .prop_map(|(entries, as_text, template)| {
            case(
                items(entries, as_text),
                &parsed(as_text, &format!(" | jsonPath {template}")),
                false,
            )
        });
    let not_a_string = (
        non_string(),
        any::<bool>(),
        prop::sample::select(
            &[
                " | sha256sum",
                " | indent 2",
                " | base64encode",
                " | base64decode",
                " | jsonParse",
                " | yamlParse",
            ][..],
        ),
    )
        .prop_map(|(value, as_text, chain)| {
            if as_text {
                case(
                    Value::String(value.to_string()),
                    &format!(" | jsonParse{chain}"),
                    true,
                )
            } else {
                case(value, chain, true)
            }
        });
    let bad_modifier = (
        prop_oneof![object_tree(), secret_text().prop_map(Value::String)],
        prop::sample::select(
            &[
                " | nope",
                " | Base64Decode",
                " |",
                " | base64encode || sha256sum",
                " | indent x",
                " | indent 2 3",
                " | sha256sum extra",
                " | jsonPath",
                " | jsonPath {.a[?(@.b}",
                " | jsonPath {.a",
            ][..],
        ),
    )
        .prop_map(|(value, chain)| case(value, chain, true));
    let numbers_as_strings = (
        big_number(),
        prop::sample::select(
            &[
                " | jsonPath {.x}",
                " | jsonParse | base64encode",
                " | jsonParse | jsonPath {.x}",
                " | jsonParse | sha256sum",
                " | yamlParse | indent 2",
                " | jsonPath {.x[0]}",
            ][..],
        ),
    )
        .prop_map(|(n, chain)| case(Value::String(n.to_string()), chain, true));
    let stored_number = (
        big_number(),
        prop::sample::select(&[" | sha256sum", " | jsonPath {.x}"][..]),
    )
        .prop_map(|(n, chain)| case(Value::from(n), chain, true));
    let null_result = prop_oneof![
        Just(case(Value::Null, "", true)),
        Just(case(Value::String("null".into()), " | jsonParse", true)),
        object_tree().prop_map(|t| case(
            Value::String(t.to_string()),
            " | jsonParse | jsonPath {.zz}",
            true
        )),
    ];
    // Random values through random chains: whatever happens, nothing leaks.
    let anything = (
        prop_oneof![
            tree(),
            secret_text().prop_map(Value::String),
            tree().prop_map(|t| Value::String(t.to_string()))
        ],
        prop::collection::vec(
            prop::sample::select(
                &[
                    " | base64encode",
                    " | base64decode",
                    " | jsonParse",
                    " | yamlParse",
                    " | jsonPath {.zz}",
                    " | jsonPath {@}",
                    " | jsonPath {..*}",
                    " | indent 3",
                    " | sha256sum",
                ][..],
            ),
            1..4,
        ),
    )
        .prop_map(|(value, chain)| case(value, &chain.concat(), false));
    prop_oneof![
        base64_invalid,
        base64_not_utf8,
        base64_then_bad_json,
        json_invalid,
        yaml_invalid,
        yaml_null,
        missing_key,
        regex_from_value,
        regex_from_template,
        type_mismatch,
        several,
        any_filter,
        not_a_string,
        bad_modifier,
        numbers_as_strings,
        stored_number,
        null_result,
        anything,
    ]
}

/// Adds every string and key of `value` with at least 6 characters, and numbers printed that
/// long, to `out`; a string holding JSON also adds what it parses to.
fn secrets_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if s.chars().count() >= 6 {
                out.push(s.clone());
            }
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(s) {
                secrets_in(&inner, out);
            }
        }
        Value::Number(n) => {
            let text = n.to_string();
            if text.len() >= 6 {
                out.push(text);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secrets_in(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                if k.chars().count() >= 6 {
                    out.push(k.clone());
                }
                secrets_in(v, out);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// Every marker in `text` (also inside base64 it decodes from).
fn markers_in(text: &str, out: &mut Vec<String>) {
    static MARKER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new("Qx[A-Z][a-z0-9]{3}[A-Z][a-z0-9]{5}").expect("valid regex")
    });
    out.extend(MARKER.find_iter(text).map(|m| m.as_str().to_owned()));
    if let Some(bytes) = modifiers::go_base64_decode(text) {
        let decoded = String::from_utf8_lossy(&bytes);
        out.extend(MARKER.find_iter(&decoded).map(|m| m.as_str().to_owned()));
    }
}

/// Everything of `value` that must not show up anywhere.
fn forbidden(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    secrets_in(value, &mut out);
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    markers_in(&text, &mut out);
    out
}

/// The first forbidden text `text` contains.
fn leak<'f>(text: &str, forbidden: &'f [String]) -> Option<&'f str> {
    forbidden
        .iter()
        .find(|f| text.contains(f.as_str()))
        .map(String::as_str)
}

/// A log sink for the test's subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .expect("log buffer lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What Argo CD shows for this error: the gRPC status message the server builds.
fn status_message(error: &SubstituteError) -> String {
    use crate::pipeline::PipelineError;
    use crate::pipeline::substitute::StageError;
    use crate::server::RequestError;
    let request = RequestError::Pipeline(PipelineError::Substitute(StageError::Substitute(
        error.clone(),
    )));
    let status = crate::server::status::to_status("error generating manifests", &request);
    format!("{status:?}")
}

const PATH_NAME: &str = "secret/data/x";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No failure shows a secret value: not in the error, the status Argo CD shows, the logs
    /// written during substitution (and of the failure, as the server logs it) or the metrics.
    /// A placeholder that succeeds before the failing one in the same field is not shown either.
    #[test]
    fn errors_never_show_values(
        case in cases(),
        before in secret_text(),
        kind in prop::sample::select(&["Deployment", "ConfigMap", "Secret"][..]),
        generic in any::<bool>(),
    ) {
        let name = if generic { "cfg".to_owned() } else { format!("path:{PATH_NAME}#cfg") };
        let field = format!("pre <path:{PATH_NAME}#ok> mid <{name}{}> post", case.chain);
        let section = if kind == "Secret" { "stringData" } else { "data" };
        let annotations = if generic { json!({ "avp.kubernetes.io/path": PATH_NAME }) } else { json!({}) };
        let doc = json!({
            "kind": kind,
            "metadata": { "name": "m", "annotations": annotations },
            section: { "field": field },
        });
        let mut secret = Map::new();
        secret.insert("ok".to_owned(), Value::String(before.clone()));
        secret.insert("cfg".to_owned(), case.value.clone());
        let data = SecretData::new(secret);
        let mut forbidden = forbidden(&case.value);
        forbidden.extend(self::forbidden(&Value::String(before)));

        let logs = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .finish();
        let opts = Options::default();
        let result = tracing::subscriber::with_default(subscriber, || {
            tracing::trace!("capture works");
            let requests = collect(std::slice::from_ref(&doc), &opts).expect("valid placeholders");
            let fetched: Fetched = requests.into_iter().map(|r| (r, Ok(data.clone()))).collect();
            let result = apply(vec![doc.clone()], &opts, &fetched, &crate::yaml::AliasBudget::fixed());
            if let Err(e) = &result {
                // As the server logs a failed request.
                tracing::warn!(error = %status_message(e), "failed");
            }
            result
        });
        let logs = String::from_utf8_lossy(&logs.0.lock().expect("log buffer lock")).into_owned();
        prop_assert!(logs.contains("capture works"), "the log capture saw nothing: {}", logs);

        match &result {
            Ok(_) => prop_assert!(!case.must_fail, "{:?} should have failed", case),
            Err(e) => {
                for (what, text) in [
                    ("Display", e.to_string()),
                    ("Debug", format!("{e:?}")),
                    ("status", status_message(e)),
                    ("log", logs),
                    ("metrics", crate::metrics::exposition()),
                ] {
                    prop_assert!(
                        leak(&text, &forbidden).is_none(),
                        "{} shows {:?}: {}",
                        what,
                        leak(&text, &forbidden),
                        text
                    );
                }
            }
        }
    }
}
