//! Starting the real `signet-agent` binary next to an [`Issuer`](crate::Issuer).
//!
//! [`AgentBuilder`] writes an agent configuration into a fresh temporary directory (data
//! directory, Workload API socket, config file) pointing at a running issuer, starts
//! `target/debug/signet-agent run`, and waits for its `agent ready` log line (the cache can serve)
//! or, with [`AgentBuilder::start_unready`], for `agent started` (sockets bound). The lines carry
//! the socket path and the health address. [`Agent`] restarts the process on the same directory,
//! kills it, waits for log lines, and runs the agent's CLI against it; the process is killed on
//! drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    COMMAND_TIMEOUT, CliOutput, Issuer, START_TIMEOUT, binary_path, build_package,
    run_with_timeout, toml_str,
};

/// Path of `target/debug/signet-agent`, built first (once per test process; see
/// [`crate::issuer_binary`]).
pub fn agent_binary() -> Result<PathBuf> {
    static BUILD: OnceLock<Result<(), String>> = OnceLock::new();
    BUILD
        .get_or_init(|| build_package("signet-agent").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))?;
    binary_path("signet-agent")
}

fn agent_command() -> Result<Command> {
    let mut cmd = Command::new(agent_binary()?);
    cmd.env_remove("RUST_LOG")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("SIGNET_AGENT_JOIN_TOKEN");
    Ok(cmd)
}

/// The uid of the test process (what `unix:uid:<uid>` selects).
pub fn current_uid() -> Result<u32> {
    Ok(std::fs::metadata("/proc/self")
        .context("cannot stat /proc/self")?
        .uid())
}

/// A TCP port that was free a moment ago on 127.0.0.1 (to give an issuer a fixed node API
/// address that survives its restart).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Log lines of a process, with a condition variable to wait for new ones.
#[derive(Debug, Default)]
struct LogBook {
    lines: Mutex<(Vec<String>, bool)>,
    cond: Condvar,
}

impl LogBook {
    fn push(&self, line: String) {
        if let Ok(mut g) = self.lines.lock() {
            g.0.push(line);
        }
        self.cond.notify_all();
    }

    fn close(&self) {
        if let Ok(mut g) = self.lines.lock() {
            g.1 = true;
        }
        self.cond.notify_all();
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().map(|g| g.0.clone()).unwrap_or_default()
    }

    /// Waits for a JSON line satisfying `pred` (looking at lines from index `from`). `Ok(None)`
    /// when the process closed its stderr first.
    fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<Option<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        let mut seen = from;
        let mut guard = self
            .lines
            .lock()
            .map_err(|_| anyhow!("log lock poisoned"))?;
        loop {
            while seen < guard.0.len() {
                if let Some(line) = guard.0.get(seen)
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && pred(&v)
                {
                    return Ok(Some(v));
                }
                seen += 1;
            }
            if guard.1 {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {}s waiting for a log line",
                    timeout.as_secs()
                );
            }
            guard = self
                .cond
                .wait_timeout(guard, deadline - now)
                .map_err(|_| anyhow!("log lock poisoned"))?
                .0;
        }
    }
}

/// The log message a start waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `agent started`: the Workload API socket and health listener are bound.
    Started,
    /// `agent ready`: the cache can serve (first sync done, or persisted state restored).
    Ready,
}

impl Wait {
    fn message(self) -> &'static str {
        match self {
            Wait::Started => "agent started",
            Wait::Ready => "agent ready",
        }
    }
}

/// Builds an agent configuration for an issuer and starts the agent.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    top: BTreeMap<String, String>,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    join_token: Option<String>,
}

impl AgentBuilder {
    /// Trust domain `example.org`, the issuer's node API address, `insecure_bootstrap`, the
    /// join-token attestor, JSON logs at `info`, a health listener on a free port.
    pub fn new(issuer: &Issuer) -> Self {
        Self::for_address(&issuer.node_addr().to_string())
    }

    /// As [`AgentBuilder::new`], for an issuer at `address` (which need not be running).
    pub fn for_address(address: &str) -> Self {
        Self {
            top: BTreeMap::new(),
            tables: BTreeMap::new(),
            join_token: None,
        }
        .set_str("trust_domain", "example.org")
        .set_str("issuer_address", address)
        .set("insecure_bootstrap", "true")
        .set_str("log_level", "info")
        .set_str("log_format", "json")
        .set_str("node_attestor.type", "join_token")
        .set_str("health.bind_address", "127.0.0.1:0")
    }

    /// Sets `key` (dotted for tables: `node_attestor.type`) to a TOML value.
    pub fn set(mut self, key: &str, toml_value: &str) -> Self {
        match key.rsplit_once('.') {
            None => {
                self.top.insert(key.to_owned(), toml_value.to_owned());
            }
            Some((table, k)) => {
                self.tables
                    .entry(table.to_owned())
                    .or_default()
                    .insert(k.to_owned(), toml_value.to_owned());
            }
        }
        self
    }

    /// Sets a string value.
    pub fn set_str(self, key: &str, value: &str) -> Self {
        self.set(key, &toml_str(value))
    }

    /// Removes a key.
    pub fn unset(mut self, key: &str) -> Self {
        match key.rsplit_once('.') {
            None => {
                self.top.remove(key);
            }
            Some((table, k)) => {
                if let Some(t) = self.tables.get_mut(table) {
                    t.remove(k);
                }
            }
        }
        self
    }

    /// The join token given with `--join-token` on the first start.
    pub fn join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self
    }

    /// Renders the config for the temporary directory `dir` (`data_dir` = `dir/data`,
    /// `socket_path` = `dir/public/api.sock` unless set).
    pub fn render(&self, dir: &Path) -> String {
        let mut top = self.top.clone();
        top.entry("data_dir".to_owned())
            .or_insert_with(|| toml_str(&dir.join("data").display().to_string()));
        top.entry("socket_path".to_owned())
            .or_insert_with(|| toml_str(&dir.join("public/api.sock").display().to_string()));
        let mut out = String::new();
        for (k, v) in &top {
            out.push_str(&format!("{k} = {v}\n"));
        }
        for (table, kv) in &self.tables {
            out.push_str(&format!("\n[{table}]\n"));
            for (k, v) in kv {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    fn prepare(&self) -> Result<(tempfile::TempDir, PathBuf)> {
        let dir = tempfile::Builder::new()
            .prefix("signet-agent-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, self.render(dir.path()))?;
        Ok((dir, config_path))
    }

    /// Starts the agent and waits for `agent ready`.
    pub fn start(self) -> Result<Agent> {
        self.start_waiting(Wait::Ready)
    }

    /// Starts the agent and waits for `agent started` only.
    pub fn start_unready(self) -> Result<Agent> {
        self.start_waiting(Wait::Started)
    }

    fn start_waiting(self, wait: Wait) -> Result<Agent> {
        let (dir, config_path) = self.prepare()?;
        let mut agent = Agent {
            child: None,
            dir,
            config_path,
            socket_path: PathBuf::new(),
            health_addr: None,
            agent_id: None,
            logs: Arc::new(LogBook::default()),
        };
        agent.spawn(self.join_token.as_deref(), wait)?;
        Ok(agent)
    }

    /// Runs `signet-agent run` with this config (and the join token, if any) and expects it to
    /// exit by itself. Returns its status and output.
    pub fn run_expecting_exit(self) -> Result<CliOutput> {
        let (_dir, config_path) = self.prepare()?;
        let mut cmd = agent_command()?;
        cmd.arg("run").arg("--config").arg(&config_path);
        if let Some(t) = &self.join_token {
            cmd.arg("--join-token").arg(t);
        }
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }
}

/// A running agent, killed on drop.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    socket_path: PathBuf,
    health_addr: Option<SocketAddr>,
    agent_id: Option<String>,
    logs: Arc<LogBook>,
}

impl Agent {
    fn spawn(&mut self, join_token: Option<&str>, wait: Wait) -> Result<()> {
        let mut cmd = agent_command()?;
        cmd.arg("run").arg("--config").arg(&self.config_path);
        if let Some(t) = join_token {
            cmd.arg("--join-token").arg(t);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start signet-agent")?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let logs = Arc::new(LogBook::default());
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.push(line);
                }
                logs.close();
            });
        }
        self.logs = logs;
        let found = self.logs.wait_for(0, START_TIMEOUT, |v| {
            v.get("message").and_then(|m| m.as_str()) == Some(wait.message())
        });
        let line = match found {
            Ok(Some(v)) => v,
            Ok(None) => {
                let status = child.wait()?;
                bail!(
                    "signet-agent exited during start-up ({status}); logs:\n{}",
                    self.logs.all().join("\n")
                )
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{e}: signet-agent not {wait:?}; logs:\n{}",
                    self.logs.all().join("\n")
                )
            }
        };
        self.child = Some(child);
        let field = |name: &str| line.get(name).and_then(|v| v.as_str()).unwrap_or("");
        self.socket_path = PathBuf::from(field("socket_path"));
        self.health_addr = field("health").parse().ok();
        if wait == Wait::Ready {
            self.agent_id = Some(field("agent_id").to_owned()).filter(|s| !s.is_empty());
        }
        Ok(())
    }

    /// The temporary directory (config, data, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The data directory (unless the config overrode it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The Workload API socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The Workload API endpoint as clients take it (`unix:///...`).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The health listener address, if configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// The agent's SPIFFE ID, from the `agent ready` line.
    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every stderr line of the current process so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.all()
    }

    /// Number of log lines so far (a starting point for [`Agent::wait_for_log`]).
    pub fn log_position(&self) -> usize {
        self.logs.all().len()
    }

    /// Waits (at most `timeout`) for a JSON log line from index `from` on whose `message` is
    /// `message`; returns the line.
    pub fn wait_for_log(
        &self,
        from: usize,
        message: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        self.logs
            .wait_for(from, timeout, |v| {
                v.get("message").and_then(|m| m.as_str()) == Some(message)
            })?
            .ok_or_else(|| anyhow!("signet-agent exited before logging {message:?}"))
    }

    /// Runs `signet-agent ARGS...` (e.g. `api fetch x509 --socket-path ...`).
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = agent_command()?;
        cmd.args(args);
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }

    /// `signet-agent api fetch x509 --output json` against this agent.
    pub fn fetch_x509_json(&self) -> Result<serde_json::Value> {
        let socket = self.socket_path.display().to_string();
        self.cli(&[
            "api",
            "fetch",
            "x509",
            "--socket-path",
            &socket,
            "--output",
            "json",
        ])?
        .json()
    }

    /// `GET path` on the health listener.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        let addr = self
            .health_addr
            .ok_or_else(|| anyhow!("the agent has no health listener"))?;
        crate::http_get(addr, path)
    }

    /// Stops the agent (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal("-TERM")
    }

    /// Kills the agent (SIGKILL) and waits for it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal("-KILL")
    }

    fn signal(&mut self, sig: &str) -> Result<ExitStatus> {
        if let Some(pid) = self.pid() {
            Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .context("cannot run kill")?;
        }
        self.wait_exit(COMMAND_TIMEOUT)
    }

    /// Waits (at most `timeout`) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("agent already stopped"))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                bail!("agent did not exit within {}s", timeout.as_secs())
            }
        }
    }

    /// Starts the agent again on the same config and data (after [`Agent::terminate`] or
    /// [`Agent::kill`]; a running agent is terminated first), optionally with a join token.
    pub fn restart(&mut self, join_token: Option<&str>, wait: Wait) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn(join_token, wait)
    }

    /// Runs `signet-agent run` on this agent's config (the agent must be stopped) and expects it
    /// to exit by itself.
    pub fn run_expecting_exit(&self, join_token: Option<&str>) -> Result<CliOutput> {
        if self.child.is_some() {
            bail!("the agent is running");
        }
        let mut cmd = agent_command()?;
        cmd.arg("run").arg("--config").arg(&self.config_path);
        if let Some(t) = join_token {
            cmd.arg("--join-token").arg(t);
        }
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Registers an entry (`entry create --output json`) and returns its id.
pub fn create_entry(
    issuer: &Issuer,
    spiffe_id: &str,
    parent_id: &str,
    selectors: &[&str],
    extra: &[&str],
) -> Result<String> {
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        parent_id,
        "--output",
        "json",
    ];
    for s in selectors {
        args.extend(["--selector", s]);
    }
    args.extend_from_slice(extra);
    let v = issuer.cli_json(&args)?;
    v.get("id")
        .and_then(|i| i.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no id in {v}"))
}
