//! Per-project operator flags: one parsing rule for every `project=value` list.
//!
//! Five flags used to parse their items each in its own way (one trimmed around `=`, another
//! did not, so `a = deny` was refused where `a = on` was accepted). They all go through here
//! now, so an operator learns the rule once:
//!
//! - items come from [`rule_items`](super::rule_items): comma-separated, each trimmed, empty
//!   items dropped;
//! - an item is `project=value`, split at its first `=`; project and value are trimmed;
//! - an empty project or an empty value is an error naming the flag and the item;
//! - in a [`PerProject`] (one value per project) a repeated project is an error: silently
//!   letting the last one win hides a typo in a security setting;
//! - in a [`ProjectRules`] (`[project=]pattern` lists) an item without `=` applies to every
//!   project ([`ALL_PROJECTS`]) and a project may have many rules;
//! - the value is parsed by the flag's own function; enums by clap's `ValueEnum`, ignoring
//!   case, as their global flags are.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::secrets::path_template::PathTemplateError;

/// The project key of rules that apply to every project (an item without `project=`).
pub const ALL_PROJECTS: &str = "*";

/// A per-project flag item that does not follow the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {item:?}: {reason}")]
pub struct PerProjectError {
    /// The flag, e.g. `--leak-guard-project`.
    pub flag: &'static str,
    /// The item as the operator wrote it (after splitting at commas).
    pub item: String,
    pub reason: Reason,
}

/// Why an item was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("expected project=value")]
    NoProject,
    #[error("empty project name")]
    EmptyProject,
    #[error("empty value")]
    EmptyValue,
    #[error("project given more than once (one value per project)")]
    Repeated,
    /// The value is not one the flag accepts; holds what it accepts.
    #[error("expected {0}")]
    Expected(Cow<'static, str>),
    #[error("{0}")]
    Template(#[from] PathTemplateError),
}

/// Splits one item into trimmed, non-empty `(project, value)`. `default_project`: the project
/// of an item without `=` (`None`: such an item is an error).
fn split_item<'a>(
    item: &'a str,
    default_project: Option<&'static str>,
) -> Result<(&'a str, &'a str), Reason> {
    let (project, value) = match (item.split_once('='), default_project) {
        (Some((project, value)), _) => (project.trim(), value.trim()),
        (None, Some(all)) => (all, item.trim()),
        (None, None) => return Err(Reason::NoProject),
    };
    if project.is_empty() {
        return Err(Reason::EmptyProject);
    }
    if value.is_empty() {
        return Err(Reason::EmptyValue);
    }
    Ok((project, value))
}

/// Parses a value of a clap `ValueEnum`, ignoring case; the error lists the accepted values.
pub fn enum_value<T: clap::ValueEnum>(value: &str) -> Result<T, Reason> {
    T::from_str(value, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        Reason::Expected(names.join("|").into())
    })
}

/// One value per project (`project=value` items), e.g. `--leak-guard-project team-a=deny`.
#[derive(Clone, Debug)]
pub struct PerProject<T> {
    by_project: HashMap<String, T>,
}

impl<T> Default for PerProject<T> {
    fn default() -> Self {
        Self {
            by_project: HashMap::new(),
        }
    }
}

impl<T> PerProject<T> {
    /// Parses `rules` (the flag's values) by the module's rule, each value with `parse`.
    pub fn parse(
        flag: &'static str,
        rules: &[String],
        mut parse: impl FnMut(&str) -> Result<T, Reason>,
    ) -> Result<Self, PerProjectError> {
        let mut by_project = HashMap::new();
        for item in super::rule_items(rules) {
            let error = |reason| PerProjectError {
                flag,
                item: item.to_owned(),
                reason,
            };
            let (project, value) = split_item(item, None).map_err(error)?;
            let value = parse(value).map_err(error)?;
            if by_project.insert(project.to_owned(), value).is_some() {
                return Err(error(Reason::Repeated));
            }
        }
        Ok(Self { by_project })
    }

    /// [`PerProject::parse`] for a clap `ValueEnum` (case ignored).
    pub fn parse_enum(flag: &'static str, rules: &[String]) -> Result<Self, PerProjectError>
    where
        T: clap::ValueEnum,
    {
        Self::parse(flag, rules, enum_value)
    }

    /// The project's own value, if the operator set one.
    pub fn get(&self, project: &str) -> Option<&T> {
        self.by_project.get(project)
    }

    /// The project's own value, else `default` (the flag's global setting).
    pub fn get_or(&self, project: &str, default: T) -> T
    where
        T: Clone,
    {
        self.get(project).cloned().unwrap_or(default)
    }

    pub fn is_empty(&self) -> bool {
        self.by_project.is_empty()
    }

    /// The projects with a value, in no particular order.
    pub fn projects(&self) -> impl Iterator<Item = &str> {
        self.by_project.keys().map(String::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.by_project.values()
    }

    /// (project, value) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.by_project.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// Each value turned into another (e.g. a config file into a Vault backend), the first
    /// error stopping it.
    pub fn try_map<U, E>(
        self,
        mut f: impl FnMut(&str, T) -> Result<U, E>,
    ) -> Result<PerProject<U>, E> {
        let mut by_project = HashMap::with_capacity(self.by_project.len());
        for (project, value) in self.by_project {
            let value = f(&project, value)?;
            by_project.insert(project, value);
        }
        Ok(PerProject { by_project })
    }
}

impl<'a, T> IntoIterator for &'a PerProject<T> {
    type Item = (&'a String, &'a T);
    type IntoIter = std::collections::hash_map::Iter<'a, String, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_project.iter()
    }
}

/// Rules `[project=]pattern`: an item without a project applies to every project (key
/// [`ALL_PROJECTS`]); a project may have any number of rules. Same trimming and empty-name
/// rules as [`PerProject`]. How a project matches a key is the owner's rule:
/// [`ProjectRules::for_project`] is the exact one, with `*` for every project.
#[derive(Clone, Debug)]
pub struct ProjectRules<T> {
    rules: Vec<(String, T)>,
}

impl<T> Default for ProjectRules<T> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<T> ProjectRules<T> {
    /// Parses `rules` (the flag's values), each pattern with `parse`, keeping their order.
    pub fn parse(
        flag: &'static str,
        rules: &[String],
        mut parse: impl FnMut(&str) -> Result<T, Reason>,
    ) -> Result<Self, PerProjectError> {
        let rules = super::rule_items(rules)
            .map(|item| {
                let error = |reason| PerProjectError {
                    flag,
                    item: item.to_owned(),
                    reason,
                };
                let (project, value) = split_item(item, Some(ALL_PROJECTS)).map_err(error)?;
                Ok((project.to_owned(), parse(value).map_err(error)?))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule as (project key, value), in the operator's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.rules.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// The rules for `project`: its own and those for every project, in the operator's order.
    pub fn for_project<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a T> {
        self.iter()
            .filter(move |(p, _)| *p == project || *p == ALL_PROJECTS)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
    enum Level {
        Low,
        High,
    }

    fn rules(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn reason<T: std::fmt::Debug>(r: Result<T, PerProjectError>) -> Reason {
        r.expect_err("refused").reason
    }

    #[test]
    fn items_are_trimmed_around_the_separator() {
        let p = PerProject::<Level>::parse_enum("--x", &rules(&["a = high", " b=LOW ,c=low"]))
            .expect("valid");
        assert_eq!(p.get("a"), Some(&Level::High));
        assert_eq!(p.get("b"), Some(&Level::Low));
        assert_eq!(p.get_or("c", Level::High), Level::Low);
        assert_eq!(p.get_or("other", Level::High), Level::High);
        assert_eq!(p.get("other"), None);
    }

    #[test]
    fn empty_names_values_and_repeats_are_refused_naming_flag_and_item() {
        let parse = |items: &[&str]| PerProject::<Level>::parse_enum("--x", &rules(items));
        assert_eq!(reason(parse(&["=high"])), Reason::EmptyProject);
        assert_eq!(reason(parse(&[" = high"])), Reason::EmptyProject);
        assert_eq!(reason(parse(&["a="])), Reason::EmptyValue);
        assert_eq!(reason(parse(&["a"])), Reason::NoProject);
        assert_eq!(reason(parse(&["a=low", "a = high"])), Reason::Repeated);
        let err = parse(&["a=medium"]).expect_err("unknown value");
        assert_eq!(
            err.to_string(),
            "--x \"a=medium\": expected low|high",
            "names the flag, the item and what it accepts"
        );
    }

    #[test]
    fn rules_default_to_every_project_and_share_the_item_rule() {
        let ok = |v: &str| Ok::<_, Reason>(v.to_owned());
        let r = ProjectRules::parse("--y", &rules(&[" a = p1 ", "p2", "a=p3"]), ok).expect("valid");
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            [
                ("a", &"p1".into()),
                ("*", &"p2".into()),
                ("a", &"p3".into())
            ]
        );
        assert_eq!(r.for_project("a").count(), 3);
        assert_eq!(r.for_project("b").collect::<Vec<_>>(), [&"p2".to_owned()]);
        for (bad, why) in [("=p", Reason::EmptyProject), ("a=", Reason::EmptyValue)] {
            let err = ProjectRules::parse("--y", &rules(&[bad]), ok).expect_err(bad);
            assert_eq!((err.flag, err.item.as_str(), err.reason), ("--y", bad, why));
        }
    }
}

/// The rule as each flag's owner applies it, flag by flag.
#[cfg(test)]
mod flags {
    use super::{PerProjectError, Reason};
    use crate::config::SecretsArgs;
    use crate::features::rollout::RolloutSettings;
    use crate::secrets::avp_secret::{SecretName, SecretPolicy};
    use crate::secrets::policy::{LeakMode, Policy};
    use crate::substitute::external::Mode;

    type Parse = fn(&[String]) -> Result<(), PerProjectError>;

    fn leak(items: &[String]) -> Result<(), PerProjectError> {
        Policy::new(&[], LeakMode::Warn, items).map(drop)
    }
    fn rollout(items: &[String]) -> Result<(), PerProjectError> {
        RolloutSettings::new(false, items).map(drop)
    }
    fn base() -> SecretsArgs {
        SecretsArgs {
            external_secrets_store: Some("store".into()),
            external_secrets_store_kind: "ClusterSecretStore".into(),
            ..SecretsArgs::default()
        }
    }
    fn external(items: &[String]) -> Result<(), PerProjectError> {
        let args = SecretsArgs {
            external_secrets_projects: items.to_vec(),
            ..base()
        };
        match args.external_secrets() {
            Ok(_) => Ok(()),
            Err(crate::config::ConfigError::PerProject(e)) => Err(e),
            Err(e) => panic!("not a per-project error: {e}"),
        }
    }
    fn vault(items: &[String]) -> Result<(), PerProjectError> {
        let args = SecretsArgs {
            project_vault_config: items.to_vec(),
            ..base()
        };
        args.project_vault_files().map(drop)
    }
    fn path_allow(items: &[String]) -> Result<(), PerProjectError> {
        Policy::new(items, LeakMode::Warn, &[]).map(drop)
    }
    fn secret_allow(items: &[String]) -> Result<(), PerProjectError> {
        SecretPolicy::parse(items).map(drop)
    }

    /// (flag, parser, a valid value, a value it refuses or `None` when it takes any).
    const FLAGS: [(&str, Parse, &str, Option<&str>); 6] = [
        ("--leak-guard-project", leak, "deny", Some("maybe")),
        ("--rollout-hash-project", rollout, "on", Some("yes")),
        ("--external-secrets-project", external, "on", Some("always")),
        ("--project-vault-config", vault, "/etc/avp/a.yaml", None),
        (
            "--path-allow",
            path_allow,
            "kv/data/a/*",
            Some("kv/{{nope}}"),
        ),
        (
            "--avp-secret-allow",
            secret_allow,
            "ns:avp-*",
            Some("avp-config"),
        ),
    ];

    fn refused(parse: Parse, items: &[&str]) -> PerProjectError {
        let items: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
        parse(&items).expect_err("refused")
    }

    #[test]
    fn every_flag_trims_project_and_value() {
        for (flag, parse, value, _) in FLAGS {
            for item in [format!("a = {value}"), format!(" a={value} ")] {
                assert_eq!(
                    parse(std::slice::from_ref(&item)),
                    Ok(()),
                    "{flag} {item:?}"
                );
            }
        }
    }

    #[test]
    fn every_flag_refuses_an_empty_project_or_value_naming_flag_and_item() {
        for (flag, parse, value, _) in FLAGS {
            let item = format!("={value}");
            let err = refused(parse, &[&item]);
            assert_eq!(
                (err.flag, err.item, err.reason),
                (flag, item, Reason::EmptyProject)
            );
            let err = refused(parse, &[&format!("b={value}"), " a= "]);
            assert_eq!(
                (err.flag, err.item.as_str(), err.reason),
                (flag, "a=", Reason::EmptyValue)
            );
        }
    }

    #[test]
    fn per_project_flags_refuse_a_repeated_project() {
        for (flag, parse, value, _) in &FLAGS[..4] {
            let err = refused(*parse, &[&format!("a={value}"), &format!(" a = {value}")]);
            assert_eq!((err.flag, err.reason), (*flag, Reason::Repeated));
            let err = refused(*parse, &["a"]);
            assert_eq!((err.flag, err.reason), (*flag, Reason::NoProject));
        }
        // Rule lists: a project may have many rules, and a rule without one is for all.
        for (flag, parse, value, _) in &FLAGS[4..] {
            let items = [
                format!("a={value}"),
                format!("a = {value}"),
                value.to_string(),
            ];
            assert_eq!(parse(&items), Ok(()), "{flag}");
        }
    }

    #[test]
    fn every_flag_refuses_unknown_values() {
        for (flag, parse, _, bad) in FLAGS {
            let Some(bad) = bad else { continue };
            let item = format!("a={bad}");
            let err = refused(parse, &[&item]);
            assert_eq!((err.flag, err.item.as_str()), (flag, item.as_str()));
            assert!(
                err.to_string().starts_with(&format!("{flag} {item:?}: ")),
                "{err}"
            );
        }
        assert_eq!(
            refused(leak, &["a=maybe"]).to_string(),
            "--leak-guard-project \"a=maybe\": expected allow|warn|deny"
        );
        assert_eq!(
            refused(rollout, &["a=yes"]).to_string(),
            "--rollout-hash-project \"a=yes\": expected on|off"
        );
        assert_eq!(
            refused(external, &["a=always"]).to_string(),
            "--external-secrets-project \"a=always\": expected off|on|enforce"
        );
    }

    /// What the trimmed items mean, not only that they parse.
    #[test]
    fn trimmed_items_take_effect() {
        let p = Policy::new(
            &[" a = kv/data/a/* ".into()],
            LeakMode::Warn,
            &["a = deny".into(), " B=Allow ".into()],
        )
        .expect("valid");
        assert_eq!(p.leak_mode("a"), LeakMode::Deny);
        assert_eq!(p.leak_mode("B"), LeakMode::Allow);
        assert!(p.allows("a", "kv/data/a/db"));
        assert!(!p.allows("b", "kv/data/a/db"));
        assert!(
            RolloutSettings::new(false, &[" a=on ".into()])
                .expect("valid")
                .enabled("a")
        );
        let s = SecretPolicy::parse(&[" a = ns:avp-* ".into()]).expect("valid");
        assert!(s.allows("a", &SecretName::parse("ns:avp-x").expect("name")));
        let args = SecretsArgs {
            external_secrets_projects: vec![" a = Enforce ".into()],
            ..base()
        };
        let e = args.external_secrets().expect("valid");
        assert_eq!(e.projects.get("a"), Some(&Mode::Enforce));
        let args = SecretsArgs {
            project_vault_config: vec![" a = /etc/avp/a.yaml ".into()],
            ..base()
        };
        let files = args.project_vault_files().expect("valid");
        assert_eq!(files.get("a"), Some(&"/etc/avp/a.yaml".into()));
    }
}
