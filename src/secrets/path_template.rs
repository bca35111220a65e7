//! Vault path templates: `kv/data/{{namespace}}/{{app}}` rendered with the request's app
//! context, for teams that keep each app's secrets at a conventional path.
//!
//! Templates are handlebars, restricted to plain `{{variable}}` interpolation (no helpers,
//! blocks or partials) so that what a path can become is obvious from reading it. Rendering is
//! strict (an unknown variable is an error) and unescaped. Every substituted value must be one
//! safe path segment: the values come from the request (`ARGOCD_APP_*`, allowed
//! `ARGOCD_ENV_*`), and a tenant must not be able to steer a read into another tenant's path.
//!
//! Pure: no I/O. Operator templates are parsed once at startup; templates written in manifests
//! (opt-in) are parsed per use.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, Path as HbPath, Template};

use crate::pipeline::context::{self, RequestEnv};

/// Longest value accepted for one variable (a DNS subdomain's limit).
const MAX_SEGMENT: usize = 253;
/// Longest value quoted back in an error.
const MAX_QUOTED: usize = 64;
/// Registry name of a template's own compiled copy.
const NAME: &str = "path";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathTemplateError {
    /// The template does not parse, uses more than `{{variable}}`, or names an unknown variable.
    #[error("invalid path template {template:?}: {reason}")]
    Invalid { template: String, reason: String },
    /// An operator-listed env name that cannot be a variable name.
    #[error(
        "--path-template-env: {0:?} is not an env name (A-Z a-z 0-9 _) or names an operator setting (VAULT_*, AVP_*, BAO_*)"
    )]
    EnvName(String),
    /// A variable's value for this request is not one safe path segment.
    #[error("path template {template:?}: {variable} {problem}")]
    Value {
        template: String,
        variable: String,
        problem: String,
    },
}

/// The variables a template may use: `app`, `namespace`, `project`, and `env.NAME` for the
/// names the operator allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Var {
    App,
    Namespace,
    Project,
    Env(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::App => f.write_str("app"),
            Var::Namespace => f.write_str("namespace"),
            Var::Project => f.write_str("project"),
            Var::Env(name) => write!(f, "env.{name}"),
        }
    }
}

/// A parsed path template.
#[derive(Clone)]
pub struct PathTemplate {
    source: String,
    vars: Vec<Var>,
    registry: Arc<Handlebars<'static>>,
}

impl fmt::Debug for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathTemplate").field(&self.source).finish()
    }
}

impl PartialEq for PathTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Whether `text` would be treated as a template (it holds a `{{`).
pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{")
}

impl PathTemplate {
    /// Parses `source`; `env_names` are the `ARGOCD_ENV_<NAME>` names templates may use.
    pub fn parse(source: &str, env_names: &[String]) -> Result<Self, PathTemplateError> {
        let invalid = |reason: String| PathTemplateError::Invalid {
            template: source.to_owned(),
            reason,
        };
        let template = Template::compile(source).map_err(|e| invalid(e.reason().to_string()))?;
        let mut vars = Vec::new();
        for element in &template.elements {
            match element {
                TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h)
                    if !h.block
                        && h.params.is_empty()
                        && h.hash.is_empty()
                        && h.template.is_none() =>
                {
                    let name = match &h.name {
                        Parameter::Name(n) => n.as_str(),
                        Parameter::Path(HbPath::Relative((_, raw))) => raw.as_str(),
                        _ => return Err(invalid("only {{variable}} is supported".to_owned())),
                    };
                    let var = Var::parse(name, env_names).ok_or_else(|| {
                        invalid(format!(
                            "unknown variable {name:?} (use app, namespace, project{})",
                            allowed_env_hint(env_names)
                        ))
                    })?;
                    if !vars.contains(&var) {
                        vars.push(var);
                    }
                }
                _ => {
                    return Err(invalid(
                        "only {{variable}} is supported (no helpers, blocks or partials)"
                            .to_owned(),
                    ));
                }
            }
        }
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry.register_template(NAME, template);
        Ok(Self {
            source: source.to_owned(),
            vars,
            registry: Arc::new(registry),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `vars`, after checking that every value the template uses is one safe
    /// path segment (so no value can add, remove or climb segments).
    pub fn render(&self, vars: &PathVars) -> Result<String, PathTemplateError> {
        let mut env = serde_json::Map::new();
        let mut data = serde_json::Map::new();
        for var in &self.vars {
            let value = vars.get(var);
            check_segment(value).map_err(|problem| PathTemplateError::Value {
                template: self.source.clone(),
                variable: var.to_string(),
                problem: problem.describe(value),
            })?;
            let value = serde_json::Value::String(value.to_owned());
            match var {
                Var::Env(name) => {
                    env.insert(name.clone(), value);
                }
                other => {
                    data.insert(other.to_string(), value);
                }
            }
        }
        data.insert("env".to_owned(), serde_json::Value::Object(env));
        self.registry
            .render(NAME, &data)
            .map_err(|e| PathTemplateError::Invalid {
                template: self.source.clone(),
                reason: e.to_string(),
            })
    }
}

fn allowed_env_hint(env_names: &[String]) -> String {
    if env_names.is_empty() {
        String::new()
    } else {
        format!(
            ", or env.NAME for {}",
            env_names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl Var {
    fn parse(name: &str, env_names: &[String]) -> Option<Self> {
        match name {
            "app" => Some(Var::App),
            "namespace" => Some(Var::Namespace),
            "project" => Some(Var::Project),
            _ => {
                let env = name.strip_prefix("env.")?;
                env_names
                    .iter()
                    .any(|n| n == env)
                    .then(|| Var::Env(env.to_owned()))
            }
        }
    }
}

/// Why a value is not a safe segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SegmentProblem {
    Empty,
    Dots,
    TooLong,
    BadChar,
}

impl SegmentProblem {
    fn describe(self, value: &str) -> String {
        let quoted: String = value.chars().take(MAX_QUOTED).collect();
        match self {
            SegmentProblem::Empty => "is empty or not set".to_owned(),
            SegmentProblem::Dots => format!("is {quoted:?}: a path segment may not be only dots"),
            SegmentProblem::TooLong => {
                format!("is longer than {MAX_SEGMENT} characters")
            }
            SegmentProblem::BadChar => format!(
                "is {quoted:?}: a value must be one path segment of A-Z a-z 0-9 . _ - (no /)"
            ),
        }
    }
}

/// A value may become exactly one path segment: letters, digits, `.`, `_`, `-`, not only dots.
/// An allowlist rather than a denylist: Vault paths treat `/` as a separator, `#` and `<>` end
/// AVP placeholders, `*` is a policy wildcard, and whitespace, `%` or `\` invite surprises in
/// some component that decodes or normalises. Kubernetes names, namespaces and Argo CD project
/// names (DNS labels) and `ns_app` app names all fit.
fn check_segment(value: &str) -> Result<(), SegmentProblem> {
    if value.is_empty() {
        return Err(SegmentProblem::Empty);
    }
    if value.len() > MAX_SEGMENT {
        return Err(SegmentProblem::TooLong);
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(SegmentProblem::BadChar);
    }
    if value.bytes().all(|b| b == b'.') {
        return Err(SegmentProblem::Dots);
    }
    Ok(())
}

/// The request's template variables, as the repo-server and the Application sent them.
/// Only the `ARGOCD_ENV_*` names the operator allowed are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathVars {
    pub app: String,
    pub namespace: String,
    pub project: String,
    pub env: BTreeMap<String, String>,
}

impl PathVars {
    pub fn from_request(env: &RequestEnv, env_names: &[String]) -> Self {
        let get = |name: &str| env.get(name).unwrap_or_default().to_owned();
        Self {
            app: get(context::APP_NAME),
            namespace: get(context::APP_NAMESPACE),
            project: get(context::APP_PROJECT),
            env: env_names
                .iter()
                .filter_map(|n| {
                    env.get(&format!("{}{n}", context::PLUGIN_ENV_PREFIX))
                        .map(|v| (n.clone(), v.to_owned()))
                })
                .collect(),
        }
    }

    fn get(&self, var: &Var) -> &str {
        match var {
            Var::App => &self.app,
            Var::Namespace => &self.namespace,
            Var::Project => &self.project,
            Var::Env(name) => self.env.get(name).map_or("", String::as_str),
        }
    }
}

/// The operator's path-template settings, fixed at startup.
#[derive(Clone, Debug, Default)]
pub struct PathSettings {
    /// Path for objects with bare `<KEY>` placeholders and no `avp.kubernetes.io/path`.
    pub default_path: Option<PathTemplate>,
    /// Whether `{{...}}` in annotation and inline paths is rendered (else literal, as in AVP).
    pub templates_in_paths: bool,
    /// `ARGOCD_ENV_<NAME>` names templates may use.
    pub env_names: Arc<[String]>,
}

impl PathSettings {
    pub fn new(
        default_path: Option<&str>,
        templates_in_paths: bool,
        env_names: &[String],
    ) -> Result<Self, PathTemplateError> {
        let env_names: Vec<String> = env_names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        // Names of operator settings (`VAULT_*`, `AVP_*`, `BAO_*`) are never request data.
        let reserved = |n: &str| {
            let upper = n.to_ascii_uppercase();
            ["VAULT_", "AVP_", "BAO_"]
                .iter()
                .any(|p| upper.starts_with(p))
        };
        if let Some(bad) = env_names
            .iter()
            .find(|n| reserved(n) || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(PathTemplateError::EnvName(bad.clone()));
        }
        let default_path = default_path
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| PathTemplate::parse(p, &env_names))
            .transpose()?;
        Ok(Self {
            default_path,
            templates_in_paths,
            env_names: env_names.into(),
        })
    }

    /// The per-request view, with this request's variables.
    pub fn for_request(&self, env: &RequestEnv) -> PathContext {
        PathContext {
            settings: self.clone(),
            vars: PathVars::from_request(env, &self.env_names),
            default_rendered: OnceLock::new(),
            rendered: Mutex::default(),
        }
    }
}

/// One request's path templating: the operator settings plus the request's variables.
#[derive(Debug)]
pub struct PathContext {
    settings: PathSettings,
    vars: PathVars,
    /// The default path, rendered on first need (a request that never uses it cannot fail on it).
    default_rendered: OnceLock<Result<String, PathTemplateError>>,
    /// Templated manifest paths already rendered for this request: both engine phases, and
    /// every placeholder sharing a path, render it once.
    rendered: Mutex<HashMap<String, Result<String, PathTemplateError>>>,
}

impl PathContext {
    pub fn vars(&self) -> &PathVars {
        &self.vars
    }

    pub fn has_default_path(&self) -> bool {
        self.settings.default_path.is_some()
    }

    /// The rendered default path, if the operator set one.
    pub fn default_path(&self) -> Option<Result<&str, PathTemplateError>> {
        let template = self.settings.default_path.as_ref()?;
        let rendered = self
            .default_rendered
            .get_or_init(|| template.render(&self.vars));
        Some(rendered.as_deref().map_err(Clone::clone))
    }

    /// A path written in a manifest, rendered when templates in paths are on and it holds
    /// `{{`; otherwise as written.
    pub fn resolve<'p>(&self, path: &'p str) -> Result<Cow<'p, str>, PathTemplateError> {
        if !self.settings.templates_in_paths || !is_template(path) {
            return Ok(Cow::Borrowed(path));
        }
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        rendered
            .entry(path.to_owned())
            .or_insert_with(|| {
                PathTemplate::parse(path, &self.settings.env_names)?.render(&self.vars)
            })
            .clone()
            .map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> PathVars {
        PathVars {
            app: "web".into(),
            namespace: "team-a".into(),
            project: "proj".into(),
            env: [("TEAM".to_owned(), "blue".to_owned())].into(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renders_variables_without_escaping() {
        let t = PathTemplate::parse(
            "kv/data/{{namespace}}/{{app}}-{{project}}/{{env.TEAM}}",
            &names(&["TEAM"]),
        )
        .expect("valid");
        assert_eq!(
            t.render(&vars()).expect("renders"),
            "kv/data/team-a/web-proj/blue"
        );
        let v = PathVars {
            app: "a_b.c".into(),
            ..vars()
        };
        let t = PathTemplate::parse("x/{{{app}}}/{{! comment }}y", &[]).expect("valid");
        assert_eq!(t.render(&v).expect("renders"), "x/a_b.c/y");
        let t = PathTemplate::parse("plain/path", &[]).expect("valid");
        assert_eq!(
            t.render(&PathVars::default()).expect("renders"),
            "plain/path"
        );
    }

    #[test]
    fn rejects_unknown_variables_helpers_and_blocks() {
        for bad in [
            "kv/{{nope}}",
            "kv/{{env.TEAM}}",
            "kv/{{#if app}}x{{/if}}",
            "kv/{{lookup env \"TEAM\"}}",
            "kv/{{> partial}}",
            "kv/{{app x=1}}",
            "kv/{{this.app}}",
            "kv/{{@root.app}}",
            "kv/{{app",
        ] {
            let err = PathTemplate::parse(bad, &[]).expect_err(bad);
            assert!(
                matches!(err, PathTemplateError::Invalid { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn segment_rules() {
        for ok in ["web", "team-a", "ns_app", "v1.2", "A9", "..x", "a..b"] {
            assert_eq!(check_segment(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", SegmentProblem::Empty),
            (".", SegmentProblem::Dots),
            ("..", SegmentProblem::Dots),
            ("...", SegmentProblem::Dots),
            ("../other", SegmentProblem::BadChar),
            ("a/b", SegmentProblem::BadChar),
            ("a\\b", SegmentProblem::BadChar),
            ("a#b", SegmentProblem::BadChar),
            ("a<b>", SegmentProblem::BadChar),
            ("a b", SegmentProblem::BadChar),
            ("a\nb", SegmentProblem::BadChar),
            ("a*", SegmentProblem::BadChar),
            ("a%2f", SegmentProblem::BadChar),
            ("é", SegmentProblem::BadChar),
        ];
        for (value, want) in cases {
            assert_eq!(check_segment(value), Err(want), "{value:?}");
        }
        assert_eq!(
            check_segment(&"a".repeat(254)),
            Err(SegmentProblem::TooLong)
        );
    }

    #[test]
    fn unsafe_value_names_variable_and_template() {
        let t =
            PathTemplate::parse("kv/data/{{env.TEAM}}/{{app}}", &names(&["TEAM"])).expect("valid");
        let mut v = vars();
        v.env.insert("TEAM".into(), "../other".into());
        let err = t.render(&v).expect_err("rejected").to_string();
        assert!(
            err.contains("env.TEAM") && err.contains("kv/data/{{env.TEAM}}/{{app}}"),
            "{err}"
        );
        assert!(err.contains("\"../other\""), "{err}");
        v.env.clear();
        let err = t.render(&v).expect_err("unset").to_string();
        assert!(err.contains("env.TEAM is empty or not set"), "{err}");
    }

    #[test]
    fn request_context() {
        let env = RequestEnv::new(
            [
                ("ARGOCD_APP_NAME", "web"),
                ("ARGOCD_APP_NAMESPACE", "team-a"),
                ("ARGOCD_APP_PROJECT_NAME", "proj"),
                ("ARGOCD_ENV_TEAM", "blue"),
                ("ARGOCD_ENV_OTHER", "x"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let settings = PathSettings::new(
            Some("kv/data/{{namespace}}/{{app}}"),
            true,
            &names(&["TEAM"]),
        )
        .expect("valid");
        let ctx = settings.for_request(&env);
        assert_eq!(ctx.vars().env.len(), 1);
        assert_eq!(
            ctx.default_path().expect("set").expect("renders"),
            "kv/data/team-a/web"
        );
        assert_eq!(
            ctx.resolve("kv/data/{{env.TEAM}}/x").expect("renders"),
            "kv/data/blue/x"
        );
        assert!(ctx.resolve("kv/{{env.OTHER}}").is_err());
        let off = PathSettings::new(None, false, &[])
            .expect("valid")
            .for_request(&env);
        assert!(off.default_path().is_none());
        assert_eq!(off.resolve("kv/{{app}}").expect("literal"), "kv/{{app}}");
        assert!(PathSettings::new(Some("kv/{{nope}}"), false, &[]).is_err());
        assert!(PathSettings::new(None, false, &names(&["A-B"])).is_err());
        assert!(PathSettings::new(None, false, &names(&["avp_team"])).is_err());
    }
}
