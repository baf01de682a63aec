//! Real third-party Python clients against the real `signet-agent` (and `signet-issuer`):
//! py-spiffe's `X509Source` and `WorkloadApiClient` (PyPI `spiffe`) fetch the registered SVID, and
//! `spiffe-tls` completes mutual TLS between two processes using only what the agent served, and
//! refuses a peer whose SPIFFE ID is not the expected one.
//!
//! grpcio sends the percent-encoded socket path as HTTP/2 `:authority`, which h2 alone refuses
//! (`RST_STREAM(PROTOCOL_ERROR)`); these tests pass through the agent's `:authority` repair
//! (`agent/src/workload_api/authority.rs`, `docs/workload-api.md`).
//!
//! The scripts live in `tests/python/`; the clients are pinned in `tests/python/requirements.txt`
//! and installed by `scripts/test.sh` into `.venv` (`SIGNET_VENV`). Without `SIGNET_VENV` the tests
//! print `SKIPPED` and pass, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::SystemTime;

use harness::{
    Registration, TD, assert_served_to_self, issuer_and_agent, python_command, run_client,
    run_json, start_server, venv_python,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use signet_spiffe::svid::verify_x509_svid;
use signet_spiffe::{Bundle, TrustDomain};
use signet_tests::agent::{Agent, current_uid};

fn pem_to_der(pems: &Value) -> Vec<Vec<u8>> {
    pems.as_array()
        .unwrap_or_else(|| panic!("not a PEM list: {pems}"))
        .iter()
        .map(|p| {
            CertificateDer::from_pem_slice(p.as_str().unwrap().as_bytes())
                .unwrap()
                .to_vec()
        })
        .collect()
}

fn hex_serial(s: &Value) -> String {
    s.as_str()
        .unwrap_or_else(|| panic!("no serial: {s}"))
        .to_ascii_lowercase()
        .trim_start_matches('0')
        .to_owned()
}

#[test]
fn python_x509_source_gets_the_registered_svid() {
    let Some(python) = venv_python() else { return };
    let id = "spiffe://example.org/py/workload";
    let (issuer, agent) = issuer_and_agent(&[Registration::uid(id, current_uid().unwrap())], |b| b);
    // What the agent serves, as its own (Rust) client sees it.
    let cli = assert_served_to_self(&agent, &[id]);
    let td = TrustDomain::new(TD).unwrap();
    let issuer_bundle = Bundle::from_pem(&td, issuer.bundle_pem().unwrap().as_bytes()).unwrap();
    let issuer_authorities: BTreeSet<Vec<u8>> =
        issuer_bundle.x509_authorities.iter().cloned().collect();

    // `source`: the long-lived X509Source; `once`: a single WorkloadApiClient call.
    for mode in ["source", "once"] {
        let (status, doc, out) = run_json(python_command(
            &python,
            &agent.endpoint(),
            "fetch_x509.py",
            &["--mode", mode, "--timeout", "30"],
            None,
        ));
        assert!(status.success(), "py-spiffe ({mode}) failed: {out:?}");
        assert_eq!(doc["mode"], mode);
        assert_eq!(doc["spiffe_id"], id, "{doc}");
        assert_eq!(doc["svid_ids"], json!([id]));
        assert_eq!(doc["bundle_trust_domains"], json!([TD]));
        assert_eq!(
            doc["key_matches_leaf"], true,
            "the served key is not the leaf's"
        );

        // The chain py-spiffe parsed verifies against the issuer's own bundle (taken from the
        // issuer's CLI, not from the agent).
        let chain = pem_to_der(&doc["chain_pem"]);
        let verified = verify_x509_svid(&chain, &issuer_bundle, SystemTime::now()).unwrap();
        assert_eq!(verified.to_string(), id);

        // The bundle py-spiffe got is the issuer's bundle.
        let served: BTreeSet<Vec<u8>> = pem_to_der(&doc["bundles"][TD]).into_iter().collect();
        assert_eq!(served, issuer_authorities);

        // Same SVID as the agent's CLI saw: serial and expiry.
        let svid = &cli["svids"][0];
        assert_eq!(hex_serial(&doc["serial"]), hex_serial(&svid["serial"]));
        assert_eq!(doc["not_after"], svid["expires_at"]);
    }
}

const SERVER: &str = "spiffe://example.org/py/server";
const CLIENT: &str = "spiffe://example.org/py/client";
const IMPOSTOR: &str = "spiffe://example.org/py/impostor";

/// The two workloads' entries (both for this uid: each process picks its own SVID among what the
/// agent served it; `workload_isolation.rs` covers workloads of different uids).
fn mtls_setup() -> (signet_tests::Issuer, Agent) {
    let uid = current_uid().unwrap();
    let (issuer, agent) = issuer_and_agent(
        &[
            Registration::uid(SERVER, uid),
            Registration::uid(CLIENT, uid),
        ],
        |b| b,
    );
    assert_served_to_self(&agent, &[SERVER, CLIENT]);
    (issuer, agent)
}

#[test]
fn python_spiffe_tls_mutual_tls_between_two_processes() {
    let Some(python) = venv_python() else { return };
    let (_issuer, agent) = mtls_setup();
    let (mut server, addr) = start_server(&python, &agent, SERVER, CLIENT);

    let (status, client, out) = run_client(&python, &agent, CLIENT, SERVER, &addr);
    assert!(status.success(), "the client failed: {out:?}");
    assert_eq!(client["peer_spiffe_id"], SERVER, "{client}");
    assert_eq!(client["received"], format!("hello from {SERVER}"));

    let served = server.next_json();
    assert_eq!(served["peer_spiffe_id"], CLIENT, "{served}");
    assert_eq!(served["received"], format!("hello from {CLIENT}"));
    let (status, stderr) = server.finish();
    assert!(
        status.is_some_and(|s| s.success()),
        "server: {status:?} {stderr}"
    );
}

#[test]
fn python_spiffe_tls_refuses_a_peer_with_another_id() {
    let Some(python) = venv_python() else { return };
    let (_issuer, agent) = mtls_setup();

    // The client expects another server ID: it refuses the handshake, nothing is exchanged.
    let (mut server, addr) = start_server(&python, &agent, SERVER, CLIENT);
    let (status, client, out) = run_client(&python, &agent, CLIENT, IMPOSTOR, &addr);
    assert_eq!(status.code(), Some(4), "{out:?}");
    assert_eq!(client["stage"], "handshake", "{client}");
    assert!(client.get("peer_spiffe_id").is_none() && client.get("received").is_none());
    let served = server.next_json();
    assert_eq!(served["stage"], "handshake", "{served}");
    assert!(served.get("peer_spiffe_id").is_none() && served.get("received").is_none());
    let (status, _) = server.finish();
    assert_eq!(status.and_then(|s| s.code()), Some(4));

    // The server expects another client ID: it refuses the client; the client gets no answer.
    let (mut server, addr) = start_server(&python, &agent, SERVER, IMPOSTOR);
    let (status, client, out) = run_client(&python, &agent, CLIENT, SERVER, &addr);
    assert_eq!(status.code(), Some(4), "{out:?}");
    assert!(
        client.get("error").is_some() && client.get("received").is_none(),
        "{client}"
    );
    let served = server.next_json();
    assert_eq!(served["stage"], "handshake", "{served}");
    assert!(served.get("peer_spiffe_id").is_none() && served.get("received").is_none());
    let (status, _) = server.finish();
    assert_eq!(status.and_then(|s| s.code()), Some(4));
}
