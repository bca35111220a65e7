//! Process-wide counters: what the server did, for the `/metrics` endpoint (Prometheus text)
//! and a periodic log line. Counters only, no labels carrying request data, never values.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter names and help texts, in exposition order.
macro_rules! counters {
    ($($field:ident : $help:literal),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $field: AtomicU64,)* }

        impl Metrics {
            pub const fn new() -> Self {
                Self { $($field: AtomicU64::new(0),)* }
            }

            /// Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let name = concat!("avp_sidecar_", stringify!($field));
                    let _ = writeln!(out, "# HELP {name} {}", $help);
                    let _ = writeln!(out, "# TYPE {name} counter");
                    let _ = writeln!(out, "{name} {}", self.$field.load(Ordering::Relaxed));
                )*
                out
            }

            /// One line for logs: `name=value ...`.
            pub fn summary(&self) -> String {
                let mut parts = Vec::new();
                $( parts.push(format!("{}={}", stringify!($field), self.$field.load(Ordering::Relaxed))); )*
                parts.join(" ")
            }
        }
    };
}

counters! {
    requests_total: "CMP RPCs received",
    requests_failed_total: "CMP RPCs answered with an error",
    requests_rejected_total: "streaming RPCs refused at the concurrent-request limit",
    vault_logins_total: "Vault logins",
    vault_renewals_total: "Vault token renewals",
    vault_ready_checks_total: "Vault token checks for /readyz (auth/token/lookup-self)",
    vault_reads_total: "secret reads sent to Vault",
    vault_mount_lookups_total: "mount descriptions asked of Vault (sys/internal/ui/mounts), about one per mount",
    secret_reads_refused_total: "placeholder reads refused by the mount rules or for an answer holding the sidecar's credentials",
    vault_retries_total: "Vault reads asked again after a transient answer (429, 5xx)",
    secret_cache_hits_total: "secret reads answered from the cache",
    secret_cache_misses_total: "secret reads that went to Vault",
    secret_cache_coalesced_total: "secret reads that joined an in-flight read",
    secret_cache_evictions_total: "secret cache entries evicted for size",
    secret_backend_queued_total: "Vault calls that waited for a place under --vault-max-in-flight",
    render_cache_hits_total: "renders answered from the render cache",
    render_cache_misses_total: "renders that ran a tool",
    tool_runs_total: "kustomize/helm runs",
    tool_milliseconds_total: "time spent in kustomize/helm",
    tool_queue_milliseconds_total: "time renders waited for a tool slot",
    helm_gate_refusals_total: "helm calls from kustomize refused by the helm gate",
    chart_dependency_builds_total: "helm dependency build runs (charts with dependencies missing from charts/)",
    chart_fetches_total: "chart dependencies fetched from repositories or registries",
    chart_cache_hits_total: "chart dependencies copied from the dependency cache instead of fetched",
    chart_fetch_not_found_total: "chart dependency fetches failed: not found",
    chart_fetch_auth_failures_total: "chart dependency fetches failed: authentication",
    chart_fetch_tls_failures_total: "chart dependency fetches failed: TLS verification",
    chart_fetch_denied_total: "chart dependency fetches refused by the destination rules or the tool sandbox",
    chart_fetch_deadline_total: "chart dependency fetches cut by the request deadline",
    chart_fetch_failures_total: "chart dependency fetches failed for another reason (or fetching off)",
    tool_orphans_killed_total: "tool descendants killed after outliving their tool run",
    policy_denials_total: "renders refused by the per-project path policy",
    leak_guard_hits_total: "objects with placeholders outside Secret data",
    external_secrets_total: "Secrets emitted as ExternalSecrets (migration mode)",
    operator_overrides_ignored_total: "requests whose env named operator settings (ignored)",
    rotation_polls_total: "KV v2 metadata reads by rotation tracking",
    rotation_changes_total: "new secret versions noticed by rotation tracking",
    rotation_refreshes_total: "Applications given a hard refresh after a rotation",
    rotation_errors_total: "rotation tracking failures (metadata reads, Application patches)",
}

/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

/// The four CMP RPCs, for per-RPC series.
#[derive(Clone, Copy, Debug)]
pub enum Rpc {
    GenerateManifest = 0,
    MatchRepository = 1,
    GetParametersAnnouncement = 2,
    CheckPluginConfiguration = 3,
}

const RPC_NAMES: [&str; 4] = [
    "GenerateManifest",
    "MatchRepository",
    "GetParametersAnnouncement",
    "CheckPluginConfiguration",
];

impl Rpc {
    /// The RPC's name, as in the proto and in logs.
    pub fn name(self) -> &'static str {
        RPC_NAMES[self as usize]
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

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A Prometheus histogram with fixed buckets, lock-free.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (bucket, le) in self.buckets.iter().zip(BUCKETS) {
            if secs <= le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-RPC outcomes and stage durations.
#[derive(Debug, Default)]
pub struct Detail {
    /// `[rpc][0 = ok, 1 = error]`.
    requests: [[AtomicU64; 2]; 4],
    request_seconds: [Histogram; 4],
    pub unpack_seconds: Histogram,
    pub tool_seconds: Histogram,
    pub substitute_seconds: Histogram,
}

impl Detail {
    pub const fn new() -> Self {
        Self {
            requests: [const { [const { AtomicU64::new(0) }; 2] }; 4],
            request_seconds: [const { Histogram::new() }; 4],
            unpack_seconds: Histogram::new(),
            tool_seconds: Histogram::new(),
            substitute_seconds: Histogram::new(),
        }
    }

    pub fn request(&self, rpc: Rpc, ok: bool, d: std::time::Duration) {
        self.requests[rpc as usize][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        self.request_seconds[rpc as usize].observe(d);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let name = "avp_sidecar_rpc_requests_total";
        let _ = writeln!(out, "# HELP {name} CMP RPCs by method and outcome");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (rpc, outcomes) in RPC_NAMES.iter().zip(&self.requests) {
            for (outcome, n) in ["ok", "error"].iter().zip(outcomes) {
                let _ = writeln!(
                    out,
                    "{name}{{rpc=\"{rpc}\",outcome=\"{outcome}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let name = "avp_sidecar_rpc_duration_seconds";
        let _ = writeln!(out, "# HELP {name} CMP RPC durations");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (rpc, h) in RPC_NAMES.iter().zip(&self.request_seconds) {
            h.render(&mut out, name, &format!("rpc=\"{rpc}\""));
        }
        for (name, help, h) in [
            (
                "avp_sidecar_unpack_duration_seconds",
                "receiving and unpacking the repository",
                &self.unpack_seconds,
            ),
            (
                "avp_sidecar_tool_duration_seconds",
                "kustomize/helm runs",
                &self.tool_seconds,
            ),
            (
                "avp_sidecar_substitute_duration_seconds",
                "placeholder substitution incl. Vault reads",
                &self.substitute_seconds,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            h.render(&mut out, name, "");
        }
        out
    }
}

/// Per-RPC series and histograms.
pub static DETAIL: Detail = Detail::new();

/// Everything for `/metrics`.
pub fn exposition() -> String {
    let mut out = METRICS.render();
    out.push_str(&DETAIL.render());
    let sandbox = u8::from(TOOL_SANDBOX_ON.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP avp_sidecar_tool_sandbox_enabled 1 when kustomize and helm run confined by Landlock\n\
         # TYPE avp_sidecar_tool_sandbox_enabled gauge\navp_sidecar_tool_sandbox_enabled {sandbox}"
    );
    out
}

/// Whether tool runs are confined (set once by `serve`).
pub static TOOL_SANDBOX_ON: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let m = Metrics::new();
        inc(&m.vault_logins_total);
        add(&m.tool_milliseconds_total, 42);
        let text = m.render();
        assert!(text.contains(
            "# TYPE avp_sidecar_vault_logins_total counter\navp_sidecar_vault_logins_total 1\n"
        ));
        assert!(text.contains("avp_sidecar_tool_milliseconds_total 42\n"));
        assert!(m.summary().contains("vault_logins_total=1"));
    }

    #[test]
    fn histograms_and_labels() {
        let d = Detail::new();
        d.request(
            Rpc::GenerateManifest,
            true,
            std::time::Duration::from_millis(70),
        );
        d.request(
            Rpc::GenerateManifest,
            false,
            std::time::Duration::from_secs(3),
        );
        let text = d.render();
        assert!(
            text.contains(
                "avp_sidecar_rpc_requests_total{rpc=\"GenerateManifest\",outcome=\"ok\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "avp_sidecar_rpc_duration_seconds_bucket{rpc=\"GenerateManifest\",le=\"0.1\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "avp_sidecar_rpc_duration_seconds_bucket{rpc=\"GenerateManifest\",le=\"5\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("avp_sidecar_rpc_duration_seconds_count{rpc=\"GenerateManifest\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("avp_sidecar_tool_duration_seconds_count 0\n"),
            "{text}"
        );
    }
}
