//! End-to-end test helpers: start the real `signet-issuer` binary and talk to it.
//!
//! [`IssuerBuilder`] writes a configuration into a fresh temporary directory (data directory,
//! admin socket, config file), lets the node API and health listener pick free ports (`:0`), starts
//! `target/debug/signet-issuer run`, and waits for the `issuer ready` log line, which the issuer
//! prints only once the store is open, the CA is active and every listener is bound. The line also
//! carries the bound addresses. [`Issuer`] runs CLI commands against it, makes HTTP requests to
//! its health listener, and kills the process on drop.
//!
//! The binary is found next to the test executable (`target/debug/deps/..` -> `target/debug/`);
//! build it first (`cargo build -p signet-issuer`; `cargo nextest run` / `cargo test` on the
//! workspace builds it).
//!
//! Fixtures: [`pki`] (a throwaway web CA), [`idp`] (a test OpenID Connect identity provider: keys,
//! a JWKS file or HTTPS server, ID tokens), [`agent`] (the real `signet-agent`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// How long start-up may take before the helper gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a CLI command or a failing start may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of a binary of this workspace, next to the running test executable.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable has no directory"))?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it first (cargo build -p {name})",
            path.display()
        );
    }
    Ok(path)
}

/// Path of `target/debug/signet-issuer`, built first (once per test process) so that tests never
/// run a stale binary: `cargo build -p signet-issuer` is a no-op when it is up to date. Set
/// `SIGNET_TESTS_NO_BUILD=1` to skip the build.
pub fn issuer_binary() -> Result<PathBuf> {
    static BUILD: OnceLock<Result<(), String>> = OnceLock::new();
    BUILD
        .get_or_init(|| build_package("signet-issuer").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))?;
    binary_path("signet-issuer")
}

/// Runs `cargo build -p PACKAGE --bins` into the target directory of the running tests.
pub fn build_package(package: &str) -> Result<()> {
    if std::env::var_os("SIGNET_TESTS_NO_BUILD").is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    // target/<profile>/deps/<test> -> target/<profile> -> target
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable has no directory"))?
        .to_path_buf();
    if profile_dir.ends_with("deps") {
        profile_dir.pop();
    }
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("cannot find the target directory"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bins", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let out = run_with_timeout(cmd, Duration::from_secs(1800))?;
    if !out.success() {
        bail!("cargo build -p {package} failed:\n{}", out.stderr);
    }
    Ok(())
}

/// A TOML configuration file written key by key: top-level keys, then `[table]`s, then raw TOML.
#[derive(Debug, Clone, Default)]
pub struct TomlConfig {
    top: BTreeMap<String, String>,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    raw: String,
}

impl TomlConfig {
    /// Sets `key` (dotted for a table: `ca.ttl`, `node_attestors.x509pop.ca_bundle_path`) to a
    /// TOML value (`"\"2m\""`, `"true"`, ...).
    pub fn set(&mut self, key: &str, toml_value: &str) {
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
    }

    /// Removes a key set before.
    pub fn unset(&mut self, key: &str) {
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
    }

    /// The TOML value of a top-level key, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.top.get(key).map(String::as_str)
    }

    /// Appends raw TOML at the end of the file (after every table).
    pub fn push_raw(&mut self, toml: &str) {
        self.raw.push_str(toml);
        self.raw.push('\n');
    }

    /// The file, with `defaults` (top-level keys and TOML values) for the keys not set.
    pub fn render(&self, defaults: &[(&str, String)]) -> String {
        let mut top = self.top.clone();
        for (k, v) in defaults {
            top.entry((*k).to_owned()).or_insert_with(|| v.clone());
        }
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
        out.push_str(&self.raw);
        out
    }
}

/// Builds a configuration and starts an issuer.
#[derive(Debug, Clone)]
pub struct IssuerBuilder {
    config: TomlConfig,
}

impl Default for IssuerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A TOML string literal.
pub fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

impl IssuerBuilder {
    /// Trust domain `example.org`, SQLite in the temporary directory, JSON logs at `info`, free
    /// ports on 127.0.0.1.
    pub fn new() -> Self {
        Self {
            config: TomlConfig::default(),
        }
        .set("trust_domain", &toml_str("example.org"))
        .set("bind_address", &toml_str("127.0.0.1:0"))
        .set("health.bind_address", &toml_str("127.0.0.1:0"))
        .set("log_level", &toml_str("info"))
        .set("log_format", &toml_str("json"))
    }

    /// Sets `key` (dotted: `ca.ttl`, `node_attestors.x509pop.ca_bundle_path`) to a TOML value
    /// (`"\"2m\""`, `"true"`, ...).
    pub fn set(mut self, key: &str, toml_value: &str) -> Self {
        self.config.set(key, toml_value);
        self
    }

    /// Sets a string value.
    pub fn set_str(self, key: &str, value: &str) -> Self {
        self.set(key, &toml_str(value))
    }

    /// Removes a key set before (to test a missing key).
    pub fn unset(mut self, key: &str) -> Self {
        self.config.unset(key);
        self
    }

    /// Appends raw TOML at the end of the file (after every table).
    pub fn raw(mut self, toml: &str) -> Self {
        self.config.push_raw(toml);
        self
    }

    /// Renders the config file for a temporary directory `dir`: `data_dir` and
    /// `admin_socket_path` default to `dir/data` and `dir/private/admin.sock`.
    pub fn render(&self, dir: &Path) -> String {
        let path = |p: &str| toml_str(&dir.join(p).display().to_string());
        self.config.render(&[
            ("data_dir", path("data")),
            ("admin_socket_path", path("private/admin.sock")),
        ])
    }

    fn prepare(&self) -> Result<(tempfile::TempDir, PathBuf, PathBuf)> {
        let dir = tempfile::Builder::new()
            .prefix("signet-e2e-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config_path = dir.path().join("issuer.toml");
        std::fs::write(&config_path, self.render(dir.path()))?;
        let socket_path = dir.path().join("private/admin.sock");
        Ok((dir, config_path, socket_path))
    }

    /// Starts the issuer and waits until it is ready.
    pub fn start(self) -> Result<Issuer> {
        let (dir, config_path, socket_path) = self.prepare()?;
        let socket_path = self
            .config
            .get("admin_socket_path")
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .map(PathBuf::from)
            .unwrap_or(socket_path);
        let (child, logs, node_addr, health_addr) = spawn_ready(&config_path)?;
        Ok(Issuer {
            child: Some(child),
            dir,
            config_path,
            socket_path,
            node_addr,
            health_addr,
            logs,
        })
    }

    /// Runs `signet-issuer run` with this config and expects it to exit by itself (a start-up
    /// failure). Returns its exit status and stderr.
    pub fn run_expecting_exit(self) -> Result<CliOutput> {
        let (_dir, config_path, _) = self.prepare()?;
        let mut cmd = issuer_command()?;
        cmd.arg("run").arg("--config").arg(&config_path);
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }
}

/// The issuer's stderr lines, with a condition variable so that tests can await a line.
#[derive(Debug, Default)]
pub struct LogBuffer {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

type Logs = Arc<LogBuffer>;

impl LogBuffer {
    fn push(&self, line: String) {
        if let Ok(mut s) = self.state.lock() {
            s.lines.push(line);
        }
        self.changed.notify_all();
    }

    fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.changed.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.lines.clone())
            .unwrap_or_default()
    }

    /// Waits until a JSON log line satisfies `pred` (lines already received count) and returns it.
    pub fn wait_for(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = 0;
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow!("log buffer poisoned"))?;
        loop {
            for line in &state.lines[seen..] {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && pred(&v)
                {
                    return Ok(v);
                }
            }
            seen = state.lines.len();
            if state.closed {
                bail!("the issuer's log ended without the awaited line");
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                bail!("no awaited log line within {}s", timeout.as_secs());
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .map_err(|_| anyhow!("log buffer poisoned"))?
                .0;
        }
    }
}

/// Starts `signet-issuer run --config FILE` and waits for its `issuer ready` line.
fn spawn_ready(config_path: &Path) -> Result<(Child, Logs, SocketAddr, SocketAddr)> {
    let mut child = issuer_command()?
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start signet-issuer")?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow!("no stderr pipe"))?;
    let logs: Logs = Arc::new(LogBuffer::default());
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let ready = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v.get("message").and_then(|m| m.as_str()) == Some("issuer ready"));
                // Buffered before the caller is told, so that its `logs()` holds the ready line.
                logs.push(line);
                if let Some(v) = ready
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v);
                }
            }
            logs.close();
            // Dropping `tx` here tells a waiting caller that the process is gone.
        });
    }
    let dump = |logs: &Logs| logs.lines().join("\n");
    let ready = match rx.recv_timeout(START_TIMEOUT) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "signet-issuer not ready after {}s; logs:\n{}",
                START_TIMEOUT.as_secs(),
                dump(&logs)
            )
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait()?;
            bail!(
                "signet-issuer exited during start-up ({status}); logs:\n{}",
                dump(&logs)
            )
        }
    };
    let addr = |field: &str| -> Result<SocketAddr> {
        ready
            .get(field)
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("ready line has no {field}: {ready}"))?
            .parse()
            .with_context(|| format!("ready line field {field}"))
    };
    let node = addr("node_api")?;
    let health = addr("health")?;
    Ok((child, logs, node, health))
}

fn issuer_command() -> Result<Command> {
    let mut cmd = Command::new(issuer_binary()?);
    cmd.env_remove("RUST_LOG").env_remove("SIGNET_ADMIN_SOCKET");
    Ok(cmd)
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Standard output when the command succeeded, an error with both streams otherwise.
    pub fn ok(self) -> Result<String> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            bail!(
                "command failed ({}):\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout,
                self.stderr
            )
        }
    }

    /// Standard error when the command failed, an error otherwise.
    pub fn err(self) -> Result<String> {
        if self.status.success() {
            bail!("command succeeded unexpectedly:\nstdout: {}", self.stdout)
        } else {
            Ok(self.stderr)
        }
    }

    /// Standard output parsed as JSON (the command must succeed).
    pub fn json(self) -> Result<serde_json::Value> {
        let out = self.ok()?;
        serde_json::from_str(&out).with_context(|| format!("output is not JSON: {out}"))
    }
}

/// Runs a command with stdin closed and waits for it (at most `timeout`, then kills it).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<CliOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().context("cannot start command")?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out?;
            Ok(CliOutput {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        Err(_) => {
            let _ = send_signal(pid, "-KILL");
            bail!("command did not finish within {}s", timeout.as_secs())
        }
    }
}

/// A running issuer, killed on drop.
#[derive(Debug)]
pub struct Issuer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    socket_path: PathBuf,
    node_addr: SocketAddr,
    health_addr: SocketAddr,
    logs: Logs,
}

impl Issuer {
    /// Starts an issuer with the default test configuration.
    pub fn start() -> Result<Self> {
        IssuerBuilder::new().start()
    }

    /// The temporary directory holding the config, data and socket.
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

    /// The admin socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Address of the node API (TLS).
    pub fn node_addr(&self) -> SocketAddr {
        self.node_addr
    }

    /// Address of the health listener.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// Waits for a JSON log line whose `message` is `message` and that satisfies `pred`.
    pub fn wait_for_log(
        &self,
        message: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        self.logs
            .wait_for(|v| v["message"] == message && pred(v), timeout)
            .with_context(|| format!("waiting for log message {message:?}"))
    }

    /// Waits for a JSON log line that satisfies `pred` (for messages with variable parts).
    pub fn wait_for_log_matching(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        self.logs
            .wait_for(pred, timeout)
            .with_context(|| format!("waiting for a log line: {what}"))
    }

    /// Runs `signet-issuer --socket-path <socket> ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = issuer_command()?;
        cmd.arg("--socket-path").arg(&self.socket_path).args(args);
        run_with_timeout(cmd, COMMAND_TIMEOUT)
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        self.cli(args)?
            .ok()
            .with_context(|| format!("signet-issuer {}", args.join(" ")))
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn cli_err(&self, args: &[&str]) -> Result<String> {
        self.cli(args)?
            .err()
            .with_context(|| format!("signet-issuer {}", args.join(" ")))
    }

    /// Runs a CLI command that must succeed and print JSON.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        self.cli(args)?
            .json()
            .with_context(|| format!("signet-issuer {}", args.join(" ")))
    }

    /// `sqlite://` URL of the issuer's SQLite store (unless the config chose another datastore).
    /// The store may be opened alongside the running issuer (WAL mode, single writer at a time).
    pub fn sqlite_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.data_dir().join("datastore.sqlite3").display()
        )
    }

    /// The events of the issuer's audit log (the SQLite store in the data directory), once its hash
    /// chain is verified. Stop the issuer first ([`Issuer::terminate`]) so that nothing is
    /// written meanwhile.
    pub async fn audit_log(&self) -> Result<Vec<signet_store::AuditEvent>> {
        let store = signet_store::open(&self.sqlite_url()).await?;
        let events = store.list_audit_events(0, 0).await?;
        signet_store::verify_audit_chain(&events)?;
        Ok(events)
    }

    /// The own trust bundle as PEM (`bundle show --format pem`).
    pub fn bundle_pem(&self) -> Result<String> {
        self.cli_ok(&["bundle", "show", "--format", "pem"])
    }

    /// Generates a join token (optionally with an alias ID) and returns it.
    pub fn join_token(&self, alias: Option<&str>) -> Result<String> {
        let mut args = vec!["token", "generate", "--output", "json"];
        if let Some(a) = alias {
            args.extend(["--spiffe-id", a]);
        }
        let v = self.cli_json(&args)?;
        v.get("token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no token in {v}"))
    }

    /// `GET path` on the health listener: status code and body.
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.health_addr, path)
    }

    /// Stops the issuer (SIGTERM) and starts it again on the same config, data and socket.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        let (child, logs, node, health) = spawn_ready(&self.config_path)?;
        self.child = Some(child);
        self.logs = logs;
        self.node_addr = node;
        self.health_addr = health;
        Ok(())
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(pid) = self.pid() {
            send_signal(pid, "-TERM")?;
        }
        let child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("issuer already stopped"))?;
        wait_or_kill(child, COMMAND_TIMEOUT)
    }
}

/// Sends `signal` (`-TERM`, `-KILL`, ...) to the process `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    Ok(())
}

/// Waits (at most `timeout`) for `child` to exit, then kills it (SIGKILL) and fails.
pub fn wait_or_kill(mut child: Child, timeout: Duration) -> Result<ExitStatus> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => Ok(status?),
        Err(_) => {
            let _ = send_signal(pid, "-KILL");
            bail!("process {pid} did not exit within {}s", timeout.as_secs())
        }
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET (the health listener speaks plain HTTP/1.1).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response: {text}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no status in {head}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunked body"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        s = rest.get(size + 2..).unwrap_or("");
    }
}

/// Whether an `openssl` binary is available.
pub fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
pub mod agent;
pub mod idp;
pub mod pki;
