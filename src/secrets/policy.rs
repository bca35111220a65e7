//! The operator's per-project rules: which Vault paths an Argo CD project may read, and what to
//! do when a placeholder would put a secret somewhere other than a Secret's `data`/`stringData`
//! (Argo CD masks only Secrets in its UI and diffs). Keyed on `ARGOCD_APP_PROJECT_NAME`, which
//! the repo-server sets and tenants cannot. Path patterns may be templates
//! (`kv/data/{{project}}/*`), rendered per request with the same variables as path templates.

use crate::config::per_project::{PerProject, PerProjectError, ProjectRules};
use crate::secrets::path_template::{PathTemplate, PathTemplateError, PathVars, is_template};

/// What the leak guard does about placeholders outside Secret data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LeakMode {
    Allow,
    #[default]
    Warn,
    Deny,
}

/// A path pattern, possibly with `{{variables}}` rendered per request.
#[derive(Clone, Debug)]
enum Pattern {
    Plain(String),
    Template(PathTemplate),
}

#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Path patterns by project (`--path-allow`); `*` holds the rules for every project.
    paths: ProjectRules<Pattern>,
    leak_default: LeakMode,
    /// `--leak-guard-project`.
    leak_by_project: PerProject<LeakMode>,
}

impl Policy {
    /// `path_rules`: `[project=]pattern` where `*` matches within one path segment and `**`
    /// across segments. No rules at all: every path is allowed (AVP's behaviour). Both lists
    /// follow the per-project item rule of [`crate::config::per_project`].
    pub fn new(
        path_rules: &[String],
        leak_default: LeakMode,
        leak_rules: &[String],
    ) -> Result<Self, PerProjectError> {
        Self::with_template_env(path_rules, leak_default, leak_rules, &[])
    }

    /// Like [`Policy::new`]; patterns holding `{{` are path templates that may use
    /// `env.NAME` for the `env_names` the operator allowed.
    pub fn with_template_env(
        path_rules: &[String],
        leak_default: LeakMode,
        leak_rules: &[String],
        env_names: &[String],
    ) -> Result<Self, PerProjectError> {
        let paths = ProjectRules::parse("--path-allow", path_rules, |pattern| {
            Ok(if is_template(pattern) {
                Pattern::Template(PathTemplate::parse(pattern, env_names)?)
            } else {
                Pattern::Plain(pattern.trim_matches('/').to_owned())
            })
        })?;
        let leak_by_project = PerProject::parse_enum("--leak-guard-project", leak_rules)?;
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
        for pattern in self.paths.for_project(project) {
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
        self.leak_by_project.get_or(project, self.leak_default)
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
