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

use serde_json::Value;

use crate::yaml::{self, YamlError};

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
}

/// The values in a tool's stdout, in order, without empty and `null` documents.
pub fn split_tool_output(stdout: &str) -> Result<Vec<Value>, ManifestError> {
    let mut manifests = Vec::new();
    if !looks_like_json(stdout) {
        for document in YamlChunks::new(stdout, 0) {
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
                let mut documents = YamlChunks::new(stdout, offset + blanks);
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
    failed: bool,
}

impl<'a> YamlChunks<'a> {
    fn new(text: &'a str, pos: usize) -> Self {
        let line = text[..pos].matches('\n').count();
        Self {
            text,
            pos,
            line,
            failed: false,
        }
    }

    fn parse(
        &mut self,
        start: usize,
        end: usize,
        first_line: usize,
    ) -> Result<Value, ManifestError> {
        yaml::parse_first_document(&self.text[start..end]).map_err(|mut error| {
            self.failed = true;
            error.line += first_line;
            ManifestError::Yaml(error)
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
            let end = self.text[start..]
                .find('\n')
                .map_or(self.text.len(), |i| start + i + 1);
            let line = &self.text[start..end];
            self.pos = end;
            self.line += 1;
            let Some(after_marker) = line.strip_prefix("---") else {
                chunk.get_or_insert((start, self.line - 1));
                continue;
            };
            let trailer = after_marker.trim();
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
