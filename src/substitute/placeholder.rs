//! Placeholder grammar: finding `<...>` placeholders in a string and splitting one into its
//! source (generic key or inline path) and modifier segments.
//!
//! Owns AVP's three regexes, copied verbatim from `pkg/kube/util.go`. Go's RE2 and Rust's `regex`
//! share the same syntax for them and the same leftmost-first match semantics (including the
//! `U` flag, which swaps greedy and lazy quantifiers), so matching behaves identically. This
//! module does not look anything up and does not know about manifests.

use std::sync::LazyLock;

use regex::Regex;

/// `<anything>` on one line, shortest match first. Used when the manifest has the
/// `avp.kubernetes.io/path` annotation, and to detect placeholders inside base64 Secret values.
static GENERIC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?mU)<(.*)>").expect("generic placeholder regex is valid"));

/// `<path:p#k>` / `<path:p#k#v>`. Used when the path annotation is absent, so that `<b>` and
/// other angle-bracket text are left alone (AVP issue #130).
static SPECIFIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?mU)<path:([^#]+)#([^#]+)(?:#([^#]+))?>")
        .expect("specific placeholder regex is valid")
});

/// Splits a placeholder body into path, key and version. Under `U` the `+?` quantifiers are
/// greedy, so the version takes everything after the second `#`. Unanchored, like AVP: a body
/// that merely contains `path:a#b` somewhere is an inline placeholder.
static INLINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?mU)path:(?P<path>[^#]+?)#(?P<key>[^#]+?)(?:#(?P<version>.+?))??")
        .expect("inline placeholder regex is valid")
});

/// Which placeholders a manifest recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Path annotation key present: any `<...>` is a placeholder.
    Generic,
    /// No path annotation: only `<path:...#...>` is a placeholder.
    InlineOnly,
}

impl Mode {
    fn regex(self) -> &'static Regex {
        match self {
            Mode::Generic => &GENERIC,
            Mode::InlineOnly => &SPECIFIC,
        }
    }
}

/// Byte ranges and text of the placeholders in `text`, in order.
pub(crate) fn find(text: &str, mode: Mode) -> impl Iterator<Item = regex::Match<'_>> {
    // Most strings hold no `<` at all: skip the regex engine for them.
    let candidate = text.contains('<');
    mode.regex().find_iter(if candidate { text } else { "" })
}

/// Whether `text` contains anything AVP would consider a placeholder in generic mode. AVP uses
/// this test, whatever the mode, to decide whether a base64 Secret value is a template.
pub(crate) fn contains_any(text: &str) -> bool {
    text.contains('<') && GENERIC.is_match(text)
}

/// Where a placeholder's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source<'t> {
    /// A key of the secret named by the manifest's path annotation.
    Generic { key: &'t str },
    /// A key of the secret at an explicit path. `version` is empty when absent.
    Inline {
        path: &'t str,
        key: &'t str,
        version: &'t str,
    },
}

/// One parsed placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placeholder<'t> {
    /// The placeholder text without `<>` and modifiers, as AVP prints it in errors
    /// (`path:secret/app#key`, `username`).
    pub name: &'t str,
    pub source: Source<'t>,
    /// Raw modifier segments (text between `|`), in order; not yet validated.
    pub modifiers: Vec<&'t str>,
}

impl<'t> Placeholder<'t> {
    /// Parses one regex match (`<...>` included). Never fails: AVP has no syntax errors at this
    /// level; problems surface as missing keys or modifier errors later.
    pub(crate) fn parse(matched: &'t str) -> Self {
        // AVP: strings.Trim(match, "<>") removes every leading/trailing '<' and '>'.
        let body = matched.trim_matches(['<', '>']);
        let mut segments = body.split('|');
        // split always yields at least one item.
        let name = segments.next().unwrap_or_default().trim_matches(' ');
        let modifiers = segments.collect();
        let source = match INLINE.captures(name) {
            Some(caps) => Source::Inline {
                path: caps.name("path").map_or("", |m| m.as_str()),
                key: caps.name("key").map_or("", |m| m.as_str()).trim(),
                version: caps.name("version").map_or("", |m| m.as_str()),
            },
            None => Source::Generic { key: name },
        };
        Placeholder {
            name,
            source,
            modifiers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(text: &str, mode: Mode) -> Vec<&str> {
        find(text, mode).map(|m| m.as_str()).collect()
    }

    #[test]
    fn find_generic_mode() {
        let cases: &[(&str, &[&str])] = &[
            ("<name>", &["<name>"]),
            ("foo.com/<name>:<tag>", &["<name>", "<tag>"]),
            ("<a>,<b>", &["<a>", "<b>"]),
            // Shortest match from the leftmost '<'.
            ("<<b>>", &["<<b>"]),
            ("a < b > c", &["< b >"]),
            // '.' does not match newlines: no placeholder spans lines.
            ("<a\nb>", &[]),
            ("<a>\n<b>", &["<a>", "<b>"]),
            ("<>", &["<>"]),
            ("no placeholders", &[]),
            ("<path:a#b | base64encode>", &["<path:a#b | base64encode>"]),
            ("< path:a#b >", &["< path:a#b >"]),
            ("<b>bold</b>", &["<b>", "</b>"]),
        ];
        for (text, want) in cases {
            assert_eq!(matches(text, Mode::Generic), *want, "text {text:?}");
        }
    }

    #[test]
    fn find_inline_only_mode() {
        let cases: &[(&str, &[&str])] = &[
            ("<path:a#b>", &["<path:a#b>"]),
            ("<path:a#b#2>", &["<path:a#b#2>"]),
            (
                "<path:s/t#k1>,<path:s/t#k2>",
                &["<path:s/t#k1>", "<path:s/t#k2>"],
            ),
            ("<path:a#b | base64encode>", &["<path:a#b | base64encode>"]),
            // `<path:` must follow '<' directly.
            ("< path:a#b>", &[]),
            ("<b>bold</b> and <key>", &[]),
            ("<path:a>", &[]),
            // Three '#' segments cannot close with '>'.
            ("<path:a#b#2#3>", &[]),
            // [^#] crosses newlines.
            ("<path:a\nb#c>", &["<path:a\nb#c>"]),
            ("x<path:a#b>y<name>", &["<path:a#b>"]),
        ];
        for (text, want) in cases {
            assert_eq!(matches(text, Mode::InlineOnly), *want, "text {text:?}");
        }
    }

    #[test]
    fn parse_placeholders() {
        let generic = |key| Source::Generic { key };
        let inline = |path, key, version| Source::Inline { path, key, version };
        let cases: &[(&str, &str, Source<'_>, &[&str])] = &[
            ("<name>", "name", generic("name"), &[]),
            (
                "<  data |jsonPath  {.a}|  jsonParse >",
                "data",
                generic("data"),
                &["jsonPath  {.a}", "  jsonParse "],
            ),
            ("<<b>", "b", generic("b"), &[]),
            ("<path:s/t#k>", "path:s/t#k", inline("s/t", "k", ""), &[]),
            (
                "<path:s/t#k#3>",
                "path:s/t#k#3",
                inline("s/t", "k", "3"),
                &[],
            ),
            (
                "<path:s/t#k#2 | base64encode>",
                "path:s/t#k#2",
                inline("s/t", "k", "2"),
                &[" base64encode"],
            ),
            // Version keeps further '#'.
            (
                "<path:a#b#2#3>",
                "path:a#b#2#3",
                inline("a", "b", "2#3"),
                &[],
            ),
            // Key is TrimSpace'd, path is not.
            ("<path: a # b >", "path: a # b", inline(" a ", "b", ""), &[]),
            // Unanchored: a generic body containing path:...#... is inline.
            ("<mypath:x#y>", "mypath:x#y", inline("x", "y", ""), &[]),
            ("< path:a#b >", "path:a#b", inline("a", "b", ""), &[]),
            // Trailing '#' with nothing after: no version.
            ("<path:a#b#>", "path:a#b#", inline("a", "b", ""), &[]),
            ("<k |>", "k", generic("k"), &[""]),
            ("<k || x>", "k", generic("k"), &["", " x"]),
            ("<>", "", generic(""), &[]),
            // Only ' ' is trimmed from the name, not tabs.
            ("<\tk>", "\tk", generic("\tk"), &[]),
        ];
        for (matched, name, source, mods) in cases {
            let p = Placeholder::parse(matched);
            assert_eq!(p.name, *name, "name of {matched:?}");
            assert_eq!(p.source, *source, "source of {matched:?}");
            assert_eq!(p.modifiers, *mods, "modifiers of {matched:?}");
        }
    }

    #[test]
    fn contains_any_uses_generic_rule() {
        assert!(contains_any("password: <path:a#b>"));
        assert!(contains_any("x <y> z"));
        assert!(!contains_any("no brackets"));
        assert!(!contains_any("<across\nlines>"));
    }
}
