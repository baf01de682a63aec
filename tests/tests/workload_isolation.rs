//! Workload isolation on a real agent: the agent identifies callers by the kernel's credentials of
//! the connecting process, so a process of another uid gets `PermissionDenied` `no identity
//! issued` while it has no entry, and only its own SVID once it has one, never the first uid's.
//! The second workload is uid/gid 65534 (`nobody`), started with `setpriv` (or `runuser`); the
//! tests need root for that and print `SKIPPED` without it (a failure under `CI=true`). A request
//! without the `workload.spiffe.io` header is refused with `InvalidArgument` (raw gRPC client).
//!
//! Each workload is a real client: the agent's own CLI (`signet-agent api fetch x509`, a Rust
//! gRPC client), py-spiffe and spiffe-tls (when `SIGNET_VENV` is set; see `python_clients.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../python/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{
    Background, OTHER_UID, Registration, fetched_ids, issuer_and_agent, last_json, python_command,
    run_json, skip, venv_python,
};
use serde_json::json;
use signet_agent::cli::client::{WorkloadEndpoint, request};
use signet_agent::workload_api::{MISSING_HEADER, NO_IDENTITY_ISSUED};
use signet_proto::workload as pb;
use signet_tests::agent::{Agent, agent_binary, current_uid};
use signet_tests::{CliOutput, run_with_timeout};
use tonic::Code;

const A_ID: &str = "spiffe://example.org/iso/workload-a";
const B_ID: &str = "spiffe://example.org/iso/workload-b";

/// How to run a command as [`OTHER_UID`].
enum Switch {
    Setpriv,
    Runuser,
}

impl Switch {
    /// `None` after printing why the test is skipped (a failure under CI).
    fn available() -> Option<Self> {
        let me = current_uid().unwrap();
        if me == OTHER_UID {
            skip("the tests already run as uid 65534, the uid used for the other workload");
            return None;
        }
        let ok = |mut c: Command| {
            c.output().is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout).trim() == OTHER_UID.to_string()
            })
        };
        let mut setpriv = Command::new("setpriv");
        setpriv
            .args(harness::as_uid(OTHER_UID))
            .args(["--", "id", "-u"]);
        if ok(setpriv) {
            return Some(Switch::Setpriv);
        }
        let mut runuser = Command::new("runuser");
        runuser.args(["-u", "nobody", "--", "id", "-u"]);
        if ok(runuser) {
            return Some(Switch::Runuser);
        }
        skip(&format!(
            "cannot run a process as uid {OTHER_UID} (running as uid {me}; setpriv and runuser need root)"
        ));
        None
    }

    /// `program args...` as [`OTHER_UID`].
    fn command(&self, program: &Path) -> Command {
        let mut c = match self {
            Switch::Setpriv => {
                let mut c = Command::new("setpriv");
                c.args(harness::as_uid(OTHER_UID));
                c
            }
            Switch::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "nobody"]);
                c
            }
        };
        c.arg("--").arg(program);
        c
    }

    /// A Python workload as [`OTHER_UID`] (py-spiffe reads `SPIFFE_ENDPOINT_SOCKET`).
    fn python(&self, python: &Path, agent: &Agent, name: &str, args: &[&str]) -> Command {
        match self {
            Switch::Setpriv => {
                python_command(python, &agent.endpoint(), name, args, Some(OTHER_UID))
            }
            Switch::Runuser => {
                let mut c = Command::new("runuser");
                c.args(["-u", "nobody", "--"]);
                let inner = python_command(python, &agent.endpoint(), name, args, None);
                c.arg(inner.get_program()).args(inner.get_args());
                for (k, v) in inner.get_envs() {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                c
            }
        }
    }
}

/// The agent binary as the other uid can run it: the build's own when its directories let that
/// uid in, else a copy in a world-readable temporary directory.
struct AgentBinaryForOther {
    path: PathBuf,
    _copy: Option<tempfile::TempDir>,
}

impl AgentBinaryForOther {
    fn new(switch: &Switch) -> Self {
        let built = agent_binary().unwrap();
        let mut probe = switch.command(&built);
        probe.arg("--version");
        if probe.output().is_ok_and(|o| o.status.success()) {
            return Self {
                path: built,
                _copy: None,
            };
        }
        let dir = tempfile::Builder::new()
            .prefix("signet-agent-bin-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("signet-agent");
        std::fs::copy(&built, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            path,
            _copy: Some(dir),
        }
    }

    /// `signet-agent api fetch x509 --output json` against `agent`, as the other uid.
    fn fetch(&self, switch: &Switch, agent: &Agent) -> CliOutput {
        let mut cmd = switch.command(&self.path);
        cmd.args(["api", "fetch", "x509", "--output", "json", "--socket-path"])
            .arg(agent.socket_path())
            .env_remove("SPIFFE_ENDPOINT_SOCKET");
        run_with_timeout(cmd, harness::WORKLOAD_TIMEOUT).unwrap()
    }
}

/// Lets the other uid reach the agent's socket: the test harness's temporary directory is 0700;
/// below it, the socket directory the agent created must be 0755 and its data directory 0700.
fn open_agent_dir(agent: &Agent) {
    std::fs::set_permissions(agent.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let socket_dir = agent.socket_path().parent().unwrap();
    assert_eq!(mode(socket_dir), 0o755, "{}", socket_dir.display());
    assert_eq!(
        mode(&agent.data_dir()),
        0o700,
        "{}",
        agent.data_dir().display()
    );
}

/// Asserts that the CLI as the other uid was refused with `PermissionDenied` `no identity issued`
/// (the CLI words that code, and only that one, as "issued no identity to this process").
fn assert_refused(out: &CliOutput) {
    assert!(
        !out.success(),
        "the other uid got an answer: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("issued no identity to this process")
            && out.stderr.contains(NO_IDENTITY_ISSUED),
        "not PermissionDenied `no identity issued`: {}",
        out.stderr
    );
    assert!(!out.stdout.contains("spiffe://"), "{}", out.stdout);
}

#[test]
fn a_uid_without_entry_is_refused_and_never_gets_another_uids_svid() {
    let Some(switch) = Switch::available() else {
        return;
    };
    let me = current_uid().unwrap();
    let (issuer, agent) = issuer_and_agent(&[Registration::uid(A_ID, me)], |b| b);
    open_agent_dir(&agent);
    let other = AgentBinaryForOther::new(&switch);

    // A gets its SVID; B, connecting to the same socket, is refused.
    assert_eq!(fetched_ids(&agent.fetch_x509_json().unwrap()), [A_ID]);
    assert_refused(&other.fetch(&switch, &agent));

    let python = venv_python();
    if let Some(python) = &python {
        // py-spiffe's single call sees the exact status.
        let (status, doc, out) = run_json(switch.python(
            python,
            &agent,
            "fetch_x509.py",
            &["--mode", "once", "--timeout", "30"],
        ));
        assert_eq!(status.code(), Some(3), "{out:?}");
        assert_eq!(doc["error"]["grpc_code"], "PERMISSION_DENIED", "{doc}");
        assert_eq!(doc["error"]["grpc_details"], NO_IDENTITY_ISSUED, "{doc}");
    }

    // Register B. A process of B that was waiting (py-spiffe's X509Source retries
    // PermissionDenied) receives B's SVID, and only B's.
    if let Some(python) = &python {
        let mut waiting = Background::spawn(switch.python(
            python,
            &agent,
            "fetch_x509.py",
            &["--mode", "source", "--timeout", "60"],
        ));
        harness_create(&issuer, B_ID, OTHER_UID);
        let doc = waiting.next_json();
        assert_eq!(doc["spiffe_id"], B_ID, "{doc}");
        assert_eq!(doc["svid_ids"], json!([B_ID]));
        let (status, stderr) = waiting.finish();
        assert!(status.is_some_and(|s| s.success()), "{status:?} {stderr}");
        // The CLI as B agrees; A still gets only A's.
        let out = other.fetch(&switch, &agent);
        let doc = serde_json::from_str(&out.clone().ok().unwrap()).unwrap();
        assert_eq!(fetched_ids(&doc), [B_ID]);
        assert_eq!(fetched_ids(&agent.fetch_x509_json().unwrap()), [A_ID]);
    }
}

fn harness_create(issuer: &signet_tests::Issuer, id: &str, uid: u32) {
    signet_tests::agent::create_entry(
        issuer,
        id,
        harness::NODE_ALIAS,
        &[&format!("unix:uid:{uid}")],
        &[],
    )
    .unwrap();
}

#[test]
fn workloads_of_two_uids_each_get_only_their_own_svid() {
    let Some(switch) = Switch::available() else {
        return;
    };
    let me = current_uid().unwrap();
    let (_issuer, agent) = issuer_and_agent(
        &[
            Registration::uid(A_ID, me),
            Registration::uid(B_ID, OTHER_UID),
        ],
        |b| b,
    );
    open_agent_dir(&agent);
    let other = AgentBinaryForOther::new(&switch);

    assert_eq!(fetched_ids(&agent.fetch_x509_json().unwrap()), [A_ID]);
    let out = other.fetch(&switch, &agent);
    let doc: serde_json::Value = serde_json::from_str(&out.clone().ok().unwrap()).unwrap();
    assert_eq!(fetched_ids(&doc), [B_ID]);

    // B cannot read the agent's persisted state (workload keys included).
    let mut ls = switch.command(Path::new("/bin/ls"));
    ls.arg(agent.data_dir());
    let out = run_with_timeout(ls, harness::WORKLOAD_TIMEOUT).unwrap();
    assert!(
        !out.success(),
        "uid {OTHER_UID} can list the data dir: {}",
        out.stdout
    );

    // py-spiffe as B: only B's SVID. Then spiffe-tls between the two uids, each process holding
    // only its own identity: the server (A) accepts B, the client (B) accepts A.
    let Some(python) = venv_python() else { return };
    let (status, doc, out) =
        run_json(switch.python(&python, &agent, "fetch_x509.py", &["--timeout", "30"]));
    assert!(status.success(), "{out:?}");
    assert_eq!(doc["svid_ids"], json!([B_ID]));

    let mut server = Background::spawn(python_command(
        &python,
        &agent.endpoint(),
        "mtls_server.py",
        &["--id", A_ID, "--authorize", B_ID],
        None,
    ));
    let ready = server.next_json();
    let addr = ready["listening"]
        .as_str()
        .unwrap_or_else(|| panic!("the server did not listen: {ready}"))
        .to_owned();
    let client = switch.python(
        &python,
        &agent,
        "mtls_client.py",
        &["--id", B_ID, "--authorize", A_ID, "--connect", &addr],
    );
    let out = run_with_timeout(client, harness::WORKLOAD_TIMEOUT).unwrap();
    let doc = last_json(&out);
    assert!(out.success(), "{out:?}");
    assert_eq!(doc["peer_spiffe_id"], A_ID);
    let served = server.next_json();
    assert_eq!(served["peer_spiffe_id"], B_ID, "{served}");
    let (status, stderr) = server.finish();
    assert!(
        status.is_some_and(|s| s.success()),
        "server: {status:?} {stderr}"
    );

    // B cannot present A's identity: its client asking for A's SVID finds none.
    let (status, doc, out) = run_json(switch.python(
        &python,
        &agent,
        "mtls_client.py",
        &["--id", A_ID, "--authorize", A_ID, "--connect", &addr],
    ));
    assert_eq!(status.code(), Some(3), "{out:?}");
    assert_eq!(doc["stage"], "workload_api", "{doc}");
}

#[test]
fn a_request_without_the_security_header_is_invalid_argument() {
    let me = current_uid().unwrap();
    let (_issuer, agent) = issuer_and_agent(&[Registration::uid(A_ID, me)], |b| b);
    let endpoint = WorkloadEndpoint::Unix(agent.socket_path().to_path_buf());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = endpoint.connect().await.unwrap();
        let check = |r: Result<Code, tonic::Status>, what: &str| {
            let s = r.expect_err(what);
            assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
            assert_eq!(s.message(), MISSING_HEADER, "{what}");
        };
        check(
            client
                .fetch_x509svid(tonic::Request::new(pb::X509svidRequest {}))
                .await
                .map(|_| Code::Ok),
            "FetchX509SVID",
        );
        check(
            client
                .fetch_x509_bundles(tonic::Request::new(pb::X509BundlesRequest {}))
                .await
                .map(|_| Code::Ok),
            "FetchX509Bundles",
        );
        check(
            client
                .fetch_jwtsvid(tonic::Request::new(pb::JwtsvidRequest {
                    audience: vec!["x".into()],
                    spiffe_id: String::new(),
                }))
                .await
                .map(|_| Code::Ok),
            "FetchJWTSVID",
        );
        check(
            client
                .fetch_jwt_bundles(tonic::Request::new(pb::JwtBundlesRequest {}))
                .await
                .map(|_| Code::Ok),
            "FetchJWTBundles",
        );
        check(
            client
                .validate_jwtsvid(tonic::Request::new(pb::ValidateJwtsvidRequest {
                    audience: "x".into(),
                    svid: "y".into(),
                }))
                .await
                .map(|_| Code::Ok),
            "ValidateJWTSVID",
        );
        // A header with another value is no header.
        let mut wrong = tonic::Request::new(pb::X509svidRequest {});
        wrong.metadata_mut().insert(
            "workload.spiffe.io",
            tonic::metadata::MetadataValue::from_static("false"),
        );
        check(
            client.fetch_x509svid(wrong).await.map(|_| Code::Ok),
            "FetchX509SVID with workload.spiffe.io: false",
        );
        // The same connection, with the header, is served.
        let mut stream = client
            .fetch_x509svid(request(pb::X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        let ids: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
        assert_eq!(ids, [A_ID]);
    });
}
