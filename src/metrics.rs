//! Process-wide metrics in Prometheus conventions, for `/metrics` (text format 0.0.4) and a
//! periodic log line.
//!
//! A small registry of our own instead of a client crate: a handful of labelled counters,
//! gauges and histograms, written out by hand, is all `/metrics` needs, and keeping it here
//! keeps the rule that labels never carry request data checkable in one file. Every label value
//! is a `&'static str` from a fixed enum below ([`Reason`], [`VaultOp`], [`VaultResult`],
//! [`ToolResult`], ...) or a plugin name from the operator's configuration (interned by
//! [`plugin_label`], capped): no app name, path, project or value can become a series.
//!
//! Units are base units (`_seconds`, `_bytes`), counters end in `_total`. Every metric is listed
//! with its labels in docs/metrics.md; a test below keeps that table and [`FAMILIES`] together.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A poisoned lock still holds consistent series (every update is one map operation).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `name{a="x",b="y"}` (or `name`), label values escaped as the text format requires.
fn series_name(out: &mut String, name: &str, labels: &[&str], values: &[&str], extra: &str) {
    out.push_str(name);
    if labels.is_empty() && extra.is_empty() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (l, v) in labels.iter().zip(values) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{l}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !extra.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str(extra);
    }
    out.push('}');
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One metric family: how `/metrics` and the log line see it.
pub trait Family: Sync {
    fn name(&self) -> &'static str;
    /// Appends HELP, TYPE and every series.
    fn render(&self, out: &mut String);
    /// The sum over all series, for the log line (`None`: not a counter).
    fn total(&self) -> Option<u64> {
        None
    }
}

/// A counter with labels `L` (`N` of them); `Counter<0>` is a plain counter.
pub struct Counter<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    series: Mutex<BTreeMap<[&'static str; N], u64>>,
}

impl<const N: usize> Counter<N> {
    pub const fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, values: [&'static str; N]) {
        self.add(values, 1);
    }

    pub fn add(&self, values: [&'static str; N], n: u64) {
        *lock(&self.series).entry(values).or_insert(0) += n;
    }

    /// Creates the series at 0, so that its first event shows as an increase to `rate()` and
    /// `increase()` (a series born at 1 does not).
    pub fn init(&self, values: [&'static str; N]) {
        lock(&self.series).entry(values).or_insert(0);
    }

    pub fn get(&self, values: [&'static str; N]) -> u64 {
        lock(&self.series).get(&values).copied().unwrap_or(0)
    }
}

impl<const N: usize> Family for Counter<N> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        if N == 0 {
            // A plain counter exists from the start.
            self.init([""; N]);
        }
        for (values, n) in lock(&self.series).iter() {
            series_name(out, self.name, &self.labels, values, "");
            let _ = writeln!(out, " {n}");
        }
    }

    fn total(&self) -> Option<u64> {
        Some(lock(&self.series).values().sum())
    }
}

/// A gauge with labels; values are whole numbers (counts of things, bytes, 0/1 states).
pub struct Gauge<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    series: Mutex<BTreeMap<[&'static str; N], i64>>,
    /// A plain gauge shows 0 before it is set, unless it is `lazy`.
    lazy: bool,
}

impl<const N: usize> Gauge<N> {
    pub const fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
            lazy: false,
        }
    }

    /// A gauge absent until set: a state that may not apply (no Vault backend, no check).
    pub const fn lazy(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
            lazy: true,
        }
    }

    pub fn set(&self, values: [&'static str; N], v: i64) {
        lock(&self.series).insert(values, v);
    }

    pub fn add(&self, values: [&'static str; N], delta: i64) {
        *lock(&self.series).entry(values).or_insert(0) += delta;
    }

    pub fn get(&self, values: [&'static str; N]) -> i64 {
        lock(&self.series).get(&values).copied().unwrap_or(0)
    }

    /// +1 now, -1 when the guard drops: things in progress (requests, tool runs, waiters),
    /// right on every path out, cancellation included.
    pub fn track(&'static self, values: [&'static str; N]) -> Tracked<N> {
        self.add(values, 1);
        Tracked {
            gauge: self,
            values,
        }
    }
}

impl<const N: usize> Family for Gauge<N> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        if N == 0 && !self.lazy {
            lock(&self.series).entry([""; N]).or_insert(0);
        }
        for (values, v) in lock(&self.series).iter() {
            series_name(out, self.name, &self.labels, values, "");
            let _ = writeln!(out, " {v}");
        }
    }
}

/// See [`Gauge::track`].
#[must_use = "the gauge goes down when this is dropped"]
pub struct Tracked<const N: usize> {
    gauge: &'static Gauge<N>,
    values: [&'static str; N],
}

impl<const N: usize> Drop for Tracked<N> {
    fn drop(&mut self) {
        self.gauge.add(self.values, -1);
    }
}

/// Bucket bounds (seconds) for requests and tool runs: 5 ms to 2 min (Argo CD's default
/// repo-server timeout is 90 s, a render rarely beats 10 ms).
pub const SLOW_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Bucket bounds (seconds) for Vault calls and waits: 1 ms to 30 s.
pub const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Default)]
struct HistogramSeries {
    /// Observations per bucket (not cumulative); one more for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

/// A histogram of durations in seconds, with labels.
pub struct Histogram<const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    buckets: &'static [f64],
    series: Mutex<BTreeMap<[&'static str; N], HistogramSeries>>,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: [&'static str; N], d: Duration) {
        let secs = d.as_secs_f64();
        let mut series = lock(&self.series);
        let s = series.entry(values).or_default();
        if s.counts.is_empty() {
            s.counts = vec![0; self.buckets.len() + 1];
        }
        let at = self
            .buckets
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(self.buckets.len());
        if let Some(c) = s.counts.get_mut(at) {
            *c += 1;
        }
        s.sum += secs;
    }

    /// Observations so far in the series.
    pub fn count(&self, values: [&'static str; N]) -> u64 {
        lock(&self.series)
            .get(&values)
            .map_or(0, |s| s.counts.iter().sum())
    }
}

impl<const N: usize> Family for Histogram<N> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let mut all: Vec<([&'static str; N], HistogramSeries)> = lock(&self.series)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        if N == 0 && all.is_empty() {
            // A plain histogram exists from the start.
            all.push((
                [""; N],
                HistogramSeries {
                    counts: vec![0; self.buckets.len() + 1],
                    sum: 0.0,
                },
            ));
        }
        let bucket = format!("{}_bucket", self.name);
        for (values, s) in &all {
            let mut cumulative = 0;
            for (i, c) in s.counts.iter().enumerate() {
                cumulative += c;
                let le = match self.buckets.get(i) {
                    Some(le) => format!("le=\"{le}\""),
                    None => "le=\"+Inf\"".to_owned(),
                };
                series_name(out, &bucket, &self.labels, values, &le);
                let _ = writeln!(out, " {cumulative}");
            }
            series_name(out, &format!("{}_sum", self.name), &self.labels, values, "");
            let _ = writeln!(out, " {}", s.sum);
            series_name(
                out,
                &format!("{}_count", self.name),
                &self.labels,
                values,
                "",
            );
            let _ = writeln!(out, " {cumulative}");
        }
    }
}

// --- label values -------------------------------------------------------------------------

/// The four CMP RPCs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    GenerateManifest,
    MatchRepository,
    GetParametersAnnouncement,
    CheckPluginConfiguration,
}

impl Rpc {
    /// The RPC's name, as in the proto and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::GenerateManifest => "GenerateManifest",
            Rpc::MatchRepository => "MatchRepository",
            Rpc::GetParametersAnnouncement => "GetParametersAnnouncement",
            Rpc::CheckPluginConfiguration => "CheckPluginConfiguration",
        }
    }

    /// The prefix Argo CD's own sidecar puts before an error of this RPC.
    pub fn error_prefix(self) -> &'static str {
        match self {
            Rpc::GenerateManifest => "error generating manifests",
            Rpc::MatchRepository => "match repository error",
            Rpc::GetParametersAnnouncement => "get parameters announcement error",
            Rpc::CheckPluginConfiguration => "check plugin configuration error",
        }
    }
}

/// gRPC code names as grpc-go prints them (`codes.Code.String()`), which is what Argo CD's and
/// most gRPC dashboards use for `code`/`grpc_code`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Why a request failed, in a few words an operator can act on (the `reason` label of
/// `avp_sidecar_requests_total`; chosen in `server/status.rs` next to the gRPC code). Each
/// value is documented in docs/metrics.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Ok,
    /// A malformed stream or archive (no metadata, checksum mismatch, unsafe paths).
    BadRequest,
    /// The client went away.
    Cancelled,
    /// A size or count limit: archive, extraction, tool output, alias budget, secret reads.
    TooLarge,
    /// Refused at `--max-concurrent-requests`.
    Busy,
    /// The request's deadline passed (in a tool, in Vault reads, anywhere).
    Deadline,
    /// The deadline passed while waiting for a render slot (`--max-concurrent-renders`).
    RenderQueue,
    /// The work dir's file system is full.
    DiskFull,
    /// A bug or a host problem of ours (work dir, task, spawn).
    Internal,
    ShuttingDown,
    /// The plugin does not handle this app (wrong kind for a built-in).
    NotSupported,
    /// An operator command plugin's discover or parameters command failed.
    PluginCommand,
    /// Plugin settings or env values refused (image, helm args, path templates).
    InvalidInput,
    /// kustomize or helm (or a command plugin's generate) exited with an error.
    ToolFailed,
    /// The tool's output is not manifests (YAML errors, nothing rendered).
    InvalidManifests,
    /// Per-project path policy, leak guard, mount rules or a config Secret not allowed.
    PolicyDenied,
    /// `AVP_SECRET`'s Kubernetes Secret could not be read.
    ConfigSecret,
    /// No backend or invalid Vault settings.
    Config,
    /// Logging in to Vault failed.
    VaultLogin,
    /// Vault unreachable, timed out or answered with an error.
    VaultError,
    /// Vault answered 403 for a secret.
    SecretDenied,
    /// No secret (or version) at a path.
    SecretNotFound,
    /// A placeholder could not be filled (missing key, modifier error).
    Placeholder,
    /// A chart's dependencies could not be fetched or built (not found, auth, TLS, fetching off).
    ChartDependency,
}

impl Reason {
    pub const ALL: [Reason; 24] = [
        Reason::Ok,
        Reason::BadRequest,
        Reason::Cancelled,
        Reason::TooLarge,
        Reason::Busy,
        Reason::Deadline,
        Reason::RenderQueue,
        Reason::DiskFull,
        Reason::Internal,
        Reason::ShuttingDown,
        Reason::NotSupported,
        Reason::PluginCommand,
        Reason::InvalidInput,
        Reason::ToolFailed,
        Reason::InvalidManifests,
        Reason::PolicyDenied,
        Reason::ConfigSecret,
        Reason::Config,
        Reason::VaultLogin,
        Reason::VaultError,
        Reason::SecretDenied,
        Reason::SecretNotFound,
        Reason::Placeholder,
        Reason::ChartDependency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::BadRequest => "bad_request",
            Reason::Cancelled => "cancelled",
            Reason::TooLarge => "too_large",
            Reason::Busy => "busy",
            Reason::Deadline => "deadline",
            Reason::RenderQueue => "render_queue",
            Reason::DiskFull => "disk_full",
            Reason::Internal => "internal",
            Reason::ShuttingDown => "shutting_down",
            Reason::NotSupported => "not_supported",
            Reason::PluginCommand => "plugin_command",
            Reason::InvalidInput => "invalid_input",
            Reason::ToolFailed => "tool_failed",
            Reason::InvalidManifests => "invalid_manifests",
            Reason::PolicyDenied => "policy_denied",
            Reason::ConfigSecret => "config_secret",
            Reason::Config => "config",
            Reason::VaultLogin => "vault_login",
            Reason::VaultError => "vault_error",
            Reason::SecretDenied => "secret_denied",
            Reason::SecretNotFound => "secret_not_found",
            Reason::Placeholder => "placeholder",
            Reason::ChartDependency => "chart_dependency",
        }
    }
}

/// What the sidecar asked of Vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaultOp {
    Login,
    Renew,
    /// `auth/token/lookup-self`: the readiness check, and telling a revoked token from a denial.
    TokenLookup,
    /// A secret's data.
    Read,
    /// KV v2 metadata (rotation tracking, `check`).
    Metadata,
    /// `sys/internal/ui/mounts/<path>`: which engine a mount is.
    DescribeMount,
    /// `sys/capabilities-self` (`check`).
    Capabilities,
}

impl VaultOp {
    pub const ALL: [VaultOp; 7] = [
        VaultOp::Login,
        VaultOp::Renew,
        VaultOp::TokenLookup,
        VaultOp::Read,
        VaultOp::Metadata,
        VaultOp::DescribeMount,
        VaultOp::Capabilities,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VaultOp::Login => "login",
            VaultOp::Renew => "renew",
            VaultOp::TokenLookup => "token_lookup",
            VaultOp::Read => "read",
            VaultOp::Metadata => "metadata",
            VaultOp::DescribeMount => "describe_mount",
            VaultOp::Capabilities => "capabilities",
        }
    }
}

/// How a Vault call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaultResult {
    Ok,
    /// 403 (or a login refused: 400/401/403).
    Denied,
    NotFound,
    /// No connection (refused, reset, DNS, TLS).
    Unreachable,
    /// No answer within `VAULT_CLIENT_TIMEOUT`.
    Timeout,
    /// 429 or 5xx after the retries (sealed, standby, overloaded, rate limited).
    ServerError,
    /// Anything else (other statuses, answers we refuse to read).
    Error,
}

impl VaultResult {
    pub const ALL: [VaultResult; 7] = [
        VaultResult::Ok,
        VaultResult::Denied,
        VaultResult::NotFound,
        VaultResult::Unreachable,
        VaultResult::Timeout,
        VaultResult::ServerError,
        VaultResult::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VaultResult::Ok => "ok",
            VaultResult::Denied => "denied",
            VaultResult::NotFound => "not_found",
            VaultResult::Unreachable => "unreachable",
            VaultResult::Timeout => "timeout",
            VaultResult::ServerError => "server_error",
            VaultResult::Error => "error",
        }
    }

    /// An HTTP status's meaning. 404 on a login path is not "not found" but the caller decides.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => VaultResult::Ok,
            403 => VaultResult::Denied,
            404 => VaultResult::NotFound,
            429 | 500..=599 => VaultResult::ServerError,
            _ => VaultResult::Error,
        }
    }
}

/// Which program a tool run ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Kustomize,
    Helm,
    /// An operator's command plugin (`init`, `generate`, `discover`, `parameters`).
    Command,
}

impl Tool {
    pub const ALL: [Tool; 3] = [Tool::Kustomize, Tool::Helm, Tool::Command];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Kustomize => "kustomize",
            Tool::Helm => "helm",
            Tool::Command => "command",
        }
    }
}

/// How a tool run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolResult {
    Ok,
    /// Exited non-zero or by a signal.
    Failed,
    /// Killed at the request's deadline.
    Deadline,
    /// Killed for printing more than `--max-output-mb`.
    OutputTooLarge,
    /// Could not be started, or its output not read.
    Error,
}

impl ToolResult {
    pub const ALL: [ToolResult; 5] = [
        ToolResult::Ok,
        ToolResult::Failed,
        ToolResult::Deadline,
        ToolResult::OutputTooLarge,
        ToolResult::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ToolResult::Ok => "ok",
            ToolResult::Failed => "failed",
            ToolResult::Deadline => "deadline",
            ToolResult::OutputTooLarge => "output_too_large",
            ToolResult::Error => "error",
        }
    }
}

/// At most this many distinct plugin names become label values; more is a configuration no
/// one runs, and the rest share `other`.
const MAX_PLUGIN_LABELS: usize = 64;

/// A plugin's name as a label value. Plugin names come from the operator's plugin definitions
/// (one socket each), never from a request, so the set is small and fixed; the cap keeps it
/// bounded even if that ever changed.
pub fn plugin_label(name: &str) -> &'static str {
    static NAMES: Interner = Interner::new(MAX_PLUGIN_LABELS);
    NAMES.get(name)
}

/// Label values made `'static` once each, at most `cap` of them.
struct Interner {
    cap: usize,
    names: Mutex<Vec<&'static str>>,
}

impl Interner {
    const fn new(cap: usize) -> Self {
        Self {
            cap,
            names: Mutex::new(Vec::new()),
        }
    }

    fn get(&self, name: &str) -> &'static str {
        let mut names = lock(&self.names);
        if let Some(n) = names.iter().find(|n| **n == name) {
            return n;
        }
        if names.len() >= self.cap {
            return "other";
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.push(leaked);
        leaked
    }
}

// --- the metrics ---------------------------------------------------------------------------

pub static BUILD_INFO: Gauge<1> = Gauge::new(
    "avp_sidecar_build_info",
    "always 1; the version of the running binary",
    ["version"],
);

pub static REQUESTS: Counter<4> = Counter::new(
    "avp_sidecar_requests_total",
    "CMP RPCs answered, by RPC, plugin, gRPC code and reason",
    ["rpc", "plugin", "code", "reason"],
);
pub static REQUEST_SECONDS: Histogram<2> = Histogram::new(
    "avp_sidecar_request_duration_seconds",
    "time to answer a CMP RPC",
    ["rpc", "plugin"],
    SLOW_BUCKETS,
);
pub static REQUESTS_IN_FLIGHT: Gauge<1> = Gauge::new(
    "avp_sidecar_requests_in_flight",
    "CMP RPCs being handled",
    ["rpc"],
);
pub static UNPACK_SECONDS: Histogram<0> = Histogram::new(
    "avp_sidecar_unpack_duration_seconds",
    "extracting the repository archive, from the end of its stream to the tree",
    [],
    SLOW_BUCKETS,
);
pub static SUBSTITUTE_SECONDS: Histogram<0> = Histogram::new(
    "avp_sidecar_substitute_duration_seconds",
    "placeholder substitution incl. Vault reads",
    [],
    SLOW_BUCKETS,
);
pub static OPERATOR_OVERRIDES_IGNORED: Counter<0> = Counter::new(
    "avp_sidecar_operator_overrides_ignored_total",
    "requests whose env named operator settings (ignored)",
    [],
);

pub static TOOL_RUNS: Counter<2> = Counter::new(
    "avp_sidecar_tool_runs_total",
    "kustomize/helm/command plugin runs, by tool and result",
    ["tool", "result"],
);
pub static TOOL_SECONDS: Histogram<1> = Histogram::new(
    "avp_sidecar_tool_duration_seconds",
    "time a tool run took",
    ["tool"],
    SLOW_BUCKETS,
);
pub static TOOL_RUNS_IN_FLIGHT: Gauge<1> = Gauge::new(
    "avp_sidecar_tool_runs_in_flight",
    "tool runs in progress",
    ["tool"],
);
pub static RENDER_SLOT_WAITING: Gauge<0> = Gauge::new(
    "avp_sidecar_render_slot_waiting",
    "tool runs waiting for a render slot (--max-concurrent-renders)",
    [],
);
pub static RENDER_SLOT_WAIT_SECONDS: Histogram<0> = Histogram::new(
    "avp_sidecar_render_slot_wait_duration_seconds",
    "time tool runs waited for a render slot",
    [],
    FAST_BUCKETS,
);
pub static CHART_DEPENDENCY_BUILDS: Counter<0> = Counter::new(
    "avp_sidecar_chart_dependency_builds_total",
    "helm dependency build runs (charts with dependencies missing from charts/)",
    [],
);
pub static CHART_FETCHES: Counter<0> = Counter::new(
    "avp_sidecar_chart_fetches_total",
    "chart dependencies fetched from repositories or registries",
    [],
);
pub static CHART_CACHE_HITS: Counter<0> = Counter::new(
    "avp_sidecar_chart_cache_hits_total",
    "chart dependencies copied from the dependency cache instead of fetched",
    [],
);
pub static CHART_FETCH_FAILURES: Counter<1> = Counter::new(
    "avp_sidecar_chart_fetch_failures_total",
    "chart dependency fetches that failed, by reason",
    ["reason"],
);
pub static HELM_GATE_REFUSALS: Counter<0> = Counter::new(
    "avp_sidecar_helm_gate_refusals_total",
    "helm calls from kustomize refused by the helm gate",
    [],
);
pub static TOOL_ORPHANS_KILLED: Counter<0> = Counter::new(
    "avp_sidecar_tool_orphans_killed_total",
    "tool descendants killed after outliving their tool run",
    [],
);
pub static TOOL_SANDBOX: Gauge<0> = Gauge::new(
    "avp_sidecar_tool_sandbox_enabled",
    "1 when kustomize and helm run confined by Landlock, else 0",
    [],
);

pub static ARCHIVE_CACHE: Counter<2> = Counter::new(
    "avp_sidecar_archive_cache_total",
    "requests whose repository was already extracted (cache tree) or indexed for discovery (cache scan_index): result hit or miss",
    ["cache", "result"],
);
pub static TREE_PREFETCHES: Counter<0> = Counter::new(
    "avp_sidecar_tree_prefetches_total",
    "repositories extracted after a MatchRepository claimed or matched an app, ahead of its GenerateManifest",
    [],
);
pub static TREE_CACHE_ENTRIES: Gauge<0> = Gauge::new(
    "avp_sidecar_tree_cache_entries",
    "extracted repositories kept in the tree cache",
    [],
);
pub static TREE_CACHE_BYTES: Gauge<0> = Gauge::new(
    "avp_sidecar_tree_cache_bytes",
    "approximate disk use of the tree cache",
    [],
);
pub static RENDERS_AHEAD: Counter<1> = Counter::new(
    "avp_sidecar_renders_ahead_total",
    "renders a discovery MatchRepository started for the GenerateManifest that follows it, by result (rendered, failed; one stopped because its stream did not verify is not counted)",
    ["result"],
);
pub static RENDER_CACHE_HITS: Counter<0> = Counter::new(
    "avp_sidecar_render_cache_hits_total",
    "renders answered from the render cache",
    [],
);
pub static RENDER_CACHE_MISSES: Counter<0> = Counter::new(
    "avp_sidecar_render_cache_misses_total",
    "renders that ran a tool",
    [],
);
pub static RENDER_CACHE_ENTRIES: Gauge<0> = Gauge::new(
    "avp_sidecar_render_cache_entries",
    "renders held in the render cache",
    [],
);
pub static RENDER_CACHE_BYTES: Gauge<0> = Gauge::new(
    "avp_sidecar_render_cache_bytes",
    "approximate size of the render cache",
    [],
);

pub static VAULT_REQUESTS: Counter<2> = Counter::new(
    "avp_sidecar_vault_requests_total",
    "calls to Vault, by operation and result (after retries)",
    ["operation", "result"],
);
pub static VAULT_SECONDS: Histogram<1> = Histogram::new(
    "avp_sidecar_vault_request_duration_seconds",
    "time a Vault call took, retries included",
    ["operation"],
    FAST_BUCKETS,
);
pub static VAULT_RETRIES: Counter<1> = Counter::new(
    "avp_sidecar_vault_retries_total",
    "Vault calls asked again after a transient answer (429, 5xx)",
    ["operation"],
);
pub static VAULT_LOGIN_OK: Gauge<0> = Gauge::lazy(
    "avp_sidecar_vault_login_ok",
    "1 while the last Vault login check for /readyz passed, 0 while it failed (absent: no check)",
    [],
);
pub static SECRET_READS_REFUSED: Counter<0> = Counter::new(
    "avp_sidecar_secret_reads_refused_total",
    "placeholder reads refused by the mount rules or for an answer holding the sidecar's credentials",
    [],
);
pub static SECRET_CACHE_HITS: Counter<0> = Counter::new(
    "avp_sidecar_secret_cache_hits_total",
    "secret reads answered from the cache",
    [],
);
pub static SECRET_CACHE_MISSES: Counter<0> = Counter::new(
    "avp_sidecar_secret_cache_misses_total",
    "secret reads that went to Vault",
    [],
);
pub static SECRET_CACHE_COALESCED: Counter<0> = Counter::new(
    "avp_sidecar_secret_cache_coalesced_total",
    "secret reads that joined an in-flight read",
    [],
);
pub static SECRET_CACHE_EVICTIONS: Counter<0> = Counter::new(
    "avp_sidecar_secret_cache_evictions_total",
    "secret cache entries evicted for size",
    [],
);
pub static SECRET_CACHE_ENTRIES: Gauge<0> = Gauge::new(
    "avp_sidecar_secret_cache_entries",
    "secret cache entries, all Vault identities together (reads in flight included)",
    [],
);
pub static SECRET_CACHE_BYTES: Gauge<0> = Gauge::new(
    "avp_sidecar_secret_cache_bytes",
    "approximate size of the secret cache, all Vault identities together",
    [],
);
pub static SECRET_BACKEND_QUEUED: Counter<0> = Counter::new(
    "avp_sidecar_secret_backend_queued_total",
    "Vault calls that waited for a place under --vault-max-in-flight",
    [],
);
pub static SECRET_BACKEND_WAITING: Gauge<0> = Gauge::new(
    "avp_sidecar_secret_backend_waiting",
    "Vault calls waiting for a place under --vault-max-in-flight",
    [],
);

pub static POLICY_DENIALS: Counter<0> = Counter::new(
    "avp_sidecar_policy_denials_total",
    "renders refused by the per-project path policy",
    [],
);
pub static LEAK_GUARD_HITS: Counter<0> = Counter::new(
    "avp_sidecar_leak_guard_hits_total",
    "objects with placeholders outside Secret data",
    [],
);
pub static EXTERNAL_SECRETS: Counter<0> = Counter::new(
    "avp_sidecar_external_secrets_total",
    "Secrets emitted as ExternalSecrets (migration mode)",
    [],
);

pub static ROTATION_POLLS: Counter<0> = Counter::new(
    "avp_sidecar_rotation_polls_total",
    "KV v2 metadata reads by rotation tracking",
    [],
);
pub static ROTATION_CHANGES: Counter<0> = Counter::new(
    "avp_sidecar_rotation_changes_total",
    "new secret versions noticed by rotation tracking",
    [],
);
pub static ROTATION_REFRESHES: Counter<0> = Counter::new(
    "avp_sidecar_rotation_refreshes_total",
    "Applications given a hard refresh after a rotation",
    [],
);
pub static ROTATION_ERRORS: Counter<1> = Counter::new(
    "avp_sidecar_rotation_errors_total",
    "rotation tracking failures, by stage (metadata, refresh, state)",
    ["stage"],
);

/// Every family, in exposition order.
static FAMILIES: &[&dyn Family] = &[
    &BUILD_INFO,
    &REQUESTS,
    &REQUEST_SECONDS,
    &REQUESTS_IN_FLIGHT,
    &UNPACK_SECONDS,
    &SUBSTITUTE_SECONDS,
    &OPERATOR_OVERRIDES_IGNORED,
    &TOOL_RUNS,
    &TOOL_SECONDS,
    &TOOL_RUNS_IN_FLIGHT,
    &RENDER_SLOT_WAITING,
    &RENDER_SLOT_WAIT_SECONDS,
    &HELM_GATE_REFUSALS,
    &CHART_DEPENDENCY_BUILDS,
    &CHART_FETCHES,
    &CHART_CACHE_HITS,
    &CHART_FETCH_FAILURES,
    &TOOL_ORPHANS_KILLED,
    &TOOL_SANDBOX,
    &ARCHIVE_CACHE,
    &TREE_PREFETCHES,
    &TREE_CACHE_ENTRIES,
    &TREE_CACHE_BYTES,
    &RENDERS_AHEAD,
    &RENDER_CACHE_HITS,
    &RENDER_CACHE_MISSES,
    &RENDER_CACHE_ENTRIES,
    &RENDER_CACHE_BYTES,
    &VAULT_REQUESTS,
    &VAULT_SECONDS,
    &VAULT_RETRIES,
    &VAULT_LOGIN_OK,
    &SECRET_READS_REFUSED,
    &SECRET_CACHE_HITS,
    &SECRET_CACHE_MISSES,
    &SECRET_CACHE_COALESCED,
    &SECRET_CACHE_EVICTIONS,
    &SECRET_CACHE_ENTRIES,
    &SECRET_CACHE_BYTES,
    &SECRET_BACKEND_QUEUED,
    &SECRET_BACKEND_WAITING,
    &POLICY_DENIALS,
    &LEAK_GUARD_HITS,
    &EXTERNAL_SECRETS,
    &ROTATION_POLLS,
    &ROTATION_CHANGES,
    &ROTATION_REFRESHES,
    &ROTATION_ERRORS,
];

/// Creates the series whose first event alerts look for (a series born at 1 is no increase),
/// and `build_info`. Idempotent; called by `serve` and by [`exposition`].
pub fn init() {
    BUILD_INFO.set([env!("CARGO_PKG_VERSION")], 1);
    for op in VaultOp::ALL {
        for result in VaultResult::ALL {
            VAULT_REQUESTS.init([op.name(), result.name()]);
        }
    }
    for tool in Tool::ALL {
        for result in ToolResult::ALL {
            TOOL_RUNS.init([tool.name(), result.name()]);
        }
    }
    for stage in ["metadata", "refresh", "state"] {
        ROTATION_ERRORS.init([stage]);
    }
    for failure in ChartFailure::ALL {
        CHART_FETCH_FAILURES.init([failure.name()]);
    }
    for cache in ["tree", "scan_index"] {
        for result in ["hit", "miss"] {
            ARCHIVE_CACHE.init([cache, result]);
        }
    }
}

/// Why a chart dependency fetch failed (`avp_sidecar_chart_fetch_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartFailure {
    NotFound,
    Auth,
    Tls,
    /// Refused by the destination rules, the tool sandbox, or a `file://` outside the repository.
    Denied,
    Deadline,
    /// The repository's index could not be downloaded.
    Unreachable,
    /// Fetching off, `Chart.lock` out of sync, or anything else helm reported.
    Other,
}

impl ChartFailure {
    pub const ALL: [ChartFailure; 7] = [
        ChartFailure::NotFound,
        ChartFailure::Auth,
        ChartFailure::Tls,
        ChartFailure::Denied,
        ChartFailure::Deadline,
        ChartFailure::Unreachable,
        ChartFailure::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ChartFailure::NotFound => "not_found",
            ChartFailure::Auth => "auth",
            ChartFailure::Tls => "tls",
            ChartFailure::Denied => "denied",
            ChartFailure::Deadline => "deadline",
            ChartFailure::Unreachable => "unreachable",
            ChartFailure::Other => "other",
        }
    }
}

/// Counts one failed chart dependency fetch.
pub fn chart_failure(failure: ChartFailure) {
    CHART_FETCH_FAILURES.inc([failure.name()]);
}

/// Records one answered RPC: its outcome and its duration.
pub fn request(rpc: Rpc, plugin: &'static str, code: tonic::Code, reason: Reason, d: Duration) {
    REQUESTS.inc([rpc.name(), plugin, code_name(code), reason.name()]);
    REQUEST_SECONDS.observe([rpc.name(), plugin], d);
}

/// Records one finished Vault call.
pub fn vault_call(op: VaultOp, result: VaultResult, d: Duration) {
    VAULT_REQUESTS.inc([op.name(), result.name()]);
    VAULT_SECONDS.observe([op.name()], d);
}

/// Whether tool runs are confined (set once by `serve`).
pub static TOOL_SANDBOX_ON: AtomicBool = AtomicBool::new(false);

/// Everything for `/metrics`: our families, then the process's (Linux).
pub fn exposition() -> String {
    init();
    TOOL_SANDBOX.set([], i64::from(TOOL_SANDBOX_ON.load(Ordering::Relaxed)));
    let mut out = String::with_capacity(16 << 10);
    for f in FAMILIES {
        f.render(&mut out);
    }
    process::render(&mut out);
    out
}

/// One line for logs: every counter's total, `name=value ...` (names without the prefix).
pub fn summary() -> String {
    FAMILIES
        .iter()
        .filter_map(|f| {
            let total = f.total()?;
            let name = f.name().strip_prefix("avp_sidecar_").unwrap_or(f.name());
            Some(format!("{name}={total}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The standard `process_*` metrics, from `/proc/self` (Linux); nothing elsewhere.
mod process {
    use std::fmt::Write as _;

    /// Clock ticks per second of `/proc/<pid>/stat` times: the kernel reports them in USER_HZ,
    /// which is 100 on every architecture Linux exposes to user space that we build for.
    const USER_HZ: f64 = 100.0;

    pub(super) fn render(out: &mut String) {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let name = "process_cpu_seconds_total";
            super::header(out, name, "user and system CPU time spent", "counter");
            let _ = writeln!(out, "{name} {}", (utime + stime) / USER_HZ);
        }
        if let Some(rss_kib) = status_kib("VmRSS:") {
            let name = "process_resident_memory_bytes";
            super::header(out, name, "resident memory size", "gauge");
            let _ = writeln!(out, "{name} {}", rss_kib * 1024);
        }
        if let Some(vm_kib) = status_kib("VmSize:") {
            let name = "process_virtual_memory_bytes";
            super::header(out, name, "virtual memory size", "gauge");
            let _ = writeln!(out, "{name} {}", vm_kib * 1024);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            let name = "process_open_fds";
            super::header(out, name, "open file descriptors", "gauge");
            // The directory handle itself is one of them.
            let _ = writeln!(out, "{name} {}", fds.count().saturating_sub(1));
        }
        if let Some(max) = max_fds() {
            let name = "process_max_fds";
            super::header(out, name, "limit of open file descriptors", "gauge");
            let _ = writeln!(out, "{name} {max}");
        }
        if let (Some(start_ticks), Some(boot)) = (field(22), boot_time()) {
            let name = "process_start_time_seconds";
            super::header(out, name, "start time since the Unix epoch", "gauge");
            let _ = writeln!(out, "{name} {}", boot + start_ticks / USER_HZ);
        }
    }

    fn status_kib(key: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    fn max_fds() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Seconds since the epoch at boot (`btime` in `/proc/stat`).
    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_with_and_without_labels() {
        let plain: Counter<0> = Counter::new("t_plain_total", "a plain counter", []);
        let mut out = String::new();
        plain.render(&mut out);
        assert_eq!(
            out,
            "# HELP t_plain_total a plain counter\n# TYPE t_plain_total counter\nt_plain_total 0\n"
        );
        plain.inc([]);
        plain.add([], 2);
        let labelled: Counter<2> = Counter::new("t_total", "by a and b", ["a", "b"]);
        labelled.init(["x", "ok"]);
        labelled.inc(["y", "no"]);
        labelled.inc(["y", "no"]);
        let mut out = String::new();
        plain.render(&mut out);
        labelled.render(&mut out);
        assert!(out.contains("\nt_plain_total 3\n"), "{out}");
        assert!(out.contains("\nt_total{a=\"x\",b=\"ok\"} 0\n"), "{out}");
        assert!(out.contains("\nt_total{a=\"y\",b=\"no\"} 2\n"), "{out}");
        assert_eq!(labelled.total(), Some(2));
    }

    #[test]
    fn label_values_are_escaped() {
        let g: Gauge<1> = Gauge::new("t_gauge", "g", ["plugin"]);
        g.set(["a\"b\\c\nd"], 1);
        let mut out = String::new();
        g.render(&mut out);
        assert!(
            out.contains("t_gauge{plugin=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn gauges_track_work_in_progress() {
        static G: Gauge<1> = Gauge::new("t_in_flight", "in flight", ["rpc"]);
        let a = G.track(["x"]);
        let b = G.track(["x"]);
        assert_eq!(G.get(["x"]), 2);
        drop(a);
        assert_eq!(G.get(["x"]), 1);
        drop(b);
        assert_eq!(G.get(["x"]), 0);
        let mut out = String::new();
        G.render(&mut out);
        assert!(
            out.contains("# TYPE t_in_flight gauge\nt_in_flight{rpc=\"x\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h: Histogram<1> = Histogram::new("t_seconds", "durations", ["rpc"], &[0.1, 1.0]);
        h.observe(["a"], Duration::from_millis(50));
        h.observe(["a"], Duration::from_millis(100));
        h.observe(["a"], Duration::from_millis(700));
        h.observe(["a"], Duration::from_secs(3));
        let mut out = String::new();
        h.render(&mut out);
        let want = "# HELP t_seconds durations\n# TYPE t_seconds histogram\n\
            t_seconds_bucket{rpc=\"a\",le=\"0.1\"} 2\n\
            t_seconds_bucket{rpc=\"a\",le=\"1\"} 3\n\
            t_seconds_bucket{rpc=\"a\",le=\"+Inf\"} 4\n\
            t_seconds_sum{rpc=\"a\"} 3.85\n\
            t_seconds_count{rpc=\"a\"} 4\n";
        assert_eq!(out, want);
        assert_eq!(h.count(["a"]), 4);
        let plain: Histogram<0> = Histogram::new("t_plain_seconds", "p", [], &[1.0]);
        let mut out = String::new();
        plain.render(&mut out);
        assert!(
            out.contains("t_plain_seconds_bucket{le=\"+Inf\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("t_plain_seconds_count 0\n"), "{out}");
    }

    /// Every sample line of the whole exposition parses as the text format says: a metric name,
    /// optional labels, one number; every family has HELP and TYPE before its samples, and
    /// every name has the prefix (or is a standard `process_` one).
    #[test]
    fn exposition_is_well_formed() {
        request(
            Rpc::GenerateManifest,
            plugin_label("avp-kustomize"),
            tonic::Code::PermissionDenied,
            Reason::PolicyDenied,
            Duration::from_millis(20),
        );
        vault_call(
            VaultOp::Read,
            VaultResult::Unreachable,
            Duration::from_millis(3),
        );
        let text = exposition();
        let name_re = regex::Regex::new(
            r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|\+Inf|NaN)$"#,
        )
        .expect("regex");
        let mut typed = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "{name} twice"
                );
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let caps = name_re
                .captures(line)
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let name = &caps[1];
            assert!(
                name.starts_with("avp_sidecar_") || name.starts_with("process_"),
                "{name}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "{name} has no TYPE before it");
        }
        assert!(text.contains(&format!(
            "avp_sidecar_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(text.contains(
            "avp_sidecar_requests_total{rpc=\"GenerateManifest\",plugin=\"avp-kustomize\",code=\"PermissionDenied\",reason=\"policy_denied\"} "
        ));
        assert!(text.contains(
            "avp_sidecar_vault_requests_total{operation=\"login\",result=\"unreachable\"} "
        ));
        // Counters end in _total, durations are in seconds, nothing in milliseconds.
        for (name, kind) in &typed {
            assert!(!name.contains("milli"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(typed.contains_key(name), "{name}");
        }
        assert!(summary().contains("requests_total="), "{}", summary());
    }

    #[test]
    fn plugin_labels_are_bounded() {
        let names = Interner::new(3);
        let first = names.get("p-0");
        assert!(std::ptr::eq(first, names.get("p-0")), "interned once");
        for i in 0..10 {
            let _ = names.get(&format!("p-{i}"));
        }
        assert_eq!(names.get("one-too-many"), "other");
        assert_eq!(names.get("p-2"), "p-2");
        assert_eq!(plugin_label("avp-helm"), "avp-helm");
    }

    /// docs/metrics.md has one table row per metric, and names no metric that does not exist;
    /// its label value tables list every reason, Vault operation and result, tool result.
    #[test]
    fn the_docs_table_lists_every_metric() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .expect("docs/metrics.md");
        let table = doc
            .split("## All metrics")
            .nth(1)
            .and_then(|t| t.split("\n## ").next())
            .expect("the table section");
        let documented: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let mut exported: Vec<&str> = FAMILIES.iter().map(|f| f.name()).collect();
        exported.extend([
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ]);
        for name in &exported {
            assert!(
                documented.contains(name),
                "{name} is not in docs/metrics.md"
            );
        }
        for name in &documented {
            assert!(
                exported.contains(name),
                "docs/metrics.md lists {name}, which is not exported"
            );
        }
        let values = Reason::ALL
            .iter()
            .map(|r| r.name())
            .chain(VaultOp::ALL.iter().map(|o| o.name()))
            .chain(VaultResult::ALL.iter().map(|r| r.name()))
            .chain(ToolResult::ALL.iter().map(|r| r.name()));
        for v in values {
            assert!(
                doc.contains(&format!("`{v}`")),
                "label value {v} is not in docs/metrics.md"
            );
        }
    }

    #[test]
    fn vault_statuses() {
        assert_eq!(VaultResult::of_status(204), VaultResult::Ok);
        assert_eq!(VaultResult::of_status(403), VaultResult::Denied);
        assert_eq!(VaultResult::of_status(404), VaultResult::NotFound);
        assert_eq!(VaultResult::of_status(503), VaultResult::ServerError);
        assert_eq!(VaultResult::of_status(429), VaultResult::ServerError);
        assert_eq!(VaultResult::of_status(400), VaultResult::Error);
    }
}
