//! grpc-go (Argo CD's repo-server) sends the unix socket path as HTTP/2 `:authority`. A stock
//! h2 server resets such streams with PROTOCOL_ERROR; our patched h2 must accept all forms.
//! Sent byte for byte with a hand-written HTTP/2 client, since tonic clients refuse these values.

use avp_sidecar::protocol::pb::{CheckPluginConfigurationResponse, ManifestResponse};
use prost::Message;

use crate::support::h2raw::{self, grpc_message};
use crate::support::{self, TestServer, argo_env, fixture};

const FORMS: [&str; 4] = [
    "home%2Fargocd%2Fcmp-server%2Fplugins%2Favp.sock", // grpc-go >= 1.57, NewClient("passthrough:...")
    "%2Fhome%2Fargocd%2Fcmp-server%2Fplugins%2Favp.sock", // grpc-go >= 1.57, DialContext(path)
    "/home/argocd/cmp-server/plugins/avp.sock",        // grpc-go < 1.57 (Argo CD <= 3.1)
    "localhost",                                       // an ordinary client
];

#[test]
fn check_plugin_configuration_with_go_authorities() {
    let server = TestServer::start();
    for authority in FORMS {
        let resp = h2raw::call(
            &server.socket,
            authority,
            "/plugin.ConfigManagementPluginService/CheckPluginConfiguration",
            &grpc_message(&[]),
        );
        assert_eq!(resp.reset, None, "{authority}: stream reset");
        assert!(resp.ended, "{authority}: no complete response: {resp:?}");
        let msg = resp
            .message()
            .unwrap_or_else(|| panic!("{authority}: no message: {resp:?}"));
        CheckPluginConfigurationResponse::decode(msg).expect("decodes");
    }
}

#[test]
fn generate_manifest_with_go_authorities() {
    let server = TestServer::start();
    let spec = support::dir_stream(&fixture("mono"), "apps/chart", argo_env("web", "demo", &[]));
    let body: Vec<u8> = spec
        .messages()
        .iter()
        .flat_map(|m| grpc_message(&m.encode_to_vec()))
        .collect();
    for authority in FORMS {
        let resp = h2raw::call(
            &server.socket,
            authority,
            "/plugin.ConfigManagementPluginService/GenerateManifest",
            &body,
        );
        assert_eq!(resp.reset, None, "{authority}: stream reset");
        let msg = resp
            .message()
            .unwrap_or_else(|| panic!("{authority}: no message: {resp:?}\n{}", server.log()));
        let manifests = ManifestResponse::decode(msg).expect("decodes").manifests;
        assert_eq!(manifests.len(), 2, "{authority}");
    }
}

#[test]
fn health_service_answers_go_authority() {
    let server = TestServer::start();
    // grpc.health.v1.HealthCheckRequest{service: ""} is an empty message.
    let resp = h2raw::call(
        &server.socket,
        FORMS[0],
        "/grpc.health.v1.Health/Check",
        &grpc_message(&[]),
    );
    assert_eq!(resp.reset, None);
    // HealthCheckResponse{status: SERVING(1)} = field 1 varint 1.
    assert_eq!(resp.message(), Some(&[0x08, 0x01][..]));
}

#[test]
fn keepalive_pings_during_a_long_render() {
    // grpc-go pings every 20 s while a stream is open; Argo's Go server once answered a too
    // eager client with GOAWAY ENHANCE_YOUR_CALM. Ping far more often than grpc-go does, for
    // the whole of a slow render, and expect every ping answered and the call to succeed.
    let server = TestServer::start_with(crate::support::ServerOptions {
        kustomize: Some(crate::support::repo_root().join("tests/fixtures/tools/slow-ok")),
        ..Default::default()
    });
    let spec = support::dir_stream(
        &fixture("mono"),
        "apps/kustomize-helm",
        argo_env("web", "demo", &[]),
    );
    let body: Vec<u8> = spec
        .messages()
        .iter()
        .flat_map(|m| grpc_message(&m.encode_to_vec()))
        .collect();
    let resp = h2raw::call_with_pings(
        &server.socket,
        FORMS[0],
        "/plugin.ConfigManagementPluginService/GenerateManifest",
        &body,
        Some(std::time::Duration::from_millis(50)),
    );
    assert_eq!((resp.reset, resp.goaway), (None, None));
    assert!(resp.ping_acks >= 10, "only {} ping acks", resp.ping_acks);
    let msg = resp.message().expect("response");
    assert_eq!(
        ManifestResponse::decode(msg)
            .expect("decodes")
            .manifests
            .len(),
        1
    );
}
