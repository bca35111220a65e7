//! Splits a tool's stdout into manifests exactly as Argo CD's Go cmp-server does
//! (gitops-engine `kube.SplitYAMLToString` over k8s apimachinery v0.36 `YAMLOrJSONDecoder`), so
//! output Argo CD would accept or reject is accepted or rejected here too, with the same values.
//!
//! That decoder treats the text as a stream of JSON values when its first non-blank character is
//! `{` (switching to YAML if one of the first two values fails to decode). Otherwise it cuts the
//! text into chunks at lines starting with `---` (rejecting such a line if anything but a comment
//! follows the marker), and converts the first YAML document of each chunk to JSON.
//! Empty and `null` documents are dropped; everything else, objects or not, is passed on
//! unvalidated: the repo-server decides. Pure: no I/O.
//!
//! One deliberate difference: what YAML anchors and aliases materialise in the whole output is
//! bounded by the render's [`AliasBudget`], where go-yaml only bounds each document's alias ratio.

use serde_json::Value;

use crate::yaml::{self, AliasBudget, BudgetExceeded, YamlError, YamlErrorKind};

/// apimachinery looks this far into the stream for the `{` that selects JSON.
const JSON_SNIFF_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to unmarshal manifest: error converting YAML to JSON: {0}")]
    Yaml(#[from] YamlError),
    #[error("failed to unmarshal manifest: json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("failed to unmarshal manifest: invalid Yaml document separator: {text} (line {line})")]
    Separator { line: usize, text: String },
    /// The render's alias budget ran out in this document (1-based, counted in the output).
    #[error("document {document} (line {line}): {source}")]
    AliasBudget {
        document: usize,
        line: usize,
        #[source]
        source: BudgetExceeded,
    },
}

/// The values in a tool's stdout, in order, without empty and `null` documents. What anchors
/// and aliases materialise is charged to `budget` (the render's, see [`AliasBudget::for_output`]).
pub fn split_tool_output(stdout: &str, budget: &AliasBudget) -> Result<Vec<Value>, ManifestError> {
    let mut manifests = Vec::new();
    if !looks_like_json(stdout) {
        for document in YamlChunks::new(stdout, 0, 0, budget) {
            push_manifest(&mut manifests, document?);
        }
        return Ok(manifests);
    }

    let mut stream = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let mut decoded = 0_usize;
    loop {
        let offset = stream.byte_offset();
        match stream.next() {
            None => return Ok(manifests),
            Some(Ok(value)) => {
                decoded += 1;
                push_manifest(&mut manifests, value);
            }
            // Two values make it a JSON stream for good.
            Some(Err(error)) if decoded > 1 => return Err(error.into()),
            Some(Err(error)) => {
                // apimachinery then reads the rest as YAML, after dropping blanks up to and
                // including the first line break; if that fails too, the JSON error is reported.
                let rest = &stdout[offset..];
                let blanks = rest
                    .char_indices()
                    .find(|&(_, c)| c == '\n' || !c.is_whitespace())
                    .map_or(rest.len(), |(i, c)| if c == '\n' { i + 1 } else { i });
                let mut documents = YamlChunks::new(stdout, offset + blanks, decoded, budget);
                match documents.next() {
                    None => return Ok(manifests),
                    Some(Err(_)) => return Err(error.into()),
                    Some(Ok(document)) => push_manifest(&mut manifests, document),
                }
                for document in documents {
                    push_manifest(&mut manifests, document?);
                }
                return Ok(manifests);
            }
        }
    }
}

/// The form we return in `ManifestResponse`: compact JSON, which the repo-server's decoder reads
/// with no YAML scalar ambiguity.
pub fn to_json_string(v: &Value) -> String {
    v.to_string()
}

fn push_manifest(manifests: &mut Vec<Value>, value: Value) {
    if !value.is_null() {
        manifests.push(value);
    }
}

fn looks_like_json(text: &str) -> bool {
    let mut end = text.len().min(JSON_SNIFF_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_start().starts_with('{')
}

/// apimachinery's `YAMLReader` + `yaml.Unmarshal`: the first document of each chunk between
/// `---` lines. Error lines are counted from the start of the whole text (Go counts from the
/// start of the chunk).
struct YamlChunks<'a> {
    text: &'a str,
    pos: usize,
    /// 0-based number of the line starting at `pos`.
    line: usize,
    /// Documents before the next one (JSON values included).
    documents: usize,
    budget: &'a AliasBudget,
    failed: bool,
}

impl<'a> YamlChunks<'a> {
    fn new(text: &'a str, pos: usize, documents: usize, budget: &'a AliasBudget) -> Self {
        let line = text[..pos].matches('\n').count();
        Self {
            text,
            pos,
            line,
            documents,
            budget,
            failed: false,
        }
    }

    fn parse(
        &mut self,
        start: usize,
        end: usize,
        first_line: usize,
    ) -> Result<Value, ManifestError> {
        self.documents += 1;
        let document = self.documents;
        yaml::parse_first_document_within(&self.text[start..end], self.budget).map_err(|error| {
            self.failed = true;
            let line = error.line + first_line;
            match error.kind {
                YamlErrorKind::AliasBudget(source) => ManifestError::AliasBudget {
                    document,
                    line,
                    source,
                },
                kind => ManifestError::Yaml(YamlError {
                    line,
                    kind,
                    ..error
                }),
            }
        })
    }
}

impl Iterator for YamlChunks<'_> {
    type Item = Result<Value, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut chunk: Option<(usize, usize)> = None;
        while self.pos < self.text.len() {
            let start = self.pos;
            // Lines up to the next one starting with `---` are content: found with one search
            // instead of line by line, as this runs over every byte of every render.
            let marker = if self.text[start..].starts_with("---") {
                start
            } else {
                match self.text[start..].find("\n---") {
                    Some(i) => start + i + 1,
                    None => self.text.len(),
                }
            };
            if marker > start {
                chunk.get_or_insert((start, self.line));
                self.line += count_lines(&self.text[start..marker]);
                self.pos = marker;
                continue;
            }
            let end = self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |i| start + i + 1);
            let line = &self.text[start..end];
            self.pos = end;
            self.line += 1;
            // `line` starts with `---` (ASCII), found above.
            let trailer = line[3..].trim();
            if !trailer.is_empty() && !trailer.starts_with('#') {
                self.failed = true;
                return Some(Err(ManifestError::Separator {
                    line: self.line,
                    text: trailer.to_owned(),
                }));
            }
            if let Some((chunk_start, first_line)) = chunk {
                return Some(self.parse(chunk_start, start, first_line));
            }
        }
        let (chunk_start, first_line) = chunk?;
        Some(self.parse(chunk_start, self.text.len(), first_line))
    }
}

/// The line breaks in `text` (a loop the compiler vectorises).
fn count_lines(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The splitter as it was, line by line: chunk boundaries, first lines and separator errors.
    fn chunks_line_by_line(text: &str) -> Vec<String> {
        let budget = AliasBudget::fixed();
        let mut it = YamlChunks::new(text, 0, 0, &budget);
        let mut out = Vec::new();
        loop {
            let mut chunk: Option<(usize, usize)> = None;
            let mut item = None;
            while it.pos < it.text.len() {
                let start = it.pos;
                let end = it.text[start..]
                    .find('\n')
                    .map_or(it.text.len(), |i| start + i + 1);
                let line = &it.text[start..end];
                it.pos = end;
                it.line += 1;
                let Some(after_marker) = line.strip_prefix("---") else {
                    chunk.get_or_insert((start, it.line - 1));
                    continue;
                };
                let trailer = after_marker.trim();
                if !trailer.is_empty() && !trailer.starts_with('#') {
                    it.failed = true;
                    item = Some(format!("separator at {}: {trailer}", it.line));
                    break;
                }
                if let Some((chunk_start, first_line)) = chunk {
                    item = Some(format!("{:?}", it.parse(chunk_start, start, first_line)));
                    break;
                }
            }
            let item = item.or_else(|| {
                chunk.map(|(chunk_start, first_line)| {
                    format!("{:?}", it.parse(chunk_start, it.text.len(), first_line))
                })
            });
            match item {
                Some(item) => out.push(item),
                None => return out,
            }
            if it.failed {
                return out;
            }
        }
    }

    fn chunks(text: &str) -> Vec<String> {
        let budget = AliasBudget::fixed();
        YamlChunks::new(text, 0, 0, &budget)
            .map(|item| match item {
                Err(ManifestError::Separator { line, text }) => {
                    format!("separator at {line}: {text}")
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// The splitter searches for `\n---` instead of going line by line: same chunks, same line
    /// numbers in errors, same separator errors.
    #[test]
    fn chunks_as_line_by_line() {
        let pieces = [
            "---\n",
            "--- # c\n",
            "---x\n",
            "--- y\n",
            "----\n",
            "a: 1\n",
            "\n",
            "b: [\n",
            "- x\n",
            "  c: d\n",
            "---",
            "a: 2",
            " ---\n",
            "# c\n",
            "x: \"\n",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bits = seed;
            let mut text = String::new();
            for _ in 0..(bits % 9) {
                bits /= 9;
                text.push_str(pieces[usize::try_from(bits % 15).unwrap_or_default()]);
                bits /= 15;
            }
            assert_eq!(chunks(&text), chunks_line_by_line(&text), "{text:?}");
        }
    }

    #[track_caller]
    fn split(stdout: &str) -> Vec<Value> {
        split_tool_output(stdout, &AliasBudget::for_output(stdout.len()))
            .unwrap_or_else(|e| panic!("{stdout:?}: {e}"))
    }

    #[test]
    fn kustomize_output() {
        let out = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: my-map\ndata:\n  foo: bar\n---\n\
                   apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  \
                   template:\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.25\n        \
                   ports:\n        - containerPort: 0x50\n";
        let docs = split(out);
        assert_eq!(docs.len(), 2);
        assert_eq!(
            to_json_string(&docs[0]),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"my-map"},"data":{"foo":"bar"}}"#
        );
        assert_eq!(
            docs[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            json!(80)
        );
    }

    #[test]
    fn helm_output_with_comments_and_empty_documents() {
        let out = "---\n# Source: chart/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n\
                   data:\n  flag: on\n  quoted: \"on\"\n  mode: 0777\n  answer: y\n---\n\
                   # Source: chart/templates/empty.yaml\n---\nnull\n---\n~\n--- # a comment\n\
                   apiVersion: v1\nkind: List\nitems:\n- kind: A\n- kind: B\n";
        assert_eq!(
            split(out),
            vec![
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                       "data": {"flag": true, "quoted": "on", "mode": 511, "answer": true}}),
                json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "A"}, {"kind": "B"}]}),
            ]
        );
    }

    #[test]
    fn configmap_scalars_mean_what_go_says() {
        let docs = split(
            "kind: ConfigMap\ndata: {a: on, b: 'on', c: 1e3, d: 1.5, e: 2001-12-14, f: 0x1F, g: ~}\n",
        );
        assert_eq!(
            to_json_string(&docs[0]),
            r#"{"kind":"ConfigMap","data":{"a":true,"b":"on","c":1000,"d":1.5,"e":"2001-12-14","f":31,"g":null}}"#
        );
    }

    #[test]
    fn non_objects_are_passed_on() {
        assert_eq!(
            split("hello\n---\n- a\n---\n42\n"),
            vec![json!("hello"), json!(["a"]), json!(42)]
        );
    }

    #[test]
    fn empty_output_is_no_manifests() {
        assert!(split("").is_empty());
        assert!(split("\n---\n# nothing\n---\n").is_empty());
        assert!(split("   \n").is_empty());
    }

    #[test]
    fn json_stream() {
        assert_eq!(
            split("  {\"kind\":\"A\"}\n{\"kind\":\"B\"} null {\"kind\":\"C\",\"n\":1.0}"),
            vec![
                json!({"kind": "A"}),
                json!({"kind": "B"}),
                json!({"kind": "C", "n": 1.0})
            ]
        );
        // Found by the property tests: floats are read correctly rounded, as Go does (serde_json's
        // default parser was one ULP off here).
        assert_eq!(
            split("{\"n\": -360287970.76464844}"),
            vec![json!({"n": -360_287_970.764_648_44})]
        );
        // A third value that fails is an error: two values made it a JSON stream.
        assert!(matches!(
            split_tool_output("{}{}{", &AliasBudget::for_output(0)),
            Err(ManifestError::Json(_))
        ));
        // If the rest cannot be read as YAML either, the JSON error is reported.
        assert!(matches!(
            split_tool_output("{\"kind\": ", &AliasBudget::for_output(0)),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn json_falls_back_to_yaml_early() {
        // Flow-style YAML starting with `{` is not JSON; apimachinery re-reads it as YAML.
        assert_eq!(
            split("{a: 1}\n---\n{b: on}\n"),
            vec![json!({"a": 1}), json!({"b": true})]
        );
        assert_eq!(
            split("{\"a\": 1}\n---\nb: yes\n---\nc: 3\n"),
            vec![json!({"a": 1}), json!({"b": true}), json!({"c": 3})]
        );
        assert_eq!(
            split("{\"kind\": \"A\"} x: 1\n"),
            vec![json!({"kind": "A"}), json!({"x": 1})]
        );
        assert_eq!(split("{\"a\": 1}\n---\n"), vec![json!({"a": 1})]);
        // The sniffing looks at the first 4096 bytes only.
        assert!(looks_like_json(" \n\t{"));
        assert!(!looks_like_json(&format!(
            "{}{{}}",
            " ".repeat(JSON_SNIFF_BYTES)
        )));
        assert!(!looks_like_json("[1]"));
    }

    #[test]
    fn separator_lines_like_apimachinery() {
        assert_eq!(
            split("a: 1\r\n---\r\nb: 2\r\n"),
            vec![json!({"a": 1}), json!({"b": 2})]
        );
        assert_eq!(
            split("a: 1\n---   \t\nb: 2\n"),
            vec![json!({"a": 1}), json!({"b": 2})]
        );
        for bad in [
            "a: 1\n--- b: 2\n",
            "--- !!map\na: 1\n",
            "a: 1\n----\n",
            "--- |\n  x\n",
        ] {
            let e = split_tool_output(bad, &AliasBudget::for_output(0)).expect_err(bad);
            assert!(matches!(e, ManifestError::Separator { .. }), "{bad:?}: {e}");
        }
        let e =
            split_tool_output("a: 1\n--- b\n", &AliasBudget::for_output(0)).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "failed to unmarshal manifest: invalid Yaml document separator: b (line 2)"
        );
        // Only the first document of a chunk counts, as with yaml.v2's Unmarshal.
        assert_eq!(split("a: 1\n...\nb: 2\n"), vec![json!({"a": 1})]);
    }

    #[test]
    fn errors_name_the_line_in_the_whole_output() {
        let e = split_tool_output(
            "a: 1\n---\nb: 2\n---\nc:\n  - d\n -e\n",
            &AliasBudget::for_output(0),
        )
        .expect_err("invalid");
        assert!(matches!(&e, ManifestError::Yaml(y) if y.line == 7), "{e}");
        assert!(
            e.to_string()
                .starts_with("failed to unmarshal manifest: error converting YAML to JSON: yaml: line 7, column 2: "),
            "{e}"
        );
        // Anchors do not reach across documents.
        assert!(split_tool_output("a: &x 1\n---\nb: *x\n", &AliasBudget::for_output(0)).is_err());
        assert!(split_tool_output("v: .nan\n", &AliasBudget::for_output(0)).is_err());
    }

    #[test]
    fn one_alias_budget_for_all_documents() {
        // Each document materialises ~1 MB from 10 KB of text (go-yaml's ratio allows it); the
        // output's budget (the floor here) runs out in the fifth.
        let doc = format!(
            "kind: ConfigMap\ndata:\n  big: &s {}\n  copies: [{}]\n",
            "x".repeat(10_000),
            vec!["*s"; 100].join(", ")
        );
        let out = vec![doc.as_str(); 40].join("---\n");
        let budget = AliasBudget::for_output(out.len());
        assert_eq!(budget.limit(), crate::yaml::ALIAS_BUDGET_FLOOR);
        let e = split_tool_output(&out, &budget).expect_err("over budget");
        let ManifestError::AliasBudget { document, line, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!((*document, *line), (5, 4 * 5 + 4), "{e}");
        let want = format!(
            "document 5 (line 24): YAML anchors and aliases would materialise more than 4194304 \
             bytes of values (this render's budget: 2 × {} bytes of tool output",
            out.len()
        );
        assert!(e.to_string().starts_with(&want), "{e}");
        // Each document alone is fine, and so are the same documents with room for all.
        assert_eq!(split(&doc).len(), 1);
        let roomy = AliasBudget::for_output(out.len() * 60);
        assert_eq!(
            split_tool_output(&out, &roomy).map(|d| d.len()).ok(),
            Some(40)
        );
    }
}

#[cfg(test)]
mod props;
