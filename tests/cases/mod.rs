// HTTP/2 `:authority` forms grpc-go sends over the unix socket, accepted by the patched h2.
mod authority;
// The secret boundary: placeholders reach KV secrets only, values only core Secrets' data.
mod boundary;
// Chart dependencies and remote charts fetched through the sidecar's proxy (issue 17).
mod charts;
// `avp-sidecar check` on repositories rendered with real tools, verified against OpenBao.
mod check;
// `avp-sidecar generate`, the drop-in for `argocd-vault-plugin generate`.
mod cli;
// Operator plugin.yaml files hosted unchanged: commands, discovery rules, parameters.
mod commands;
// Conventional Vault path layouts and argocd-cm migrations (`plugins import`, `--argocd-cm`).
mod conventions;
// The CMP protocol's happy paths: renders, sockets, SIGTERM, stale sockets, many plugins.
mod core;
// The deployment files: the repo-server patch, Helm values and Application examples.
mod deploy;
// MatchRepository of the built-in plugins (`--discover`): placeholder detection, limits.
mod discovery;
// Faults: OpenBao killed mid-render, slow Vault, full disk, 200 concurrent faulty requests.
mod faults;
// Hostile and broken input: precise gRPC errors, nothing left behind, still serving.
mod hostile;
// Operator settings cannot be changed from requests (`--plugin-env`, raw request env).
mod isolation;
// One memory budget per render (YAML aliases) and memory returned after a big render.
mod memory;
// Migration to External Secrets: converted Secrets become `ExternalSecret`s, values unread.
mod migration;
// The monitoring bundle: promtool on the alerts, metrics the rules and dashboard query exist.
mod monitoring;
// Behaviour behind the performance work: shared reads, render cache, TTL, token renewal.
mod perf;
// Rollout hashes: a new KV version changes only the annotation of the workload using it.
mod rollout;
// Rotation-aware refresh: hard-refresh patches for exactly the apps that read an old version.
mod rotation;
// Confined tools: approved argv only, no credentials, other requests' files, network, signals.
mod sandbox;
// Substitution end to end against OpenBao, /readyz, and no secret value in errors or logs.
mod vault;
