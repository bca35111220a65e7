//! AVP's placeholder modifiers (`<key | base64encode | ...>`): `base64encode`, `base64decode`,
//! `jsonPath`, `jsonParse`, `yamlParse`, `indent`, `sha256sum`, applied left to right.
//!
//! Owns modifier names, argument checks and transformations. Error messages describe the
//! problem with template text, type names and (for JSON syntax errors) a line and column only,
//! never the value being transformed or anything parsed out of it (it is a secret). Placement
//! of the error (placeholder, field) is added by the caller.
//!
//! Deliberate differences from AVP:
//! - An empty segment (`<k |>`, `<k || x>`) is an error; AVP panics.
//! - `base64decode` fails on invalid base64 or non-UTF-8 output; AVP silently emits garbage.
//! - `jsonPath` accepts a number (AVP panics on Vault numbers); `sha256sum` rejects it with an
//!   error instead of panicking.
//! - `indent` refuses levels above [`MAX_INDENT`] so a template cannot exhaust memory.
//! - Type names in `invalid datatype` messages are JSON names (`object`), not Go types.
//! - `jsonParse`/`yamlParse` keep integers as integers; Go turns every number into a float, which
//!   only shows in ConfigMaps (where AVP panics on floats) and in huge integers.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::jsonpath;
use crate::yaml::{AliasBudget, BudgetExceeded, YamlError, YamlErrorKind};

/// Largest `indent` level accepted.
pub(crate) const MAX_INDENT: i64 = 256;

/// Go's `base64.StdEncoding` decoder: padding required, non-zero trailing bits tolerated.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Decodes like Go's `base64.StdEncoding.DecodeString`, which skips `\r` and `\n` anywhere.
pub(crate) fn go_base64_decode(text: &str) -> Option<Vec<u8>> {
    let cleaned: Cow<'_, str> = if text.contains(['\r', '\n']) {
        Cow::Owned(text.replace(['\r', '\n'], ""))
    } else {
        Cow::Borrowed(text)
    };
    GO_STD.decode(cleaned.as_bytes()).ok()
}

/// Whether the bytes `text` would decode to (with [`go_base64_decode`]'s rules, valid or not)
/// might contain `<`, found without allocating. `false` is certain: a Secret value is a template
/// only if its decoded text holds a `<`, and most Secret values hold none, so this spares them
/// the decode. `true` only means "decode and see" (the input may still be invalid base64).
pub(crate) fn base64_may_decode_to_angle(text: &str) -> bool {
    let mut quad = [0u8; 4];
    let mut filled = 0;
    for byte in text.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'\r' | b'\n' => continue,
            // Padding ends the data: nothing after it decodes (a valid value has none).
            b'=' => break,
            // Not base64 at all: the decode fails, so the value is no template.
            _ => return false,
        };
        quad[filled] = sextet;
        filled += 1;
        if filled == 4 {
            if quad_has_angle(quad, 3) {
                return true;
            }
            filled = 0;
        }
    }
    // A trailing partial group (before padding) decodes to `filled - 1` bytes.
    filled > 1
        && quad_has_angle(
            [quad[0], quad[1], quad[2] * u8::from(filled > 2), 0],
            filled - 1,
        )
}

/// Whether the first `len` bytes that four sextets encode include `<`.
fn quad_has_angle(quad: [u8; 4], len: usize) -> bool {
    let bits = u32::from(quad[0]) << 18
        | u32::from(quad[1]) << 12
        | u32::from(quad[2]) << 6
        | u32::from(quad[3]);
    bits.to_be_bytes()[1..=len].contains(&b'<')
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Why a modifier chain failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModifierError {
    /// A `|` segment with no modifier name.
    Empty,
    /// A name outside AVP's registry (names are case-sensitive).
    Unknown(String),
    /// A known modifier rejected its arguments or input.
    Failed {
        modifier: &'static str,
        message: String,
    },
    /// `yamlParse` ran out of the render's alias budget.
    AliasBudget(BudgetExceeded),
}

/// Runs the modifier segments (raw text between `|`) over `value`, left to right. `yamlParse`
/// charges what aliases materialise to `alias_budget` (the render's).
pub(crate) fn apply(
    mut value: Value,
    segments: &[&str],
    alias_budget: &AliasBudget,
) -> Result<Value, ModifierError> {
    for segment in segments {
        let mut fields = segment.split_whitespace();
        let name = fields.next().ok_or(ModifierError::Empty)?;
        let args: Vec<&str> = fields.collect();
        let (modifier, result): (&'static str, _) = match name {
            "base64encode" => ("base64encode", base64encode(&args, value)),
            "base64decode" => ("base64decode", base64decode(&args, value)),
            "jsonPath" => ("jsonPath", json_path(&args, value)),
            "jsonParse" => ("jsonParse", json_parse(&args, value)),
            "yamlParse" => ("yamlParse", yaml_parse(&args, value, alias_budget)?),
            "indent" => ("indent", indent(&args, value)),
            "sha256sum" => ("sha256sum", sha256sum(&args, value)),
            other => return Err(ModifierError::Unknown(other.to_owned())),
        };
        value = result.map_err(|message| ModifierError::Failed { modifier, message })?;
    }
    Ok(value)
}

fn no_params(args: &[&str]) -> Result<(), String> {
    if args.is_empty() {
        Ok(())
    } else {
        Err("invalid parameters".to_owned())
    }
}

fn string_input(value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("invalid datatype {}", jsonpath::type_name(&other))),
    }
}

fn base64encode(args: &[&str], value: Value) -> Result<Value, String> {
    no_params(args)?;
    let text = string_input(value)?;
    Ok(Value::String(base64_encode(text.as_bytes())))
}

fn base64decode(args: &[&str], value: Value) -> Result<Value, String> {
    no_params(args)?;
    let text = string_input(value)?;
    let bytes = go_base64_decode(&text).ok_or_else(|| "value is not valid base64".to_owned())?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "decoded value is not valid utf-8".to_owned())
}

/// All arguments joined by single spaces form the template (AVP splits the segment with
/// `strings.Fields`, so runs of whitespace collapse). A string input is parsed as JSON first.
fn json_path(args: &[&str], value: Value) -> Result<Value, String> {
    if args.is_empty() {
        return Err("invalid parameters".to_owned());
    }
    let template = jsonpath::parse(&args.join(" "))?;
    let data = match value {
        Value::String(text) => serde_json::from_str(&text).map_err(json_error)?,
        other => other,
    };
    jsonpath::render_parsed(&template, &data).map(Value::String)
}

fn json_parse(args: &[&str], value: Value) -> Result<Value, String> {
    no_params(args)?;
    let text = string_input(value)?;
    serde_json::from_str(&text).map_err(json_error)
}

/// Why a value is not JSON. serde_json's syntax and end-of-input messages are fixed texts
/// with a line and column and never quote the input; any other kind of error (a custom
/// message from a deserializer, which may quote what it rejected) is replaced by a fixed
/// text, so the value cannot reach the message whatever serde_json's internals do.
fn json_error(error: serde_json::Error) -> String {
    if error.is_syntax() || error.is_eof() {
        error.to_string()
    } else {
        "value is not valid json".to_owned()
    }
}

/// Only the first YAML document counts, like `sigs.k8s.io/yaml.Unmarshal`; an empty input is
/// `null`. The outer error is the alias budget running out (it stops the render whatever the
/// placeholder); the inner one any other failure.
fn yaml_parse(
    args: &[&str],
    value: Value,
    alias_budget: &AliasBudget,
) -> Result<Result<Value, String>, ModifierError> {
    if let Err(e) = no_params(args) {
        return Ok(Err(e));
    }
    let text = match string_input(value) {
        Ok(text) => text,
        Err(e) => return Ok(Err(e)),
    };
    match crate::yaml::parse_documents_within(&text, alias_budget) {
        Ok(docs) => Ok(Ok(docs.into_iter().next().unwrap_or(Value::Null))),
        Err(YamlError {
            kind: YamlErrorKind::AliasBudget(exceeded),
            ..
        }) => Err(ModifierError::AliasBudget(exceeded)),
        // The parser's message may quote the input, which is a secret: keep it out.
        Err(_) => Ok(Err("value is not valid yaml".to_owned())),
    }
}

/// AVP's indent: the first line is trimmed and not indented; every later non-empty line is
/// trimmed and prefixed with `level` spaces; empty lines are dropped. Trimming destroys
/// relative indentation inside the value (AVP issue #633); kept for compatibility.
fn indent(args: &[&str], value: Value) -> Result<Value, String> {
    let [level] = args else {
        return Err("invalid parameters".to_owned());
    };
    let level: i64 = level
        .parse()
        .map_err(|_| "invalid indentation level".to_owned())?;
    if level > MAX_INDENT {
        return Err("invalid indentation level".to_owned());
    }
    let pad = " ".repeat(usize::try_from(level).unwrap_or(0));
    let text = string_input(value)?;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = String::with_capacity(text.len());
    out.push_str(lines[0].trim());
    if lines.len() > 1 {
        out.push('\n');
    }
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.is_empty() {
            continue;
        }
        out.push_str(&pad);
        out.push_str(line.trim());
        if i < lines.len() - 1 {
            out.push('\n');
        }
    }
    Ok(Value::String(out))
}

fn sha256sum(args: &[&str], value: Value) -> Result<Value, String> {
    no_params(args)?;
    let Value::String(text) = value else {
        return Err(format!(
            "invalid datatype {}, expected string",
            jsonpath::type_name(&value)
        ));
    };
    let digest = Sha256::digest(text.as_bytes());
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Value::String(hex))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn failed(modifier: &'static str, message: &str) -> Result<Value, ModifierError> {
        Err(ModifierError::Failed {
            modifier,
            message: message.to_owned(),
        })
    }

    fn map() -> Value {
        json!({ "data": { "subkey": "secret" } })
    }

    #[test]
    fn modifier_table() {
        let cases: Vec<(Value, &[&str], Result<Value, ModifierError>)> = vec![
            // base64encode (AVP modifiers_test.go)
            (
                json!("mysecret"),
                &["base64encode"],
                Ok(json!("bXlzZWNyZXQ=")),
            ),
            (
                json!("mysecret"),
                &[" base64encode "],
                Ok(json!("bXlzZWNyZXQ=")),
            ),
            (
                json!("mysecret"),
                &["base64encode astring"],
                failed("base64encode", "invalid parameters"),
            ),
            (
                map(),
                &["base64encode"],
                failed("base64encode", "invalid datatype object"),
            ),
            (
                json!(5),
                &["base64encode"],
                failed("base64encode", "invalid datatype number"),
            ),
            // base64decode
            (
                json!("bXlzZWNyZXQ="),
                &["base64decode"],
                Ok(json!("mysecret")),
            ),
            (
                json!("bXlz\nZWNyZXQ="),
                &["base64decode"],
                Ok(json!("mysecret")),
            ),
            (
                json!("bXlzZWNyZXQ="),
                &["base64decode astring"],
                failed("base64decode", "invalid parameters"),
            ),
            (
                map(),
                &["base64decode"],
                failed("base64decode", "invalid datatype object"),
            ),
            (
                json!("not base64!"),
                &["base64decode"],
                failed("base64decode", "value is not valid base64"),
            ),
            (
                json!("bXlzZWNyZXQ"),
                &["base64decode"],
                failed("base64decode", "value is not valid base64"),
            ),
            (
                json!("/w=="),
                &["base64decode"],
                failed("base64decode", "decoded value is not valid utf-8"),
            ),
            // jsonPath
            (map(), &["jsonPath {.data.subkey}"], Ok(json!("secret"))),
            (
                json!(r#"{"data": {"subkey": "secret"}}"#),
                &["jsonPath {.data.subkey}"],
                Ok(json!("secret")),
            ),
            (
                map(),
                &["jsonPath"],
                failed("jsonPath", "invalid parameters"),
            ),
            (
                map(),
                &["jsonPath {.missingPath}"],
                failed("jsonPath", "missingPath is not found"),
            ),
            (
                map(),
                &["jsonPath {!invalidPath}"],
                failed("jsonPath", "unrecognized character in action: U+0021 '!'"),
            ),
            (
                json!("hi, how are you"),
                &["jsonPath {.data.subkey}"],
                failed("jsonPath", "expected value at line 1 column 1"),
            ),
            (json!(80), &["jsonPath {@}"], Ok(json!("80"))),
            (
                map(),
                &["jsonPath  {.data.subkey}{'  '}{.data.subkey}"],
                Ok(json!("secret secret")),
            ),
            (
                map(),
                &["jsonPath {.data}"],
                Ok(json!(r#"{"subkey":"secret"}"#)),
            ),
            // jsonParse
            (
                json!(r#"{"data": {"subkey": "secret"}}"#),
                &["jsonParse"],
                Ok(map()),
            ),
            (json!("2"), &["jsonParse"], Ok(json!(2))),
            (json!("[80, 8080]"), &["jsonParse"], Ok(json!([80, 8080]))),
            (
                json!("mysecret"),
                &["jsonParse astring"],
                failed("jsonParse", "invalid parameters"),
            ),
            (
                map(),
                &["jsonParse"],
                failed("jsonParse", "invalid datatype object"),
            ),
            (
                json!("hello"),
                &["jsonParse"],
                failed("jsonParse", "expected value at line 1 column 1"),
            ),
            // yamlParse
            (
                json!("data: secret"),
                &["yamlParse"],
                Ok(json!({ "data": "secret" })),
            ),
            (
                json!("---\nkey1: secret1\nkey2: secret2\nkey3: secret3"),
                &["yamlParse", "jsonPath {.key2}"],
                Ok(json!("secret2")),
            ),
            (
                json!("a: b"),
                &["yamlParse x"],
                failed("yamlParse", "invalid parameters"),
            ),
            (
                json!(1),
                &["yamlParse"],
                failed("yamlParse", "invalid datatype number"),
            ),
            // indent (AVP modifiers_test.go and issue #633 behaviour)
            (
                json!("a\nmulti-line\nstring"),
                &["indent 3"],
                Ok(json!("a\n   multi-line\n   string")),
            ),
            (json!("a-string"), &["indent 10"], Ok(json!("a-string"))),
            (
                json!("  first  \n  nested:\n    deeper\n"),
                &["indent 2"],
                Ok(json!("first\n  nested:\n  deeper\n")),
            ),
            (json!("a\n\n\nb"), &["indent 1"], Ok(json!("a\n b"))),
            (json!("a\n   \nb"), &["indent 1"], Ok(json!("a\n \n b"))),
            (json!("a\nb"), &["indent -2"], Ok(json!("a\nb"))),
            (json!("a\nb"), &["indent +1"], Ok(json!("a\n b"))),
            (
                json!("a-string"),
                &["indent ten"],
                failed("indent", "invalid indentation level"),
            ),
            (
                json!("a-string"),
                &["indent 10 10"],
                failed("indent", "invalid parameters"),
            ),
            (
                json!("a-string"),
                &["indent"],
                failed("indent", "invalid parameters"),
            ),
            (
                json!("a-string"),
                &["indent 1000000000"],
                failed("indent", "invalid indentation level"),
            ),
            (
                json!(3),
                &["indent 2"],
                failed("indent", "invalid datatype number"),
            ),
            // sha256sum
            (
                json!("mysecret"),
                &["sha256sum"],
                Ok(json!(
                    "652c7dc687d98c9889304ed2e408c74b611e86a40caa51c4b43f1dd5913c5cd0"
                )),
            ),
            (
                json!("mysecret"),
                &["sha256sum astring"],
                failed("sha256sum", "invalid parameters"),
            ),
            (
                map(),
                &["sha256sum"],
                failed("sha256sum", "invalid datatype object, expected string"),
            ),
            (
                json!(42),
                &["sha256sum"],
                failed("sha256sum", "invalid datatype number, expected string"),
            ),
            // chains and registry
            (
                json!("bar"),
                &["sha256sum", "base64encode"],
                Ok(json!(
                    "ZmNkZTJiMmVkYmE1NmJmNDA4NjAxZmI3MjFmZTliNWMzMzhkMTBlZTQyOWVhMDRmYWU1NTExYjY4ZmJmOGZiOQ=="
                )),
            ),
            (
                json!("x"),
                &["undefinedModifier"],
                Err(ModifierError::Unknown("undefinedModifier".into())),
            ),
            (
                json!("x"),
                &["Base64Encode"],
                Err(ModifierError::Unknown("Base64Encode".into())),
            ),
            (json!("x"), &[""], Err(ModifierError::Empty)),
            (json!("x"), &["  "], Err(ModifierError::Empty)),
            (
                json!("x"),
                &["", " base64encode"],
                Err(ModifierError::Empty),
            ),
            // The first failure stops the chain.
            (
                json!("x"),
                &["jsonParse", "nope"],
                failed("jsonParse", "expected value at line 1 column 1"),
            ),
        ];
        for (input, segments, want) in cases {
            assert_eq!(
                apply(input.clone(), segments, &AliasBudget::for_output(0)),
                want,
                "{input} | {segments:?}"
            );
        }
    }

    #[test]
    fn go_base64_rules() {
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("", Some(b"")),
            ("YQ==", Some(b"a")),
            ("YR==", Some(b"a")), // non-zero trailing bits are tolerated by Go
            ("YQ", None),         // padding is required
            ("Y\r\nQ==", Some(b"a")),
            ("YQ= =", None),
            ("test", Some(&[0xb5, 0xeb, 0x2d])),
            ("<path:a#b>", None),
        ];
        for (input, want) in cases {
            assert_eq!(go_base64_decode(input).as_deref(), *want, "{input:?}");
        }
    }

    #[test]
    fn json_errors_keep_only_fixed_texts() {
        let syntax = serde_json::from_str::<Value>("TOPSECRET").expect_err("not json");
        assert_eq!(json_error(syntax), "expected value at line 1 column 1");
        let eof = serde_json::from_str::<Value>("[\"TOPSECRET").expect_err("not json");
        assert_eq!(
            json_error(eof),
            "EOF while parsing a string at line 1 column 11"
        );
        // A deserializer's own message may quote the input: never shown.
        let custom = <serde_json::Error as serde::de::Error>::custom("bad TOPSECRET");
        assert_eq!(json_error(custom), "value is not valid json");
    }

    #[test]
    fn errors_never_contain_the_value() {
        let secret = "TOPSECRET-\u{1}{[\"";
        let inputs = [json!(secret), json!({ "k": secret }), json!([secret])];
        let chains: &[&[&str]] = &[
            &["base64decode"],
            &["jsonParse"],
            &["yamlParse"],
            &["jsonPath {.a}"],
            &["jsonPath {.k.x}"],
            &["jsonPath {.k[0]}"],
            &["sha256sum", "jsonParse"],
            &["base64encode", "indent x"],
            &["indent 2", "jsonParse"],
            &["jsonParse", "jsonPath {.k}"],
            &["jsonPath {.k[?(@ =~ @)]}"],
            &["jsonPath {[?(@ =~ @)]}"],
            &["jsonPath {[?(@ < 1)]}"],
        ];
        for input in &inputs {
            for chain in chains {
                if let Err(ModifierError::Failed { message, .. }) =
                    apply(input.clone(), chain, &AliasBudget::for_output(0))
                {
                    assert!(!message.contains("TOPSECRET"), "{chain:?}: {message}");
                }
            }
        }
    }
}
