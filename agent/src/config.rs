//! The agent's TOML configuration (`signet-agent run --config FILE`).
//!
//! Every table refuses unknown keys and every value is checked after parsing, so a typo or a bad
//! value stops start-up with an error that names the key (`node_attestor.type: expected one of
//! join_token, x509pop, got "tpm"`). [`Config::from_toml`] returns a validated [`Config`] with every
//! default filled in. Files named by the configuration (trust bundle, x509pop certificate and key)
//! are read at start-up by the runtime, whose errors name the key too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use signet_attestors::workload::{CgroupAttestor, CgroupConfig, UnixAttestor, UnixConfig};
use signet_spiffe::TrustDomain;

/// Default `socket_path` of the Workload API.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/signet-agent/public/api.sock";
/// Default `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "/tmp/signet-agent/data";
/// Default `issuer_address` (the issuer's default node API address).
pub const DEFAULT_ISSUER_ADDRESS: &str = "127.0.0.1:8081";
/// Default `log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// A configuration error; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is invalid or missing.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `node_attestor.type`.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How the agent proves its node's identity to the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeAttestorConfig {
    /// A single-use join token, given with `--join-token` on the first start.
    JoinToken,
    /// Proof of possession of an X.509 certificate's key.
    X509Pop {
        /// PEM certificate (then its intermediates).
        certificate_path: PathBuf,
        /// PEM PKCS#8 (or SEC1 / PKCS#1) private key of that certificate.
        private_key_path: PathBuf,
    },
}

impl NodeAttestorConfig {
    /// The attestor's name as written in the config (`join_token`, `x509pop`).
    pub fn name(&self) -> &'static str {
        match self {
            NodeAttestorConfig::JoinToken => "join_token",
            NodeAttestorConfig::X509Pop { .. } => "x509pop",
        }
    }
}

/// The validated configuration of `signet-agent run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trust domain of the issuer.
    pub trust_domain: TrustDomain,
    /// `host:port` of the issuer's node API.
    pub issuer_address: String,
    /// Path of the Workload API socket (its directory is created 0755).
    pub socket_path: PathBuf,
    /// Directory of the persisted state (agent SVID and key, bundle, entries, SVIDs); created 0700.
    pub data_dir: PathBuf,
    /// PEM certificates or a SPIFFE bundle document that authenticates the issuer on first start.
    pub trust_bundle_path: Option<PathBuf>,
    /// Accept the issuer without checking its chain on first start (its SPIFFE ID is still checked)
    /// and pin the bundle it returns.
    pub insecure_bootstrap: bool,
    /// The node attestor.
    pub node_attestor: NodeAttestorConfig,
    /// Log filter (`info`, `debug`, or a `tracing` directive list); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Address of the health listener (`/live`, `/ready`), if any.
    pub health_bind_address: Option<SocketAddr>,
    /// Persist workload SVIDs and their private keys (file mode 0600) in `data_dir`, so that a
    /// restarted agent serves at once, even with the issuer down.
    pub persist_workload_svids: bool,
    /// Settings of the workload attestors (`[workload_attestors.unix]`, `[workload_attestors.cgroup]`).
    pub workload_attestors: WorkloadAttestorsConfig,
}

/// The `[workload_attestors]` tables (see `docs/attestors/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadAttestorsConfig {
    /// `[workload_attestors.unix]`.
    #[serde(default)]
    pub unix: UnixConfig,
    /// `[workload_attestors.cgroup]`.
    #[serde(default)]
    pub cgroup: CgroupConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: Option<String>,
    issuer_address: Option<String>,
    socket_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    trust_bundle_path: Option<PathBuf>,
    insecure_bootstrap: Option<bool>,
    log_level: Option<String>,
    log_format: Option<String>,
    persist_workload_svids: Option<bool>,
    node_attestor: Option<RawNodeAttestor>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    workload_attestors: WorkloadAttestorsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeAttestor {
    #[serde(rename = "type")]
    kind: Option<String>,
    certificate_path: Option<PathBuf>,
    private_key_path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    bind_address: Option<String>,
}

fn absolute(key: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if !path.is_absolute() {
        return Err(invalid(
            key,
            format!("{} is not an absolute path", path.display()),
        ));
    }
    Ok(path)
}

fn check_issuer_address(address: &str) -> Result<(), ConfigError> {
    let bad = || {
        invalid(
            "issuer_address",
            format!("{address:?} is not host:port (use [addr]:port for IPv6)"),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates a config document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;

        let td = raw
            .trust_domain
            .ok_or_else(|| invalid("trust_domain", "is required"))?;
        let trust_domain =
            TrustDomain::new(&td).map_err(|e| invalid("trust_domain", format!("{td:?}: {e}")))?;

        let issuer_address = raw
            .issuer_address
            .unwrap_or_else(|| DEFAULT_ISSUER_ADDRESS.to_owned());
        check_issuer_address(&issuer_address)?;

        let socket_path = absolute(
            "socket_path",
            raw.socket_path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH)),
        )?;
        if socket_path.as_os_str().len() > MAX_SOCKET_PATH_LEN {
            return Err(invalid(
                "socket_path",
                format!(
                    "{} is longer than {MAX_SOCKET_PATH_LEN} bytes (the Unix socket limit)",
                    socket_path.display()
                ),
            ));
        }
        if socket_path.file_name().is_none() || socket_path.parent().is_none() {
            return Err(invalid(
                "socket_path",
                format!("{} does not name a file", socket_path.display()),
            ));
        }
        let data_dir = absolute(
            "data_dir",
            raw.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )?;

        let insecure_bootstrap = raw.insecure_bootstrap.unwrap_or(false);
        let trust_bundle_path = match raw.trust_bundle_path {
            Some(p) => Some(absolute("trust_bundle_path", p)?),
            None => None,
        };
        match (&trust_bundle_path, insecure_bootstrap) {
            (Some(_), true) => {
                return Err(invalid(
                    "trust_bundle_path",
                    "set together with insecure_bootstrap = true: choose one",
                ));
            }
            (None, false) => {
                return Err(invalid(
                    "trust_bundle_path",
                    "is required unless insecure_bootstrap = true",
                ));
            }
            _ => {}
        }

        let node_attestor = Self::node_attestor(raw.node_attestor)?;

        let log_level = raw
            .log_level
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if log_level.trim().is_empty() {
            return Err(invalid("log_level", "is empty"));
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(&log_level)
            .map_err(|e| invalid("log_level", format!("{log_level:?}: {e}")))?;
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("expected one of text, json, got {other:?}"),
                ));
            }
        };

        let health_bind_address = match raw.health.bind_address {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "health.bind_address",
                    format!("{a:?} is not IP:port (port 0 picks a free port)"),
                )
            })?),
        };

        UnixAttestor::new(raw.workload_attestors.unix.clone())
            .map_err(|e| invalid("workload_attestors.unix", e.to_string()))?;
        CgroupAttestor::new(raw.workload_attestors.cgroup.clone())
            .map_err(|e| invalid("workload_attestors.cgroup", e.to_string()))?;

        Ok(Config {
            trust_domain,
            issuer_address,
            socket_path,
            data_dir,
            trust_bundle_path,
            insecure_bootstrap,
            node_attestor,
            log_level,
            log_format,
            health_bind_address,
            persist_workload_svids: raw.persist_workload_svids.unwrap_or(true),
            workload_attestors: raw.workload_attestors,
        })
    }

    fn node_attestor(raw: Option<RawNodeAttestor>) -> Result<NodeAttestorConfig, ConfigError> {
        let raw = raw.ok_or_else(|| {
            invalid(
                "node_attestor",
                "the table is required (type = \"join_token\" or \"x509pop\")",
            )
        })?;
        let kind = raw
            .kind
            .ok_or_else(|| invalid("node_attestor.type", "is required (join_token or x509pop)"))?;
        match kind.as_str() {
            "join_token" => {
                if raw.certificate_path.is_some() {
                    return Err(invalid(
                        "node_attestor.certificate_path",
                        "is only for type = \"x509pop\"",
                    ));
                }
                if raw.private_key_path.is_some() {
                    return Err(invalid(
                        "node_attestor.private_key_path",
                        "is only for type = \"x509pop\"",
                    ));
                }
                Ok(NodeAttestorConfig::JoinToken)
            }
            "x509pop" => {
                let certificate_path = absolute(
                    "node_attestor.certificate_path",
                    raw.certificate_path.ok_or_else(|| {
                        invalid(
                            "node_attestor.certificate_path",
                            "is required for type = \"x509pop\"",
                        )
                    })?,
                )?;
                let private_key_path = absolute(
                    "node_attestor.private_key_path",
                    raw.private_key_path.ok_or_else(|| {
                        invalid(
                            "node_attestor.private_key_path",
                            "is required for type = \"x509pop\"",
                        )
                    })?,
                )?;
                Ok(NodeAttestorConfig::X509Pop {
                    certificate_path,
                    private_key_path,
                })
            }
            other => Err(invalid(
                "node_attestor.type",
                format!("expected one of join_token, x509pop, got {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
trust_domain = "example.org"
insecure_bootstrap = true
[node_attestor]
type = "join_token"
"#;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.trust_domain.name(), "example.org");
        assert_eq!(c.issuer_address, DEFAULT_ISSUER_ADDRESS);
        assert_eq!(c.socket_path, PathBuf::from(DEFAULT_SOCKET_PATH));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.insecure_bootstrap);
        assert_eq!(c.trust_bundle_path, None);
        assert_eq!(c.node_attestor, NodeAttestorConfig::JoinToken);
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.health_bind_address, None);
        assert!(c.persist_workload_svids);
    }

    #[test]
    fn full_config() {
        let c = Config::from_toml(
            r#"
trust_domain = "spiffe://example.org"
issuer_address = "[::1]:9000"
socket_path = "/run/signet-agent/public/api.sock"
data_dir = "/var/lib/signet-agent"
trust_bundle_path = "/etc/signet-agent/bundle.pem"
log_level = "info,signet_agent=debug"
log_format = "json"
persist_workload_svids = false
[node_attestor]
type = "x509pop"
certificate_path = "/etc/signet-agent/node.pem"
private_key_path = "/etc/signet-agent/node.key"
[health]
bind_address = "127.0.0.1:0"
[workload_attestors.unix]
discover_workload_path = false
[workload_attestors.cgroup]
trusted_units = ["containerd.service"]
"#,
        )
        .unwrap();
        assert!(!c.workload_attestors.unix.discover_workload_path);
        assert_eq!(
            c.workload_attestors.cgroup.trusted_units,
            ["containerd.service"]
        );
        assert_eq!(c.trust_domain.name(), "example.org");
        assert_eq!(c.issuer_address, "[::1]:9000");
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(!c.persist_workload_svids);
        assert!(!c.insecure_bootstrap);
        assert_eq!(
            c.node_attestor,
            NodeAttestorConfig::X509Pop {
                certificate_path: "/etc/signet-agent/node.pem".into(),
                private_key_path: "/etc/signet-agent/node.key".into(),
            }
        );
        assert_eq!(c.node_attestor.name(), "x509pop");
        assert_eq!(c.health_bind_address, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&format!("{MINIMAL}\nsocket_pth = \"/x\"\n"));
        assert!(e.contains("socket_pth"), "{e}");
        let e = err(&format!("{MINIMAL}certificate_pth = \"/x\"\n"));
        assert!(e.contains("certificate_pth"), "{e}");
        let e = err(&format!("{MINIMAL}[health]\nbind = \"127.0.0.1:1\"\n"));
        assert!(e.contains("bind"), "{e}");
        let e = err(&format!("{MINIMAL}[extra]\n"));
        assert!(e.contains("extra"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[workload_attestors.unix]\nhash_executables = false\n"
        ));
        assert!(e.contains("hash_executables"), "{e}");
        let e = err(&format!("{MINIMAL}[workload_attestors.docker]\n"));
        assert!(e.contains("docker"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                "trust_domain = \"example.org\"\n",
                "trust_bundle_path: is required",
            ),
            (
                "insecure_bootstrap = true\n[node_attestor]\ntype = \"join_token\"\n",
                "trust_domain: is required",
            ),
            (
                "trust_domain = \"Bad Domain\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"join_token\"\n",
                "trust_domain: ",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n",
                "node_attestor: the table is required",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\n",
                "node_attestor.type: is required",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"tpm\"\n",
                "node_attestor.type: expected one of join_token, x509pop, got \"tpm\"",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"x509pop\"\nprivate_key_path = \"/k\"\n",
                "node_attestor.certificate_path: is required",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"x509pop\"\ncertificate_path = \"/c\"\n",
                "node_attestor.private_key_path: is required",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"x509pop\"\ncertificate_path = \"c.pem\"\nprivate_key_path = \"/k\"\n",
                "node_attestor.certificate_path: c.pem is not an absolute path",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\n[node_attestor]\ntype = \"join_token\"\ncertificate_path = \"/c\"\n",
                "node_attestor.certificate_path: is only for type",
            ),
            (
                "trust_domain = \"example.org\"\ninsecure_bootstrap = true\ntrust_bundle_path = \"/b.pem\"\n[node_attestor]\ntype = \"join_token\"\n",
                "trust_bundle_path: set together with insecure_bootstrap",
            ),
            (
                "trust_domain = \"example.org\"\ntrust_bundle_path = \"b.pem\"\n[node_attestor]\ntype = \"join_token\"\n",
                "trust_bundle_path: b.pem is not an absolute path",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}\n=> {e}\nwanted {want}");
        }
    }

    #[test]
    fn invalid_top_level_values_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                "issuer_address = \"127.0.0.1\"",
                "issuer_address: \"127.0.0.1\" is not host:port",
            ),
            ("issuer_address = \":80\"", "issuer_address: "),
            ("issuer_address = \"host:http\"", "issuer_address: "),
            (
                "socket_path = \"api.sock\"",
                "socket_path: api.sock is not an absolute path",
            ),
            (
                "data_dir = \"data\"",
                "data_dir: data is not an absolute path",
            ),
            (
                "log_format = \"xml\"",
                "log_format: expected one of text, json, got \"xml\"",
            ),
            ("log_level = \"\"", "log_level: is empty"),
            ("log_level = \"info,=[\"", "log_level: "),
            ("insecure_bootstrap = \"yes\"", "insecure_bootstrap"),
            ("persist_workload_svids = 1", "persist_workload_svids"),
        ];
        for (line, want) in cases {
            let text = MINIMAL.replacen('\n', &format!("\n{line}\n"), 1);
            let e = err(&text);
            assert!(e.contains(want), "{line}\n=> {e}\nwanted {want}");
        }
        let long = format!("socket_path = \"/{}\"", "a".repeat(120));
        let e = err(&MINIMAL.replacen('\n', &format!("\n{long}\n"), 1));
        assert!(
            e.contains("socket_path: ") && e.contains("longer than 107"),
            "{e}"
        );
        let e = err(&format!(
            "{MINIMAL}[health]\nbind_address = \"localhost:80\"\n"
        ));
        assert!(
            e.contains("health.bind_address: \"localhost:80\" is not IP:port"),
            "{e}"
        );
    }

    #[test]
    fn deploy_example_is_valid() {
        let text = include_str!("../../deploy/agent.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.trust_domain.name(), "example.org");
    }
}
