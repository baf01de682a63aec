//! Rust side of the Python workloads in `tests/python/`: finding the virtualenv, running a script
//! as a workload of a real agent (optionally as another uid), reading its JSON lines, and the
//! issuer + agent set-up the Python and isolation tests share. Included with `#[path]` by
//! `tests/tests/python_clients.rs`, `tests/tests/workload_isolation.rs` and `tests/tests/jwt.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use signet_tests::agent::{Agent, AgentBuilder, create_entry};
use signet_tests::{CliOutput, Issuer, run_with_timeout};

/// The trust domain of the test issuer.
pub const TD: &str = "example.org";
/// The node alias the join token maps to; entries are parented to it so that they can be
/// registered before the agent starts (its first sync, hence `agent ready`, includes them).
pub const NODE_ALIAS: &str = "spiffe://example.org/node/python-e2e";
/// How long one Python or CLI workload may run.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(90);
/// The uid (and gid) of the second workload: `nobody`.
pub const OTHER_UID: u32 = 65534;

/// Whether this is CI (`CI=true`), where a missing prerequisite is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints `SKIPPED: reason` and returns, or fails under CI.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "CI=true but {reason}");
    println!("SKIPPED: {reason}");
}

/// `$SIGNET_VENV/bin/python`, or `None` after printing why the test is skipped (a failure under
/// CI). `scripts/test.sh` creates the venv from `tests/python/requirements.txt`.
pub fn venv_python() -> Option<PathBuf> {
    let Some(venv) = std::env::var_os("SIGNET_VENV").filter(|v| !v.is_empty()) else {
        skip(
            "SIGNET_VENV is not set (scripts/test.sh creates .venv from tests/python/requirements.txt)",
        );
        return None;
    };
    let python = PathBuf::from(venv).join("bin/python");
    assert!(
        python.exists(),
        "SIGNET_VENV is set but {} does not exist",
        python.display()
    );
    Some(python)
}

/// A script of `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// `setpriv` arguments that run a command as `uid`/`gid` with no supplementary groups.
pub fn as_uid(uid: u32) -> Vec<String> {
    vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
    ]
}

/// A command running `python script args...` as a workload of the agent at `endpoint`
/// (`SPIFFE_ENDPOINT_SOCKET`), as the test's own uid or, with `uid`, through `setpriv`.
pub fn python_command(
    python: &Path,
    endpoint: &str,
    name: &str,
    args: &[&str],
    uid: Option<u32>,
) -> Command {
    let mut cmd = match uid {
        None => Command::new(python),
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args(as_uid(uid)).arg("--").arg(python);
            c
        }
    };
    cmd.arg(script(name))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint)
        // Never write __pycache__ into the source tree; ignore the caller's Python settings.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONSTARTUP");
    cmd
}

/// The last stdout line of a workload, parsed as JSON (the scripts print one document last).
pub fn last_json(out: &CliOutput) -> Value {
    let line = out.stdout.lines().rev().find(|l| !l.trim().is_empty());
    match line.map(serde_json::from_str::<Value>) {
        Some(Ok(v)) => v,
        _ => panic!(
            "the workload printed no JSON ({}):\nstdout: {}\nstderr: {}",
            out.status, out.stdout, out.stderr
        ),
    }
}

/// Runs a workload to its end; returns its exit status and last JSON line.
pub fn run_json(cmd: Command) -> (ExitStatus, Value, CliOutput) {
    let out = run_with_timeout(cmd, WORKLOAD_TIMEOUT).unwrap();
    let v = last_json(&out);
    (out.status, v, out)
}

/// A workload running in the background, whose stdout lines arrive on a channel; killed on drop.
pub struct Background {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Starts `cmd` with piped stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        Self {
            child: Some(child),
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line as JSON (waits at most [`WORKLOAD_TIMEOUT`]).
    pub fn next_json(&mut self) -> Value {
        match self.lines.recv_timeout(WORKLOAD_TIMEOUT) {
            Ok(line) => {
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            }
            Err(_) => {
                let (status, stderr) = self.finish();
                panic!("the workload printed no line ({status:?}); stderr:\n{stderr}")
            }
        }
    }

    /// Waits for the process to exit (at most [`WORKLOAD_TIMEOUT`], then kills it); returns its
    /// status and stderr.
    pub fn finish(&mut self) -> (Option<ExitStatus>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(WORKLOAD_TIMEOUT) {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                None
            }
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An entry to register before the agent starts: SPIFFE ID and selectors.
pub struct Registration<'a> {
    /// The SPIFFE ID.
    pub spiffe_id: &'a str,
    /// `type:value` selectors.
    pub selectors: Vec<String>,
}

impl<'a> Registration<'a> {
    /// An entry for the processes of `uid` (`unix:uid:<uid>`).
    pub fn uid(spiffe_id: &'a str, uid: u32) -> Self {
        Self {
            spiffe_id,
            selectors: vec![format!("unix:uid:{uid}")],
        }
    }
}

/// Starts an issuer, registers `entries` under [`NODE_ALIAS`], and starts an agent attested with
/// a join token for that alias; returns once the agent is ready (its first sync, which includes
/// the entries, is done). `configure` may change the agent's configuration.
pub fn issuer_and_agent(
    entries: &[Registration<'_>],
    configure: impl FnOnce(AgentBuilder) -> AgentBuilder,
) -> (Issuer, Agent) {
    let issuer = Issuer::start().unwrap();
    let agent = agent_with_entries(&issuer, TD, entries, &[], configure);
    (issuer, agent)
}

/// Registers `entries` (with the extra `entry create` arguments `extra`) under the node alias
/// `spiffe://<td>/node/python-e2e` of a running issuer of trust domain `td`, and starts an agent
/// attested with a join token for that alias; returns once the agent is ready.
pub fn agent_with_entries(
    issuer: &Issuer,
    td: &str,
    entries: &[Registration<'_>],
    extra: &[&str],
    configure: impl FnOnce(AgentBuilder) -> AgentBuilder,
) -> Agent {
    let alias = format!("spiffe://{td}/node/python-e2e");
    let token = issuer.join_token(Some(&alias)).unwrap();
    for e in entries {
        let selectors: Vec<&str> = e.selectors.iter().map(String::as_str).collect();
        create_entry(issuer, e.spiffe_id, &alias, &selectors, extra).unwrap();
    }
    configure(
        AgentBuilder::new(issuer)
            .set_str("trust_domain", td)
            .join_token(&token),
    )
    .start()
    .unwrap()
}

/// The SPIFFE IDs `signet-agent api fetch x509 --output json` printed, in order.
pub fn fetched_ids(doc: &Value) -> Vec<String> {
    doc["svids"]
        .as_array()
        .unwrap_or_else(|| panic!("no svids in {doc}"))
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that the agent serves exactly `ids` (in any order) to the test process itself.
pub fn assert_served_to_self(agent: &Agent, ids: &[&str]) -> Value {
    let doc = agent.fetch_x509_json().unwrap();
    let mut got = fetched_ids(&doc);
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(
        got, want,
        "the agent's first sync did not serve the entries"
    );
    doc
}

/// Starts `mtls_server.py` presenting `id` and accepting `client`; returns it with its address.
pub fn start_server(
    python: &std::path::Path,
    agent: &Agent,
    id: &str,
    client: &str,
) -> (Background, String) {
    let mut server = Background::spawn(python_command(
        python,
        &agent.endpoint(),
        "mtls_server.py",
        &["--id", id, "--authorize", client],
        None,
    ));
    let ready = server.next_json();
    let addr = ready["listening"]
        .as_str()
        .unwrap_or_else(|| {
            let (status, stderr) = server.finish();
            panic!("the server did not listen ({status:?}): {ready}\nstderr: {stderr}")
        })
        .to_owned();
    assert_eq!(ready["spiffe_id"], id);
    (server, addr)
}

/// Runs `mtls_client.py` presenting `id`, connecting to `addr` and accepting only `server`.
pub fn run_client(
    python: &std::path::Path,
    agent: &Agent,
    id: &str,
    server: &str,
    addr: &str,
) -> (std::process::ExitStatus, Value, signet_tests::CliOutput) {
    run_json(python_command(
        python,
        &agent.endpoint(),
        "mtls_client.py",
        &["--id", id, "--authorize", server, "--connect", addr],
        None,
    ))
}
