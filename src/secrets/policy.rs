//! The operator's per-project rules: which Vault paths an Argo CD project may read, and what to
//! do when a placeholder would put a secret somewhere other than a Secret's `data`/`stringData`
//! (Argo CD masks only Secrets in its UI and diffs). Keyed on `ARGOCD_APP_PROJECT_NAME`, which
//! the repo-server sets and tenants cannot. Path patterns may be templates
//! (`kv/data/{{project}}/*`), rendered per request with the same variables as path templates.

use std::collections::HashMap;

use crate::path_template::{PathTemplate, PathTemplateError, PathVars, is_template};

/// What the leak guard does about placeholders outside Secret data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LeakMode {
    Allow,
    #[default]
    Warn,
    Deny,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("invalid policy rule {0:?}: expected [project=]pattern")]
    BadRule(String),
    #[error("invalid leak-guard override {0:?}: expected project=allow|warn|deny")]
    BadLeakRule(String),
    #[error("policy rule: {0}")]
    Template(#[from] PathTemplateError),
}

/// A path pattern, possibly with `{{variables}}` rendered per request.
#[derive(Clone, Debug)]
enum Pattern {
    Plain(String),
    Template(PathTemplate),
}

#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Path patterns by project; `*` holds the rules for every project.
    paths: HashMap<String, Vec<Pattern>>,
    leak_default: LeakMode,
    leak_by_project: HashMap<String, LeakMode>,
}

impl Policy {
    /// `path_rules`: `[project=]pattern` where `*` matches within one path segment and `**`
    /// across segments. No rules at all: every path is allowed (AVP's behaviour).
    pub fn new(
        path_rules: &[String],
        leak_default: LeakMode,
        leak_rules: &[String],
    ) -> Result<Self, PolicyError> {
        Self::with_template_env(path_rules, leak_default, leak_rules, &[])
    }

    /// Like [`Policy::new`]; patterns holding `{{` are path templates that may use
    /// `env.NAME` for the `env_names` the operator allowed.
    pub fn with_template_env(
        path_rules: &[String],
        leak_default: LeakMode,
        leak_rules: &[String],
        env_names: &[String],
    ) -> Result<Self, PolicyError> {
        let mut paths: HashMap<String, Vec<Pattern>> = HashMap::new();
        for rule in crate::config::rule_items(path_rules) {
            let (project, pattern) = rule.split_once('=').unwrap_or(("*", rule));
            if pattern.is_empty() || project.is_empty() {
                return Err(PolicyError::BadRule(rule.to_owned()));
            }
            let pattern = if is_template(pattern) {
                Pattern::Template(PathTemplate::parse(pattern, env_names)?)
            } else {
                Pattern::Plain(pattern.trim_matches('/').to_owned())
            };
            paths.entry(project.to_owned()).or_default().push(pattern);
        }
        let mut leak_by_project = HashMap::new();
        for rule in crate::config::rule_items(leak_rules) {
            let (project, mode) = rule
                .split_once('=')
                .ok_or_else(|| PolicyError::BadLeakRule(rule.to_owned()))?;
            let mode = <LeakMode as clap::ValueEnum>::from_str(mode, true)
                .map_err(|_| PolicyError::BadLeakRule(rule.to_owned()))?;
            leak_by_project.insert(project.to_owned(), mode);
        }
        Ok(Self {
            paths,
            leak_default,
            leak_by_project,
        })
    }

    /// Whether `project` may read `path`, with no template variables (templated rules then
    /// match nothing).
    pub fn allows(&self, project: &str, path: &str) -> bool {
        self.allows_for(project, path, &PathVars::default())
            .unwrap_or(false)
    }

    /// Whether `project` may read `path`, rendering templated rules with `vars`. A rule that
    /// cannot be rendered for this request allows nothing; if no other rule allows the path,
    /// its error is returned, so the denial names the real cause.
    pub fn allows_for(
        &self,
        project: &str,
        path: &str,
        vars: &PathVars,
    ) -> Result<bool, PathTemplateError> {
        if self.paths.is_empty() {
            return Ok(true);
        }
        let path = path.trim_matches('/');
        let mut failed = None;
        for pattern in [project, "*"]
            .iter()
            .filter_map(|p| self.paths.get(*p))
            .flatten()
        {
            let matched = match pattern {
                Pattern::Plain(p) => path_match(p, path),
                Pattern::Template(t) => match t.render(vars) {
                    Ok(rendered) => path_match(rendered.trim_matches('/'), path),
                    Err(e) => {
                        failed.get_or_insert(e);
                        false
                    }
                },
            };
            if matched {
                return Ok(true);
            }
        }
        failed.map_or(Ok(false), Err)
    }

    pub fn leak_mode(&self, project: &str) -> LeakMode {
        self.leak_by_project
            .get(project)
            .copied()
            .unwrap_or(self.leak_default)
    }
}

/// `*` matches any run of characters except `/`; `**` any run including `/`.
fn path_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => {
                let seg = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=seg).any(|i| go(rest, &s[i..]))
            }
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(path_match("secret/data/team-a/*", "secret/data/team-a/db"));
        assert!(!path_match(
            "secret/data/team-a/*",
            "secret/data/team-a/x/db"
        ));
        assert!(path_match(
            "secret/data/team-a/**",
            "secret/data/team-a/x/db"
        ));
        assert!(!path_match("secret/data/team-a/*", "secret/data/team-b/db"));
        assert!(!path_match(
            "secret/data/team-a*",
            "secret/data/team-a/../team-b"
        ));
        assert!(path_match("kv/data/*/app", "kv/data/ns/app"));
        assert!(!path_match("kv/data/*/app", "kv/data/ns/x/app"));
    }

    #[test]
    fn per_project_rules() {
        let p = Policy::new(
            &[
                "team-a=secret/data/team-a/**".into(),
                "secret/data/shared/*".into(),
            ],
            LeakMode::Warn,
            &["team-a=deny".into()],
        )
        .expect("valid");
        assert!(p.allows("team-a", "secret/data/team-a/db/x"));
        assert!(p.allows("team-a", "secret/data/shared/ca"));
        assert!(!p.allows("team-b", "secret/data/team-a/db"));
        assert!(p.allows("team-b", "/secret/data/shared/ca/"));
        assert_eq!(p.leak_mode("team-a"), LeakMode::Deny);
        assert_eq!(p.leak_mode("team-b"), LeakMode::Warn);
        assert!(Policy::default().allows("any", "any/path"));
        assert!(Policy::new(&["team-a=".into()], LeakMode::Warn, &[]).is_err());
        assert!(Policy::new(&[], LeakMode::Warn, &["team-a=maybe".into()]).is_err());
    }

    #[test]
    fn templated_rules() {
        let p = Policy::with_template_env(
            &[
                "kv/data/{{project}}/*".into(),
                "team-a=kv/data/shared/{{env.TEAM}}/**".into(),
            ],
            LeakMode::Warn,
            &[],
            &["TEAM".into()],
        )
        .expect("valid");
        let vars = |project: &str, team: Option<&str>| PathVars {
            project: project.into(),
            env: team
                .map(|t| [("TEAM".to_owned(), t.to_owned())].into())
                .unwrap_or_default(),
            ..PathVars::default()
        };
        assert_eq!(
            p.allows_for("team-a", "kv/data/team-a/db", &vars("team-a", None)),
            Ok(true)
        );
        assert_eq!(
            p.allows_for("team-b", "kv/data/team-a/db", &vars("team-b", None)),
            Ok(false)
        );
        assert_eq!(
            p.allows_for(
                "team-a",
                "kv/data/shared/blue/x/y",
                &vars("team-a", Some("blue"))
            ),
            Ok(true)
        );
        // TEAM unset: the templated rule cannot allow anything, and the error says why.
        assert!(
            p.allows_for("team-a", "kv/data/shared/blue/x", &vars("team-a", None))
                .is_err()
        );
        assert!(!p.allows("team-a", "kv/data/team-a/db"));
        assert!(Policy::new(&["kv/{{nope}}/*".into()], LeakMode::Warn, &[]).is_err());
    }
}
