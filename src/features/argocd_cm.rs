//! Imports plugins from an `argocd-cm` ConfigMap (`data.configManagementPlugins`), the format
//! Argo CD removed in 2.8, into sidecar `ConfigManagementPlugin` definitions.
//!
//! The classic argocd-vault-plugin pipelines (`kustomize build . | argocd-vault-plugin generate
//! -`, `helm template $ARGOCD_APP_NAME . | argocd-vault-plugin generate -`) become the built-in,
//! shell-free pipelines. Anything else is kept as an operator command plugin, run as written,
//! with `argocd-vault-plugin` replaced by `avp-sidecar` (whose `generate` is AVP-compatible).
//! Every output is parsed back with [`Plugin::parse`], so what `plugins import` writes is what
//! `serve --argocd-cm` serves.

use serde_json::{Map, Value, json};

use crate::pipeline::plugin::Plugin;

/// Argo CD's `v1alpha1.ConfigManagementPlugin` (argocd-cm) fields, lower-cased.
const KNOWN_FIELDS: [&str; 6] = [
    "name",
    "init",
    "generate",
    "lockrepo",
    "allowconcurrency",
    "discover",
];

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: {reason}")]
    Invalid { source_name: String, reason: String },
    #[error("{source_name}: plugin {entry}: {reason}")]
    Entry {
        source_name: String,
        entry: String,
        reason: String,
    },
}

/// One converted plugin.
#[derive(Clone, Debug)]
pub struct Imported {
    pub name: String,
    /// The definition as a YAML document, comments included.
    pub yaml: String,
    /// The same definition, parsed.
    pub plugin: Plugin,
    /// What changed and why (informational).
    pub notes: Vec<String>,
    /// What no longer has a meaning or needs the operator's attention.
    pub warnings: Vec<String>,
}

/// Converts every `configManagementPlugins` entry of the ConfigMap in `text`.
pub fn import(text: &str, source_name: &str) -> Result<Vec<Imported>, ImportError> {
    let invalid = |reason: String| ImportError::Invalid {
        source_name: source_name.to_owned(),
        reason,
    };
    let docs = crate::yaml::parse_documents(text).map_err(|e| invalid(e.to_string()))?;
    let plugins_text = docs
        .iter()
        .find_map(|d| d.get("data")?.get("configManagementPlugins"))
        .ok_or_else(|| invalid("no data.configManagementPlugins (an argocd-cm ConfigMap)".into()))?
        .as_str()
        .ok_or_else(|| invalid("data.configManagementPlugins is not a string".into()))?;
    let entries = crate::yaml::parse_documents(plugins_text)
        .map_err(|e| invalid(format!("data.configManagementPlugins: {e}")))?
        .into_iter()
        .find(|d| !d.is_null())
        .unwrap_or(Value::Array(Vec::new()));
    let Value::Array(entries) = entries else {
        return Err(invalid(
            "data.configManagementPlugins must be a list of plugins (name, init, generate, lockRepo)"
                .into(),
        ));
    };
    let mut out: Vec<Imported> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let imported = convert(entry, index, source_name)?;
        if out.iter().any(|o| o.name == imported.name) {
            return Err(ImportError::Entry {
                source_name: source_name.to_owned(),
                entry: imported.name,
                reason: "defined twice".into(),
            });
        }
        out.push(imported);
    }
    Ok(out)
}

/// Go's encoding/json (through ghodss/yaml) matches field names case-insensitively.
fn lowercase_keys(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Object(m) => Value::Object(lowercase_keys(m)),
                other => other,
            };
            (k.to_lowercase(), v)
        })
        .collect()
}

/// Argo's `Command`: `command` and `args`.
type CommandArgs = (Vec<String>, Vec<String>);

/// A `{command: [...], args: [...]}` value; `None` when absent or null.
fn command(value: Option<&Value>, field: &str) -> Result<Option<CommandArgs>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(map) = value else {
        return Err(format!("{field} must be a map with command and args"));
    };
    let list = |key: &str| -> Result<Vec<String>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Ok(other.to_string()),
                })
                .collect(),
            Some(_) => Err(format!("{field}.{key} must be a list of strings")),
        }
    };
    Ok(Some((list("command")?, list("args")?)))
}

fn convert(entry: Value, index: usize, source_name: &str) -> Result<Imported, ImportError> {
    let label = |name: &str| {
        if name.is_empty() {
            format!("#{}", index + 1)
        } else {
            format!("{name:?}")
        }
    };
    let Value::Object(map) = entry else {
        return Err(ImportError::Entry {
            source_name: source_name.to_owned(),
            entry: label(""),
            reason: "not a map".into(),
        });
    };
    let map = lowercase_keys(map);
    let name = map
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let fail = |reason: String| ImportError::Entry {
        source_name: source_name.to_owned(),
        entry: label(&name),
        reason,
    };
    if name.is_empty() {
        return Err(fail("name is required".into()));
    }
    let mut remarks = Remarks {
        notes: Vec::new(),
        warnings: dropped_field_warnings(&map),
    };
    let init = command(map.get("init"), "init").map_err(fail)?;
    let generate = command(map.get("generate"), "generate")
        .map_err(fail)?
        .filter(|(c, _)| !c.is_empty())
        .ok_or_else(|| fail("generate.command is required".into()))?;
    let discover = match map.get("discover") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => Some(d.clone()),
        Some(_) => return Err(fail("discover must be a map".into())),
    };

    let argv: Vec<String> = generate.0.iter().chain(&generate.1).cloned().collect();
    let classic = if init.as_ref().is_some_and(|(c, _)| !c.is_empty()) {
        None
    } else {
        classic_pipeline(&argv)
    };
    let spec = match classic {
        Some(classic) => builtin_spec(classic, &argv, discover.is_some(), &name, &mut remarks),
        None => command_spec(init, generate, discover, &name, &mut remarks),
    };
    let yaml = plugin_yaml(&name, source_name, spec, &remarks);
    let plugin = Plugin::parse(&yaml, &format!("{source_name} (plugin {name:?})"))
        .map_err(|e| fail(e.to_string()))?;
    Ok(Imported {
        name,
        yaml,
        plugin,
        notes: remarks.notes,
        warnings: remarks.warnings,
    })
}

/// What the import says about one plugin: notes (what was done) and warnings (what changed
/// or needs the operator's attention). Both end up as comments in the written file.
struct Remarks {
    notes: Vec<String>,
    warnings: Vec<String>,
}

/// Unknown fields and argocd-cm fields that mean nothing to a sidecar plugin.
fn dropped_field_warnings(map: &Map<String, Value>) -> Vec<String> {
    let mut warnings: Vec<String> = map
        .keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .map(|key| format!("{key}: not a field of argocd-cm plugins; ignored"))
        .collect();
    if map.get("lockrepo").is_some_and(|v| v == &json!(true)) {
        warnings.push(
            "lockRepo: dropped; a sidecar plugin gets its own copy of the repository per request, so there is nothing to lock"
                .into(),
        );
    }
    if map.contains_key("allowconcurrency") {
        warnings.push(
            "allowConcurrency: dropped; avp-sidecar always runs requests concurrently (cap tool runs with --max-concurrent-renders)"
                .into(),
        );
    }
    warnings
}

/// A classic AVP pipeline becomes the built-in one (`spec.avp`).
fn builtin_spec(
    classic: Classic,
    argv: &[String],
    discover_on: bool,
    name: &str,
    remarks: &mut Remarks,
) -> Value {
    remarks.notes.push(format!(
        "`{}` is the classic AVP pipeline: mapped to the built-in, shell-free {} pipeline (spec.avp)",
        argv.last().map(String::as_str).unwrap_or_default(),
        classic.render
    ));
    remarks.notes.extend(classic.notes);
    remarks.warnings.extend(classic.warnings);
    if discover_on {
        remarks.notes.push(format!(
            "discover: replaced by the built-in {} detection (spec.avp.discover: true)",
            classic.render
        ));
    } else {
        remarks.warnings.push(no_discover_warning(name));
    }
    json!({ "avp": { "render": classic.render, "substitute": true, "discover": discover_on } })
}

/// Any other plugin stays a command plugin, with `argocd-vault-plugin` replaced by us.
fn command_spec(
    init: Option<CommandArgs>,
    generate: CommandArgs,
    discover: Option<Map<String, Value>>,
    name: &str,
    remarks: &mut Remarks,
) -> Value {
    let mut spec = Map::new();
    let mut replaced = false;
    let mut cmd = |(c, a): CommandArgs| {
        let mut swap = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| {
                    let r = replace_avp(&s);
                    replaced |= r != s;
                    r
                })
                .collect()
        };
        let (c, a) = (swap(c), swap(a));
        let mut m = Map::new();
        m.insert("command".into(), json!(c));
        if !a.is_empty() {
            m.insert("args".into(), json!(a));
        }
        Value::Object(m)
    };
    if generate
        .0
        .iter()
        .chain(&generate.1)
        .any(|w| w.contains("ARGOCD_ENV_HELM_ARGS"))
    {
        remarks.warnings.push(
            "ARGOCD_ENV_HELM_ARGS passes flags chosen by any Application to helm (`--post-renderer` runs a program); prefer the built-in avp-helm with HELM_VALUE_FILES, HELM_VALUES and HELM_RELEASE_NAME"
                .into(),
        );
    }
    if let Some(init) = init.filter(|(c, _)| !c.is_empty()) {
        spec.insert("init".into(), cmd(init));
    }
    spec.insert("generate".into(), cmd(generate));
    if replaced {
        remarks.warnings.push(
            "`argocd-vault-plugin` replaced by `avp-sidecar` (its generate command accepts the same input, -s and -c); the commands run as written, with their shell, not the built-in pipeline"
                .into(),
        );
    } else {
        remarks
            .notes
            .push("kept as a command plugin, run as written".into());
    }
    match discover {
        Some(d) => {
            spec.insert("discover".into(), Value::Object(d));
        }
        None => remarks.warnings.push(no_discover_warning(name)),
    }
    Value::Object(spec)
}

/// The `ConfigManagementPlugin` file, with the remarks as comments on top.
fn plugin_yaml(name: &str, source_name: &str, spec: Value, remarks: &Remarks) -> String {
    let document = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ConfigManagementPlugin",
        "metadata": { "name": name },
        "spec": spec,
    });
    let mut yaml = format!(
        "# Imported from argocd-cm plugin {name:?} ({source_name}) by `avp-sidecar plugins import`.\n"
    );
    for line in remarks.notes.iter().chain(&remarks.warnings) {
        yaml.push_str(&format!("# - {}\n", line.replace('\n', " ")));
    }
    yaml.push_str(&crate::yaml::to_yaml_string(&document));
    yaml
}

fn no_discover_warning(name: &str) -> String {
    format!(
        "no discover rules: Applications must name the plugin (spec.source.plugin.name: {name}), as they did with argocd-cm"
    )
}

/// `argocd-vault-plugin` as a command word → `avp-sidecar`.
fn replace_avp(text: &str) -> String {
    const AVP: &str = "argocd-vault-plugin";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(AVP) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + AVP.len()..].chars().next();
        let word =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        out.push_str(&rest[..at]);
        // Keep paths like /usr/local/bin/argocd-vault-plugin working by replacing the whole path.
        if !word(before) && !word(after) {
            let start = out.rfind(|c: char| c.is_whitespace() || c == '|' || c == '\'' || c == '"');
            let cut = start.map_or(0, |i| i + 1);
            if out[cut..].contains('/') {
                out.truncate(cut);
            }
            out.push_str("avp-sidecar");
        } else {
            out.push_str(AVP);
        }
        rest = &rest[at + AVP.len()..];
    }
    out.push_str(rest);
    out
}

/// A recognised classic pipeline.
struct Classic {
    render: &'static str,
    notes: Vec<String>,
    warnings: Vec<String>,
}

/// AVP's documented helm plugin passes inline values with a process substitution; the
/// built-in's `HELM_VALUES` plugin env is the same values file without a shell.
const HELM_VALUES_FORMS: [&str; 4] = [
    r#"<(echo "$ARGOCD_ENV_HELM_VALUES")"#,
    r#"<(echo "${ARGOCD_ENV_HELM_VALUES}")"#,
    "<(echo $ARGOCD_ENV_HELM_VALUES)",
    "<(echo ${ARGOCD_ENV_HELM_VALUES})",
];
/// Stands for one of [`HELM_VALUES_FORMS`] while the script is split into words.
const HELM_VALUES_MARK: &str = "@helm-values@";

/// `sh -c "<render> | argocd-vault-plugin generate [-s X] -"` with a render the built-in
/// pipelines reproduce; `None` for anything else.
fn classic_pipeline(argv: &[String]) -> Option<Classic> {
    let [shell, dash_c, script] = argv else {
        return None;
    };
    let shell_name = shell.rsplit('/').next().unwrap_or(shell);
    if !matches!(shell_name, "sh" | "bash" | "ash" | "dash") || dash_c != "-c" {
        return None;
    }
    let script = HELM_VALUES_FORMS
        .iter()
        .fold(script.trim().to_owned(), |s, form| {
            s.replace(form, HELM_VALUES_MARK)
        });
    if script.contains(['\n', ';', '`', '>', '<', '&']) || script.contains("$(") {
        return None;
    }
    let (left, right) = script.split_once('|')?;
    if right.contains('|') {
        return None;
    }
    let left = words(left)?;
    let right = words(right)?;
    let mut classic = render_kind(&left)?;
    avp_generate(&right, &mut classic)?;
    Some(classic)
}

/// Whitespace-separated words, with whole-word quotes removed; `None` for anything fancier.
fn words(text: &str) -> Option<Vec<String>> {
    text.split_whitespace()
        .map(|w| {
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| w.strip_prefix(*q)?.strip_suffix(*q))
                .unwrap_or(w);
            (!unquoted.contains(['"', '\'', '\\', '*', '?'])).then(|| unquoted.to_owned())
        })
        .collect()
}

fn is_var(word: &str, name: &str) -> bool {
    word.strip_prefix('$').is_some_and(|v| {
        v == name || v.strip_prefix('{').and_then(|v| v.strip_suffix('}')) == Some(name)
    })
}

fn render_kind(words: &[String]) -> Option<Classic> {
    let tool = words.first()?.rsplit('/').next()?;
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    let is_dir = |w: &str| matches!(w, "." | "./");
    match (tool, rest.as_slice()) {
        ("kustomize", ["build", flags @ ..])
            if flags.iter().all(|f| is_dir(f) || *f == "--enable-helm") =>
        {
            Some(Classic {
                render: "kustomize",
                notes: vec!["the built-in kustomize pipeline always passes --enable-helm".into()],
                warnings: Vec::new(),
            })
        }
        ("helm", ["template", args @ ..]) => {
            let mut release = false;
            let mut values = false;
            let mut i = 0;
            while i < args.len() {
                let a = args[i];
                if is_var(a, "ARGOCD_APP_NAME") && !release {
                    release = true;
                } else if is_dir(a) || a == "--include-crds" {
                } else if matches!(a, "-f" | "--values")
                    && args.get(i + 1) == Some(&HELM_VALUES_MARK)
                {
                    values = true;
                    i += 1;
                } else if a.strip_prefix("--values=") == Some(HELM_VALUES_MARK) {
                    values = true;
                } else if matches!(a, "-n" | "--namespace")
                    && args
                        .get(i + 1)
                        .is_some_and(|n| is_var(n, "ARGOCD_APP_NAMESPACE"))
                {
                    i += 1;
                } else if a
                    .strip_prefix("--namespace=")
                    .is_some_and(|n| is_var(n, "ARGOCD_APP_NAMESPACE"))
                {
                } else {
                    return None;
                }
                i += 1;
            }
            let mut notes = vec![
                "the built-in helm pipeline runs `helm template $ARGOCD_APP_NAME . --namespace $ARGOCD_APP_NAMESPACE --include-crds` with KUBE_VERSION/KUBE_API_VERSIONS"
                    .to_owned(),
            ];
            if values {
                notes.push(
                    "`-f <(echo \"$ARGOCD_ENV_HELM_VALUES\")`: the built-in reads the HELM_VALUES plugin env as a values file itself"
                        .to_owned(),
                );
            }
            release.then_some(Classic {
                render: "helm",
                notes,
                warnings: Vec::new(),
            })
        }
        _ => None,
    }
}

/// `argocd-vault-plugin generate [-s X | --secret-name X | --secret-name=X] -`.
fn avp_generate(words: &[String], classic: &mut Classic) -> Option<()> {
    let tool = words.first()?.rsplit('/').next()?;
    if tool != "argocd-vault-plugin" || words.get(1).map(String::as_str) != Some("generate") {
        return None;
    }
    let mut secret = None;
    let mut stdin = false;
    let mut i = 2;
    while i < words.len() {
        let w = words[i].as_str();
        match w {
            "-" => stdin = true,
            "-s" | "--secret-name" => {
                secret = Some(words.get(i + 1)?.clone());
                i += 1;
            }
            _ => secret = Some(w.strip_prefix("--secret-name=")?.to_owned()),
        }
        i += 1;
    }
    if !stdin {
        return None;
    }
    match secret {
        None => {}
        Some(s) if is_var(&s, "ARGOCD_ENV_AVP_SECRET") => classic.notes.push(
            "-s $ARGOCD_ENV_AVP_SECRET: the plugin env AVP_SECRET works the same, for Secrets the operator allows with --avp-secret-allow"
                .into(),
        ),
        Some(s) => classic.warnings.push(format!(
            "-s {s}: the built-in pipeline reads Vault settings from the sidecar's env or -c file; move that Secret's settings there (or allow it with --avp-secret-allow and set the plugin env AVP_SECRET)"
        )),
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::plugin::Kind;

    fn cm(plugins: &str) -> String {
        let indented: String = plugins.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\ndata:\n  url: https://argo\n  configManagementPlugins: |\n{indented}"
        )
    }

    fn one(plugins: &str) -> Imported {
        let mut all = import(&cm(plugins), "argocd-cm.yaml").expect("imports");
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn builtin(p: &Imported) -> (crate::pipeline::discovery::Accept, bool) {
        match &p.plugin.kind {
            Kind::Builtin(b) => {
                assert!(b.substitute);
                (b.render, b.discover)
            }
            Kind::Commands(_) => panic!("{} should be built-in:\n{}", p.name, p.yaml),
        }
    }

    #[test]
    fn classic_pipelines_become_builtins() {
        use crate::pipeline::discovery::Accept;
        let cases = [
            (
                r#"["kustomize build . | argocd-vault-plugin generate -"]"#,
                Accept::Kustomize,
            ),
            (
                r#"["kustomize build --enable-helm ./ | argocd-vault-plugin generate -s $ARGOCD_ENV_AVP_SECRET -"]"#,
                Accept::Kustomize,
            ),
            (
                r#"['helm template "$ARGOCD_APP_NAME" -n "$ARGOCD_APP_NAMESPACE" . | argocd-vault-plugin generate -']"#,
                Accept::Helm,
            ),
            (
                r#"["helm template ${ARGOCD_APP_NAME} --namespace=$ARGOCD_APP_NAMESPACE --include-crds . | /usr/local/bin/argocd-vault-plugin generate --secret-name=avp-config -"]"#,
                Accept::Helm,
            ),
            // AVP's documented helm plugin with inline values.
            (
                r#"['helm template $ARGOCD_APP_NAME -n $ARGOCD_APP_NAMESPACE -f <(echo "$ARGOCD_ENV_HELM_VALUES") . | argocd-vault-plugin generate -']"#,
                Accept::Helm,
            ),
        ];
        for (args, want) in cases {
            let p = one(&format!(
                "- name: avp-x\n  generate:\n    command: [\"sh\", \"-c\"]\n    args: {args}\n"
            ));
            assert_eq!(builtin(&p), (want, false), "{args}");
            assert!(
                p.warnings.iter().any(|w| w.contains("no discover rules")),
                "{args}"
            );
            assert_eq!(
                Plugin::parse(&p.yaml, "round trip").expect("parses"),
                p.plugin
            );
        }
        let p = one(
            "- name: avp-x\n  generate:\n    command: [sh, -c]\n    args: [\"kustomize build . | argocd-vault-plugin generate -s avp-config -\"]\n",
        );
        assert!(
            p.warnings.iter().any(|w| w.starts_with("-s avp-config")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn other_commands_are_kept_with_avp_sidecar() {
        let p = one(
            "- name: avp\n  Generate:\n    command: [argocd-vault-plugin]\n    args: [generate, ./]\n  lockRepo: true\n  allowConcurrency: true\n  colour: blue\n  discover:\n    find:\n      glob: \"**/*.yaml\"\n",
        );
        let Kind::Commands(c) = &p.plugin.kind else {
            panic!("commands")
        };
        assert_eq!(c.generate.argv(), ["avp-sidecar", "generate", "./"]);
        assert_eq!(c.discover.find.glob, "**/*.yaml");
        for w in [
            "lockRepo",
            "allowConcurrency",
            "colour",
            "replaced by `avp-sidecar`",
        ] {
            assert!(
                p.warnings.iter().any(|x| x.contains(w)),
                "{w}: {:?}",
                p.warnings
            );
        }
        // Not the classic shape: extra helm flags, init steps, several pipes, other tools.
        for script in [
            "helm template $ARGOCD_APP_NAME -f values-prod.yaml . | argocd-vault-plugin generate -",
            "helm template $ARGOCD_APP_NAME -f <(echo \"$ARGOCD_ENV_OTHER\") . | argocd-vault-plugin generate -",
            "kustomize build . | argocd-vault-plugin generate - | tee /tmp/x",
            "kustomize build . && echo hi",
            "cat *.yaml | argocd-vault-plugin generate -",
        ] {
            let p = one(&format!(
                "- name: x\n  generate:\n    command: [sh, -c]\n    args: [{script:?}]\n"
            ));
            let Kind::Commands(c) = &p.plugin.kind else {
                panic!("{script} should stay a command plugin")
            };
            assert!(
                !c.generate.argv()[2].contains("argocd-vault-plugin"),
                "{script}"
            );
            assert_eq!(c.generate.argv()[..2], ["sh", "-c"]);
        }
        let p = one(
            "- name: x\n  generate:\n    command: [sh, -c]\n    args: [\"helm template $ARGOCD_APP_NAME ${ARGOCD_ENV_HELM_ARGS} . | argocd-vault-plugin generate -\"]\n",
        );
        assert!(matches!(p.plugin.kind, Kind::Commands(_)));
        assert!(
            p.warnings.iter().any(|w| w.contains("--post-renderer")),
            "{:?}",
            p.warnings
        );
        let p = one(
            "- name: x\n  init:\n    command: [sh, -c, \"helm dependency build\"]\n  generate:\n    command: [sh, -c, \"helm template $ARGOCD_APP_NAME . | argocd-vault-plugin generate -\"]\n",
        );
        let Kind::Commands(c) = &p.plugin.kind else {
            panic!("init keeps the command plugin")
        };
        assert_eq!(
            c.init.as_ref().expect("init").argv()[2],
            "helm dependency build"
        );
    }

    #[test]
    fn errors() {
        for (plugins, want) in [
            ("- name: x\n", "generate.command is required"),
            (
                "- name: x\n  generate: {command: []}\n",
                "generate.command is required",
            ),
            ("- generate: {command: [a]}\n", "name is required"),
            ("- name: x\n  generate: {command: a}\n", "must be a list"),
            (
                "- name: x\n  generate: {command: [a]}\n- name: x\n  generate: {command: [b]}\n",
                "defined twice",
            ),
            (
                "- name: ../x\n  generate: {command: [a]}\n",
                "invalid metadata.name",
            ),
            ("name: x\n", "must be a list"),
        ] {
            let err = import(&cm(plugins), "cm.yaml")
                .expect_err(plugins)
                .to_string();
            assert!(err.contains(want), "{plugins}: {err}");
        }
        let err = import("kind: ConfigMap\ndata: {}\n", "cm.yaml").expect_err("none");
        assert!(err.to_string().contains("no data.configManagementPlugins"));
        assert!(import(&cm(""), "cm.yaml").expect("empty list").is_empty());
    }

    #[test]
    fn replaces_avp_words_only() {
        assert_eq!(
            replace_avp("argocd-vault-plugin generate -"),
            "avp-sidecar generate -"
        );
        assert_eq!(
            replace_avp("x | /usr/bin/argocd-vault-plugin generate -"),
            "x | avp-sidecar generate -"
        );
        assert_eq!(
            replace_avp("my-argocd-vault-plugin-2"),
            "my-argocd-vault-plugin-2"
        );
    }
}
