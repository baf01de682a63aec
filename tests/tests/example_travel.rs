//! The travel example end to end: `examples/travel/run.sh` starts a real issuer, agent and
//! flights API and plays the scenario of docs/delegation.md; its `DECISION:` lines and the
//! auditor's trace are checked here. The script uses the binaries of this build
//! (`SIGNET_BIN_DIR`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use signet_tests::{binary_path, build_package};

const BINARIES: [&str; 6] = [
    "signet-issuer",
    "signet-agent",
    "travel-idp",
    "flights-api",
    "travel-client",
    "travel-forge",
];

/// Runs `examples/travel/run.sh` in its own process group (killed whole on a time-out);
/// returns (success, stdout, stderr).
fn run_example(timeout: Duration) -> (bool, String, String) {
    for package in ["signet-issuer", "signet-agent", "signet-examples"] {
        build_package(package).unwrap();
    }
    let bin_dir = binary_path(BINARIES[0])
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for b in BINARIES {
        binary_path(b).unwrap();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/travel/run.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("SIGNET_BIN_DIR", &bin_dir)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("SIGNET_EXAMPLE_KEEP")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((out, err));
    });
    let (out, err) = match rx.recv_timeout(timeout) {
        Ok(streams) => streams,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.wait();
            panic!("run.sh did not finish within {}s", timeout.as_secs());
        }
    };
    let status = child.wait().unwrap();
    (status.success(), out, err)
}

#[test]
fn the_travel_example_allows_the_chain_refuses_the_rest_and_traces_it() {
    let (ok, out, err) = run_example(Duration::from_secs(120));
    assert!(ok, "run.sh failed\nstdout:\n{out}\nstderr:\n{err}");
    let decisions: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("DECISION: "))
        .collect();
    let context = format!("decisions: {decisions:#?}\nstdout:\n{out}");

    // search, carrying alice's token from the planner: allowed, flights:read only.
    let allowed: Vec<&&str> = decisions
        .iter()
        .filter(|l| l.starts_with("DECISION: allowed"))
        .collect();
    assert_eq!(allowed.len(), 1, "{context}");
    let a = allowed[0];
    for part in [
        "DECISION: allowed flights:read for https://idp.example.com#alice (alice@example.com)",
        "via spiffe://example.org/planner -> spiffe://example.org/search",
        "presented by spiffe://example.org/search",
        "rights flights:read,",
    ] {
        assert!(a.contains(part), "{part:?} not in {a:?}\n{context}");
    }
    let left: u64 = a
        .rsplit_once("(in ")
        .and_then(|(_, s)| s.strip_suffix(" s)"))
        .unwrap_or_else(|| panic!("no expiry in {a:?}"))
        .parse()
        .unwrap();
    assert!(left <= 600, "expires within 10 minutes: {a}");

    // The refusals, in the script's order.
    let refused: Vec<&str> = decisions
        .iter()
        .copied()
        .filter(|l| l.starts_with("DECISION: refused"))
        .collect();
    let expected = [
        (
            "DECISION: refused (not_the_holder) flights:read presented by spiffe://example.org/planner",
            "holder (last actor) is spiffe://example.org/search",
        ),
        (
            "DECISION: refused (signature) flights:read presented by spiffe://example.org/search",
            "signature",
        ),
        (
            "DECISION: refused (unauthorized) flights:book presented by spiffe://example.org/search",
            "\"flights:book\" is not one of the token's rights",
        ),
        (
            "DECISION: refused (unauthorized) flights:book presented by spiffe://example.org/search",
            "\"flights:book\" is not one of the token's rights",
        ),
        (
            "DECISION: refused (too_deep) hop spiffe://example.org/search -> spiffe://example.org/scraper, at the issuer",
            "",
        ),
        (
            "DECISION: refused (revoked) flights:read presented by spiffe://example.org/search",
            "is revoked",
        ),
    ];
    assert_eq!(refused.len(), expected.len(), "{context}");
    for (line, (start, part)) in refused.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}\n{context}"
        );
        assert!(line.contains(part), "{part:?} not in {line:?}\n{context}");
    }

    // The auditor's answer: the chain of search's token, from alice to search.
    let trace = out
        .split("== 11.")
        .nth(1)
        .unwrap_or_else(|| panic!("no step 11\n{out}"));
    for name in [
        "https://idp.example.com#alice",
        "spiffe://example.org/planner",
        "spiffe://example.org/search",
        "delegation.mint",
        "delegation.hop",
    ] {
        assert!(trace.contains(name), "{name:?} not in the trace:\n{trace}");
    }
    // No bearer token in what the example prints (tokens are base64url Biscuits, hundreds of
    // characters without a space).
    assert!(
        !out.split_whitespace()
            .any(|w| w.len() > 200 && !w.contains('"')),
        "a token-like word in the output:\n{out}"
    );
}
