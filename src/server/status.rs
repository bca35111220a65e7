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

/// How an error is answered: its gRPC code and the request's `reason` label (what an operator
/// looks at first, from the fixed set [`Reason`]), decided in one match so both read an error
/// the same way. Every variant is named: a new error gets a code and a reason someone chose,
/// not a fallback.
type Verdict = (Code, Reason);

fn verdict(err: &RequestError) -> Verdict {
    match err {
        RequestError::Stream(e) => stream_verdict(e),
        RequestError::Unpack(e) => unpack_verdict(e),
        RequestError::Tree(e) => tree_verdict(e),
        RequestError::AppPath(_) => (Code::InvalidArgument, Reason::BadRequest),
        RequestError::Deadline => (Code::DeadlineExceeded, Reason::Deadline),
        RequestError::Busy { .. } => (Code::ResourceExhausted, Reason::Busy),
        RequestError::WorkDir { source, .. } if is_disk_full(source) => {
            (Code::ResourceExhausted, Reason::DiskFull)
        }
        RequestError::WorkDir { .. } | RequestError::Task { .. } | RequestError::NoCheckout => {
            (Code::Internal, Reason::Internal)
        }
        // Another replica (or this one after its restart) can answer.
        RequestError::ShuttingDown => (Code::Unavailable, Reason::ShuttingDown),
        RequestError::Pipeline(e) => match e {
            PipelineError::NotSupported { .. } => (Code::FailedPrecondition, Reason::NotSupported),
            PipelineError::Discovery(_) | PipelineError::Parameters(_) => {
                (Code::Unknown, Reason::PluginCommand)
            }
            PipelineError::Render(r) => render_verdict(r),
            PipelineError::Substitute(e) => stage_verdict(e),
        },
    }
}

fn stream_verdict(e: &StreamError) -> Verdict {
    match e {
        StreamError::TooLarge { .. } => (Code::ResourceExhausted, Reason::TooLarge),
        StreamError::Transport(_) => (Code::Cancelled, Reason::Cancelled),
        StreamError::Io(e) if is_disk_full(e) => (Code::ResourceExhausted, Reason::DiskFull),
        StreamError::Io(_) => (Code::Internal, Reason::Internal),
        StreamError::Empty
        | StreamError::MetadataMissing
        | StreamError::FileMissing
        | StreamError::Checksum { .. } => (Code::InvalidArgument, Reason::BadRequest),
    }
}

fn unpack_verdict(e: &UnpackError) -> Verdict {
    match e {
        UnpackError::TooLarge(_) | UnpackError::TooManyEntries(_) => {
            (Code::ResourceExhausted, Reason::TooLarge)
        }
        UnpackError::Io { source, .. } if is_disk_full(source) => {
            (Code::ResourceExhausted, Reason::DiskFull)
        }
        UnpackError::Io { .. } => (Code::Internal, Reason::Internal),
        UnpackError::Corrupt(_)
        | UnpackError::IllegalPath(_)
        | UnpackError::IllegalSymlink { .. }
        | UnpackError::PathTooLong(_) => (Code::InvalidArgument, Reason::BadRequest),
    }
}

/// Extraction's own verdicts, else the disk or us.
fn tree_verdict(e: &TreeError) -> Verdict {
    match e {
        TreeError::Unpack(u) => unpack_verdict(u),
        TreeError::Io { source, .. } if is_disk_full(source) => {
            (Code::ResourceExhausted, Reason::DiskFull)
        }
        TreeError::Io { .. } | TreeError::Task(_) | TreeError::Unverified => {
            (Code::Internal, Reason::Internal)
        }
    }
}

fn render_verdict(e: &RenderError) -> Verdict {
    match e {
        RenderError::InvalidEnv { .. } | RenderError::HelmRefused(_) => {
            (Code::InvalidArgument, Reason::InvalidInput)
        }
        RenderError::Kustomization { .. } => (Code::Unknown, Reason::InvalidInput),
        RenderError::Tool(t) => match t {
            ToolError::Deadline { .. } => (Code::DeadlineExceeded, Reason::Deadline),
            ToolError::OutputTooLarge { .. } => (Code::ResourceExhausted, Reason::TooLarge),
            ToolError::Spawn { .. } | ToolError::Io { .. } => (Code::Internal, Reason::Internal),
            // The tool said no: the repository's content (Argo's own sidecar says UNKNOWN).
            ToolError::Failed { .. } => (Code::Unknown, Reason::ToolFailed),
        },
        RenderError::Queued(_) => (Code::DeadlineExceeded, Reason::RenderQueue),
        RenderError::Output { source, .. } | RenderError::File { source, .. } => {
            manifest_verdict(source)
        }
        RenderError::NoManifests(_) => (Code::Unknown, Reason::InvalidManifests),
        RenderError::NotBuiltin(_) => (Code::FailedPrecondition, Reason::NotSupported),
        RenderError::Io { .. } => (Code::Internal, Reason::Internal),
        RenderError::Checkout(t) => tree_verdict(t),
        RenderError::Dependency(e) => dependency_verdict(&e.cause),
    }
}

fn dependency_verdict(cause: &FetchCause) -> Verdict {
    match cause {
        FetchCause::Denied(_) | FetchCause::OutsideRepository => {
            (Code::PermissionDenied, Reason::PolicyDenied)
        }
        FetchCause::Deadline => (Code::DeadlineExceeded, Reason::Deadline),
        FetchCause::Unreachable => (Code::Unavailable, Reason::ChartDependency),
        FetchCause::NotFound => (Code::NotFound, Reason::ChartDependency),
        FetchCause::Auth | FetchCause::Tls | FetchCause::Off(_) | FetchCause::LockOutOfSync => {
            (Code::FailedPrecondition, Reason::ChartDependency)
        }
        // helm said no for another reason: the repository's content, as for other tool errors.
        FetchCause::Failed => (Code::Unknown, Reason::ChartDependency),
    }
}

fn manifest_verdict(e: &ManifestError) -> Verdict {
    match e {
        // The render's limits, not a malformed request: the output is valid YAML (Argo CD
        // would accept it), it just costs more than one render may (like output size).
        ManifestError::AliasBudget { .. } => (Code::ResourceExhausted, Reason::TooLarge),
        ManifestError::Yaml(_) | ManifestError::Json(_) | ManifestError::Separator { .. } => {
            (Code::Unknown, Reason::InvalidManifests)
        }
    }
}

fn stage_verdict(e: &StageError) -> Verdict {
    match e {
        StageError::PathDenied { .. } | StageError::Refused(_) | StageError::Leak { .. } => {
            (Code::PermissionDenied, Reason::PolicyDenied)
        }
        StageError::ConfigSecret(KubeError::NotAllowed { .. }) => {
            (Code::PermissionDenied, Reason::PolicyDenied)
        }
        StageError::ConfigSecret(
            KubeError::BadName(_)
            | KubeError::Api { .. }
            | KubeError::Setup(_)
            | KubeError::Status { .. }
            | KubeError::Decode { .. },
        )
        | StageError::CliSecret { .. } => (Code::FailedPrecondition, Reason::ConfigSecret),
        StageError::Deadline { .. } => (Code::DeadlineExceeded, Reason::Deadline),
        StageError::TooManyReads { .. } => (Code::ResourceExhausted, Reason::TooLarge),
        // A path template the request's values cannot fill (e.g. `../x` in an env value).
        StageError::PathTemplate(_) => (Code::InvalidArgument, Reason::InvalidInput),
        StageError::Output { .. } => (Code::FailedPrecondition, Reason::InvalidInput),
        StageError::Client(_) => (Code::FailedPrecondition, Reason::VaultLogin),
        StageError::NoSource { .. }
        | StageError::Settings(_)
        | StageError::ConfigSecretsDisabled(_)
        | StageError::Config { .. } => (Code::FailedPrecondition, Reason::Config),
        StageError::Substitute(s) => substitution_verdict(&s.problems),
    }
}

/// A substitution with several problems: each ranking picks the first of its list, so the
/// code is the most specific one and the reason the most actionable one (Vault down before a
/// denial before a missing secret before a placeholder typo).
fn substitution_verdict(problems: &[Problem]) -> Verdict {
    let verdicts: Vec<(Option<Code>, Reason)> = problems.iter().map(problem_verdict).collect();
    let code = verdicts
        .iter()
        .filter_map(|(c, _)| *c)
        .min_by_key(|c| PROBLEM_CODE_RANK.iter().position(|r| r == c))
        .unwrap_or(Code::FailedPrecondition);
    let reason = verdicts
        .iter()
        .map(|(_, r)| *r)
        .min_by_key(|r| {
            PROBLEM_REASON_RANK
                .iter()
                .position(|x| x == r)
                .unwrap_or(usize::MAX)
        })
        .unwrap_or(Reason::Placeholder);
    (code, reason)
}

/// When a substitution has several problems with their own codes, the first of these wins.
const PROBLEM_CODE_RANK: [Code; 3] = [
    Code::ResourceExhausted,
    Code::InvalidArgument,
    Code::PermissionDenied,
];

/// The order in which a substitution's problems decide its reason (unlisted: last).
const PROBLEM_REASON_RANK: [Reason; 6] = [
    Reason::VaultError,
    Reason::SecretDenied,
    Reason::PolicyDenied,
    Reason::SecretNotFound,
    Reason::TooLarge,
    Reason::InvalidInput,
];

/// A problem's own code (`None`: the render's inputs are not usable as they are,
/// FAILED_PRECONDITION as for a missing secret) and reason.
fn problem_verdict(p: &Problem) -> (Option<Code>, Reason) {
    match p {
        // `yamlParse` spent the rest of the render's alias budget.
        Problem::AliasBudget { .. } => (Some(Code::ResourceExhausted), Reason::TooLarge),
        Problem::PathTemplate(_) => (Some(Code::InvalidArgument), Reason::InvalidInput),
        Problem::PathDisallowed(_) => (None, Reason::PolicyDenied),
        Problem::Read(r) => match r {
            // Vault's description of the mount, or its answer, showed the read is not a
            // secret's (see `secrets::mounts`).
            ReadError::Refused(_) | ReadError::OwnCredentials(_) => {
                (Some(Code::PermissionDenied), Reason::PolicyDenied)
            }
            ReadError::PermissionDenied(_) => (None, Reason::SecretDenied),
            ReadError::NotFound(_)
            | ReadError::MissingDataSegment(_)
            | ReadError::VersionDeleted { .. } => (None, Reason::SecretNotFound),
            ReadError::Backend { .. } => (None, Reason::VaultError),
        },
        Problem::UnsupportedKvVersion(_)
        | Problem::RemoveMissingNotAllowed
        | Problem::NotFetched(_)
        | Problem::MissingValue(_)
        | Problem::UnknownModifier { .. }
        | Problem::EmptyModifier(_)
        | Problem::ModifierFailed { .. }
        | Problem::NullValue(_)
        | Problem::NotConvertible { .. } => (None, Reason::Placeholder),
    }
}

/// The request's `reason` label (see [`verdict`]).
pub(crate) fn reason(err: &RequestError) -> Reason {
    verdict(err).1
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
        verdict(err).0,
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
            verdict(&work_dir(std::io::ErrorKind::StorageFull)).0,
            Code::ResourceExhausted
        );
        assert_eq!(
            verdict(&work_dir(std::io::ErrorKind::PermissionDenied)).0,
            Code::Internal
        );
        assert_eq!(verdict(&RequestError::ShuttingDown).0, Code::Unavailable);
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
