//! SPIFFE federation: relationships with other trust domains and the pollers that keep their
//! bundles current.
//!
//! A [`Relationship`] names a federated trust domain, the URL of its bundle endpoint and how that
//! endpoint authenticates itself ([`Profile`]): `https_web` (a certificate of ordinary web PKI,
//! checked against configured roots or the system roots) or `https_spiffe` (an X509-SVID with a
//! configured SPIFFE ID, checked against the last known bundle of that same trust domain, never the
//! own one). Relationships come from the config file (`[[federation]]`, read-only at run time) or
//! from the admin API (stored in the datastore); for a trust domain present in both the config wins.
//!
//! [`Federation`] runs one poller per relationship. A poll fetches the bundle, parses it for the
//! relationship's trust domain, refuses a document whose X.509 authorities name another trust
//! domain or whose `spiffe_sequence` is lower than the stored one, and stores it (`own = false`)
//! when it changed, then wakes the agents' watchers. Any failure (connection, TLS, HTTP status,
//! garbage, timeout, refusal) keeps the last good bundle and is shown by `federation show`. Polls
//! follow the bundle's `spiffe_refresh_hint`, bounded by [`MIN_POLL_INTERVAL`] and
//! [`MAX_POLL_INTERVAL`]; after a failure the next try comes after at most [`MAX_RETRY_INTERVAL`].
//! Trust domains are never merged: each bundle is stored under its own trust domain only.

mod fetch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use signet_spiffe::bundle::{Bundle, BundleError};
use signet_spiffe::{SpiffeId, TrustDomain};
use signet_store::{FederationRelationship, StoreError, StoredBundle};

use crate::ca_sync::unix_secs;
use crate::state::Issuer;

pub use fetch::{MAX_BUNDLE_BYTES, system_roots_pem};
pub(crate) use fetch::{https_get, web_client_config};

/// Profile name of ordinary web PKI endpoints.
pub const PROFILE_HTTPS_WEB: &str = "https_web";
/// Profile name of endpoints that present an X509-SVID.
pub const PROFILE_HTTPS_SPIFFE: &str = "https_spiffe";

/// Shortest interval between two polls of one endpoint, whatever its refresh hint says.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval between two polls of one endpoint.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(3600);
/// Poll interval of a bundle without a refresh hint.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
/// Longest wait before the next try after a failed poll.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// Time allowed for one poll (connect, TLS, request, body).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the relationships stored by another issuer (shared PostgreSQL) are picked up.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// Why a relationship is invalid or an operation on it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The bundle endpoint URL is unusable.
    #[error("bundle endpoint URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trust domain name that is not valid.
    #[error("trust domain {value:?}: {reason}")]
    InvalidTrustDomain {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The profile is not `https_web` or `https_spiffe`.
    #[error("profile {0:?}: expected https_web or https_spiffe")]
    UnknownProfile(String),
    /// A relationship with the own trust domain.
    #[error("{0} is the issuer's own trust domain: it cannot be federated with")]
    OwnTrustDomain(TrustDomain),
    /// `https_spiffe` without an endpoint SPIFFE ID.
    #[error("profile https_spiffe needs the endpoint's SPIFFE ID")]
    MissingEndpointId,
    /// An endpoint SPIFFE ID that is not a valid ID.
    #[error("endpoint SPIFFE ID {value:?}: {reason}")]
    InvalidEndpointId {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The endpoint SPIFFE ID is outside the federated trust domain.
    #[error(
        "endpoint SPIFFE ID {id} is not in trust domain {trust_domain}: an https_spiffe endpoint is authenticated with the bundle of the trust domain it serves"
    )]
    EndpointIdOutsideTrustDomain {
        /// The ID.
        id: SpiffeId,
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
    },
    /// An option that the profile does not use.
    #[error("{option} is only used with profile {profile}")]
    OptionNotForProfile {
        /// The option.
        option: &'static str,
        /// The profile that uses it.
        profile: &'static str,
    },
    /// The PEM roots of an `https_web` endpoint are unusable.
    #[error("CA bundle of the bundle endpoint: {0}")]
    InvalidCaBundle(String),
    /// A bootstrap bundle that does not parse for the trust domain.
    #[error("bundle of {trust_domain}: {source}")]
    InvalidBundle {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The parser's complaint.
        source: BundleError,
    },
    /// A bootstrap bundle that belongs to another trust domain.
    #[error("bootstrap bundle of {trust_domain}: {reason}")]
    ForeignBundle {
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
        /// What was found.
        reason: String,
    },
    /// `https_spiffe` with no bundle to authenticate the endpoint.
    #[error(
        "profile https_spiffe needs a bundle of {0} to authenticate its endpoint: give a bootstrap bundle or set one with `bundle set`"
    )]
    NoBootstrapBundle(TrustDomain),
    /// The relationship comes from the config file and cannot be changed through the API.
    #[error(
        "the federation relationship with {0} is defined in the config file: edit [[federation]] there and restart"
    )]
    DefinedInConfig(TrustDomain),
    /// No relationship with this trust domain.
    #[error("no federation relationship with {0}")]
    NotFound(TrustDomain),
    /// A relationship with this trust domain exists already.
    #[error("a federation relationship with {0} already exists")]
    AlreadyExists(TrustDomain),
    /// The datastore failed.
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
    /// A poll failed (see [`PollError`]).
    #[error("{0}")]
    Poll(#[from] PollError),
}

/// Why a poll of a bundle endpoint failed. The last good bundle is kept in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// No TCP connection.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        reason: String,
    },
    /// The TLS handshake failed (e.g. the endpoint is not who it should be).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// The TLS error.
        reason: String,
    },
    /// HTTP failed.
    #[error("HTTP request failed: {0}")]
    Http(String),
    /// The endpoint answered with another status than 200.
    #[error("the endpoint answered HTTP status {0}")]
    Status(u16),
    /// The body exceeds [`MAX_BUNDLE_BYTES`].
    #[error("the document is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    /// The whole poll took longer than [`POLL_TIMEOUT`].
    #[error("no complete answer within {0}s")]
    Timeout(u64),
    /// The document is not a valid SPIFFE bundle.
    #[error("the endpoint did not serve a valid SPIFFE bundle: {0}")]
    Bundle(BundleError),
    /// An X.509 authority of the document belongs to another trust domain.
    #[error(
        "the bundle is not for trust domain {expected}: its X.509 authority {index} is a CA of trust domain {found}"
    )]
    WrongTrustDomain {
        /// The relationship's trust domain.
        expected: String,
        /// The trust domain named by the authority's SPIFFE ID.
        found: String,
        /// Index of the authority in the bundle.
        index: usize,
    },
    /// The document's `spiffe_sequence` went backwards.
    #[error(
        "spiffe_sequence {got} is lower than the stored bundle's {stored}: refusing an older bundle"
    )]
    LowerSequence {
        /// Sequence of the fetched document.
        got: u64,
        /// Sequence of the stored bundle.
        stored: u64,
    },
    /// `https_spiffe` with no stored bundle to authenticate the endpoint.
    #[error("no stored bundle of {0} to authenticate its https_spiffe endpoint")]
    NoBundle(String),
    /// The system roots (for `https_web` without a CA bundle) cannot be loaded.
    #[error("{0}")]
    Roots(String),
    /// The datastore failed.
    #[error("datastore: {0}")]
    Store(String),
}

/// A bundle endpoint URL: `https://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: String,
    host: String,
    port: u16,
    path_and_query: String,
}

impl EndpointUrl {
    /// Parses and checks a URL: `https` only, a host (DNS name or IP literal), no user info, no
    /// fragment.
    pub fn parse(s: &str) -> Result<Self, FederationError> {
        let bad = |reason: String| FederationError::InvalidUrl {
            url: s.to_owned(),
            reason,
        };
        if s.contains('#') {
            return Err(bad("must not have a fragment".into()));
        }
        let uri: axum::http::Uri = s.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => {
                return Err(bad(format!(
                    "scheme {other:?} is not allowed: bundle endpoints are served over https"
                )));
            }
            None => return Err(bad("must be an absolute https:// URL".into())),
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not carry user information".into()));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("has no host".into()));
        }
        rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| bad(format!("host {host:?} is not a DNS name or an IP address")))?;
        let port = authority.port_u16().unwrap_or(443);
        let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(p) => p.to_owned(),
        };
        Ok(Self {
            url: s.to_owned(),
            host,
            port,
            path_and_query,
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host (an IPv6 literal without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query to request (`/` when the URL has none).
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// How a bundle endpoint authenticates itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// Ordinary web PKI: the certificate must chain to these PEM roots, or to the system roots when
    /// `None`, and name the URL's host.
    HttpsWeb {
        /// PEM roots to trust instead of the system roots.
        ca_bundle_pem: Option<String>,
    },
    /// The endpoint presents an X509-SVID with this ID, verified with the stored bundle of the
    /// relationship's trust domain.
    HttpsSpiffe {
        /// The ID the endpoint must present.
        endpoint_spiffe_id: SpiffeId,
    },
}

impl Profile {
    /// `https_web` or `https_spiffe`.
    pub fn name(&self) -> &'static str {
        match self {
            Profile::HttpsWeb { .. } => PROFILE_HTTPS_WEB,
            Profile::HttpsSpiffe { .. } => PROFILE_HTTPS_SPIFFE,
        }
    }

    /// Builds a profile from its name and options, checking that the options fit it.
    pub fn from_parts(
        profile: &str,
        endpoint_spiffe_id: Option<&str>,
        ca_bundle_pem: Option<String>,
    ) -> Result<Self, FederationError> {
        match profile {
            PROFILE_HTTPS_WEB => {
                if endpoint_spiffe_id.is_some() {
                    return Err(FederationError::OptionNotForProfile {
                        option: "endpoint_spiffe_id",
                        profile: PROFILE_HTTPS_SPIFFE,
                    });
                }
                if let Some(pem) = &ca_bundle_pem {
                    parse_roots(pem)?;
                }
                Ok(Profile::HttpsWeb { ca_bundle_pem })
            }
            PROFILE_HTTPS_SPIFFE => {
                if ca_bundle_pem.is_some() {
                    return Err(FederationError::OptionNotForProfile {
                        option: "ca_bundle",
                        profile: PROFILE_HTTPS_WEB,
                    });
                }
                let value = endpoint_spiffe_id.ok_or(FederationError::MissingEndpointId)?;
                let id =
                    SpiffeId::parse(value).map_err(|e| FederationError::InvalidEndpointId {
                        value: value.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(Profile::HttpsSpiffe {
                    endpoint_spiffe_id: id,
                })
            }
            other => Err(FederationError::UnknownProfile(other.to_owned())),
        }
    }
}

/// Parses PEM roots: at least one certificate, each usable as a trust anchor.
pub fn parse_roots(pem: &str) -> Result<rustls::RootCertStore, FederationError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let cert =
            cert.map_err(|e| FederationError::InvalidCaBundle(format!("PEM block {i}: {e}")))?;
        roots.add(cert).map_err(|e| {
            FederationError::InvalidCaBundle(format!("certificate {i} is not a usable root: {e}"))
        })?;
    }
    if roots.is_empty() {
        return Err(FederationError::InvalidCaBundle(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(roots)
}

/// Where a relationship is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[federation]]` in the config file (read-only at run time).
    Config,
    /// The admin API (stored in the datastore).
    Api,
}

impl Source {
    /// `config` or `api`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// A federation relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The federated trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint.
    pub url: EndpointUrl,
    /// How the endpoint authenticates itself.
    pub profile: Profile,
}

impl Relationship {
    /// Checks the rules that involve the issuer: not the own trust domain; an `https_spiffe`
    /// endpoint ID inside the federated trust domain.
    pub fn validate(&self, own: &TrustDomain) -> Result<(), FederationError> {
        if &self.trust_domain == own {
            return Err(FederationError::OwnTrustDomain(own.clone()));
        }
        if let Profile::HttpsSpiffe { endpoint_spiffe_id } = &self.profile
            && !endpoint_spiffe_id.is_member_of(&self.trust_domain)
        {
            return Err(FederationError::EndpointIdOutsideTrustDomain {
                id: endpoint_spiffe_id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok(())
    }

    /// The stored form.
    pub fn to_stored(&self, created_at: i64, updated_at: i64) -> FederationRelationship {
        let (endpoint_spiffe_id, ca_bundle_pem) = match &self.profile {
            Profile::HttpsWeb { ca_bundle_pem } => (None, ca_bundle_pem.clone()),
            Profile::HttpsSpiffe { endpoint_spiffe_id } => {
                (Some(endpoint_spiffe_id.to_string()), None)
            }
        };
        FederationRelationship {
            trust_domain: self.trust_domain.name().to_owned(),
            bundle_endpoint_url: self.url.as_str().to_owned(),
            profile: self.profile.name().to_owned(),
            endpoint_spiffe_id,
            ca_bundle_pem,
            created_at,
            updated_at,
        }
    }

    /// Decodes a stored relationship.
    pub fn from_stored(r: &FederationRelationship) -> Result<Self, FederationError> {
        let trust_domain =
            TrustDomain::new(&r.trust_domain).map_err(|e| FederationError::InvalidTrustDomain {
                value: r.trust_domain.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            trust_domain,
            url: EndpointUrl::parse(&r.bundle_endpoint_url)?,
            profile: Profile::from_parts(
                &r.profile,
                r.endpoint_spiffe_id.as_deref(),
                r.ca_bundle_pem.clone(),
            )?,
        })
    }
}

/// Refuses a bundle whose X.509 authorities name another trust domain than its own.
pub fn check_trust_domain(bundle: &Bundle) -> Result<(), PollError> {
    let td = &bundle.trust_domain;
    for (index, der) in bundle.x509_authorities.iter().enumerate() {
        if let Some(found) = fetch::foreign_trust_domain(der, td) {
            return Err(PollError::WrongTrustDomain {
                expected: td.name().to_owned(),
                found,
                index,
            });
        }
    }
    Ok(())
}

/// Parses a bundle given as SPIFFE JSON (starts with `{`) or PEM certificates, for `td`.
pub fn parse_bundle(td: &TrustDomain, data: &[u8]) -> Result<Bundle, FederationError> {
    let trimmed = data.trim_ascii_start();
    let parsed = if trimmed.starts_with(b"{") {
        Bundle::from_json(td, data)
    } else {
        Bundle::from_pem(td, data)
    };
    parsed.map_err(|source| FederationError::InvalidBundle {
        trust_domain: td.clone(),
        source,
    })
}

/// The observed state of a relationship's poller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStatus {
    /// Start of the last poll.
    pub last_attempt_at: Option<SystemTime>,
    /// End of the last successful poll.
    pub last_success_at: Option<SystemTime>,
    /// The error of the last poll, if it failed.
    pub last_error: Option<String>,
    /// When the last failed poll ended.
    pub last_error_at: Option<SystemTime>,
    /// When the next poll is due.
    pub next_poll_at: Option<SystemTime>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
}

/// The result of a successful poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// The bundle's `spiffe_sequence`.
    pub sequence: u64,
    /// Whether the stored bundle changed.
    pub updated: bool,
}

/// A relationship with its origin, stored times and poll status (for the admin API).
#[derive(Debug, Clone)]
pub struct RelationshipView {
    /// The relationship.
    pub relationship: Relationship,
    /// Where it is defined.
    pub source: Source,
    /// Creation time, Unix seconds (start-up time for config relationships).
    pub created_at: i64,
    /// Last change, Unix seconds.
    pub updated_at: i64,
    /// The poller's status.
    pub status: PollStatus,
}

/// A relationship from the config file, with its bootstrap bundle.
#[derive(Debug, Clone)]
pub struct ConfiguredRelationship {
    /// The relationship.
    pub relationship: Relationship,
    /// Stored when no bundle of the trust domain is stored yet.
    pub bootstrap: Option<Bundle>,
}

struct PollState {
    status: Mutex<PollStatus>,
    /// Serializes the polls of one relationship (the loop and `refresh`).
    busy: tokio::sync::Mutex<()>,
}

struct Poller {
    relationship: Relationship,
    source: Source,
    created_at: i64,
    updated_at: i64,
    state: Arc<PollState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The federation manager: relationships, their pollers and their status.
pub struct Federation {
    issuer: Arc<Issuer>,
    config: BTreeMap<TrustDomain, Relationship>,
    started_at: i64,
    pollers: tokio::sync::Mutex<BTreeMap<TrustDomain, Poller>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("config", &self.config.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn lock_status(state: &PollState) -> std::sync::MutexGuard<'_, PollStatus> {
    state
        .status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The poll interval for a bundle with `hint` (seconds), after a success or a failure.
pub fn poll_interval(hint: Option<u64>, success: bool) -> Duration {
    let base = hint
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_POLL_INTERVAL)
        .clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL);
    if success {
        base
    } else {
        base.min(MAX_RETRY_INTERVAL)
    }
}

impl Federation {
    /// Creates the manager and stores the bootstrap bundles of config relationships whose trust
    /// domain has no stored bundle yet. Pollers start with [`Federation::start`].
    pub async fn new(
        issuer: Arc<Issuer>,
        configured: Vec<ConfiguredRelationship>,
    ) -> Result<Arc<Self>, FederationError> {
        let now = unix_secs(SystemTime::now());
        let mut config = BTreeMap::new();
        for c in configured {
            c.relationship.validate(&issuer.trust_domain)?;
            let td = c.relationship.trust_domain.clone();
            let stored = issuer.store.get_bundle(td.name()).await?.is_some();
            if matches!(c.relationship.profile, Profile::HttpsSpiffe { .. })
                && c.bootstrap.is_none()
                && !stored
            {
                return Err(FederationError::NoBootstrapBundle(td));
            }
            if let Some(bundle) = &c.bootstrap {
                check_trust_domain(bundle).map_err(|e| FederationError::ForeignBundle {
                    trust_domain: td.clone(),
                    reason: e.to_string(),
                })?;
            }
            if let Some(bundle) = c.bootstrap
                && !stored
            {
                let document =
                    bundle
                        .to_json()
                        .map_err(|source| FederationError::InvalidBundle {
                            trust_domain: td.clone(),
                            source,
                        })?;
                issuer
                    .store
                    .set_bundle(StoredBundle {
                        trust_domain: td.name().to_owned(),
                        document,
                        own: false,
                        updated_at: now,
                    })
                    .await?;
                tracing::info!(trust_domain = %td, sequence = bundle.sequence, "stored the bootstrap bundle of a federated trust domain");
            }
            config.insert(td, c.relationship);
        }
        Ok(Arc::new(Self {
            issuer,
            config,
            started_at: now,
            pollers: tokio::sync::Mutex::new(BTreeMap::new()),
        }))
    }

    /// Starts the pollers and the loop that picks up relationships stored by other issuers.
    /// Runs until aborted (or until [`Federation::stop`]).
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "cannot read the federation relationships; keeping the current pollers");
            }
            tokio::time::sleep(RESYNC_INTERVAL).await;
        }
    }

    /// Stops every poller.
    pub async fn stop(&self) {
        self.pollers.lock().await.clear();
    }

    /// Brings the running pollers in line with the config and the store.
    async fn reconcile(self: &Arc<Self>) -> Result<(), FederationError> {
        let stored = self.issuer.store.list_federation_relationships().await?;
        let mut desired: BTreeMap<TrustDomain, (Relationship, Source, i64, i64)> = BTreeMap::new();
        for r in &stored {
            match Relationship::from_stored(r) {
                Ok(rel) => {
                    if self.config.contains_key(&rel.trust_domain) {
                        continue;
                    }
                    if rel.trust_domain == self.issuer.trust_domain {
                        tracing::warn!(trust_domain = %rel.trust_domain, "ignoring a stored federation relationship with the own trust domain");
                        continue;
                    }
                    desired.insert(
                        rel.trust_domain.clone(),
                        (rel, Source::Api, r.created_at, r.updated_at),
                    );
                }
                Err(e) => {
                    tracing::warn!(trust_domain = %r.trust_domain, error = %e, "ignoring an invalid stored federation relationship");
                }
            }
        }
        for (td, rel) in &self.config {
            desired.insert(
                td.clone(),
                (
                    rel.clone(),
                    Source::Config,
                    self.started_at,
                    self.started_at,
                ),
            );
        }
        let mut pollers = self.pollers.lock().await;
        // The status of a replaced poller carries over: it describes the trust domain's bundle.
        let mut previous: BTreeMap<TrustDomain, PollStatus> = BTreeMap::new();
        pollers.retain(|td, p| {
            let keep = desired
                .get(td)
                .is_some_and(|(rel, source, _, _)| &p.relationship == rel && p.source == *source);
            if !keep {
                if desired.contains_key(td) {
                    previous.insert(td.clone(), lock_status(&p.state).clone());
                    tracing::info!(trust_domain = %td, "federation relationship changed; restarting its poller");
                } else {
                    tracing::info!(trust_domain = %td, "stopped polling a federated bundle endpoint");
                }
            }
            keep
        });
        for (td, (rel, source, created_at, updated_at)) in desired {
            if let Some(p) = pollers.get_mut(&td) {
                p.created_at = created_at;
                p.updated_at = updated_at;
                continue;
            }
            let state = Arc::new(PollState {
                status: Mutex::new(previous.remove(&td).unwrap_or_default()),
                busy: tokio::sync::Mutex::new(()),
            });
            let task = tokio::spawn(poll_loop(self.issuer.clone(), rel.clone(), state.clone()));
            tracing::info!(trust_domain = %td, url = %rel.url, profile = rel.profile.name(), source = source.name(), "polling a federated bundle endpoint");
            pollers.insert(
                td,
                Poller {
                    relationship: rel,
                    source,
                    created_at,
                    updated_at,
                    state,
                    task,
                },
            );
        }
        Ok(())
    }

    /// The relationships with their status, ordered by trust domain.
    pub async fn list(self: &Arc<Self>) -> Result<Vec<RelationshipView>, FederationError> {
        self.reconcile().await?;
        let pollers = self.pollers.lock().await;
        Ok(pollers.values().map(view).collect())
    }

    /// One relationship with its status.
    pub async fn get(
        self: &Arc<Self>,
        td: &TrustDomain,
    ) -> Result<RelationshipView, FederationError> {
        self.reconcile().await?;
        let pollers = self.pollers.lock().await;
        pollers
            .get(td)
            .map(view)
            .ok_or_else(|| FederationError::NotFound(td.clone()))
    }

    fn check_bootstrap(
        &self,
        rel: &Relationship,
        bundle: Option<&Bundle>,
        stored: bool,
    ) -> Result<(), FederationError> {
        if matches!(rel.profile, Profile::HttpsSpiffe { .. }) && bundle.is_none() && !stored {
            return Err(FederationError::NoBootstrapBundle(rel.trust_domain.clone()));
        }
        Ok(())
    }

    fn stored_bundle(
        &self,
        td: &TrustDomain,
        bundle: Option<&Bundle>,
        now: i64,
    ) -> Result<Option<StoredBundle>, FederationError> {
        bundle
            .map(|b| {
                check_trust_domain(b).map_err(|e| FederationError::ForeignBundle {
                    trust_domain: td.clone(),
                    reason: e.to_string(),
                })?;
                let document = b
                    .to_json()
                    .map_err(|source| FederationError::InvalidBundle {
                        trust_domain: td.clone(),
                        source,
                    })?;
                Ok(StoredBundle {
                    trust_domain: td.name().to_owned(),
                    document,
                    own: false,
                    updated_at: now,
                })
            })
            .transpose()
    }

    /// Creates a relationship through the API; `bootstrap` (parsed for its trust domain) replaces
    /// the stored bundle of that trust domain, in the same transaction.
    pub async fn create(
        self: &Arc<Self>,
        rel: Relationship,
        bootstrap: Option<Bundle>,
    ) -> Result<RelationshipView, FederationError> {
        rel.validate(&self.issuer.trust_domain)?;
        let td = rel.trust_domain.clone();
        if self.config.contains_key(&td) {
            return Err(FederationError::DefinedInConfig(td));
        }
        let has_bundle = self.issuer.store.get_bundle(td.name()).await?.is_some();
        self.check_bootstrap(&rel, bootstrap.as_ref(), has_bundle)?;
        let now = unix_secs(SystemTime::now());
        let bundle = self.stored_bundle(&td, bootstrap.as_ref(), now)?;
        let has_new_bundle = bundle.is_some();
        self.issuer
            .store
            .create_federation_relationship(rel.to_stored(now, now), bundle)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => FederationError::AlreadyExists(td.clone()),
                other => FederationError::Store(other),
            })?;
        if has_new_bundle {
            self.issuer.notifier.notify();
        }
        self.get(&td).await
    }

    /// Replaces a relationship created through the API; `bundle`, when given, replaces the stored
    /// bundle of its trust domain in the same transaction.
    pub async fn update(
        self: &Arc<Self>,
        rel: Relationship,
        bundle: Option<Bundle>,
    ) -> Result<RelationshipView, FederationError> {
        rel.validate(&self.issuer.trust_domain)?;
        let td = rel.trust_domain.clone();
        if self.config.contains_key(&td) {
            return Err(FederationError::DefinedInConfig(td));
        }
        let old = self
            .issuer
            .store
            .get_federation_relationship(td.name())
            .await?
            .ok_or_else(|| FederationError::NotFound(td.clone()))?;
        let has_bundle = self.issuer.store.get_bundle(td.name()).await?.is_some();
        self.check_bootstrap(&rel, bundle.as_ref(), has_bundle)?;
        let now = unix_secs(SystemTime::now());
        let stored = self.stored_bundle(&td, bundle.as_ref(), now)?;
        let has_new_bundle = stored.is_some();
        self.issuer
            .store
            .update_federation_relationship(rel.to_stored(old.created_at, now), stored)
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => FederationError::NotFound(td.clone()),
                other => FederationError::Store(other),
            })?;
        if has_new_bundle {
            self.issuer.notifier.notify();
        }
        self.get(&td).await
    }

    /// The stored (API) relationship of `td`, for an update that changes only some fields.
    pub async fn stored(&self, td: &TrustDomain) -> Result<Relationship, FederationError> {
        if self.config.contains_key(td) {
            return Err(FederationError::DefinedInConfig(td.clone()));
        }
        let stored = self
            .issuer
            .store
            .get_federation_relationship(td.name())
            .await?
            .ok_or_else(|| FederationError::NotFound(td.clone()))?;
        Relationship::from_stored(&stored)
    }

    /// Deletes a relationship created through the API and stops its poller; the trust domain's
    /// bundle is kept.
    pub async fn delete(
        self: &Arc<Self>,
        td: &TrustDomain,
    ) -> Result<RelationshipView, FederationError> {
        if self.config.contains_key(td) {
            return Err(FederationError::DefinedInConfig(td.clone()));
        }
        let view = self.get(td).await?;
        self.issuer
            .store
            .delete_federation_relationship(td.name())
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => FederationError::NotFound(td.clone()),
                other => FederationError::Store(other),
            })?;
        self.reconcile().await?;
        Ok(view)
    }

    /// Polls the endpoint of `td` now and returns the outcome (the poller's schedule is kept).
    pub async fn refresh(
        self: &Arc<Self>,
        td: &TrustDomain,
    ) -> Result<(PollOutcome, RelationshipView), FederationError> {
        self.reconcile().await?;
        let (rel, state) = {
            let pollers = self.pollers.lock().await;
            let p = pollers
                .get(td)
                .ok_or_else(|| FederationError::NotFound(td.clone()))?;
            (p.relationship.clone(), p.state.clone())
        };
        let (result, _) = poll_and_record(&self.issuer, &rel, &state).await;
        let outcome = result?;
        Ok((outcome, self.get(td).await?))
    }
}

fn view(p: &Poller) -> RelationshipView {
    RelationshipView {
        relationship: p.relationship.clone(),
        source: p.source,
        created_at: p.created_at,
        updated_at: p.updated_at,
        status: lock_status(&p.state).clone(),
    }
}

/// Polls `rel` forever at its refresh hint.
async fn poll_loop(issuer: Arc<Issuer>, rel: Relationship, state: Arc<PollState>) {
    loop {
        let (_, wait) = poll_and_record(&issuer, &rel, &state).await;
        lock_status(&state).next_poll_at = Some(SystemTime::now() + wait);
        tokio::time::sleep(wait).await;
    }
}

/// One poll, serialized with the other polls of the relationship, recorded in its status.
/// Returns the result and the wait until the next poll.
async fn poll_and_record(
    issuer: &Issuer,
    rel: &Relationship,
    state: &PollState,
) -> (Result<PollOutcome, PollError>, Duration) {
    let _busy = state.busy.lock().await;
    lock_status(state).last_attempt_at = Some(SystemTime::now());
    let (result, hint) = poll_once(issuer, rel).await;
    let now = SystemTime::now();
    let mut st = lock_status(state);
    let wait = match &result {
        Ok(outcome) => {
            st.last_success_at = Some(now);
            st.last_error = None;
            st.consecutive_failures = 0;
            if outcome.updated {
                tracing::info!(trust_domain = %rel.trust_domain, sequence = outcome.sequence, url = %rel.url, "federated bundle updated");
            } else {
                tracing::debug!(trust_domain = %rel.trust_domain, sequence = outcome.sequence, "federated bundle unchanged");
            }
            poll_interval(hint, true)
        }
        Err(e) => {
            st.last_error = Some(e.to_string());
            st.last_error_at = Some(now);
            st.consecutive_failures = st.consecutive_failures.saturating_add(1);
            tracing::warn!(trust_domain = %rel.trust_domain, url = %rel.url, error = %e, "federated bundle poll failed; keeping the last good bundle");
            poll_interval(hint, false)
        }
    };
    st.next_poll_at = Some(now + wait);
    drop(st);
    (result, wait)
}

/// Fetches, checks and stores the bundle of `rel`. Returns the result and the refresh hint of the
/// bundle now held (fetched or kept).
async fn poll_once(
    issuer: &Issuer,
    rel: &Relationship,
) -> (Result<PollOutcome, PollError>, Option<u64>) {
    let td = &rel.trust_domain;
    let stored = match issuer.store.get_bundle(td.name()).await {
        Ok(s) => s.filter(|b| !b.own),
        Err(e) => return (Err(PollError::Store(e.to_string())), None),
    };
    let current = stored
        .as_ref()
        .and_then(|s| Bundle::from_json(td, s.document.as_bytes()).ok());
    let kept_hint = current.as_ref().and_then(|b| b.refresh_hint);
    let fetched = match fetch::fetch(rel, current.as_ref()).await {
        Ok(b) => b,
        Err(e) => return (Err(e), kept_hint),
    };
    let bundle = match check_bundle(td, &fetched, current.as_ref()) {
        Ok(b) => b,
        Err(e) => return (Err(e), kept_hint),
    };
    let hint = bundle.refresh_hint;
    if current.as_ref() == Some(&bundle) {
        return (
            Ok(PollOutcome {
                sequence: bundle.sequence,
                updated: false,
            }),
            hint,
        );
    }
    let document = match bundle.to_json() {
        Ok(d) => d,
        Err(e) => return (Err(PollError::Bundle(e)), kept_hint),
    };
    let write = issuer
        .store
        .set_bundle(StoredBundle {
            trust_domain: td.name().to_owned(),
            document,
            own: false,
            updated_at: unix_secs(SystemTime::now()),
        })
        .await;
    if let Err(e) = write {
        return (Err(PollError::Store(e.to_string())), kept_hint);
    }
    issuer.notifier.notify();
    crate::audit::record(
        issuer.store.as_ref(),
        "federation.bundle_update",
        "issuer",
        td.name(),
        "ok",
        serde_json::json!({"url": rel.url.as_str(), "sequence": bundle.sequence, "previous_sequence": current.as_ref().map(|c| c.sequence), "x509_authorities": bundle.x509_authorities.len(), "jwt_authorities": bundle.jwt_authorities.len()}),
    )
    .await;
    (
        Ok(PollOutcome {
            sequence: bundle.sequence,
            updated: true,
        }),
        hint,
    )
}

/// Parses a fetched document for `td` and applies the refusal rules: another trust domain named by
/// an X.509 authority, a `spiffe_sequence` lower than the current bundle's.
pub fn check_bundle(
    td: &TrustDomain,
    body: &[u8],
    current: Option<&Bundle>,
) -> Result<Bundle, PollError> {
    let bundle = Bundle::from_json(td, body).map_err(PollError::Bundle)?;
    check_trust_domain(&bundle)?;
    if let Some(cur) = current
        && bundle.sequence < cur.sequence
    {
        return Err(PollError::LowerSequence {
            got: bundle.sequence,
            stored: cur.sequence,
        });
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests;
