//! The issuer's TOML configuration.
//!
//! Every table refuses unknown keys, and every value is checked after parsing, so a typo or a bad
//! value stops start-up with an error that names the key (`ca.key_type: expected one of ...`).
//! [`Config::from_toml`] turns the file into a validated [`Config`] with every default filled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use signet_ca::KeyType;
use signet_spiffe::TrustDomain;

/// Default `data_dir`.
pub const DEFAULT_DATA_DIR: &str = "/tmp/signet-issuer/data";
/// Default `bind_address` of the node API.
pub const DEFAULT_BIND_ADDRESS: &str = "127.0.0.1:8081";
/// Default `admin_socket_path`.
pub const DEFAULT_ADMIN_SOCKET_PATH: &str = "/tmp/signet-issuer/private/admin.sock";
/// Default `[health] bind_address`.
pub const DEFAULT_HEALTH_BIND_ADDRESS: &str = "127.0.0.1:8080";
/// Default `log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default `[ca] ttl`.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `[defaults] x509_svid_ttl`.
pub const DEFAULT_X509_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default `[defaults] jwt_svid_ttl`.
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Default `[defaults] agent_ttl`.
pub const DEFAULT_AGENT_TTL: Duration = Duration::from_secs(3600);
/// Shortest accepted CA lifetime.
pub const MIN_CA_TTL: Duration = Duration::from_secs(60);
/// Longest accepted CA lifetime (10 years).
pub const MAX_CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest accepted JWT-SVID TTL (default and per entry).
pub const MAX_JWT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);

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
    /// A value is invalid.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `ca.key_type`.
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

/// The validated configuration of `signet-issuer run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trust domain the issuer is the root of.
    pub trust_domain: TrustDomain,
    /// Directory of the CA keys and the embedded database (created 0700).
    pub data_dir: PathBuf,
    /// Address of the node API (TLS).
    pub bind_address: SocketAddr,
    /// Path of the admin API socket; its directory is created 0700.
    pub admin_socket_path: PathBuf,
    /// Log filter (`info`, `debug`, or a `tracing` directive list); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Datastore URL (`sqlite://PATH` or `postgres://...`).
    pub datastore_url: String,
    /// CA settings.
    pub ca: CaSettings,
    /// TTL defaults.
    pub defaults: crate::state::Defaults,
    /// Address of the health listener (`/live`, `/ready`, `/metrics`).
    pub health_bind_address: SocketAddr,
    /// x509pop node attestation, when configured.
    pub x509pop: Option<X509PopSettings>,
}

/// The `[ca]` table, validated.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// Key type of CA keys.
    pub key_type: KeyType,
    /// CA certificate lifetime.
    pub ttl: Duration,
    /// Upstream CA certificate and key files (both or neither).
    pub upstream: Option<signet_ca::UpstreamConfig>,
}

/// The `[node_attestors.x509pop]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509PopSettings {
    /// PEM bundle of the CAs that agent certificates must chain to.
    pub ca_bundle_path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: Option<String>,
    data_dir: Option<PathBuf>,
    bind_address: Option<String>,
    admin_socket_path: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<String>,
    #[serde(default)]
    datastore: RawDatastore,
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    node_attestors: RawNodeAttestors,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatastore {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    key_type: Option<String>,
    ttl: Option<String>,
    upstream_cert_path: Option<PathBuf>,
    upstream_key_path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    x509_svid_ttl: Option<String>,
    jwt_svid_ttl: Option<String>,
    agent_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    bind_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeAttestors {
    x509pop: Option<RawX509Pop>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawX509Pop {
    ca_bundle_path: Option<PathBuf>,
}

/// Parses a duration written like `90s`, `5m`, `1h`, `1h30m` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (write e.g. 90s, 5m, 1h)".to_owned());
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 90s, 5m, 1h: {e}"))
}

/// Formats a duration the way the config accepts it (`1h`, `5m`, `90s`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn duration_key(
    key: &'static str,
    value: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = parse_duration(v).map_err(|m| invalid(key, m))?;
    if d.subsec_nanos() != 0 {
        return Err(invalid(key, format!("{v:?}: use whole seconds")));
    }
    if d < min || d > max {
        return Err(invalid(
            key,
            format!(
                "{v:?} is out of range: expected between {} and {}",
                format_duration(min),
                format_duration(max)
            ),
        ));
    }
    Ok(d)
}

fn socket_addr_key(
    key: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let v = value.unwrap_or(default);
    v.parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not an IP:port socket address (e.g. 127.0.0.1:8081)"),
        )
    })
}

fn absolute_path_key(key: &'static str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if !p.is_absolute() {
        return Err(invalid(
            key,
            format!("{:?} must be an absolute path", p.display().to_string()),
        ));
    }
    Ok(p)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates a config document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(e.to_string().trim().to_owned()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let td = raw.trust_domain.ok_or_else(|| {
            invalid(
                "trust_domain",
                "is required (e.g. trust_domain = \"example.org\")",
            )
        })?;
        let trust_domain =
            TrustDomain::new(&td).map_err(|e| invalid("trust_domain", format!("{td:?}: {e}")))?;

        let data_dir = absolute_path_key(
            "data_dir",
            raw.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )?;
        let bind_address = socket_addr_key(
            "bind_address",
            raw.bind_address.as_deref(),
            DEFAULT_BIND_ADDRESS,
        )?;
        let admin_socket_path = absolute_path_key(
            "admin_socket_path",
            raw.admin_socket_path
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET_PATH)),
        )?;
        if admin_socket_path
            .parent()
            .is_none_or(|p| p == Path::new("/"))
        {
            return Err(invalid(
                "admin_socket_path",
                "must be inside a dedicated directory (e.g. /run/signet-issuer/admin.sock)",
            ));
        }
        if admin_socket_path.as_os_str().len() > 100 {
            return Err(invalid(
                "admin_socket_path",
                "is longer than 100 bytes (Unix socket paths are limited to about 108)",
            ));
        }

        let log_level = raw
            .log_level
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        validate_log_level(&log_level).map_err(|m| invalid("log_level", m))?;
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

        let datastore_url = match raw.datastore.url {
            None => format!("sqlite://{}", data_dir.join("datastore.sqlite3").display()),
            Some(url) => {
                validate_datastore_url(&url).map_err(|m| invalid("datastore.url", m))?;
                url
            }
        };

        let key_type = match raw.ca.key_type.as_deref() {
            None => KeyType::default(),
            Some(s) => s.parse::<KeyType>().map_err(|_| {
                invalid(
                    "ca.key_type",
                    format!("expected one of ec-p256, ec-p384, rsa-2048, got {s:?}"),
                )
            })?,
        };
        let ca_ttl = duration_key(
            "ca.ttl",
            raw.ca.ttl.as_deref(),
            DEFAULT_CA_TTL,
            MIN_CA_TTL,
            MAX_CA_TTL,
        )?;
        let upstream = match (raw.ca.upstream_cert_path, raw.ca.upstream_key_path) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(signet_ca::UpstreamConfig {
                cert_path: absolute_path_key("ca.upstream_cert_path", cert)?,
                key_path: absolute_path_key("ca.upstream_key_path", key)?,
            }),
            (Some(_), None) => {
                return Err(invalid(
                    "ca.upstream_key_path",
                    "is required when ca.upstream_cert_path is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "ca.upstream_cert_path",
                    "is required when ca.upstream_key_path is set",
                ));
            }
        };

        let one_sec = Duration::from_secs(1);
        let x509_svid_ttl = duration_key(
            "defaults.x509_svid_ttl",
            raw.defaults.x509_svid_ttl.as_deref(),
            DEFAULT_X509_SVID_TTL,
            one_sec,
            ca_ttl,
        )?;
        let jwt_svid_ttl = duration_key(
            "defaults.jwt_svid_ttl",
            raw.defaults.jwt_svid_ttl.as_deref(),
            DEFAULT_JWT_SVID_TTL,
            one_sec,
            MAX_JWT_SVID_TTL,
        )?;
        let agent_ttl = duration_key(
            "defaults.agent_ttl",
            raw.defaults.agent_ttl.as_deref(),
            DEFAULT_AGENT_TTL,
            one_sec,
            ca_ttl,
        )?;

        let health_bind_address = socket_addr_key(
            "health.bind_address",
            raw.health.bind_address.as_deref(),
            DEFAULT_HEALTH_BIND_ADDRESS,
        )?;
        if health_bind_address == bind_address && bind_address.port() != 0 {
            return Err(invalid(
                "health.bind_address",
                format!("{health_bind_address} is also the node API's bind_address"),
            ));
        }

        let x509pop = match raw.node_attestors.x509pop {
            None => None,
            Some(x) => {
                let path = x.ca_bundle_path.ok_or_else(|| {
                    invalid(
                        "node_attestors.x509pop.ca_bundle_path",
                        "is required to enable x509pop",
                    )
                })?;
                Some(X509PopSettings {
                    ca_bundle_path: absolute_path_key(
                        "node_attestors.x509pop.ca_bundle_path",
                        path,
                    )?,
                })
            }
        };

        Ok(Config {
            trust_domain,
            data_dir,
            bind_address,
            admin_socket_path,
            log_level,
            log_format,
            datastore_url,
            ca: CaSettings {
                key_type,
                ttl: ca_ttl,
                upstream,
            },
            defaults: crate::state::Defaults {
                x509_svid_ttl,
                jwt_svid_ttl,
                agent_ttl,
            },
            health_bind_address,
            x509pop,
        })
    }

    /// Directory of the CA keys: `<data_dir>/ca`.
    pub fn ca_key_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }
}

fn validate_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty (e.g. info, debug, warn)".to_owned());
    }
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    // A level, or a directive list such as `info,signet_issuer=debug`: every directive must end in
    // a level (a bare word would silently be taken as a target name).
    for directive in level.split(',') {
        let lvl = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(lvl) {
            return Err(format!(
                "{level:?} is not a log level (trace, debug, info, warn, error, off) or a filter like info,signet_issuer=debug"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(|_| ())
        .map_err(|e| {
            format!("{level:?} is not a log level (trace, debug, info, warn, error) or filter: {e}")
        })
}

fn validate_datastore_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(
                "sqlite:// needs a file path, e.g. sqlite:///var/lib/signet/datastore.sqlite3"
                    .to_owned(),
            );
        }
        Ok(())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(format!(
            "{:?}: expected sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(url)
        ))
    }
}

/// Returns `url` with any password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    out.push_str("://");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    // Query parameters may carry a password too.
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    const MIN: &str = "trust_domain = \"example.org\"\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.trust_domain.name(), "example.org");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.bind_address.to_string(), "127.0.0.1:8081");
        assert_eq!(c.health_bind_address.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.admin_socket_path,
            PathBuf::from(DEFAULT_ADMIN_SOCKET_PATH)
        );
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(
            c.datastore_url,
            "sqlite:///tmp/signet-issuer/data/datastore.sqlite3"
        );
        assert_eq!(c.ca.key_type, KeyType::EcP256);
        assert_eq!(c.ca.ttl, Duration::from_secs(86400));
        assert!(c.ca.upstream.is_none());
        assert_eq!(c.defaults.x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(c.defaults.jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(c.defaults.agent_ttl, Duration::from_secs(3600));
        assert!(c.x509pop.is_none());
        assert_eq!(c.ca_key_dir(), PathBuf::from("/tmp/signet-issuer/data/ca"));
    }

    #[test]
    fn full_config_is_parsed() {
        let c = Config::from_toml(
            r#"
trust_domain = "prod.example.org"
data_dir = "/var/lib/signet-issuer"
bind_address = "0.0.0.0:9081"
admin_socket_path = "/run/signet-issuer/admin.sock"
log_level = "debug"
log_format = "json"
[datastore]
url = "postgres://signet:secret@db/signet"
[ca]
key_type = "rsa-2048"
ttl = "48h"
upstream_cert_path = "/etc/signet/up.pem"
upstream_key_path = "/etc/signet/up.key"
[defaults]
x509_svid_ttl = "30m"
jwt_svid_ttl = "90s"
agent_ttl = "2h"
[health]
bind_address = "127.0.0.1:9080"
[node_attestors.x509pop]
ca_bundle_path = "/etc/signet/agents-ca.pem"
"#,
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.ca.key_type, KeyType::Rsa2048);
        assert_eq!(c.ca.ttl, Duration::from_secs(48 * 3600));
        assert_eq!(c.defaults.x509_svid_ttl, Duration::from_secs(1800));
        assert_eq!(c.defaults.jwt_svid_ttl, Duration::from_secs(90));
        assert_eq!(c.defaults.agent_ttl, Duration::from_secs(7200));
        assert_eq!(c.datastore_url, "postgres://signet:secret@db/signet");
        assert_eq!(
            c.ca.upstream.unwrap().key_path,
            PathBuf::from("/etc/signet/up.key")
        );
        assert_eq!(
            c.x509pop.unwrap().ca_bundle_path,
            PathBuf::from("/etc/signet/agents-ca.pem")
        );
        assert_eq!(c.health_bind_address.port(), 9080);
    }

    #[test]
    fn example_config_in_deploy_is_valid() {
        let c = Config::from_toml(include_str!("../../deploy/issuer.toml")).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/signet-issuer"));
        assert_eq!(
            c.admin_socket_path,
            PathBuf::from("/run/signet-issuer/admin.sock")
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = err("trust_domain = \"example.org\"\nbind_adress = \"127.0.0.1:1\"\n");
        assert!(e.contains("unknown field `bind_adress`"), "{e}");
    }

    #[test]
    fn unknown_key_in_each_table_is_named() {
        for table in [
            "datastore",
            "ca",
            "defaults",
            "health",
            "node_attestors",
            "node_attestors.x509pop",
        ] {
            let e = err(&format!("{MIN}[{table}]\nbogus_key = 1\n"));
            assert!(e.contains("unknown field `bogus_key`"), "{table}: {e}");
        }
    }

    #[test]
    fn missing_trust_domain() {
        assert!(err("").contains("trust_domain: is required"));
    }

    #[test]
    fn bad_trust_domain() {
        let e = err("trust_domain = \"Example.org\"");
        assert!(
            e.starts_with("invalid config: trust_domain: \"Example.org\""),
            "{e}"
        );
        let e = err("trust_domain = \"spiffe://example.org/path\"");
        assert!(e.contains("trust_domain:"), "{e}");
    }

    #[test]
    fn wrong_value_type_is_named() {
        let e = err("trust_domain = 5");
        assert!(e.contains("trust_domain"), "{e}");
        let e = err(&format!("{MIN}[ca]\nttl = 3600\n"));
        assert!(e.contains("ttl"), "{e}");
    }

    #[test]
    fn bad_key_type() {
        assert_eq!(
            err(&format!("{MIN}[ca]\nkey_type = \"ec-p521\"\n")),
            "invalid config: ca.key_type: expected one of ec-p256, ec-p384, rsa-2048, got \"ec-p521\""
        );
    }

    #[test]
    fn bad_durations() {
        let e = err(&format!("{MIN}[ca]\nttl = \"one day\"\n"));
        assert!(
            e.starts_with("invalid config: ca.ttl: \"one day\" is not a duration"),
            "{e}"
        );
        let e = err(&format!("{MIN}[ca]\nttl = \"10s\"\n"));
        assert!(
            e.starts_with("invalid config: ca.ttl: \"10s\" is out of range"),
            "{e}"
        );
        let e = err(&format!("{MIN}[defaults]\nx509_svid_ttl = \"\"\n"));
        assert!(
            e.starts_with("invalid config: defaults.x509_svid_ttl: empty duration"),
            "{e}"
        );
        let e = err(&format!("{MIN}[defaults]\nx509_svid_ttl = \"1500ms\"\n"));
        assert!(
            e.contains("defaults.x509_svid_ttl: \"1500ms\": use whole seconds"),
            "{e}"
        );
        let e = err(&format!("{MIN}[defaults]\njwt_svid_ttl = \"2d\"\n"));
        assert!(
            e.starts_with("invalid config: defaults.jwt_svid_ttl:"),
            "{e}"
        );
        let e = err(&format!("{MIN}[defaults]\nagent_ttl = \"0s\"\n"));
        assert!(e.starts_with("invalid config: defaults.agent_ttl:"), "{e}");
    }

    #[test]
    fn svid_ttl_above_ca_ttl_is_refused() {
        let e = err(&format!(
            "{MIN}[ca]\nttl = \"1h\"\n[defaults]\nx509_svid_ttl = \"2h\"\n"
        ));
        assert!(
            e.starts_with("invalid config: defaults.x509_svid_ttl: \"2h\" is out of range"),
            "{e}"
        );
        let e = err(&format!(
            "{MIN}[ca]\nttl = \"1h\"\n[defaults]\nagent_ttl = \"2h\"\n"
        ));
        assert!(e.starts_with("invalid config: defaults.agent_ttl:"), "{e}");
    }

    #[test]
    fn bad_addresses() {
        let e = err(&format!("{MIN}bind_address = \"localhost\"\n"));
        assert!(
            e.starts_with("invalid config: bind_address: \"localhost\" is not"),
            "{e}"
        );
        let e = err(&format!("{MIN}[health]\nbind_address = \"1.2.3.4\"\n"));
        assert!(e.starts_with("invalid config: health.bind_address:"), "{e}");
        let e = err(&format!(
            "{MIN}bind_address = \"127.0.0.1:9000\"\n[health]\nbind_address = \"127.0.0.1:9000\"\n"
        ));
        assert!(
            e.contains("health.bind_address: 127.0.0.1:9000 is also"),
            "{e}"
        );
    }

    #[test]
    fn bad_paths() {
        let e = err(&format!("{MIN}data_dir = \"relative/dir\"\n"));
        assert!(
            e.starts_with("invalid config: data_dir: \"relative/dir\" must be an absolute path"),
            "{e}"
        );
        let e = err(&format!("{MIN}admin_socket_path = \"admin.sock\"\n"));
        assert!(e.starts_with("invalid config: admin_socket_path:"), "{e}");
        let e = err(&format!("{MIN}admin_socket_path = \"/admin.sock\"\n"));
        assert!(
            e.contains("admin_socket_path: must be inside a dedicated directory"),
            "{e}"
        );
        let long = format!("/tmp/{}/admin.sock", "d".repeat(120));
        let e = err(&format!("{MIN}admin_socket_path = \"{long}\"\n"));
        assert!(e.contains("admin_socket_path: is longer than"), "{e}");
    }

    #[test]
    fn bad_log_settings() {
        assert_eq!(
            err(&format!("{MIN}log_format = \"xml\"\n")),
            "invalid config: log_format: expected one of text, json, got \"xml\""
        );
        let e = err(&format!("{MIN}log_level = \"loud\"\n"));
        assert!(
            e.starts_with("invalid config: log_level: \"loud\" is not a log level"),
            "{e}"
        );
        assert!(
            Config::from_toml(&format!("{MIN}log_level = \"info,signet_issuer=debug\"\n")).is_ok()
        );
        assert!(Config::from_toml(&format!("{MIN}log_level = \"WARN\"\n")).is_ok());
    }

    #[test]
    fn bad_datastore_url() {
        let e = err(&format!("{MIN}[datastore]\nurl = \"mysql://u:pw@h/db\"\n"));
        assert_eq!(
            e,
            "invalid config: datastore.url: \"mysql://u:***@h/db\": expected sqlite://PATH or postgres://USER@HOST/DB"
        );
        let e = err(&format!("{MIN}[datastore]\nurl = \"sqlite://\"\n"));
        assert!(
            e.starts_with("invalid config: datastore.url: sqlite:// needs a file path"),
            "{e}"
        );
    }

    #[test]
    fn upstream_needs_both_files() {
        let e = err(&format!("{MIN}[ca]\nupstream_cert_path = \"/a.pem\"\n"));
        assert!(
            e.starts_with("invalid config: ca.upstream_key_path: is required"),
            "{e}"
        );
        let e = err(&format!("{MIN}[ca]\nupstream_key_path = \"/a.key\"\n"));
        assert!(
            e.starts_with("invalid config: ca.upstream_cert_path: is required"),
            "{e}"
        );
    }

    #[test]
    fn x509pop_needs_a_bundle() {
        let e = err(&format!("{MIN}[node_attestors.x509pop]\n"));
        assert!(
            e.starts_with("invalid config: node_attestors.x509pop.ca_bundle_path: is required"),
            "{e}"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact_url("sqlite:///tmp/x"), "sqlite:///tmp/x");
        assert_eq!(redact_url("garbage"), "garbage");
    }

    #[test]
    fn durations_parse_like_the_docs_say() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
