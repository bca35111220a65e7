//! Text that looks like an attempt at a placeholder but that AVP leaves alone (or reads in a
//! way its author did not mean). Deliberately conservative: angle brackets are common in
//! ConfigMaps (HTML, XML, `<none>`), and a check that floods is a check people switch off.
//!
//! What is flagged (never inside a text AVP already treats as a placeholder):
//! - anything starting `<path:` (any case, spaces allowed around `path` and `:`) that AVP does
//!   not match: spaces after `<`, no `#key`, an empty path or key, more `#` than
//!   `path#key#version`, no closing `>` on the same line;
//! - `{{ path:... }}` and `<vault:...>` / `<avp:...>`: other tools' syntax;
//! - a bare `<KEY>` where bare keys are not placeholders (no `avp.kubernetes.io/path`, no
//!   default path), only if it is followed by an AVP modifier (`<KEY | base64encode>`), or it
//!   is in a Secret's `data`/`stringData`, or it is the whole value of a field; never for HTML
//!   tag names (`<br>`, `<b>`, ...), and never in base64-decoded Secret data (which may be a
//!   real secret written in the repository: its text is not repeated in a report).
//!
//! In objects where bare keys are placeholders, a key starting `path:` (`<path:secret/x>` with
//! no `#key`) is flagged too: AVP would look up a key literally named `path:secret/x`.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// `<path:` attempts, up to the next `>` on the line (or the line's end).
static PATH_ATTEMPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)<\s*path\s*:[^<>\n]*>?").expect("valid regex"));
/// `{{ path:... }}`.
static MUSTACHE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{-?\s*path\s*:[^}\n]*\}?\}?").expect("valid regex"));
/// `<vault:...>`, `<avp:...>`.
static OTHER_SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)<\s*(?:vault|avp)\s*:[^<>\n]*>").expect("valid regex"));
/// A bare `<KEY>` or `<KEY | modifiers>`.
static BARE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<([A-Za-z_][A-Za-z0-9_.-]*)\s*(\|[^<>\n]*)?>").expect("valid regex")
});

/// AVP's modifiers (`pkg/kube/util.go`).
const MODIFIERS: &[&str] = &[
    "base64encode",
    "base64decode",
    "jsonPath",
    "jsonParse",
    "yamlParse",
    "sha256sum",
    "indent",
];

/// Names that are far more likely markup than a Vault key.
const HTML_TAGS: &[&str] = &[
    "a",
    "abbr",
    "b",
    "body",
    "blockquote",
    "br",
    "button",
    "code",
    "div",
    "em",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hr",
    "html",
    "i",
    "img",
    "input",
    "label",
    "li",
    "link",
    "main",
    "meta",
    "nav",
    "none",
    "ol",
    "option",
    "p",
    "pre",
    "s",
    "script",
    "section",
    "select",
    "small",
    "span",
    "strong",
    "style",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "textarea",
    "th",
    "thead",
    "title",
    "tr",
    "tt",
    "u",
    "ul",
    "xml",
];

/// What is known about the field being scanned.
pub(crate) struct Context<'a> {
    /// Bare `<KEY>` placeholders count in this object.
    pub generic_mode: bool,
    /// The field is in a Secret's `data`/`stringData`.
    pub secret_data: bool,
    /// The text is decoded base64 Secret data.
    pub decoded: bool,
    /// The field's whole value, trimmed.
    pub whole_value: &'a str,
}

/// A suspicious span and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NearMiss {
    pub range: Range<usize>,
    pub reason: String,
}

/// Near misses in `text`, skipping the `taken` ranges (real placeholders).
pub(crate) fn near_misses(text: &str, taken: &[Range<usize>], ctx: &Context<'_>) -> Vec<NearMiss> {
    if !text.contains('<') && !text.contains("{{") {
        return Vec::new();
    }
    let free = |r: &Range<usize>| !taken.iter().any(|t| t.start < r.end && r.start < t.end);
    let mut out: Vec<NearMiss> = Vec::new();
    for m in PATH_ATTEMPT.find_iter(text) {
        if free(&m.range()) {
            out.push(NearMiss {
                range: m.range(),
                reason: path_attempt_reason(m.as_str()),
            });
        }
    }
    for m in MUSTACHE.find_iter(text) {
        if free(&m.range()) {
            out.push(NearMiss {
                range: m.range(),
                reason: "`{{ path:... }}` is not AVP syntax; write `<path:PATH#KEY>`".to_owned(),
            });
        }
    }
    for m in OTHER_SCHEME.find_iter(text) {
        if free(&m.range()) {
            out.push(NearMiss {
                range: m.range(),
                reason: "not AVP syntax; write `<path:PATH#KEY>`".to_owned(),
            });
        }
    }
    if !ctx.generic_mode && !ctx.decoded {
        for caps in BARE_KEY.captures_iter(text) {
            let Some(m) = caps.get(0) else { continue };
            let name = caps.get(1).map_or("", |n| n.as_str());
            if !free(&m.range()) || out.iter().any(|o| o.range.start == m.start()) {
                continue;
            }
            if HTML_TAGS.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            let has_modifier = caps.get(2).is_some_and(|mods| {
                mods.as_str()
                    .trim_start_matches('|')
                    .split_whitespace()
                    .next()
                    .is_some_and(|first| MODIFIERS.contains(&first))
            });
            if has_modifier || ctx.secret_data || ctx.whole_value == m.as_str() {
                out.push(NearMiss {
                    range: m.range(),
                    reason: "bare <KEY> placeholders are replaced only in objects with an avp.kubernetes.io/path annotation (or with the operator's --default-path); use <path:PATH#KEY> or add the annotation".to_owned(),
                });
            }
        }
    }
    out.sort_by_key(|m| m.range.start);
    out
}

/// Why a `<path:` text is not a placeholder.
fn path_attempt_reason(text: &str) -> String {
    if !text.starts_with("<path:") {
        return "AVP matches only `<path:` written exactly so (lowercase, no spaces); this text is left as it is".to_owned();
    }
    let Some(inner) = text
        .strip_prefix("<path:")
        .and_then(|t| t.strip_suffix('>'))
    else {
        return "no closing `>` on the same line".to_owned();
    };
    let body = inner.split('|').next().unwrap_or_default();
    let parts: Vec<&str> = body.split('#').collect();
    match parts.as_slice() {
        [_] => "no `#KEY`: write `<path:PATH#KEY>`".to_owned(),
        [path, ..] if path.trim().is_empty() => "empty path".to_owned(),
        [_, key, ..] if key.trim().is_empty() => "empty key after `#`".to_owned(),
        [_, _, _, _, ..] => "more `#` than `path#key#version`".to_owned(),
        _ => "AVP does not match this text".to_owned(),
    }
}

/// Why a bare key read from the annotation path is probably not what was meant.
pub(crate) fn suspicious_generic_key(key: &str) -> Option<&'static str> {
    let lower = key.trim().to_ascii_lowercase();
    if lower.starts_with("path:") || lower.starts_with("path :") {
        Some("no `#KEY`, so AVP reads a key literally named like this from the annotation path")
    } else if lower.starts_with("vault:") {
        Some("not AVP syntax: AVP reads a key literally named like this from the annotation path")
    } else {
        None
    }
}

/// Text quoted in a finding: one line, at most 120 characters.
pub(crate) fn shorten(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(120).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(whole: &str) -> Context<'_> {
        Context {
            generic_mode: false,
            secret_data: false,
            decoded: false,
            whole_value: whole,
        }
    }

    fn reasons(text: &str, ctx: &Context<'_>) -> Vec<(String, String)> {
        near_misses(text, &[], ctx)
            .into_iter()
            .map(|m| (text[m.range].to_owned(), m.reason))
            .collect()
    }

    #[test]
    fn path_attempts() {
        let c = ctx("");
        let cases = [
            ("<path:secret/data/x>", "no `#KEY`"),
            ("<path:secret/data/x#>", "empty key"),
            ("<path:#key>", "empty path"),
            ("< path:secret/data/x#k>", "written exactly so"),
            ("<Path:secret/data/x#k>", "written exactly so"),
            ("<path :secret/data/x#k>", "written exactly so"),
            ("<path:a#b#1#2>", "more `#`"),
            ("x <path:secret/data/x#k", "no closing"),
        ];
        for (text, want) in cases {
            let got = reasons(text, &c);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert!(got[0].1.contains(want), "{text}: {got:?}");
        }
    }

    #[test]
    fn other_syntaxes() {
        let c = ctx("");
        assert_eq!(reasons("{{ path:secret/data/x#k }}", &c).len(), 1);
        assert_eq!(reasons("{{path:secret/x}}", &c).len(), 1);
        assert_eq!(reasons("<vault:secret/data/x#k>", &c).len(), 1);
        assert!(reasons("{{ .Values.path }}", &c).is_empty());
    }

    #[test]
    fn real_placeholders_are_skipped() {
        let text = "a <path:secret/data/x#k> b";
        let start = text.find('<').expect("placeholder");
        let real = start..text.len() - 2;
        assert_eq!(&text[real.clone()], "<path:secret/data/x#k>");
        assert!(near_misses(text, std::slice::from_ref(&real), &ctx("")).is_empty());
    }

    #[test]
    fn bare_keys_are_conservative() {
        // HTML and prose in a ConfigMap: nothing.
        for text in [
            "<b>bold</b> and <br> <p>x</p>",
            "List <none> of them",
            "use <user> here",
            "a < b > c",
        ] {
            assert!(reasons(text, &ctx(text)).is_empty(), "{text}");
        }
        // The whole value, a modifier, or a Secret's data: flagged.
        assert_eq!(reasons("<user>", &ctx("<user>")).len(), 1);
        assert_eq!(reasons("x <api_key | sha256sum>", &ctx("")).len(), 1);
        let secret = Context {
            secret_data: true,
            ..ctx("")
        };
        assert_eq!(reasons("postgres://<user>:<password>@db", &secret).len(), 2);
        assert!(reasons("<br>", &ctx("<br>")).is_empty());
        // Where bare keys are placeholders, or in decoded data: not flagged here.
        let generic = Context {
            generic_mode: true,
            ..ctx("<user>")
        };
        assert!(reasons("<user>", &generic).is_empty());
        let decoded = Context {
            decoded: true,
            secret_data: true,
            ..ctx("<pw>")
        };
        assert!(reasons("<pw>", &decoded).is_empty());
    }

    #[test]
    fn generic_keys() {
        assert!(suspicious_generic_key("path:secret/data/x").is_some());
        assert!(suspicious_generic_key("vault:x").is_some());
        assert!(suspicious_generic_key("password").is_none());
    }

    #[test]
    fn shorten_cuts() {
        assert_eq!(shorten("abc"), "abc");
        assert_eq!(shorten("a\nb"), "a…");
        assert_eq!(shorten(&"x".repeat(200)).chars().count(), 121);
    }
}
