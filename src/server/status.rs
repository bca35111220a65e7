//! The one place where errors become gRPC statuses. The message carries the whole error chain
//! (causes joined with `: `), because the Argo CD UI shows only the message; text quoted from a
//! tool's stderr keeps its own line breaks. Codes are precise (Argo's own
//! sidecar answers UNKNOWN for everything; the repo-server only shows the text).

use tonic::{Code, Status};

use super::RequestError;
use crate::metrics::Reason;
use crate::pipeline::PipelineError;
use crate::pipeline::manifest::ManifestError;
use crate::pipeline::render::RenderError;
use crate::pipeline::render::deps::FetchCause;
use crate::pipeline::render::tool::ToolError;
use crate::pipeline::substitute::StageError;
use crate::protocol::stream::StreamError;
use crate::protocol::trees::TreeError;
use crate::protocol::unpack::UnpackError;
use crate::secrets::ReadError;
use crate::secrets::avp_secret::KubeError;
use crate::substitute::Problem;

/// Every variant is named: a new error gets a code someone chose, not a fallback.
fn code(err: &RequestError) -> Code {
    match err {
        RequestError::Stream(e) => stream_code(e),
        RequestError::Unpack(e) => unpack_code(e),
        RequestError::Tree(e) => tree_code(e),
        RequestError::AppPath(_) => Code::InvalidArgument,
        RequestError::Deadline => Code::DeadlineExceeded,
        RequestError::Busy { .. } => Code::ResourceExhausted,
        RequestError::WorkDir { source, .. } if is_disk_full(source) => Code::ResourceExhausted,
        RequestError::WorkDir { .. } | RequestError::Task { .. } | RequestError::NoCheckout => {
            Code::Internal
        }
        // Another replica (or this one after its restart) can answer.
        RequestError::ShuttingDown => Code::Unavailable,
        RequestError::Pipeline(e) => match e {
            PipelineError::NotSupported { .. } => Code::FailedPrecondition,
            PipelineError::Discovery(_) | PipelineError::Parameters(_) => Code::Unknown,
            PipelineError::Render(r) => render_code(r),
            PipelineError::Substitute(e) => stage_code(e),
        },
    }
}

fn stream_code(e: &StreamError) -> Code {
    match e {
        StreamError::TooLarge { .. } => Code::ResourceExhausted,
        StreamError::Transport(_) => Code::Cancelled,
        StreamError::Io(e) if is_disk_full(e) => Code::ResourceExhausted,
        StreamError::Io(_) => Code::Internal,
        StreamError::Empty
        | StreamError::MetadataMissing
        | StreamError::FileMissing
        | StreamError::Checksum { .. } => Code::InvalidArgument,
    }
}

fn unpack_code(e: &UnpackError) -> Code {
    match e {
        UnpackError::TooLarge(_) | UnpackError::TooManyEntries(_) => Code::ResourceExhausted,
        UnpackError::Io { source, .. } if is_disk_full(source) => Code::ResourceExhausted,
        UnpackError::Io { .. } => Code::Internal,
        UnpackError::Corrupt(_)
        | UnpackError::IllegalPath(_)
        | UnpackError::IllegalSymlink { .. }
        | UnpackError::PathTooLong(_) => Code::InvalidArgument,
    }
}

fn tree_code(e: &TreeError) -> Code {
    match e {
        TreeError::Unpack(u) => unpack_code(u),
        TreeError::Io { source, .. } if is_disk_full(source) => Code::ResourceExhausted,
        TreeError::Io { .. } | TreeError::Task(_) | TreeError::Unverified => Code::Internal,
    }
}

fn render_code(e: &RenderError) -> Code {
    match e {
        RenderError::InvalidEnv { .. } | RenderError::HelmRefused(_) => Code::InvalidArgument,
        RenderError::Tool(t) => match t {
            ToolError::Deadline { .. } => Code::DeadlineExceeded,
            ToolError::OutputTooLarge { .. } => Code::ResourceExhausted,
            ToolError::Spawn { .. } | ToolError::Io { .. } => Code::Internal,
            // The tool said no: the repository's content (Argo's own sidecar says UNKNOWN).
            ToolError::Failed { .. } => Code::Unknown,
        },
        RenderError::Queued(_) => Code::DeadlineExceeded,
        RenderError::Output { source, .. } | RenderError::File { source, .. } => {
            manifest_code(source)
        }
        RenderError::Kustomization { .. } | RenderError::NoManifests(_) => Code::Unknown,
        RenderError::NotBuiltin(_) => Code::FailedPrecondition,
        RenderError::Io { .. } => Code::Internal,
        RenderError::Checkout(t) => tree_code(t),
        RenderError::Dependency(e) => dependency_code(&e.cause),
    }
}

fn dependency_code(cause: &FetchCause) -> Code {
    match cause {
        FetchCause::Denied(_) | FetchCause::OutsideRepository => Code::PermissionDenied,
        FetchCause::Deadline => Code::DeadlineExceeded,
        FetchCause::Unreachable => Code::Unavailable,
        FetchCause::NotFound => Code::NotFound,
        FetchCause::Auth | FetchCause::Tls | FetchCause::Off(_) | FetchCause::LockOutOfSync => {
            Code::FailedPrecondition
        }
        // helm said no for another reason: the repository's content, as for other tool errors.
        FetchCause::Failed => Code::Unknown,
    }
}

fn manifest_code(e: &ManifestError) -> Code {
    match e {
        // The render's limits, not a malformed request: the output is valid YAML (Argo CD
        // would accept it), it just costs more than one render may (like output size).
        ManifestError::AliasBudget { .. } => Code::ResourceExhausted,
        ManifestError::Yaml(_) | ManifestError::Json(_) | ManifestError::Separator { .. } => {
            Code::Unknown
        }
    }
}

fn stage_code(e: &StageError) -> Code {
    match e {
        StageError::PathDenied { .. } | StageError::Refused(_) | StageError::Leak { .. } => {
            Code::PermissionDenied
        }
        StageError::ConfigSecret(KubeError::NotAllowed { .. }) => Code::PermissionDenied,
        StageError::ConfigSecret(
            KubeError::BadName(_)
            | KubeError::Api { .. }
            | KubeError::Setup(_)
            | KubeError::Status { .. }
            | KubeError::Decode { .. },
        ) => Code::FailedPrecondition,
        StageError::Deadline { .. } => Code::DeadlineExceeded,
        StageError::TooManyReads { .. } => Code::ResourceExhausted,
        // A path template the request's values cannot fill (e.g. `../x` in an env value).
        StageError::PathTemplate(_) => Code::InvalidArgument,
        StageError::Substitute(s) => s
            .problems
            .iter()
            .filter_map(problem_code)
            .min_by_key(|c| PROBLEM_CODE_RANK.iter().position(|r| r == c))
            .unwrap_or(Code::FailedPrecondition),
        StageError::NoSource { .. }
        | StageError::CliSecret { .. }
        | StageError::Settings(_)
        | StageError::ConfigSecretsDisabled(_)
        | StageError::Config { .. }
        | StageError::Client(_)
        | StageError::Output { .. } => Code::FailedPrecondition,
    }
}

/// When a substitution has several problems with their own codes, the first of these wins.
const PROBLEM_CODE_RANK: [Code; 3] = [
    Code::ResourceExhausted,
    Code::InvalidArgument,
    Code::PermissionDenied,
];

/// A problem's own code; `None`: the render's inputs are not usable as they are
/// (FAILED_PRECONDITION, as for a missing secret).
fn problem_code(p: &Problem) -> Option<Code> {
    match p {
        // `yamlParse` spent the rest of the render's alias budget.
        Problem::AliasBudget { .. } => Some(Code::ResourceExhausted),
        Problem::PathTemplate(_) => Some(Code::InvalidArgument),
        Problem::Read(r) => match r {
            // Vault's description of the mount, or its answer, showed the read is not a
            // secret's (see `secrets::mounts`).
            ReadError::Refused(_) | ReadError::OwnCredentials(_) => Some(Code::PermissionDenied),
            ReadError::NotFound(_)
            | ReadError::MissingDataSegment(_)
            | ReadError::VersionDeleted { .. }
            | ReadError::PermissionDenied(_)
            | ReadError::Backend { .. } => None,
        },
        Problem::UnsupportedKvVersion(_)
        | Problem::PathDisallowed(_)
        | Problem::RemoveMissingNotAllowed
        | Problem::NotFetched(_)
        | Problem::MissingValue(_)
        | Problem::UnknownModifier { .. }
        | Problem::EmptyModifier(_)
        | Problem::ModifierFailed { .. }
        | Problem::NullValue(_)
        | Problem::NotConvertible { .. } => None,
    }
}

/// The request's `reason` label: what an operator would look at first, from a fixed set
/// ([`Reason`]), decided here next to the code so both read the same error the same way.
/// Every variant is named, as in [`code`].
pub(crate) fn reason(err: &RequestError) -> Reason {
    match err {
        RequestError::Stream(e) => match e {
            StreamError::TooLarge { .. } => Reason::TooLarge,
            StreamError::Transport(_) => Reason::Cancelled,
            StreamError::Io(e) if is_disk_full(e) => Reason::DiskFull,
            StreamError::Io(_) => Reason::Internal,
            StreamError::Empty
            | StreamError::MetadataMissing
            | StreamError::FileMissing
            | StreamError::Checksum { .. } => Reason::BadRequest,
        },
        RequestError::Unpack(e) => unpack_reason(e),
        RequestError::Tree(e) => tree_reason(e),
        RequestError::AppPath(_) => Reason::BadRequest,
        RequestError::Deadline => Reason::Deadline,
        RequestError::Busy { .. } => Reason::Busy,
        RequestError::WorkDir { source, .. } if is_disk_full(source) => Reason::DiskFull,
        RequestError::WorkDir { .. } | RequestError::Task { .. } | RequestError::NoCheckout => {
            Reason::Internal
        }
        RequestError::ShuttingDown => Reason::ShuttingDown,
        RequestError::Pipeline(e) => match e {
            PipelineError::NotSupported { .. } => Reason::NotSupported,
            PipelineError::Discovery(_) | PipelineError::Parameters(_) => Reason::PluginCommand,
            PipelineError::Render(r) => render_reason(r),
            PipelineError::Substitute(e) => stage_reason(e),
        },
    }
}

fn unpack_reason(e: &UnpackError) -> Reason {
    match e {
        UnpackError::TooLarge(_) | UnpackError::TooManyEntries(_) => Reason::TooLarge,
        UnpackError::Io { source, .. } if is_disk_full(source) => Reason::DiskFull,
        UnpackError::Io { .. } => Reason::Internal,
        UnpackError::Corrupt(_)
        | UnpackError::IllegalPath(_)
        | UnpackError::IllegalSymlink { .. }
        | UnpackError::PathTooLong(_) => Reason::BadRequest,
    }
}

/// As [`tree_code`]: extraction's own reasons, else the disk or us.
fn tree_reason(e: &TreeError) -> Reason {
    match e {
        TreeError::Unpack(u) => unpack_reason(u),
        TreeError::Io { source, .. } if is_disk_full(source) => Reason::DiskFull,
        TreeError::Io { .. } | TreeError::Task(_) | TreeError::Unverified => Reason::Internal,
    }
}

fn render_reason(e: &RenderError) -> Reason {
    match e {
        RenderError::InvalidEnv { .. }
        | RenderError::HelmRefused(_)
        | RenderError::Kustomization { .. } => Reason::InvalidInput,
        RenderError::Tool(t) => match t {
            ToolError::Deadline { .. } => Reason::Deadline,
            ToolError::OutputTooLarge { .. } => Reason::TooLarge,
            ToolError::Spawn { .. } | ToolError::Io { .. } => Reason::Internal,
            ToolError::Failed { .. } => Reason::ToolFailed,
        },
        RenderError::Queued(_) => Reason::RenderQueue,
        RenderError::Output { source, .. } | RenderError::File { source, .. } => match source {
            ManifestError::AliasBudget { .. } => Reason::TooLarge,
            ManifestError::Yaml(_) | ManifestError::Json(_) | ManifestError::Separator { .. } => {
                Reason::InvalidManifests
            }
        },
        RenderError::NoManifests(_) => Reason::InvalidManifests,
        RenderError::NotBuiltin(_) => Reason::NotSupported,
        RenderError::Io { .. } => Reason::Internal,
        RenderError::Checkout(t) => tree_reason(t),
        RenderError::Dependency(e) => match e.cause {
            FetchCause::Denied(_) | FetchCause::OutsideRepository => Reason::PolicyDenied,
            FetchCause::Deadline => Reason::Deadline,
            FetchCause::NotFound
            | FetchCause::Unreachable
            | FetchCause::Auth
            | FetchCause::Tls
            | FetchCause::Off(_)
            | FetchCause::LockOutOfSync
            | FetchCause::Failed => Reason::ChartDependency,
        },
    }
}

fn stage_reason(e: &StageError) -> Reason {
    match e {
        StageError::PathDenied { .. } | StageError::Refused(_) | StageError::Leak { .. } => {
            Reason::PolicyDenied
        }
        StageError::ConfigSecret(KubeError::NotAllowed { .. }) => Reason::PolicyDenied,
        StageError::ConfigSecret(_) | StageError::CliSecret { .. } => Reason::ConfigSecret,
        StageError::Deadline { .. } => Reason::Deadline,
        StageError::TooManyReads { .. } => Reason::TooLarge,
        StageError::PathTemplate(_) | StageError::Output { .. } => Reason::InvalidInput,
        StageError::Client(_) => Reason::VaultLogin,
        StageError::NoSource { .. }
        | StageError::Settings(_)
        | StageError::ConfigSecretsDisabled(_)
        | StageError::Config { .. } => Reason::Config,
        // The most actionable problem wins: Vault down before a denial before a missing
        // secret before a placeholder typo.
        StageError::Substitute(s) => s
            .problems
            .iter()
            .map(problem_reason)
            .min_by_key(|r| {
                PROBLEM_REASON_RANK
                    .iter()
                    .position(|x| x == r)
                    .unwrap_or(usize::MAX)
            })
            .unwrap_or(Reason::Placeholder),
    }
}

/// The order in which a substitution's problems decide its reason (unlisted: last).
const PROBLEM_REASON_RANK: [Reason; 6] = [
    Reason::VaultError,
    Reason::SecretDenied,
    Reason::PolicyDenied,
    Reason::SecretNotFound,
    Reason::TooLarge,
    Reason::InvalidInput,
];

fn problem_reason(p: &Problem) -> Reason {
    match p {
        Problem::AliasBudget { .. } => Reason::TooLarge,
        Problem::PathTemplate(_) => Reason::InvalidInput,
        Problem::PathDisallowed(_) => Reason::PolicyDenied,
        Problem::Read(r) => match r {
            ReadError::Refused(_) | ReadError::OwnCredentials(_) => Reason::PolicyDenied,
            ReadError::PermissionDenied(_) => Reason::SecretDenied,
            ReadError::NotFound(_)
            | ReadError::MissingDataSegment(_)
            | ReadError::VersionDeleted { .. } => Reason::SecretNotFound,
            ReadError::Backend { .. } => Reason::VaultError,
        },
        Problem::UnsupportedKvVersion(_)
        | Problem::RemoveMissingNotAllowed
        | Problem::NotFetched(_)
        | Problem::MissingValue(_)
        | Problem::UnknownModifier { .. }
        | Problem::EmptyModifier(_)
        | Problem::ModifierFailed { .. }
        | Problem::NullValue(_)
        | Problem::NotConvertible { .. } => Reason::Placeholder,
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
pub(crate) fn to_status(prefix: &str, err: &RequestError) -> Status {
    Status::new(
        code(err),
        format!("{prefix}: {}", crate::errors::chain(err)),
    )
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

#[cfg(test)]
mod request_codes {
    use super::*;

    #[test]
    fn a_full_disk_is_the_operators_capacity() {
        let work_dir = |kind| RequestError::WorkDir {
            path: "/w".into(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(
            code(&work_dir(std::io::ErrorKind::StorageFull)),
            Code::ResourceExhausted
        );
        assert_eq!(
            code(&work_dir(std::io::ErrorKind::PermissionDenied)),
            Code::Internal
        );
        assert_eq!(code(&RequestError::ShuttingDown), Code::Unavailable);
        assert_eq!(
            reason(&work_dir(std::io::ErrorKind::StorageFull)),
            Reason::DiskFull
        );
        assert_eq!(reason(&RequestError::ShuttingDown), Reason::ShuttingDown);
        let status = to_status(
            "error generating manifests",
            &work_dir(std::io::ErrorKind::StorageFull),
        );
        assert!(
            status
                .message()
                .starts_with("error generating manifests: work dir /w: "),
            "{status:?}"
        );
    }
}

#[cfg(test)]
mod request_reasons {
    use super::*;
    use crate::substitute::{ObjectRef, Site, SubstituteError};

    fn substitution(problems: Vec<Problem>) -> RequestError {
        RequestError::Pipeline(PipelineError::Substitute(StageError::Substitute(
            SubstituteError {
                object: ObjectRef {
                    index: 0,
                    kind: "Secret".into(),
                    namespace: String::new(),
                    name: "s".into(),
                },
                problems,
            },
        )))
    }

    /// The label says what to look at: Vault down outranks a denial, which outranks a typo.
    #[test]
    fn the_most_actionable_problem_names_the_reason() {
        let backend = Problem::Read(ReadError::Backend {
            path: "kv/data/x".into(),
            message: "cannot connect to vault".into(),
        });
        let denied = Problem::Read(ReadError::PermissionDenied("kv/data/x".into()));
        let missing = Problem::MissingValue(Site {
            placeholder: "path:kv/data/x#k".into(),
            field: "k".into(),
            original: None,
        });
        assert_eq!(
            reason(&substitution(vec![missing.clone(), denied.clone()])),
            Reason::SecretDenied
        );
        assert_eq!(
            reason(&substitution(vec![denied, backend, missing.clone()])),
            Reason::VaultError
        );
        assert_eq!(reason(&substitution(vec![missing])), Reason::Placeholder);
        let queued = RequestError::Pipeline(PipelineError::Render(RenderError::Queued(4)));
        assert_eq!(reason(&queued), Reason::RenderQueue);
        assert_eq!(reason(&RequestError::Busy { limit: 1 }), Reason::Busy);
        assert_eq!(reason(&RequestError::Deadline), Reason::Deadline);
        // Every reason has a distinct label value.
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }
}
