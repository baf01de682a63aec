//! `signet-issuer run`: start-up, the server tasks and graceful shutdown.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use signet_attestors::x509pop;
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_ca::{CaConfig, CertificateAuthority};
use signet_issuer::admin::{self, AdminOptions, AdminService};
use signet_issuer::audit::publisher::AuditPublisher;
use signet_issuer::bundle_endpoint::BundleEndpoint;
use signet_issuer::ca_sync::{CA_JOURNAL, CaSync, JWT_JOURNAL, WIT_JOURNAL, unix_secs};
use signet_issuer::config::{Config, FederationSettings, redact_url};
use signet_issuer::federation::{self, ConfiguredRelationship, Federation, Profile, Relationship};
use signet_issuer::health::{self, Health};
use signet_issuer::idp::IdentityProviders;
use signet_issuer::instrumented::InstrumentedStore;
use signet_issuer::metrics::Metrics;
use signet_issuer::node::NodeApiOptions;
use signet_issuer::state::{Issuer, issuer_id};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The longest pause between two checks whether a CA or JWT key rotation step is due.
const MAX_ROTATION_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest one.
const MIN_ROTATION_INTERVAL: Duration = Duration::from_millis(500);

/// How often the CA and the JWT keys are asked whether a rotation step is due: a twelfth of the
/// shortest key lifetime (activation is due at 5/6 of a lifetime, so at least two checks fall
/// between it and the end of the lifetime, when the key stops signing), between
/// [`MIN_ROTATION_INTERVAL`] and [`MAX_ROTATION_INTERVAL`].
fn rotation_interval(lifetimes: &[Duration]) -> Duration {
    lifetimes
        .iter()
        .min()
        .map_or(MAX_ROTATION_INTERVAL, |shortest| {
            (*shortest / 12).clamp(MIN_ROTATION_INTERVAL, MAX_ROTATION_INTERVAL)
        })
}
/// How often spent and expired join tokens are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the entry and agent gauges are refreshed.
const COUNTS_INTERVAL: Duration = Duration::from_secs(10);
/// How long start-up waits for the datastore.
const STORE_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the audit publisher to finish its round (one acknowledgment
/// timeout and the cursor write).
const PUBLISHER_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the servers to finish in-flight calls.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A shutdown signal every task can await.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    async fn wait(mut self) {
        // An error means the sender is gone, which also means shutdown.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

fn create_private_dir(dir: &Path, key: &str) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("{key} {}: cannot create directory", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("{key} {}: cannot inspect directory", dir.display()))?;
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:04o}", meta.mode() & 0o7777),
            "{key} is accessible by group or others; 0700 is recommended"
        );
    }
    Ok(())
}

/// A TCP listener on `addr`, the value of the config key `key`.
async fn listen(key: &str, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key} {addr}: cannot listen"))
}

/// Runs the issuer until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    // One crypto provider for every TLS user in the process; an error only means it is installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    create_private_dir(&config.data_dir, "data_dir")?;

    let metrics = Arc::new(Metrics::new());
    let url = redact_url(&config.datastore_url);
    tracing::info!(datastore = %url, "opening datastore");
    let raw_store = tokio::time::timeout(
        STORE_OPEN_TIMEOUT,
        signet_store::open(&config.datastore_url),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "cannot open datastore {url}: no answer within {}s",
            STORE_OPEN_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| anyhow!("cannot open datastore {url}: {e}"))?;
    let store: Arc<dyn signet_store::Store> =
        Arc::new(InstrumentedStore::new(raw_store, metrics.clone()));

    let journal = store
        .load_journal(CA_JOURNAL)
        .await
        .map_err(|e| anyhow!("cannot load the CA journal from {url}: {e}"))?;
    let ca = CertificateAuthority::open(
        CaConfig {
            trust_domain: config.trust_domain.clone(),
            key_type: config.ca.key_type,
            ttl: config.ca.ttl,
            upstream: config.ca.upstream.clone(),
            key_dir: config.ca_key_dir(),
        },
        journal.as_deref(),
        SystemTime::now(),
    )
    .map_err(|e| anyhow!("cannot open the CA: {e}"))?;

    let jwt_journal = store
        .load_journal(JWT_JOURNAL)
        .await
        .map_err(|e| anyhow!("cannot load the JWT key journal from {url}: {e}"))?;
    let jwt = JwtKeyManager::open(
        JwtKeyConfig {
            trust_domain: config.trust_domain.clone(),
            key_type: config.jwt.key_type,
            key_ttl: config.jwt.key_ttl,
            max_token_ttl: signet_issuer::config::MAX_JWT_SVID_TTL,
            key_dir: config.jwt_key_dir(),
        },
        jwt_journal.as_deref(),
        SystemTime::now(),
    )
    .map_err(|e| anyhow!("cannot open the JWT signing keys: {e}"))?;
    let wit_journal = store
        .load_journal(WIT_JOURNAL)
        .await
        .map_err(|e| anyhow!("cannot load the WIT key journal from {url}: {e}"))?;
    // Key separation: the WIT-SVID keys have their own directory, journal and key type.
    let wit = JwtKeyManager::open_for(
        TokenKind::WitSvid,
        JwtKeyConfig {
            trust_domain: config.trust_domain.clone(),
            key_type: config.wit.key_type,
            key_ttl: config.wit.key_ttl,
            max_token_ttl: signet_issuer::config::MAX_WIT_SVID_TTL,
            key_dir: config.wit_key_dir(),
        },
        wit_journal.as_deref(),
        SystemTime::now(),
    )
    .map_err(|e| anyhow!("cannot open the WIT signing keys: {e}"))?;
    // Reads the JWKS files (an invalid one stops start-up) and fetches the JWKS URLs once.
    let identity_providers = Arc::new(
        IdentityProviders::new(&config.delegation.identity_providers)
            .await
            .map_err(|e| anyhow!("{e}"))?,
    );
    // Delegation: on when `[delegation] policies_dir` is set. An invalid policy stops start-up,
    // naming file and line.
    let delegation = match &config.delegation.policies_dir {
        Some(dir) => {
            let d = signet_issuer::delegation::Delegation::open(
                &config.delegation,
                dir,
                config.delegation_key_dir(),
                config.trust_domain.clone(),
                store.clone(),
                identity_providers.clone(),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            d.persist_keys().await.map_err(|e| anyhow!("{e}"))?;
            Some(Arc::new(d))
        }
        None => None,
    };
    let issuer = Arc::new(Issuer {
        trust_domain: config.trust_domain.clone(),
        store: store.clone(),
        ca: Arc::new(ca),
        // One key manager: the node API mints with the keys CaSync rotates and publishes.
        jwt: Arc::new(jwt),
        wit: Arc::new(wit),
        jwt_issuer: config.jwt_issuer.clone(),
        defaults: config.defaults.clone(),
        metrics: metrics.clone(),
        issuer_id: issuer_id(&config.trust_domain)
            .map_err(|e| anyhow!("issuer ID of {}: {e}", config.trust_domain))?,
        notifier: Arc::new(signet_issuer::node::notify::RevisionNotifier::new()),
        identity_providers: identity_providers.clone(),
        delegation: delegation.clone(),
    });
    let ca_sync = Arc::new(
        CaSync::new(issuer.clone(), config.ca.ttl)
            .with_refresh_hint(config.bundle_endpoint.as_ref().and_then(|b| b.refresh_hint)),
    );
    ca_sync
        .persist()
        .await
        .map_err(|e| anyhow!("cannot save the CA state: {e}"))?;
    if journal.is_none() {
        signet_issuer::audit::record(
            store.as_ref(),
            "ca.init",
            "issuer",
            config.trust_domain.name(),
            "ok",
            serde_json::json!({"key_type": config.ca.key_type.to_string(), "upstream": config.ca.upstream.is_some()}),
        )
        .await;
    }

    let health = Arc::new(Health::new(issuer.clone()));

    let configured = config
        .federation
        .iter()
        .map(configured_relationship)
        .collect::<Result<Vec<_>>>()?;
    let federation = Federation::new(issuer.clone(), configured)
        .await
        .map_err(|e| anyhow!("federation: {e}"))?;

    let node_options = NodeApiOptions {
        x509pop: match &config.x509pop {
            None => None,
            Some(x) => Some(
                x509pop::ServerConfig::from_pem_file(&x.ca_bundle_path)
                    .map_err(|e| anyhow!("node_attestors.x509pop.ca_bundle_path: {e}"))?,
            ),
        },
    };

    let node_listener = listen("bind_address", config.bind_address).await?;
    let node_addr = node_listener.local_addr()?;
    let (admin_listener, server_uid) = admin::bind_socket(&config.admin_socket_path)
        .map_err(|e| anyhow!("admin_socket_path: {e}"))?;
    let health_listener = listen("health.bind_address", config.health_bind_address).await?;
    let health_addr = health_listener.local_addr()?;
    let bundle_endpoint = match &config.bundle_endpoint {
        None => None,
        Some(settings) => {
            let endpoint = BundleEndpoint::new(
                issuer.clone(),
                ca_sync.clone(),
                settings,
                config.jwt_issuer.clone(),
            )
            .map_err(|e| anyhow!("{e}"))?;
            let listener = listen("bundle_endpoint.bind_address", settings.bind_address).await?;
            let addr = listener.local_addr()?;
            Some((endpoint, listener, addr))
        }
    };
    let bundle_endpoint_addr = bundle_endpoint.as_ref().map(|(_, _, a)| *a);

    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = Shutdown(stop_rx);
    let mut servers: JoinSet<Result<&'static str>> = JoinSet::new();

    {
        let issuer = issuer.clone();
        let sd = shutdown.clone();
        let health = health.clone();
        health.set_node_api_bound(true);
        servers.spawn(async move {
            let result =
                signet_issuer::node::serve_with(issuer, node_options, node_listener, sd.wait())
                    .await;
            health.set_node_api_bound(false);
            result.map_err(|e| anyhow!("node API: {e:#}"))?;
            Ok("node API")
        });
    }
    {
        let service = AdminService::new(
            issuer.clone(),
            ca_sync.clone(),
            health.clone(),
            federation.clone(),
            AdminOptions {
                server_uid,
                ca_ttl: config.ca.ttl,
            },
        );
        let sd = shutdown.clone();
        servers.spawn(async move {
            admin::serve(service, admin_listener, sd.wait())
                .await
                .map_err(|e| anyhow!("admin API: {e}"))?;
            Ok("admin API")
        });
    }
    {
        let router = health::router(health.clone());
        let sd = shutdown.clone();
        servers.spawn(async move {
            axum::serve(health_listener, router)
                .with_graceful_shutdown(sd.wait())
                .await
                .map_err(|e| anyhow!("health server: {e}"))?;
            Ok("health server")
        });
    }

    if let Some((endpoint, listener, _)) = bundle_endpoint {
        let sd = shutdown.clone();
        servers.spawn(async move {
            endpoint
                .serve(listener, sd.wait())
                .await
                .map_err(|e| anyhow!("{e}"))?;
            Ok("bundle endpoint")
        });
    }

    let mut background = JoinSet::new();
    background.spawn(federation.clone().run());
    background.spawn(identity_providers.clone().run());
    if let Some(d) = &delegation {
        let notifier = issuer.notifier.clone();
        background.spawn(d.clone().run_reloader(move || notifier.notify()));
    }
    let mut lifetimes = vec![config.ca.ttl, config.jwt.key_ttl, config.wit.key_ttl];
    if delegation.is_some() {
        lifetimes.push(config.delegation.key_ttl);
    }
    let rotation_every = rotation_interval(&lifetimes);
    background.spawn(rotation_loop(
        ca_sync.clone(),
        rotation_every,
        shutdown.clone(),
    ));
    background.spawn(prune_loop(issuer.clone(), shutdown.clone()));
    background.spawn(counts_loop(issuer.clone(), shutdown.clone()));
    // The audit publisher finishes its round at shutdown (so its cursor is stored), apart from the
    // loops that are simply aborted.
    let publisher = config.audit_nats.clone().map(|settings| {
        tracing::info!(
            url = %settings.redacted_urls(),
            stream = %settings.stream,
            subject = %settings.subject,
            "publishing the audit log to NATS JetStream"
        );
        tokio::spawn(
            AuditPublisher::new(store.clone(), settings, metrics.clone())
                .run(shutdown.clone().wait()),
        )
    });

    let mut signals = StopSignals::new()?;
    tracing::info!(
        trust_domain = %config.trust_domain,
        node_api = %node_addr,
        health = %health_addr,
        admin_socket = %config.admin_socket_path.display(),
        datastore = %url,
        x509pop = config.x509pop.is_some(),
        bundle_endpoint = bundle_endpoint_addr.map(|a| a.to_string()).unwrap_or_default(),
        federation = config.federation.len(),
        identity_providers = identity_providers.len(),
        audit_nats = config.audit_nats.is_some(),
        delegation = delegation.is_some(),
        "issuer ready"
    );

    let mut failure = None;
    tokio::select! {
        sig = signals.wait() => {
            tracing::info!(signal = sig, "shutting down");
        }
        Some(done) = servers.join_next() => {
            let e = match done {
                Ok(Ok(name)) => anyhow!("{name} stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow!("server task failed: {e}"),
            };
            tracing::error!(error = %e, "shutting down after a server failure");
            failure = Some(e);
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = servers.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "error during shutdown");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "servers did not stop within {}s; aborting",
            SHUTDOWN_GRACE.as_secs()
        );
        servers.abort_all();
    }
    background.abort_all();
    if let Some(task) = publisher
        && tokio::time::timeout(PUBLISHER_GRACE, task).await.is_err()
    {
        tracing::warn!("the audit publisher did not stop in time");
    }
    federation.stop().await;
    let _ = std::fs::remove_file(&config.admin_socket_path);
    tracing::info!("issuer stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reads the files of a `[[federation]]` table (bootstrap bundle, CA bundle).
fn configured_relationship(f: &FederationSettings) -> Result<ConfiguredRelationship> {
    let at = format!("[[federation]] {}", f.trust_domain);
    let ca_bundle_pem = match &f.ca_bundle_path {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("{at}: ca_bundle_path {}: cannot read", p.display()))?,
        ),
    };
    let profile = Profile::from_parts(
        &f.profile,
        f.endpoint_spiffe_id
            .as_ref()
            .map(|i| i.to_string())
            .as_deref(),
        ca_bundle_pem,
    )
    .map_err(|e| anyhow!("{at}: {e}"))?;
    let bootstrap = match &f.bundle_path {
        None => None,
        Some(p) => {
            let data = std::fs::read(p)
                .with_context(|| format!("{at}: bundle_path {}: cannot read", p.display()))?;
            Some(
                federation::parse_bundle(&f.trust_domain, &data)
                    .map_err(|e| anyhow!("{at}: bundle_path {}: {e}", p.display()))?,
            )
        }
    };
    Ok(ConfiguredRelationship {
        relationship: Relationship {
            trust_domain: f.trust_domain.clone(),
            url: f.bundle_endpoint_url.clone(),
            profile,
        },
        bootstrap,
    })
}

/// SIGTERM and SIGINT, watched from creation on: create it before announcing readiness, so that a
/// signal sent right after `issuer ready` is not lost to the default action (exit by signal).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs `step` every `period` (the first time at once; a late tick is delayed, not repeated)
/// until shutdown.
async fn every<F, Fut>(period: Duration, shutdown: Shutdown, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        step().await;
    }
}

async fn rotation_loop(ca_sync: Arc<CaSync>, period: Duration, shutdown: Shutdown) {
    every(period, shutdown, || async {
        if let Err(e) = ca_sync.rotate_once(SystemTime::now()).await {
            tracing::error!(error = %e, "CA rotation step failed; retrying");
        }
    })
    .await;
}

async fn prune_loop(issuer: Arc<Issuer>, shutdown: Shutdown) {
    every(PRUNE_INTERVAL, shutdown, || async {
        match issuer
            .store
            .prune_join_tokens(unix_secs(SystemTime::now()))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned expired join tokens"),
            Err(e) => tracing::warn!(error = %e, "cannot prune join tokens"),
        }
    })
    .await;
}

async fn counts_loop(issuer: Arc<Issuer>, shutdown: Shutdown) {
    every(COUNTS_INTERVAL, shutdown, || async {
        let entries = issuer.store.count_entries().await;
        let agents = issuer.store.count_agents().await;
        match (entries, agents) {
            (Ok(e), Ok(a)) => issuer.metrics.set_counts(e, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot count entries and agents")
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_checks_keep_pace_with_the_shortest_lifetime() {
        let s = Duration::from_secs;
        // Defaults (24 h): every 5 s.
        assert_eq!(rotation_interval(&[s(86_400), s(86_400)]), s(5));
        // A 12 s JWT key: every second, so activation (due at 10 s) happens before it expires.
        assert_eq!(rotation_interval(&[s(86_400), s(12)]), s(1));
        assert_eq!(rotation_interval(&[s(6)]), Duration::from_millis(500));
        assert_eq!(rotation_interval(&[]), s(5));
    }
}
