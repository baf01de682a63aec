//! Start-up, configuration errors, health endpoints and shutdown of the real `signet-issuer`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use signet_tests::{Issuer, IssuerBuilder};

#[test]
fn unknown_config_key_stops_start_up_naming_the_key() {
    let out = IssuerBuilder::new()
        .set("bind_adress", "\"127.0.0.1:1\"")
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("unknown field `bind_adress`"),
        "{}",
        out.stderr
    );

    let out = IssuerBuilder::new()
        .set("ca.key_size", "256")
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("unknown field `key_size`"),
        "{}",
        out.stderr
    );
}

#[test]
fn invalid_config_values_stop_start_up_naming_the_key() {
    for (key, value, expected) in [
        (
            "ca.key_type",
            "\"ec-p521\"",
            "invalid config: ca.key_type: expected one of ec-p256, ec-p384, rsa-2048, got \"ec-p521\"",
        ),
        (
            "log_format",
            "\"xml\"",
            "invalid config: log_format: expected one of text, json",
        ),
        (
            "defaults.x509_svid_ttl",
            "\"soon\"",
            "invalid config: defaults.x509_svid_ttl:",
        ),
        (
            "trust_domain",
            "\"Bad_Domain\"",
            "invalid config: trust_domain:",
        ),
        (
            "datastore.url",
            "\"mysql://x\"",
            "invalid config: datastore.url:",
        ),
    ] {
        let out = IssuerBuilder::new()
            .set(key, value)
            .run_expecting_exit()
            .unwrap();
        assert!(!out.success(), "{key}");
        assert!(out.stderr.contains(expected), "{key}: {}", out.stderr);
    }
    let out = IssuerBuilder::new()
        .unset("trust_domain")
        .run_expecting_exit()
        .unwrap();
    assert!(
        out.stderr.contains("trust_domain: is required"),
        "{}",
        out.stderr
    );

    let out = std::process::Command::new(signet_tests::issuer_binary().unwrap())
        .args(["run", "--config", "/nonexistent/issuer.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/issuer.toml")
    );
}

#[test]
fn unreachable_store_exits_with_a_clear_error() {
    let out = IssuerBuilder::new()
        .set_str("datastore.url", "postgres://signet:hunter2@127.0.0.1:1/x")
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("cannot open datastore postgres://signet:***@127.0.0.1:1/x"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[test]
fn occupied_port_exits_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = IssuerBuilder::new()
        .set_str("bind_address", &addr)
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains(&format!("bind_address {addr}: cannot listen")),
        "{}",
        out.stderr
    );
}

#[test]
fn world_readable_socket_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = IssuerBuilder::new()
        .set_str(
            "admin_socket_path",
            dir.join("admin.sock").to_str().unwrap(),
        )
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("has mode 0755: it must not be accessible by group or others"),
        "{}",
        out.stderr
    );
}

#[test]
fn health_endpoints_answer_over_http() {
    let issuer = Issuer::start().unwrap();
    let (status, body) = issuer.http_get("/live").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let (status, body) = issuer.http_get("/ready").unwrap();
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready,
        serde_json::json!({"ready": true, "store_ok": true, "ca_active": true, "node_api_bound": true})
    );

    let signatures = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("signet_signatures_total{kind=\"x509_svid\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let (_, before) = issuer.http_get("/metrics").unwrap();
    issuer
        .cli_ok(&["x509", "mint", "--spiffe-id", "spiffe://example.org/m"])
        .unwrap();
    let (status, metrics) = issuer.http_get("/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(signatures(&metrics), signatures(&before) + 1, "{metrics}");
    for needle in [
        "signet_signature_duration_seconds_bucket{",
        // The CA journal, the JWT key journal and the WIT key journal.
        "signet_store_call_duration_seconds_count{op=\"load_journal\"} 3",
        "signet_rpcs_total{api=\"admin\",method=\"MintX509Svid\",code=\"Ok\"} 1",
        "# TYPE signet_entries gauge",
        "# TYPE signet_agents gauge",
        "# EOF",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    let (status, _) = issuer.http_get("/nope").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn sigterm_stops_gracefully_and_removes_the_socket() {
    let mut issuer = Issuer::start().unwrap();
    let sock = issuer.socket_path().to_owned();
    assert!(sock.exists());
    let status = issuer.terminate().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists());
    let logs = issuer.logs().join("\n");
    assert!(logs.contains("\"signal\":\"SIGTERM\""), "{logs}");
    assert!(logs.contains("issuer stopped"), "{logs}");
}

#[test]
fn restart_keeps_entries_and_the_ca() {
    let mut issuer = Issuer::start().unwrap();
    let entry = issuer
        .cli_json(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/keep",
            "--parent-id",
            "spiffe://example.org/node/a",
            "--selector",
            "unix:uid:0",
            "--output",
            "json",
        ])
        .unwrap();
    let bundle = issuer.bundle_pem().unwrap();
    issuer.restart().unwrap();
    assert_eq!(issuer.bundle_pem().unwrap(), bundle);
    let all = issuer
        .cli_json(&["entry", "show", "--output", "json"])
        .unwrap();
    assert_eq!(all, serde_json::json!([entry]));
}

#[test]
fn two_issuers_cannot_share_a_socket() {
    let first = Issuer::start().unwrap();
    let out = IssuerBuilder::new()
        .set_str("admin_socket_path", first.socket_path().to_str().unwrap())
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("another process is listening"),
        "{}",
        out.stderr
    );
    first.cli_ok(&["healthcheck"]).unwrap();
}

#[test]
fn x509pop_bundle_is_checked_at_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.pem");
    let out = IssuerBuilder::new()
        .set_str(
            "node_attestors.x509pop.ca_bundle_path",
            missing.to_str().unwrap(),
        )
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("node_attestors.x509pop.ca_bundle_path: ")
            && out.stderr.contains("cannot read CA bundle"),
        "{}",
        out.stderr
    );

    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let out = IssuerBuilder::new()
        .set_str(
            "node_attestors.x509pop.ca_bundle_path",
            garbage.to_str().unwrap(),
        )
        .run_expecting_exit()
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("node_attestors.x509pop.ca_bundle_path:"),
        "{}",
        out.stderr
    );

    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agents CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let good = tmp.path().join("agents-ca.pem");
    std::fs::write(&good, ca.pem()).unwrap();
    let issuer = IssuerBuilder::new()
        .set_str(
            "node_attestors.x509pop.ca_bundle_path",
            good.to_str().unwrap(),
        )
        .start()
        .unwrap();
    let logs = issuer.logs().join("\n");
    assert!(logs.contains("\"x509pop\":true"), "{logs}");
}
