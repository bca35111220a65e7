//! The one place where errors become gRPC statuses. The message carries the whole error chain
//! (causes joined with `: `), because the Argo CD UI shows only the message; text quoted from a
//! tool's stderr keeps its own line breaks. Codes are precise (Argo's own
//! sidecar answers UNKNOWN for everything; the repo-server only shows the text).

use tonic::{Code, Status};

use super::RequestError;
use crate::manifest::ManifestError;
use crate::pipeline::PipelineError;
use crate::protocol::stream::StreamError;
use crate::protocol::unpack::UnpackError;
use crate::render::RenderError;
use crate::render::tool::ToolError;
use crate::secrets::ReadError;
use crate::secrets::kube::KubeError;
use crate::substitute::Problem;
use crate::substitute_stage::StageError;

/// `prefix: error: cause: cause`, each source once.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

fn code(err: &RequestError) -> Code {
    match err {
        RequestError::Stream(e) => match e {
            StreamError::TooLarge { .. } => Code::ResourceExhausted,
            StreamError::Transport(_) => Code::Cancelled,
            StreamError::Io(e) if is_disk_full(e) => Code::ResourceExhausted,
            StreamError::Io(_) => Code::Internal,
            _ => Code::InvalidArgument,
        },
        RequestError::Unpack(e) => match e {
            UnpackError::TooLarge(_) | UnpackError::TooManyEntries(_) => Code::ResourceExhausted,
            UnpackError::Io { source, .. } if is_disk_full(source) => Code::ResourceExhausted,
            UnpackError::Io { .. } => Code::Internal,
            _ => Code::InvalidArgument,
        },
        RequestError::AppPath(_) => Code::InvalidArgument,
        RequestError::Deadline => Code::DeadlineExceeded,
        RequestError::Busy { .. } => Code::ResourceExhausted,
        RequestError::Internal(_) => Code::Internal,
        RequestError::Pipeline(e) => match e {
            PipelineError::NotSupported { .. } => Code::FailedPrecondition,
            PipelineError::Discovery(_) | PipelineError::Parameters(_) => Code::Unknown,
            PipelineError::Render(r) => match r {
                RenderError::InvalidEnv { .. } | RenderError::HelmRefused(_) => {
                    Code::InvalidArgument
                }
                RenderError::Tool(ToolError::Deadline { .. }) | RenderError::Queued(_) => {
                    Code::DeadlineExceeded
                }
                // The render's limits, not a malformed request: the output is valid YAML (Argo
                // CD would accept it), it just costs more than one render may (like output size).
                RenderError::Tool(ToolError::OutputTooLarge { .. })
                | RenderError::Output {
                    source: ManifestError::AliasBudget { .. },
                    ..
                } => Code::ResourceExhausted,
                RenderError::Tool(ToolError::Spawn { .. }) | RenderError::Io { .. } => {
                    Code::Internal
                }
                _ => Code::Unknown,
            },
            PipelineError::Substitute(e) => match e {
                StageError::PathDenied { .. }
                | StageError::Refused(_)
                | StageError::Leak { .. }
                | StageError::ConfigSecret(KubeError::NotAllowed { .. }) => Code::PermissionDenied,
                StageError::Deadline { .. } => Code::DeadlineExceeded,
                StageError::TooManyReads { .. } => Code::ResourceExhausted,
                // `yamlParse` spent the rest of the render's alias budget.
                StageError::Substitute(s)
                    if s.problems
                        .iter()
                        .any(|p| matches!(p, Problem::AliasBudget { .. })) =>
                {
                    Code::ResourceExhausted
                }
                // A path template the request's values cannot fill (e.g. `../x` in an env value).
                StageError::PathTemplate(_) => Code::InvalidArgument,
                StageError::Substitute(s)
                    if s.problems
                        .iter()
                        .any(|p| matches!(p, Problem::PathTemplate(_))) =>
                {
                    Code::InvalidArgument
                }
                // Vault's description of the mount, or its answer, showed the read is not a
                // secret's (see `secrets::mounts`).
                StageError::Substitute(s)
                    if s.problems.iter().any(|p| {
                        matches!(
                            p,
                            Problem::Read(ReadError::Refused(_) | ReadError::OwnCredentials(_))
                        )
                    }) =>
                {
                    Code::PermissionDenied
                }
                _ => Code::FailedPrecondition,
            },
        },
    }
}

/// The work dir's file system is full, or a file-size limit was hit: the operator's capacity,
/// not a broken request, so retrying later (or elsewhere) may work.
fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// Builds the status for a failed RPC; `prefix` is Argo's (e.g. `error generating manifests`).
pub fn to_status(prefix: &str, err: &RequestError) -> Status {
    Status::new(code(err), format!("{prefix}: {}", chain(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substitute::{ObjectRef, Site, SubstituteError};
    use crate::yaml::AliasBudget;

    fn exceeded() -> crate::yaml::BudgetExceeded {
        let budget = AliasBudget::for_output(0);
        let text = format!("a: &a {}\nb: [*a, *a, *a, *a, *a]\n", "x".repeat(1 << 20));
        match crate::yaml::parse_documents_within(&text, &budget) {
            Err(crate::yaml::YamlError {
                kind: crate::yaml::YamlErrorKind::AliasBudget(e),
                ..
            }) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alias_budget_is_resource_exhausted() {
        let render = RequestError::Pipeline(PipelineError::Render(RenderError::Output {
            tool: "helm",
            source: ManifestError::AliasBudget {
                document: 3,
                line: 40,
                source: exceeded(),
            },
        }));
        let status = to_status("error generating manifests", &render);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "error generating manifests: helm output: document 3 (line 40): YAML anchors and \
             aliases would materialise more than 4194304 bytes of values (this render's budget: \
             2 × 0 bytes of tool output, at least 4194304 and at most 67108864; node estimate 64 \
             bytes + string lengths)"
        );
        let substitute = RequestError::Pipeline(PipelineError::Substitute(StageError::Substitute(
            SubstituteError {
                object: ObjectRef {
                    index: 0,
                    kind: "ConfigMap".into(),
                    namespace: String::new(),
                    name: "cm".into(),
                },
                problems: vec![Problem::AliasBudget {
                    error: exceeded(),
                    site: Site {
                        placeholder: "path:secret/data/x#doc".into(),
                        field: "doc".into(),
                        original: Some("<path:secret/data/x#doc | yamlParse>".into()),
                    },
                }],
            },
        )));
        let status = to_status("error generating manifests", &substitute);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains(
                "ConfigMap/cm:\nyamlParse: YAML anchors and aliases would materialise more than"
            ),
            "{}",
            status.message()
        );
    }
}
