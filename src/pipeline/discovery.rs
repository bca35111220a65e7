//! Decides how an app directory is rendered, from the files it holds. Reads the file system
//! only; never spawns anything.

use std::path::{Path, PathBuf};

pub(crate) mod archive;

/// File names kustomize itself accepts, in its order of preference.
pub(crate) const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];
pub(crate) const CHART_FILE: &str = "Chart.yaml";

/// How an app is rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// `kustomize build`, with the kustomization file found.
    Kustomize { kustomization: PathBuf },
    /// `helm template` of the chart in the app dir.
    Helm,
    /// The manifest files in the app dir as they are (AVP's plain `argocd-vault-plugin`).
    Directory,
    /// An operator-written `generate` command.
    Command,
}

impl AppKind {
    pub fn name(&self) -> &'static str {
        match self {
            AppKind::Kustomize { .. } => "kustomize",
            AppKind::Helm => "helm",
            AppKind::Directory => "directory",
            AppKind::Command => "command",
        }
    }
}

/// Which kinds a plugin accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    Kustomize,
    Helm,
    Auto,
    /// Plain manifest files, never a tool (AVP's `argocd-vault-plugin generate ./`).
    Directory,
}

/// Kustomize wins over Helm when both files exist (a kustomization that inflates its own chart).
pub(crate) fn detect(app_dir: &Path, accept: Accept) -> Option<AppKind> {
    if accept == Accept::Directory {
        return app_dir.is_dir().then_some(AppKind::Directory);
    }
    // Symlinks count: extraction already proved they stay inside the work dir.
    let is_file = |p: &Path| p.is_file();
    if matches!(accept, Accept::Kustomize | Accept::Auto) {
        for name in KUSTOMIZATION_FILES {
            let p = app_dir.join(name);
            if is_file(&p) {
                return Some(AppKind::Kustomize { kustomization: p });
            }
        }
    }
    if matches!(accept, Accept::Helm | Accept::Auto) && is_file(&app_dir.join(CHART_FILE)) {
        return Some(AppKind::Helm);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect(dir.path(), Accept::Auto), None);
        std::fs::write(dir.path().join("Chart.yaml"), "name: x").expect("write");
        assert_eq!(detect(dir.path(), Accept::Auto), Some(AppKind::Helm));
        assert_eq!(detect(dir.path(), Accept::Kustomize), None);
        std::fs::write(dir.path().join("Kustomization"), "").expect("write");
        assert!(matches!(
            detect(dir.path(), Accept::Auto),
            Some(AppKind::Kustomize { .. })
        ));
        assert_eq!(detect(dir.path(), Accept::Helm), Some(AppKind::Helm));
        std::fs::create_dir(dir.path().join("kustomization.yaml")).expect("mkdir");
        let Some(AppKind::Kustomize { kustomization }) = detect(dir.path(), Accept::Auto) else {
            panic!("expected kustomize");
        };
        assert!(
            kustomization.ends_with("Kustomization"),
            "a directory is not a kustomization"
        );
    }
}

/// Go's `filepath.Glob(Join(dir, pattern))` has at least one match. Go `filepath.Match` syntax
/// per path segment (`*`, `?`, `[...]`, `\\`); a malformed pattern is an error, as in Go.
pub(crate) fn go_glob_matches(dir: &Path, pattern: &str) -> Result<bool, String> {
    let segments: Vec<&str> = pattern
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    for s in &segments {
        go_match(s, "").map_err(|_| format!("syntax error in pattern {pattern:?}"))?;
    }
    fn walk(dir: &Path, segments: &[&str]) -> bool {
        let Some((first, rest)) = segments.split_first() else {
            return true;
        };
        let has_meta = first.contains(['*', '?', '[', '\\']);
        if !has_meta {
            let next = dir.join(first);
            return if rest.is_empty() {
                next.symlink_metadata().is_ok()
            } else {
                next.is_dir() && walk(&next, rest)
            };
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            go_match(first, &name).unwrap_or(false)
                && (rest.is_empty() || (e.path().is_dir() && walk(&e.path(), rest)))
        })
    }
    Ok(walk(dir, &segments))
}

/// Go's `filepath.Match` for one segment. `Err` for a malformed pattern.
fn go_match(pattern: &str, name: &str) -> Result<bool, ()> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class(p: &[char], c: char) -> Result<(bool, usize), ()> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let Some(&lo) = p.get(i) else { return Err(()) };
            if lo == ']' && !first {
                return Ok((matched != negate, i + 1));
            }
            first = false;
            let (lo, mut j) = if lo == '\\' {
                (*p.get(i + 1).ok_or(())?, i + 2)
            } else {
                (lo, i + 1)
            };
            let mut hi = lo;
            if p.get(j) == Some(&'-') && p.get(j + 1).is_some_and(|&c| c != ']') {
                hi = if p[j + 1] == '\\' {
                    *p.get(j + 2).ok_or(())?
                } else {
                    p[j + 1]
                };
                j += if p[j + 1] == '\\' { 3 } else { 2 };
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i = j;
        }
    }
    fn go(p: &[char], n: &[char]) -> Result<bool, ()> {
        match p.first() {
            None => Ok(n.is_empty()),
            Some('*') => {
                for i in 0..=n.len() {
                    if go(&p[1..], &n[i..])? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Some('?') => Ok(!n.is_empty() && go(&p[1..], &n[1..])?),
            Some('[') => {
                let Some(&c) = n.first() else {
                    class(&p[1..], '\0')?;
                    return Ok(false);
                };
                let (ok, len) = class(&p[1..], c)?;
                Ok(ok && go(&p[1 + len..], &n[1..])?)
            }
            Some('\\') => {
                let lit = *p.get(1).ok_or(())?;
                Ok(n.first() == Some(&lit) && go(&p[2..], &n[1..])?)
            }
            Some(&lit) => Ok(n.first() == Some(&lit) && go(&p[1..], &n[1..])?),
        }
    }
    go(&p, &n)
}

/// zglob semantics (Argo's `discover.find.glob`): only `*` (within a segment) and `**/` (zero or
/// more directories) are wildcards; symlinks never match; dotfiles and directories do.
pub(crate) fn zglob_matches(dir: &Path, pattern: &str) -> bool {
    let pattern = pattern.trim_start_matches("./");
    if !pattern.contains('*') {
        return dir
            .join(pattern)
            .symlink_metadata()
            .is_ok_and(|m| !m.file_type().is_symlink());
    }
    fn matches(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', b'/', rest @ ..] => {
                // zero or more whole directories
                matches(rest, s)
                    || s.iter()
                        .enumerate()
                        .any(|(i, &c)| c == b'/' && matches(rest, &s[i + 1..]))
            }
            [b'*', rest @ ..] => {
                let seg = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=seg).any(|i| matches(rest, &s[i..]))
            }
            [c, rest @ ..] => s.first() == Some(c) && matches(rest, &s[1..]),
        }
    }
    fn walk(root: &Path, dir: &Path, pattern: &[u8], depth: usize) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let Ok(ft) = e.file_type() else { return false };
            if ft.is_symlink() {
                return false;
            }
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            matches(pattern, rel.as_bytes())
                || (ft.is_dir() && depth < 64 && walk(root, &path, pattern, depth + 1))
        })
    }
    walk(dir, dir, pattern.as_bytes(), 0)
}

#[cfg(test)]
mod glob_tests {
    use super::*;

    #[test]
    fn go_match_rules() {
        let m = |p: &str, n: &str| go_match(p, n);
        assert_eq!(m("*.yaml", "a.yaml"), Ok(true));
        assert_eq!(m("*.yaml", ".hidden.yaml"), Ok(true));
        assert_eq!(m("a?c", "abc"), Ok(true));
        assert_eq!(m("[a-c]x", "bx"), Ok(true));
        assert_eq!(m("[^a-c]x", "bx"), Ok(false));
        assert_eq!(m("\\*", "*"), Ok(true));
        assert_eq!(m("[a-", "a"), Err(()));
    }

    #[test]
    fn globs_on_a_tree() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("sub/deep")).expect("mkdir");
        std::fs::write(d.path().join("Chart.yaml"), "").expect("write");
        std::fs::write(d.path().join("sub/deep/x.jsonnet"), "").expect("write");
        std::os::unix::fs::symlink("Chart.yaml", d.path().join("link.yaml")).expect("link");
        assert_eq!(go_glob_matches(d.path(), "Chart.yaml"), Ok(true));
        assert_eq!(go_glob_matches(d.path(), "*.yaml"), Ok(true));
        assert_eq!(go_glob_matches(d.path(), "sub/*/x.*"), Ok(true));
        assert_eq!(go_glob_matches(d.path(), "*.jsonnet"), Ok(false));
        assert!(go_glob_matches(d.path(), "[x").is_err());
        assert!(zglob_matches(d.path(), "**/*.jsonnet"));
        assert!(zglob_matches(d.path(), "**/Chart.yaml"));
        assert!(zglob_matches(d.path(), "sub/**/x.jsonnet"));
        assert!(!zglob_matches(d.path(), "*.jsonnet"));
        assert!(!zglob_matches(d.path(), "link.*"), "symlinks never match");
        assert!(zglob_matches(d.path(), "sub"));
    }
}
