//! The issuer's TOML configuration.
//!
//! Every table refuses unknown keys, and every value is checked after parsing, so a typo or a bad
//! value stops start-up with an error that names the key (`ca.key_type: expected one of ...`).
//! [`Config::from_toml`] turns the file into a validated [`Config`] with every default filled in.

use std::borrow::Cow;
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
/// Default `[defaults] wit_svid_ttl`.
pub const DEFAULT_WIT_SVID_TTL: Duration = Duration::from_secs(3600);
/// Default `[defaults] agent_ttl`.
pub const DEFAULT_AGENT_TTL: Duration = Duration::from_secs(3600);
/// Shortest accepted CA lifetime.
pub const MIN_CA_TTL: Duration = Duration::from_secs(60);
/// Longest accepted CA lifetime (10 years).
pub const MAX_CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default `[bundle_endpoint] bind_address`.
pub const DEFAULT_BUNDLE_ENDPOINT_BIND_ADDRESS: &str = "127.0.0.1:8443";
/// Longest accepted `[bundle_endpoint] refresh_hint`.
pub const MAX_REFRESH_HINT: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted JWT-SVID TTL (default and per entry).
pub const MAX_JWT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted WIT-SVID TTL (`[defaults] wit_svid_ttl`; the WIT keys' maximum token TTL).
pub const MAX_WIT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `subject_claim` of a `[[delegation.identity_providers]]` table.
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";
/// Default `max_token_age` of a `[[delegation.identity_providers]]` table.
pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted `max_token_age` (30 days).
pub const MAX_MAX_TOKEN_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Default `[audit.nats] subject`: events go to `<subject>.<kind>`.
pub const DEFAULT_AUDIT_NATS_SUBJECT: &str = "signet.audit";
/// Default `[audit.nats] stream`.
pub const DEFAULT_AUDIT_NATS_STREAM: &str = "SIGNET_AUDIT";

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
        /// The dotted key, e.g. `ca.key_type` or `delegation.identity_providers[0].issuer`.
        key: Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
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
    /// `jwt_issuer`: the `iss` claim of JWT-SVIDs and the `issuer` of the OIDC discovery document.
    pub jwt_issuer: Option<String>,
    /// The bundle endpoint, when `[bundle_endpoint]` is present.
    pub bundle_endpoint: Option<BundleEndpointSettings>,
    /// Federation relationships of the config file (`[[federation]]`).
    pub federation: Vec<FederationSettings>,
    /// JWT-SVID signing keys (`[jwt]`).
    pub jwt: JwtSettings,
    /// WIT-SVID signing keys (`[wit]`), apart from the JWT-SVID keys.
    pub wit: WitSettings,
    /// Delegation for AI agents (`[delegation]`): tokens are served when `policies_dir` is set.
    pub delegation: DelegationSettings,
    /// Publishing of the audit events to NATS JetStream, when `[audit.nats]` is present.
    pub audit_nats: Option<AuditNatsSettings>,
}

/// The `[delegation]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationSettings {
    /// The policy directory (`*.datalog` files); delegation is off without it.
    pub policies_dir: Option<PathBuf>,
    /// Type of new delegation keys.
    pub key_type: signet_ca::delegation::DelegationKeyType,
    /// Lifetime of each delegation key.
    pub key_ttl: Duration,
    /// Longest lifetime of a delegation token, whatever the policy says.
    pub max_token_ttl: Duration,
    /// The OpenID Connect identity providers whose ID tokens prove a subject
    /// (`[[delegation.identity_providers]]`), in file order, each issuer once.
    pub identity_providers: Vec<IdentityProviderSettings>,
}

impl Default for DelegationSettings {
    fn default() -> Self {
        Self {
            policies_dir: None,
            key_type: signet_ca::delegation::DelegationKeyType::default(),
            key_ttl: signet_ca::delegation::DEFAULT_DELEGATION_KEY_TTL,
            max_token_ttl: signet_ca::delegation::DEFAULT_MAX_DELEGATION_TTL,
            identity_providers: Vec::new(),
        }
    }
}

/// One `[[delegation.identity_providers]]` table, validated (its files are read at start-up, by
/// [`crate::idp::IdentityProviders::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProviderSettings {
    /// The exact `iss` of its ID tokens: an `https://` URL (`http://` only on localhost), no query
    /// or fragment, compared byte for byte (a trailing `/` matters).
    pub issuer: String,
    /// The accepted audiences (client IDs), at least one: an ID token's `aud` must contain one.
    pub audiences: Vec<String>,
    /// Where its signing keys come from.
    pub jwks: JwksSource,
    /// The claim that names the subject (`sub` by default; e.g. `email`).
    pub subject_claim: String,
    /// ID tokens whose `iat` is older than this are refused.
    pub max_token_age: Duration,
}

/// Where an identity provider's JWK Set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `jwks_path`: a file, read once at start-up.
    Path(PathBuf),
    /// `jwks_url`: fetched at start-up and refreshed in the background.
    Url {
        /// The `https://` URL.
        url: crate::federation::EndpointUrl,
        /// `jwks_ca_bundle_path`: PEM roots to trust instead of the system roots.
        ca_bundle_path: Option<PathBuf>,
    },
}

/// How the audit publisher authenticates to NATS (`[audit.nats]` `creds_path` or `token_path`).
/// Only paths: the files are read when connecting, and their content is never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    /// No credentials.
    None,
    /// A NATS `.creds` file (user JWT and NKey seed).
    CredsFile(PathBuf),
    /// A file holding a token (surrounding whitespace ignored).
    TokenFile(PathBuf),
}

/// The `[audit.nats]` table, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditNatsSettings {
    /// Server URLs (`nats://` or `tls://`), tried in order; the config's `url` may list several
    /// separated by commas. May hold a password: log [`AuditNatsSettings::redacted_urls`].
    pub urls: Vec<String>,
    /// Subject prefix: an event of kind `K` goes to `<subject>.<K>`.
    pub subject: String,
    /// JetStream stream (created with subjects `<subject>.>` if missing).
    pub stream: String,
    /// Credentials.
    pub credentials: NatsCredentials,
}

impl AuditNatsSettings {
    /// The server URLs with any password replaced by `***`, comma-separated.
    pub fn redacted_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for AuditNatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditNatsSettings")
            .field("urls", &self.redacted_urls())
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The `[jwt]` table (or the `[wit]` table, [`WitSettings`]), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// Key type of new signing keys (ES256, ES384 or RS256 tokens).
    pub key_type: KeyType,
    /// Lifetime of each key (the next is prepared at 1/2, activated at 5/6).
    pub key_ttl: Duration,
}

/// The `[wit]` table, validated: the WIT-SVID signing keys, with the keys and rules of `[jwt]`.
pub type WitSettings = JwtSettings;

/// How the bundle endpoint authenticates itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointTlsSettings {
    /// `https_spiffe`: the issuer's own X509-SVID (`spiffe://<td>/signet/issuer`), renewed in place.
    HttpsSpiffe,
    /// `https_web`: a certificate and key from files, reloaded when they change or on SIGHUP.
    HttpsWeb {
        /// PEM certificate chain, leaf first.
        certificate_path: PathBuf,
        /// PEM private key (PKCS#8, SEC1 or PKCS#1).
        private_key_path: PathBuf,
    },
}

/// The `[bundle_endpoint]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointSettings {
    /// Address of the HTTPS listener.
    pub bind_address: SocketAddr,
    /// The TLS profile.
    pub tls: EndpointTlsSettings,
    /// `spiffe_refresh_hint` of the own bundle; `None` = derived from the CA TTL.
    pub refresh_hint: Option<Duration>,
}

/// One `[[federation]]` table, validated (files are read at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationSettings {
    /// The federated trust domain.
    pub trust_domain: TrustDomain,
    /// URL of its bundle endpoint.
    pub bundle_endpoint_url: crate::federation::EndpointUrl,
    /// `https_web` or `https_spiffe`.
    pub profile: String,
    /// `https_spiffe`: the ID the endpoint presents.
    pub endpoint_spiffe_id: Option<signet_spiffe::SpiffeId>,
    /// Bootstrap bundle (SPIFFE JSON or PEM), used when no bundle of the trust domain is stored.
    pub bundle_path: Option<PathBuf>,
    /// `https_web`: PEM roots to trust instead of the system roots.
    pub ca_bundle_path: Option<PathBuf>,
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
    jwt_issuer: Option<String>,
    #[serde(default)]
    jwt: RawJwt,
    #[serde(default)]
    wit: RawJwt,
    bundle_endpoint: Option<RawBundleEndpoint>,
    #[serde(default)]
    federation: Vec<RawFederation>,
    #[serde(default)]
    delegation: RawDelegation,
    #[serde(default)]
    audit: RawAudit,
}

/// `[delegation]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelegation {
    policies_dir: Option<PathBuf>,
    key_type: Option<String>,
    key_ttl: Option<String>,
    max_token_ttl: Option<String>,
    #[serde(default)]
    identity_providers: Vec<RawIdentityProvider>,
}

/// `[[delegation.identity_providers]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityProvider {
    issuer: Option<String>,
    /// A string or an array of strings, checked by hand so that the error names the key.
    audience: Option<toml::Value>,
    jwks_path: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_ca_bundle_path: Option<PathBuf>,
    subject_claim: Option<String>,
    max_token_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    nats: Option<RawAuditNats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuditNats {
    url: Option<String>,
    subject: Option<String>,
    stream: Option<String>,
    creds_path: Option<PathBuf>,
    token_path: Option<PathBuf>,
}

/// `[jwt]` and `[wit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    key_type: Option<String>,
    key_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundleEndpoint {
    bind_address: Option<String>,
    profile: Option<String>,
    certificate_path: Option<PathBuf>,
    private_key_path: Option<PathBuf>,
    refresh_hint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    trust_domain: Option<String>,
    bundle_endpoint_url: Option<String>,
    profile: Option<String>,
    endpoint_spiffe_id: Option<String>,
    bundle_path: Option<PathBuf>,
    ca_bundle_path: Option<PathBuf>,
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
    wit_svid_ttl: Option<String>,
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
    key: &str,
    value: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = parse_duration(v).map_err(|m| invalid(key.to_owned(), m))?;
    if d.subsec_nanos() != 0 {
        return Err(invalid(key.to_owned(), format!("{v:?}: use whole seconds")));
    }
    if d < min || d > max {
        return Err(invalid(
            key.to_owned(),
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

fn absolute_path_key(key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(invalid(key.to_owned(), "must not be empty"));
    }
    if !p.is_absolute() {
        return Err(invalid(
            key.to_owned(),
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
        let wit_svid_ttl = duration_key(
            "defaults.wit_svid_ttl",
            raw.defaults.wit_svid_ttl.as_deref(),
            DEFAULT_WIT_SVID_TTL,
            one_sec,
            MAX_WIT_SVID_TTL,
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

        let jwt_issuer = match raw.jwt_issuer {
            None => None,
            Some(v) => Some(validate_jwt_issuer(&v).map_err(|m| invalid("jwt_issuer", m))?),
        };

        let jwt = token_key_settings(raw.jwt, ["jwt.key_type", "jwt.key_ttl"])?;
        let wit = token_key_settings(raw.wit, ["wit.key_type", "wit.key_ttl"])?;

        let bundle_endpoint = match raw.bundle_endpoint {
            None => None,
            Some(b) => Some(bundle_endpoint_settings(
                b,
                &[
                    ("bind_address", bind_address),
                    ("health.bind_address", health_bind_address),
                ],
            )?),
        };

        let mut federation: Vec<FederationSettings> = Vec::with_capacity(raw.federation.len());
        for (i, f) in raw.federation.into_iter().enumerate() {
            let f = federation_settings(i, f, &trust_domain)?;
            if federation.iter().any(|o| o.trust_domain == f.trust_domain) {
                return Err(invalid(
                    "federation.trust_domain",
                    format!(
                        "[[federation]] {i}: {} appears twice (one relationship per trust domain)",
                        f.trust_domain
                    ),
                ));
            }
            federation.push(f);
        }

        let delegation = delegation_settings(raw.delegation, jwt_issuer.as_deref())?;
        let audit_nats = raw.audit.nats.map(audit_nats_settings).transpose()?;

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
                wit_svid_ttl,
                agent_ttl,
            },
            health_bind_address,
            x509pop,
            jwt_issuer,
            bundle_endpoint,
            federation,
            jwt,
            wit,
            delegation,
            audit_nats,
        })
    }

    /// Directory of the delegation keys: `<data_dir>/delegation`.
    pub fn delegation_key_dir(&self) -> PathBuf {
        self.data_dir.join("delegation")
    }

    /// Directory of the JWT signing keys: `<data_dir>/jwt`.
    pub fn jwt_key_dir(&self) -> PathBuf {
        self.data_dir.join("jwt")
    }

    /// Directory of the WIT-SVID signing keys: `<data_dir>/wit`.
    pub fn wit_key_dir(&self) -> PathBuf {
        self.data_dir.join("wit")
    }

    /// Directory of the CA keys: `<data_dir>/ca`.
    pub fn ca_key_dir(&self) -> PathBuf {
        self.data_dir.join("ca")
    }
}

/// The `[delegation]` table.
/// The key and policy settings of `[delegation]` (the identity providers aside).
fn delegation_key_settings(raw: &RawDelegation) -> Result<DelegationSettings, ConfigError> {
    use signet_ca::delegation::{
        DEFAULT_DELEGATION_KEY_TTL, DEFAULT_MAX_DELEGATION_TTL, DelegationKeyType,
        MIN_DELEGATION_KEY_TTL,
    };
    let key_type = match raw.key_type.as_deref() {
        None => DelegationKeyType::default(),
        Some(s) => DelegationKeyType::parse(s).ok_or_else(|| {
            invalid(
                "delegation.key_type",
                format!("expected ed25519 or ec-p256, got {s:?}"),
            )
        })?,
    };
    let key_ttl = duration_key(
        "delegation.key_ttl",
        raw.key_ttl.as_deref(),
        DEFAULT_DELEGATION_KEY_TTL,
        MIN_DELEGATION_KEY_TTL,
        MAX_CA_TTL,
    )?;
    let max_token_ttl = duration_key(
        "delegation.max_token_ttl",
        raw.max_token_ttl.as_deref(),
        DEFAULT_MAX_DELEGATION_TTL,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
    )?;
    if let Some(dir) = &raw.policies_dir
        && !dir.is_dir()
    {
        return Err(invalid(
            "delegation.policies_dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    Ok(DelegationSettings {
        policies_dir: raw.policies_dir.clone(),
        key_type,
        key_ttl,
        max_token_ttl,
        identity_providers: Vec::new(),
    })
}

/// The `[jwt]` or `[wit]` table; `keys` are the dotted names of its `key_type` and `key_ttl`.
fn token_key_settings(raw: RawJwt, keys: [&'static str; 2]) -> Result<JwtSettings, ConfigError> {
    let [key_type_key, key_ttl_key] = keys;
    Ok(JwtSettings {
        key_type: match raw.key_type.as_deref() {
            None => KeyType::default(),
            Some(s) => s.parse::<KeyType>().map_err(|_| {
                invalid(
                    key_type_key,
                    format!("expected one of ec-p256, ec-p384, rsa-2048, got {s:?}"),
                )
            })?,
        },
        key_ttl: duration_key(
            key_ttl_key,
            raw.key_ttl.as_deref(),
            signet_ca::jwt::DEFAULT_JWT_KEY_TTL,
            signet_ca::jwt::MIN_JWT_KEY_TTL,
            MAX_CA_TTL,
        )?,
    })
}

/// Checks `jwt_issuer`: an `https://` URL without query or fragment (OIDC issuer rules). A
/// trailing `/` is removed.
fn validate_jwt_issuer(v: &str) -> Result<String, String> {
    let Some(rest) = v.strip_prefix("https://") else {
        return Err(format!(
            "{v:?} must be an https:// URL (e.g. https://oidc.example.org): OIDC clients require it"
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{v:?} has no host"));
    }
    if v.contains('?') || v.contains('#') {
        return Err(format!("{v:?} must not have a query or a fragment"));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{v:?} must not contain spaces or control characters"
        ));
    }
    let _: axum::http::Uri = v.parse().map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    Ok(v.trim_end_matches('/').to_owned())
}

fn bundle_endpoint_settings(
    b: RawBundleEndpoint,
    taken: &[(&str, SocketAddr)],
) -> Result<BundleEndpointSettings, ConfigError> {
    let bind_address = socket_addr_key(
        "bundle_endpoint.bind_address",
        b.bind_address.as_deref(),
        DEFAULT_BUNDLE_ENDPOINT_BIND_ADDRESS,
    )?;
    for (key, addr) in taken {
        if *addr == bind_address && bind_address.port() != 0 {
            return Err(invalid(
                "bundle_endpoint.bind_address",
                format!("{bind_address} is also {key}"),
            ));
        }
    }
    let tls = match b.profile.as_deref() {
        Some("https_spiffe") => {
            if b.certificate_path.is_some() || b.private_key_path.is_some() {
                return Err(invalid(
                    "bundle_endpoint.certificate_path",
                    "certificate_path and private_key_path are only used with profile = \"https_web\"",
                ));
            }
            EndpointTlsSettings::HttpsSpiffe
        }
        Some("https_web") => {
            let cert = b.certificate_path.ok_or_else(|| {
                invalid(
                    "bundle_endpoint.certificate_path",
                    "is required with profile = \"https_web\"",
                )
            })?;
            let key = b.private_key_path.ok_or_else(|| {
                invalid(
                    "bundle_endpoint.private_key_path",
                    "is required with profile = \"https_web\"",
                )
            })?;
            EndpointTlsSettings::HttpsWeb {
                certificate_path: absolute_path_key("bundle_endpoint.certificate_path", cert)?,
                private_key_path: absolute_path_key("bundle_endpoint.private_key_path", key)?,
            }
        }
        Some(other) => {
            return Err(invalid(
                "bundle_endpoint.profile",
                format!("expected one of https_spiffe, https_web, got {other:?}"),
            ));
        }
        None => {
            return Err(invalid(
                "bundle_endpoint.profile",
                "is required: \"https_spiffe\" (the issuer's own SVID) or \"https_web\" (certificate_path and private_key_path)",
            ));
        }
    };
    let refresh_hint = match b.refresh_hint.as_deref() {
        None => None,
        Some(v) => Some(duration_key(
            "bundle_endpoint.refresh_hint",
            Some(v),
            Duration::ZERO,
            Duration::from_secs(1),
            MAX_REFRESH_HINT,
        )?),
    };
    Ok(BundleEndpointSettings {
        bind_address,
        tls,
        refresh_hint,
    })
}

fn federation_settings(
    i: usize,
    f: RawFederation,
    own: &TrustDomain,
) -> Result<FederationSettings, ConfigError> {
    let td = f.trust_domain.ok_or_else(|| {
        invalid(
            "federation.trust_domain",
            format!("[[federation]] {i}: is required"),
        )
    })?;
    let trust_domain =
        TrustDomain::new(td.strip_prefix("spiffe://").unwrap_or(&td)).map_err(|e| {
            invalid(
                "federation.trust_domain",
                format!("[[federation]] {i}: {td:?}: {e}"),
            )
        })?;
    let at = format!("[[federation]] {i} ({trust_domain})");
    if &trust_domain == own {
        return Err(invalid(
            "federation.trust_domain",
            format!("{at}: is the issuer's own trust domain"),
        ));
    }
    let url = f.bundle_endpoint_url.ok_or_else(|| {
        invalid(
            "federation.bundle_endpoint_url",
            format!("{at}: is required"),
        )
    })?;
    let bundle_endpoint_url = crate::federation::EndpointUrl::parse(&url)
        .map_err(|e| invalid("federation.bundle_endpoint_url", format!("{at}: {e}")))?;
    let profile = f.profile.ok_or_else(|| {
        invalid(
            "federation.profile",
            format!("{at}: is required (https_web or https_spiffe)"),
        )
    })?;
    let endpoint_spiffe_id = match profile.as_str() {
        crate::federation::PROFILE_HTTPS_SPIFFE => {
            if f.ca_bundle_path.is_some() {
                return Err(invalid(
                    "federation.ca_bundle_path",
                    format!("{at}: is only used with profile https_web"),
                ));
            }
            let v = f.endpoint_spiffe_id.ok_or_else(|| {
                invalid(
                    "federation.endpoint_spiffe_id",
                    format!("{at}: is required with profile https_spiffe (e.g. spiffe://{trust_domain}/signet/issuer)"),
                )
            })?;
            let id = signet_spiffe::SpiffeId::parse(&v).map_err(|e| {
                invalid("federation.endpoint_spiffe_id", format!("{at}: {v:?}: {e}"))
            })?;
            if !id.is_member_of(&trust_domain) {
                return Err(invalid(
                    "federation.endpoint_spiffe_id",
                    format!("{at}: {id} is not in trust domain {trust_domain}"),
                ));
            }
            Some(id)
        }
        crate::federation::PROFILE_HTTPS_WEB => {
            if f.endpoint_spiffe_id.is_some() {
                return Err(invalid(
                    "federation.endpoint_spiffe_id",
                    format!("{at}: is only used with profile https_spiffe"),
                ));
            }
            None
        }
        other => {
            return Err(invalid(
                "federation.profile",
                format!("{at}: expected one of https_web, https_spiffe, got {other:?}"),
            ));
        }
    };
    Ok(FederationSettings {
        trust_domain,
        bundle_endpoint_url,
        profile,
        endpoint_spiffe_id,
        bundle_path: f
            .bundle_path
            .map(|p| absolute_path_key("federation.bundle_path", p))
            .transpose()?,
        ca_bundle_path: f
            .ca_bundle_path
            .map(|p| absolute_path_key("federation.ca_bundle_path", p))
            .transpose()?,
    })
}

/// The `[delegation]` table. `jwt_issuer` is the issuer's own (JWT-SVIDs are not ID tokens).
fn delegation_settings(
    raw: RawDelegation,
    jwt_issuer: Option<&str>,
) -> Result<DelegationSettings, ConfigError> {
    let keys = delegation_key_settings(&raw)?;
    let mut identity_providers: Vec<IdentityProviderSettings> =
        Vec::with_capacity(raw.identity_providers.len());
    for (i, p) in raw.identity_providers.into_iter().enumerate() {
        let p = identity_provider_settings(i, p, jwt_issuer)?;
        if let Some(first) = identity_providers.iter().position(|o| o.issuer == p.issuer) {
            return Err(invalid(
                format!("delegation.identity_providers[{i}].issuer"),
                format!(
                    "{:?} is also the issuer of delegation.identity_providers[{first}] (one table per issuer)",
                    p.issuer
                ),
            ));
        }
        identity_providers.push(p);
    }
    Ok(DelegationSettings {
        identity_providers,
        ..keys
    })
}

fn identity_provider_settings(
    i: usize,
    p: RawIdentityProvider,
    jwt_issuer: Option<&str>,
) -> Result<IdentityProviderSettings, ConfigError> {
    let key = |name: &str| format!("delegation.identity_providers[{i}].{name}");
    let issuer = p.issuer.ok_or_else(|| {
        invalid(
            key("issuer"),
            "is required: the exact `iss` of the identity provider's ID tokens",
        )
    })?;
    validate_idp_issuer(&issuer).map_err(|m| invalid(key("issuer"), m))?;
    if jwt_issuer.is_some_and(|own| own == issuer.trim_end_matches('/')) {
        return Err(invalid(
            key("issuer"),
            format!("{issuer:?} is this issuer's own jwt_issuer: JWT-SVIDs are not ID tokens"),
        ));
    }
    let audiences = match p.audience {
        None => {
            return Err(invalid(
                key("audience"),
                "is required: the client ID (or a list of client IDs) the ID tokens are issued to",
            ));
        }
        Some(v) => idp_audiences(v).map_err(|m| invalid(key("audience"), m))?,
    };
    let jwks = match (p.jwks_path, p.jwks_url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("jwks_url"),
                "jwks_path is set too: give exactly one of jwks_path and jwks_url",
            ));
        }
        (None, None) => {
            return Err(invalid(
                key("jwks_path"),
                "is required unless jwks_url is set (exactly one of the two)",
            ));
        }
        (Some(path), None) => {
            if p.jwks_ca_bundle_path.is_some() {
                return Err(invalid(
                    key("jwks_ca_bundle_path"),
                    "is only used with jwks_url",
                ));
            }
            JwksSource::Path(absolute_path_key(&key("jwks_path"), path)?)
        }
        (None, Some(url)) => JwksSource::Url {
            url: jwks_url(&url).map_err(|m| invalid(key("jwks_url"), m))?,
            ca_bundle_path: p
                .jwks_ca_bundle_path
                .map(|c| absolute_path_key(&key("jwks_ca_bundle_path"), c))
                .transpose()?,
        },
    };
    let subject_claim = p
        .subject_claim
        .unwrap_or_else(|| DEFAULT_SUBJECT_CLAIM.to_owned());
    if subject_claim.trim().is_empty() || subject_claim.trim() != subject_claim {
        return Err(invalid(
            key("subject_claim"),
            format!("{subject_claim:?} is not a claim name (e.g. \"sub\" or \"email\")"),
        ));
    }
    let max_token_age = duration_key(
        &key("max_token_age"),
        p.max_token_age.as_deref(),
        DEFAULT_MAX_TOKEN_AGE,
        Duration::from_secs(1),
        MAX_MAX_TOKEN_AGE,
    )?;
    Ok(IdentityProviderSettings {
        issuer,
        audiences,
        jwks,
        subject_claim,
        max_token_age,
    })
}

/// Checks an identity provider's `issuer`: `https://`, or `http://` on localhost, 127.0.0.1 or
/// [::1] (a test IdP); a host; no user information, query or fragment (OIDC Discovery section 3).
/// The value is kept as written: `iss` is compared exactly.
fn validate_idp_issuer(v: &str) -> Result<(), String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{v:?} must not contain spaces or control characters"
        ));
    }
    if v.contains('?') || v.contains('#') {
        return Err(format!("{v:?} must not have a query or a fragment"));
    }
    let uri: axum::http::Uri = v.parse().map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("https" | "http"), Some(a)) if !a.host().is_empty() => a,
        (Some("https" | "http"), _) => return Err(format!("{v:?} has no host")),
        _ => {
            return Err(format!(
                "{v:?} must be an https:// URL (e.g. https://idp.example.com)"
            ));
        }
    };
    if authority.as_str().contains('@') {
        return Err(format!("{v:?} must not carry user information"));
    }
    if uri.scheme_str() == Some("http")
        && !matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]")
    {
        return Err(format!(
            "{v:?} must be an https:// URL: http:// is only accepted for localhost, 127.0.0.1 and [::1]"
        ));
    }
    Ok(())
}

fn audit_nats_settings(n: RawAuditNats) -> Result<AuditNatsSettings, ConfigError> {
    let url = n.url.ok_or_else(|| {
        invalid(
            "audit.nats.url",
            "is required to publish the audit log (e.g. url = \"nats://127.0.0.1:4222\")",
        )
    })?;
    let mut urls = Vec::new();
    for part in url.split(',') {
        let part = part.trim();
        let shown = redact_url(part);
        if part.is_empty() {
            return Err(invalid(
                "audit.nats.url",
                "has an empty server address (write nats://HOST:PORT, several separated by commas)",
            ));
        }
        if !(part.starts_with("nats://") || part.starts_with("tls://")) {
            return Err(invalid(
                "audit.nats.url",
                format!("{shown:?}: expected a nats:// or tls:// URL (e.g. nats://127.0.0.1:4222)"),
            ));
        }
        let addr: async_nats::ServerAddr = part
            .parse()
            .map_err(|e| invalid("audit.nats.url", format!("{shown:?}: {e}")))?;
        if addr.host().is_empty() {
            return Err(invalid("audit.nats.url", format!("{shown:?} has no host")));
        }
        urls.push(part.to_owned());
    }
    let subject = n
        .subject
        .unwrap_or_else(|| DEFAULT_AUDIT_NATS_SUBJECT.to_owned());
    validate_nats_subject(&subject).map_err(|m| invalid("audit.nats.subject", m))?;
    let stream = n
        .stream
        .unwrap_or_else(|| DEFAULT_AUDIT_NATS_STREAM.to_owned());
    validate_stream_name(&stream).map_err(|m| invalid("audit.nats.stream", m))?;
    let credentials = match (n.creds_path, n.token_path) {
        (None, None) => NatsCredentials::None,
        (Some(p), None) => {
            NatsCredentials::CredsFile(absolute_path_key("audit.nats.creds_path", p)?)
        }
        (None, Some(p)) => {
            NatsCredentials::TokenFile(absolute_path_key("audit.nats.token_path", p)?)
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "audit.nats.token_path",
                "set either creds_path or token_path, not both",
            ));
        }
    };
    Ok(AuditNatsSettings {
        urls,
        subject,
        stream,
        credentials,
    })
}

/// A NATS subject to publish under: dot-separated tokens of visible ASCII, none empty, without
/// the wildcards `*` and `>`.
fn validate_nats_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty (e.g. signet.audit)".to_owned());
    }
    if subject.len() > 200 {
        return Err(format!("{subject:?} is longer than 200 bytes"));
    }
    if !subject.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{subject:?} must be visible ASCII without spaces (tokens separated by dots, e.g. signet.audit)"
        ));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!(
                "{subject:?} has an empty token (no leading, trailing or double dots)"
            ));
        }
        if token.contains(['*', '>']) {
            return Err(format!(
                "{subject:?} must not contain the wildcards * or > (events go to <subject>.<kind>)"
            ));
        }
    }
    Ok(())
}

/// A JetStream stream name: visible ASCII without `.`, `*`, `>`, `/` or `\`.
fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (e.g. SIGNET_AUDIT)".to_owned());
    }
    if name.len() > 255 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) || name.contains(['.', '*', '>', '/', '\\']) {
        return Err(format!(
            "{name:?}: a stream name is visible ASCII without spaces, '.', '*', '>', '/' or '\\' (e.g. SIGNET_AUDIT)"
        ));
    }
    Ok(())
}

/// An identity provider's `audience`: a string or a non-empty array of strings, none empty.
fn idp_audiences(v: toml::Value) -> Result<Vec<String>, String> {
    const SHAPE: &str = "must be a string or a non-empty array of strings";
    let list = match v {
        toml::Value::String(s) => vec![s],
        toml::Value::Array(items) if !items.is_empty() => items
            .into_iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s),
                other => Err(format!("{SHAPE}, found {}", other.type_str())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        toml::Value::Array(_) => return Err(format!("{SHAPE}, found an empty array")),
        other => return Err(format!("{SHAPE}, found {}", other.type_str())),
    };
    if list.iter().any(|a| a.trim().is_empty()) {
        return Err("must not contain an empty audience".to_owned());
    }
    Ok(list)
}

/// An identity provider's `jwks_url`: an `https://` URL (see [`crate::federation::EndpointUrl`]).
fn jwks_url(v: &str) -> Result<crate::federation::EndpointUrl, String> {
    if !v.starts_with("https://") {
        return Err(format!(
            "{v:?} must be an https:// URL (e.g. https://idp.example.com/.well-known/jwks.json)"
        ));
    }
    crate::federation::EndpointUrl::parse(v).map_err(|e| match e {
        crate::federation::FederationError::InvalidUrl { url, reason } => {
            format!("{url:?}: {reason}")
        }
        other => other.to_string(),
    })
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
        assert_eq!(c.defaults.wit_svid_ttl, Duration::from_secs(3600));
        assert_eq!(c.defaults.agent_ttl, Duration::from_secs(3600));
        assert!(c.x509pop.is_none());
        assert!(c.jwt_issuer.is_none());
        assert!(c.bundle_endpoint.is_none());
        assert!(c.federation.is_empty());
        assert_eq!(c.jwt.key_type, KeyType::EcP256);
        assert_eq!(c.jwt.key_ttl, signet_ca::jwt::DEFAULT_JWT_KEY_TTL);
        assert_eq!(
            c.jwt_key_dir(),
            PathBuf::from("/tmp/signet-issuer/data/jwt")
        );
        assert_eq!(c.wit.key_type, KeyType::EcP256);
        assert_eq!(c.wit.key_ttl, signet_ca::jwt::DEFAULT_JWT_KEY_TTL);
        assert_eq!(
            c.wit_key_dir(),
            PathBuf::from("/tmp/signet-issuer/data/wit")
        );
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
    fn commented_identity_provider_example_in_deploy_is_valid() {
        // Uncomment the [[delegation.identity_providers]] example, with jwks_path (the URL keys
        // are the alternative).
        let example = include_str!("../../deploy/issuer.toml");
        let start = example.find("# [[delegation.identity_providers]]").unwrap();
        let mut text = example.to_owned();
        // The table ends at the first blank line.
        for line in example[start..]
            .lines()
            .take_while(|l| !l.trim().is_empty())
        {
            let line = line.trim_start_matches("# ");
            if !line.starts_with("jwks_url") && !line.starts_with("jwks_ca_bundle_path") {
                text.push_str(line);
                text.push('\n');
            }
        }
        let c = Config::from_toml(&text).unwrap();
        let p = &c.delegation.identity_providers[0];
        assert_eq!(p.issuer, "https://idp.example.com");
        assert_eq!(
            p.jwks,
            JwksSource::Path("/etc/signet-issuer/idp-jwks.json".into())
        );
        assert_eq!(p.subject_claim, DEFAULT_SUBJECT_CLAIM);
        assert_eq!(p.max_token_age, DEFAULT_MAX_TOKEN_AGE);
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
            "bundle_endpoint",
            "jwt",
            "wit",
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
    fn bundle_endpoint_and_federation_are_parsed() {
        let c = Config::from_toml(
            r#"
trust_domain = "example.org"
jwt_issuer = "https://oidc.example.org/"
[bundle_endpoint]
bind_address = "0.0.0.0:9443"
profile = "https_web"
certificate_path = "/etc/signet/web.pem"
private_key_path = "/etc/signet/web.key"
refresh_hint = "1m"
[[federation]]
trust_domain = "partner.org"
bundle_endpoint_url = "https://partner.org:8443/"
profile = "https_spiffe"
endpoint_spiffe_id = "spiffe://partner.org/signet/issuer"
bundle_path = "/etc/signet/partner.json"
[[federation]]
trust_domain = "spiffe://web.org"
bundle_endpoint_url = "https://bundles.web.org/td"
profile = "https_web"
ca_bundle_path = "/etc/signet/web-roots.pem"
"#,
        )
        .unwrap();
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://oidc.example.org"));
        let b = c.bundle_endpoint.unwrap();
        assert_eq!(b.bind_address.to_string(), "0.0.0.0:9443");
        assert_eq!(b.refresh_hint, Some(Duration::from_secs(60)));
        assert_eq!(
            b.tls,
            EndpointTlsSettings::HttpsWeb {
                certificate_path: "/etc/signet/web.pem".into(),
                private_key_path: "/etc/signet/web.key".into(),
            }
        );
        assert_eq!(c.federation.len(), 2);
        let p = &c.federation[0];
        assert_eq!(p.trust_domain.name(), "partner.org");
        assert_eq!(p.profile, "https_spiffe");
        assert_eq!(
            p.endpoint_spiffe_id.as_ref().unwrap().to_string(),
            "spiffe://partner.org/signet/issuer"
        );
        assert_eq!(p.bundle_path, Some("/etc/signet/partner.json".into()));
        let w = &c.federation[1];
        assert_eq!(w.trust_domain.name(), "web.org");
        assert_eq!(w.bundle_endpoint_url.path_and_query(), "/td");
        assert_eq!(w.ca_bundle_path, Some("/etc/signet/web-roots.pem".into()));

        let c = Config::from_toml(&format!(
            "{MIN}[bundle_endpoint]\nprofile = \"https_spiffe\"\n"
        ))
        .unwrap();
        let b = c.bundle_endpoint.unwrap();
        assert_eq!(
            b.bind_address.to_string(),
            DEFAULT_BUNDLE_ENDPOINT_BIND_ADDRESS
        );
        assert_eq!(b.tls, EndpointTlsSettings::HttpsSpiffe);
        assert_eq!(b.refresh_hint, None);
    }

    #[test]
    fn bad_bundle_endpoint_settings() {
        let be = |body: &str| err(&format!("{MIN}[bundle_endpoint]\n{body}"));
        assert!(
            be("").starts_with("invalid config: bundle_endpoint.profile: is required"),
            "{}",
            be("")
        );
        assert_eq!(
            be("profile = \"http\"\n"),
            "invalid config: bundle_endpoint.profile: expected one of https_spiffe, https_web, got \"http\""
        );
        let e = be("profile = \"https_web\"\nprivate_key_path = \"/k\"\n");
        assert!(
            e.starts_with("invalid config: bundle_endpoint.certificate_path: is required"),
            "{e}"
        );
        let e = be("profile = \"https_web\"\ncertificate_path = \"/c\"\n");
        assert!(
            e.starts_with("invalid config: bundle_endpoint.private_key_path: is required"),
            "{e}"
        );
        let e = be(
            "profile = \"https_web\"\ncertificate_path = \"c.pem\"\nprivate_key_path = \"/k\"\n",
        );
        assert!(
            e.contains("bundle_endpoint.certificate_path: \"c.pem\" must be an absolute path"),
            "{e}"
        );
        let e = be("profile = \"https_spiffe\"\ncertificate_path = \"/c\"\n");
        assert!(
            e.contains("are only used with profile = \"https_web\""),
            "{e}"
        );
        let e = be("profile = \"https_spiffe\"\nrefresh_hint = \"2d\"\n");
        assert!(
            e.starts_with("invalid config: bundle_endpoint.refresh_hint: \"2d\" is out of range"),
            "{e}"
        );
        let e = be("profile = \"https_spiffe\"\nbind_address = \"127.0.0.1:8081\"\n");
        assert!(
            e.contains("bundle_endpoint.bind_address: 127.0.0.1:8081 is also bind_address"),
            "{e}"
        );
        let e = be("profile = \"https_spiffe\"\nbind_address = \"nowhere\"\n");
        assert!(
            e.starts_with("invalid config: bundle_endpoint.bind_address:"),
            "{e}"
        );
    }

    #[test]
    fn jwt_keys() {
        let c = Config::from_toml(&format!(
            "{MIN}[jwt]\nkey_type = \"ec-p384\"\nkey_ttl = \"2h\"\n"
        ))
        .unwrap();
        assert_eq!(c.jwt.key_type, KeyType::EcP384);
        assert_eq!(c.jwt.key_ttl, Duration::from_secs(7200));
        let e = err(&format!("{MIN}[jwt]\nkey_type = \"hs256\"\n"));
        assert!(
            e.starts_with("invalid config: jwt.key_type: expected one of"),
            "{e}"
        );
        let e = err(&format!("{MIN}[jwt]\nkey_ttl = \"1s\"\n"));
        assert!(
            e.starts_with("invalid config: jwt.key_ttl: \"1s\" is out of range"),
            "{e}"
        );
    }

    #[test]
    fn wit_keys_are_configured_apart_from_jwt_keys() {
        let c = Config::from_toml(&format!(
            "{MIN}[jwt]\nkey_type = \"ec-p384\"\n[wit]\nkey_type = \"rsa-2048\"\nkey_ttl = \"12h\"\n"
        ))
        .unwrap();
        assert_eq!(c.jwt.key_type, KeyType::EcP384);
        assert_eq!(c.jwt.key_ttl, signet_ca::jwt::DEFAULT_JWT_KEY_TTL);
        assert_eq!(c.wit.key_type, KeyType::Rsa2048);
        assert_eq!(c.wit.key_ttl, Duration::from_secs(12 * 3600));
        let e = err(&format!("{MIN}[wit]\nkey_type = \"ec-p521\"\n"));
        assert_eq!(
            e,
            "invalid config: wit.key_type: expected one of ec-p256, ec-p384, rsa-2048, got \"ec-p521\""
        );
        let e = err(&format!("{MIN}[wit]\nkey_ttl = \"5s\"\n"));
        assert!(
            e.starts_with("invalid config: wit.key_ttl: \"5s\" is out of range"),
            "{e}"
        );
        let e = err(&format!("{MIN}[wit]\nkey_ttl = \"soon\"\n"));
        assert!(e.starts_with("invalid config: wit.key_ttl:"), "{e}");
        let e = err(&format!("{MIN}[wit]\nkey_type = 256\n"));
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn wit_svid_ttl_default_and_bounds() {
        let c = Config::from_toml(&format!("{MIN}[defaults]\nwit_svid_ttl = \"10m\"\n")).unwrap();
        assert_eq!(c.defaults.wit_svid_ttl, Duration::from_secs(600));
        let c = Config::from_toml(&format!("{MIN}[defaults]\nwit_svid_ttl = \"24h\"\n")).unwrap();
        assert_eq!(c.defaults.wit_svid_ttl, MAX_WIT_SVID_TTL);
        for bad in ["24h1s", "2d", "0s"] {
            let e = err(&format!("{MIN}[defaults]\nwit_svid_ttl = \"{bad}\"\n"));
            assert!(
                e.starts_with(&format!(
                    "invalid config: defaults.wit_svid_ttl: \"{bad}\" is out of range"
                )),
                "{bad}: {e}"
            );
        }
        let e = err(&format!("{MIN}[defaults]\nwit_svid_ttl = \"1.5s\"\n"));
        assert!(
            e.starts_with("invalid config: defaults.wit_svid_ttl:"),
            "{e}"
        );
    }

    #[test]
    fn bad_jwt_issuer() {
        for (v, why) in [
            ("http://oidc.example.org", "must be an https:// URL"),
            ("https://", "has no host"),
            (
                "https://oidc.example.org/?a=b",
                "must not have a query or a fragment",
            ),
            ("https://oidc example.org", "must not contain spaces"),
        ] {
            let e = err(&format!("{MIN}jwt_issuer = \"{v}\"\n"));
            assert!(
                e.starts_with("invalid config: jwt_issuer:") && e.contains(why),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn bad_federation_tables() {
        let fed = |body: &str| err(&format!("{MIN}[[federation]]\n{body}"));
        let spiffe = "trust_domain = \"partner.org\"\nbundle_endpoint_url = \"https://p.org/\"\nprofile = \"https_spiffe\"\n";
        let e = fed("bundle_endpoint_url = \"https://p.org/\"\n");
        assert_eq!(
            e,
            "invalid config: federation.trust_domain: [[federation]] 0: is required"
        );
        let e = fed("trust_domain = \"example.org\"\n");
        assert!(e.contains("federation.trust_domain: [[federation]] 0 (example.org): is the issuer's own trust domain"), "{e}");
        let e = fed("trust_domain = \"partner.org\"\n");
        assert!(
            e.contains(
                "federation.bundle_endpoint_url: [[federation]] 0 (partner.org): is required"
            ),
            "{e}"
        );
        let e = fed(
            "trust_domain = \"partner.org\"\nbundle_endpoint_url = \"http://p.org/\"\nprofile = \"https_web\"\n",
        );
        assert!(e.contains("federation.bundle_endpoint_url: [[federation]] 0 (partner.org): bundle endpoint URL \"http://p.org/\": scheme"), "{e}");
        let e = fed("trust_domain = \"partner.org\"\nbundle_endpoint_url = \"https://p.org/\"\n");
        assert!(
            e.contains("federation.profile: [[federation]] 0 (partner.org): is required"),
            "{e}"
        );
        let e = fed(spiffe);
        assert!(e.contains("federation.endpoint_spiffe_id: [[federation]] 0 (partner.org): is required with profile https_spiffe"), "{e}");
        let e = fed(&format!(
            "{spiffe}endpoint_spiffe_id = \"spiffe://other.org/x\"\n"
        ));
        assert!(
            e.contains("spiffe://other.org/x is not in trust domain partner.org"),
            "{e}"
        );
        let e = fed(&format!(
            "{spiffe}endpoint_spiffe_id = \"spiffe://partner.org/x\"\nca_bundle_path = \"/r.pem\"\n"
        ));
        assert!(e.contains("federation.ca_bundle_path: [[federation]] 0 (partner.org): is only used with profile https_web"), "{e}");
        let e = fed(
            "trust_domain = \"partner.org\"\nbundle_endpoint_url = \"https://p.org/\"\nprofile = \"https_web\"\nendpoint_spiffe_id = \"spiffe://partner.org/x\"\n",
        );
        assert!(e.contains("federation.endpoint_spiffe_id: [[federation]] 0 (partner.org): is only used with profile https_spiffe"), "{e}");
        let e = fed(
            "trust_domain = \"partner.org\"\nbundle_endpoint_url = \"https://p.org/\"\nprofile = \"ftp\"\n",
        );
        assert!(
            e.contains("expected one of https_web, https_spiffe, got \"ftp\""),
            "{e}"
        );
        let e = fed("bogus_key = 1\n");
        assert!(e.contains("unknown field `bogus_key`"), "{e}");
        let web = "trust_domain = \"partner.org\"\nbundle_endpoint_url = \"https://p.org/\"\nprofile = \"https_web\"\n";
        let e = err(&format!("{MIN}[[federation]]\n{web}[[federation]]\n{web}"));
        assert!(
            e.contains("[[federation]] 1: partner.org appears twice"),
            "{e}"
        );
    }

    const IDP: &str = "[[delegation.identity_providers]]\nissuer = \"https://idp.example.com\"\naudience = \"signet\"\n";

    fn idp_err(body: &str) -> String {
        err(&format!("{MIN}{IDP}{body}"))
    }

    #[test]
    fn identity_providers_are_parsed_with_defaults() {
        let c = Config::from_toml(&format!(
            r#"{MIN}
[[delegation.identity_providers]]
issuer = "https://idp.example.com"
audience = "signet"
jwks_path = "/etc/signet/idp-jwks.json"

[[delegation.identity_providers]]
issuer = "https://login.example.org/tenant/v2.0/"
audience = ["a", "b"]
jwks_url = "https://login.example.org/keys?tenant=x"
jwks_ca_bundle_path = "/etc/signet/idp-ca.pem"
subject_claim = "email"
max_token_age = "1h"

[[delegation.identity_providers]]
issuer = "http://127.0.0.1:5556/dex"
audience = "signet"
jwks_url = "https://localhost:5556/dex/keys"
"#
        ))
        .unwrap();
        let p = &c.delegation.identity_providers;
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            IdentityProviderSettings {
                issuer: "https://idp.example.com".to_owned(),
                audiences: vec!["signet".to_owned()],
                jwks: JwksSource::Path("/etc/signet/idp-jwks.json".into()),
                subject_claim: "sub".to_owned(),
                max_token_age: Duration::from_secs(24 * 3600),
            }
        );
        // The issuer is kept exactly as written, trailing slash included.
        assert_eq!(p[1].issuer, "https://login.example.org/tenant/v2.0/");
        assert_eq!(p[1].audiences, ["a", "b"]);
        assert_eq!(p[1].subject_claim, "email");
        assert_eq!(p[1].max_token_age, Duration::from_secs(3600));
        let JwksSource::Url {
            url,
            ca_bundle_path,
        } = &p[1].jwks
        else {
            panic!("expected a jwks_url");
        };
        assert_eq!(url.host(), "login.example.org");
        assert_eq!(url.path_and_query(), "/keys?tenant=x");
        assert_eq!(
            ca_bundle_path.as_deref(),
            Some(Path::new("/etc/signet/idp-ca.pem"))
        );
        assert!(matches!(
            &p[2].jwks,
            JwksSource::Url {
                ca_bundle_path: None,
                ..
            }
        ));
        // No [delegation] table: no provider.
        assert!(
            Config::from_toml(MIN)
                .unwrap()
                .delegation
                .identity_providers
                .is_empty()
        );
        assert!(
            Config::from_toml(&format!("{MIN}[delegation]\n"))
                .unwrap()
                .delegation
                .identity_providers
                .is_empty()
        );
    }

    #[test]
    fn identity_provider_issuer_errors_name_the_key() {
        let table = |issuer: &str| {
            err(&format!(
                "{MIN}[[delegation.identity_providers]]\nissuer = \"{issuer}\"\naudience = \"signet\"\njwks_path = \"/j.json\"\n"
            ))
        };
        for (issuer, why) in [
            ("idp.example.com", "must be an https:// URL"),
            ("ftp://idp.example.com", "must be an https:// URL"),
            (
                "http://idp.example.com",
                "http:// is only accepted for localhost",
            ),
            (
                "https://idp.example.com/?a=b",
                "must not have a query or a fragment",
            ),
            (
                "https://idp.example.com/#top",
                "must not have a query or a fragment",
            ),
            ("https://idp example.com", "must not contain spaces"),
            (
                "https://user@idp.example.com",
                "must not carry user information",
            ),
            ("https:///path", "is not a URL"),
        ] {
            let e = table(issuer);
            assert!(
                e.starts_with("invalid config: delegation.identity_providers[0].issuer: ")
                    && e.contains(why),
                "{issuer}: {e}"
            );
        }
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:5556/dex",
            "http://[::1]:1",
        ] {
            let c = Config::from_toml(&format!(
                "{MIN}[[delegation.identity_providers]]\nissuer = \"{local}\"\naudience = \"a\"\njwks_path = \"/j\"\n"
            ));
            assert!(c.is_ok(), "{local}: {:?}", c.err());
        }
        let e = err(&format!(
            "{MIN}[[delegation.identity_providers]]\naudience = \"signet\"\njwks_path = \"/j\"\n"
        ));
        assert!(
            e.starts_with("invalid config: delegation.identity_providers[0].issuer: is required"),
            "{e}"
        );
        // The issuer's own JWT-SVID issuer is not an identity provider.
        let e = err(&format!(
            "{MIN}jwt_issuer = \"https://oidc.example.org/\"\n[[delegation.identity_providers]]\nissuer = \"https://oidc.example.org\"\naudience = \"a\"\njwks_path = \"/j\"\n"
        ));
        assert!(
            e.contains("delegation.identity_providers[0].issuer: \"https://oidc.example.org\" is this issuer's own jwt_issuer"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_identity_provider_issuers_are_refused() {
        let e = err(&format!(
            "{MIN}{IDP}jwks_path = \"/a.json\"\n{IDP}jwks_path = \"/b.json\"\n"
        ));
        assert_eq!(
            e,
            "invalid config: delegation.identity_providers[1].issuer: \"https://idp.example.com\" is also the issuer of delegation.identity_providers[0] (one table per issuer)"
        );
    }

    #[test]
    fn identity_provider_audience_errors_name_the_key() {
        let e = err(&format!(
            "{MIN}[[delegation.identity_providers]]\nissuer = \"https://idp.example.com\"\njwks_path = \"/j\"\n"
        ));
        assert!(
            e.starts_with("invalid config: delegation.identity_providers[0].audience: is required"),
            "{e}"
        );
        let with_audience = |aud: &str| {
            err(&format!(
                "{MIN}[[delegation.identity_providers]]\nissuer = \"https://idp.example.com\"\naudience = {aud}\njwks_path = \"/j\"\n"
            ))
        };
        for (aud, why) in [
            ("[]", "found an empty array"),
            ("7", "found integer"),
            ("[\"a\", 1]", "found integer"),
            ("\"\"", "must not contain an empty audience"),
            ("[\"a\", \" \"]", "must not contain an empty audience"),
        ] {
            let e = with_audience(aud);
            assert!(
                e.starts_with("invalid config: delegation.identity_providers[0].audience: ")
                    && e.contains(why),
                "{aud}: {e}"
            );
        }
    }

    #[test]
    fn identity_provider_jwks_errors_name_the_key() {
        assert_eq!(
            idp_err(""),
            "invalid config: delegation.identity_providers[0].jwks_path: is required unless jwks_url is set (exactly one of the two)"
        );
        assert_eq!(
            idp_err("jwks_path = \"/j\"\njwks_url = \"https://idp.example.com/jwks\"\n"),
            "invalid config: delegation.identity_providers[0].jwks_url: jwks_path is set too: give exactly one of jwks_path and jwks_url"
        );
        assert_eq!(
            idp_err("jwks_path = \"jwks.json\"\n"),
            "invalid config: delegation.identity_providers[0].jwks_path: \"jwks.json\" must be an absolute path"
        );
        assert_eq!(
            idp_err("jwks_path = \"/j\"\njwks_ca_bundle_path = \"/ca.pem\"\n"),
            "invalid config: delegation.identity_providers[0].jwks_ca_bundle_path: is only used with jwks_url"
        );
        assert_eq!(
            idp_err(
                "jwks_url = \"https://idp.example.com/jwks\"\njwks_ca_bundle_path = \"ca.pem\"\n"
            ),
            "invalid config: delegation.identity_providers[0].jwks_ca_bundle_path: \"ca.pem\" must be an absolute path"
        );
        for (url, why) in [
            ("http://idp.example.com/jwks", "must be an https:// URL"),
            ("idp.example.com/jwks", "must be an https:// URL"),
            ("https://idp.example.com/jwks#k", "must not have a fragment"),
            (
                "https://u:p@idp.example.com/jwks",
                "must not carry user information",
            ),
            ("https://", "not a URL"),
        ] {
            let e = idp_err(&format!("jwks_url = \"{url}\"\n"));
            assert!(
                e.starts_with("invalid config: delegation.identity_providers[0].jwks_url: ")
                    && e.contains(why),
                "{url}: {e}"
            );
        }
        // The second table is named by its index.
        let e = err(&format!(
            "{MIN}{IDP}jwks_path = \"/a\"\n[[delegation.identity_providers]]\nissuer = \"https://b.example\"\naudience = \"x\"\njwks_url = \"ftp://b\"\n"
        ));
        assert!(
            e.starts_with("invalid config: delegation.identity_providers[1].jwks_url: "),
            "{e}"
        );
    }

    #[test]
    fn identity_provider_subject_and_age_errors_name_the_key() {
        for bad in ["", " ", " sub"] {
            let e = idp_err(&format!("jwks_path = \"/j\"\nsubject_claim = \"{bad}\"\n"));
            assert!(
                e.starts_with("invalid config: delegation.identity_providers[0].subject_claim: ")
                    && e.contains("is not a claim name"),
                "{bad:?}: {e}"
            );
        }
        for (age, why) in [
            ("0s", "is out of range"),
            ("31d", "is out of range"),
            ("soon", "is not a duration"),
            ("1.5s", "use whole seconds"),
        ] {
            let e = idp_err(&format!("jwks_path = \"/j\"\nmax_token_age = \"{age}\"\n"));
            assert!(
                e.starts_with("invalid config: delegation.identity_providers[0].max_token_age: ")
                    && e.contains(why),
                "{age}: {e}"
            );
        }
    }

    #[test]
    fn unknown_delegation_keys_are_refused() {
        let e = idp_err("jwks_path = \"/j\"\njwks_uri = \"https://x/\"\n");
        assert!(e.contains("unknown field `jwks_uri`"), "{e}");
        let e = err(&format!("{MIN}[delegation]\nidentity_provider = []\n"));
        assert!(e.contains("unknown field `identity_provider`"), "{e}");
        let e = idp_err("jwks_path = \"/j\"\nmax_token_age = 60\n");
        assert!(e.contains("invalid type"), "{e}");
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

    #[test]
    fn audit_nats_settings_are_parsed() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.audit_nats, None);
        let c = Config::from_toml(&format!(
            "{MIN}[audit.nats]\nurl = \"nats://127.0.0.1:4222\"\n"
        ))
        .unwrap();
        let n = c.audit_nats.unwrap();
        assert_eq!(n.urls, vec!["nats://127.0.0.1:4222"]);
        assert_eq!(n.subject, DEFAULT_AUDIT_NATS_SUBJECT);
        assert_eq!(n.stream, DEFAULT_AUDIT_NATS_STREAM);
        assert_eq!(n.credentials, NatsCredentials::None);
        let c = Config::from_toml(&format!(
            "{MIN}[audit.nats]\nurl = \"nats://u:secret@a:4222, tls://b:4443\"\nsubject = \"org.audit-log_1\"\nstream = \"AUDIT-1\"\ncreds_path = \"/etc/signet/audit.creds\"\n"
        ))
        .unwrap();
        let n = c.audit_nats.unwrap();
        assert_eq!(n.urls, vec!["nats://u:secret@a:4222", "tls://b:4443"]);
        assert_eq!(n.subject, "org.audit-log_1");
        assert_eq!(n.stream, "AUDIT-1");
        assert_eq!(
            n.credentials,
            NatsCredentials::CredsFile("/etc/signet/audit.creds".into())
        );
        // The password never shows, not even in Debug.
        assert_eq!(n.redacted_urls(), "nats://u:***@a:4222,tls://b:4443");
        assert!(!format!("{n:?}").contains("secret"), "{n:?}");
        let c = Config::from_toml(&format!(
            "{MIN}[audit.nats]\nurl = \"nats://a\"\ntoken_path = \"/run/secrets/nats-token\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.audit_nats.unwrap().credentials,
            NatsCredentials::TokenFile("/run/secrets/nats-token".into())
        );
    }

    #[test]
    fn bad_audit_nats_settings() {
        let nats = |body: &str| err(&format!("{MIN}[audit.nats]\n{body}\n"));
        for (body, want) in [
            ("", "invalid config: audit.nats.url: is required"),
            (
                "url = \"\"",
                "invalid config: audit.nats.url: has an empty server address",
            ),
            (
                "url = \"nats://a,\"",
                "invalid config: audit.nats.url: has an empty server address",
            ),
            (
                "url = \"127.0.0.1:4222\"",
                "invalid config: audit.nats.url: \"127.0.0.1:4222\": expected a nats:// or tls:// URL",
            ),
            (
                "url = \"http://a:4222\"",
                "expected a nats:// or tls:// URL",
            ),
            ("url = \"ws://a:4222\"", "expected a nats:// or tls:// URL"),
            (
                "url = \"nats://a:99999\"",
                "invalid config: audit.nats.url: \"nats://a:99999\": NATS server URL is invalid",
            ),
            ("url = \"nats://\"", "invalid config: audit.nats.url:"),
            ("url = 4222", "invalid type"),
            (
                "url = \"nats://a\"\nsubject = \"\"",
                "invalid config: audit.nats.subject: must not be empty",
            ),
            (
                "url = \"nats://a\"\nsubject = \"a..b\"",
                "has an empty token",
            ),
            ("url = \"nats://a\"\nsubject = \".a\"", "has an empty token"),
            ("url = \"nats://a\"\nsubject = \"a.\"", "has an empty token"),
            (
                "url = \"nats://a\"\nsubject = \"a.*\"",
                "must not contain the wildcards",
            ),
            (
                "url = \"nats://a\"\nsubject = \"a.>\"",
                "must not contain the wildcards",
            ),
            (
                "url = \"nats://a\"\nsubject = \"a b\"",
                "must be visible ASCII without spaces",
            ),
            (
                "url = \"nats://a\"\nsubject = \"é\"",
                "must be visible ASCII without spaces",
            ),
            (
                "url = \"nats://a\"\nstream = \"\"",
                "invalid config: audit.nats.stream: must not be empty",
            ),
            (
                "url = \"nats://a\"\nstream = \"A.B\"",
                "invalid config: audit.nats.stream: \"A.B\": a stream name is",
            ),
            ("url = \"nats://a\"\nstream = \"A B\"", "a stream name is"),
            ("url = \"nats://a\"\nstream = \"A/B\"", "a stream name is"),
            ("url = \"nats://a\"\nstream = \"A*\"", "a stream name is"),
            (
                "url = \"nats://a\"\ncreds_path = \"rel.creds\"",
                "invalid config: audit.nats.creds_path: \"rel.creds\" must be an absolute path",
            ),
            (
                "url = \"nats://a\"\ntoken_path = \"\"",
                "invalid config: audit.nats.token_path: must not be empty",
            ),
            (
                "url = \"nats://a\"\ncreds_path = \"/a\"\ntoken_path = \"/b\"",
                "invalid config: audit.nats.token_path: set either creds_path or token_path, not both",
            ),
            (
                "url = \"nats://a\"\npassword = \"x\"",
                "unknown field `password`",
            ),
        ] {
            let e = nats(body);
            assert!(e.contains(want), "{body:?}: {e}");
        }
        let long = "a".repeat(201);
        assert!(
            nats(&format!("url = \"nats://a\"\nsubject = \"{long}\""))
                .contains("longer than 200 bytes")
        );
        let long = "A".repeat(256);
        assert!(
            nats(&format!("url = \"nats://a\"\nstream = \"{long}\""))
                .contains("longer than 255 bytes")
        );
        // A password in a bad URL is not repeated in the error.
        let e = nats("url = \"http://u:secret@a:4222\"");
        assert!(!e.contains("secret"), "{e}");
        let e = err(&format!("{MIN}[audit]\nkafka = 1\n"));
        assert!(e.contains("unknown field `kafka`"), "{e}");
    }
}
