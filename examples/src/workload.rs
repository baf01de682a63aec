//! X509-SVIDs and trust bundles from the SPIFFE Workload API, through the standard `spiffe`
//! crate: what any SPIFFE workload does, whatever issued its identity.
//!
//! A process may have several identities (the example registers planner, search and flights for
//! the same uid); `--spiffe-id` picks one. In production each workload would be its own process,
//! selected by uid, container or systemd unit, and would have exactly one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};
use spiffe::x509_source::SvidPicker;
use spiffe::{WorkloadApiClient, X509BundleSet, X509Source, X509Svid};
use zeroize::Zeroizing;

/// The environment variable naming the Workload API endpoint.
pub const ENDPOINT_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// How long to wait for the Workload API.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The Workload API endpoint: `explicit` (`unix:///path` or an absolute path), else
/// `SPIFFE_ENDPOINT_SOCKET`.
pub fn endpoint(explicit: Option<&str>) -> Result<String> {
    let raw = match explicit {
        Some(e) => e.to_owned(),
        None => std::env::var(ENDPOINT_ENV).map_err(|_| {
            anyhow!("no Workload API endpoint: pass --socket-path or set {ENDPOINT_ENV}")
        })?,
    };
    if raw.starts_with('/') {
        return Ok(format!("unix://{raw}"));
    }
    Ok(raw)
}

/// One identity of this process: its X509-SVID, private key and its trust domain's bundle.
pub struct Identity {
    /// The SVID's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The certificate chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// The private key (PKCS#8 DER), zeroized on drop.
    key: Zeroizing<Vec<u8>>,
    /// The X.509 authorities of the SVID's trust domain.
    pub bundle: Bundle,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The certificate chain for rustls.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    /// The private key for rustls (a copy).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_vec()))
    }

    /// The identity of `svid`, with the bundle of its trust domain from `bundles`.
    pub fn from_svid(svid: &X509Svid, bundles: &X509BundleSet) -> Result<Self> {
        let spiffe_id = to_signet_id(svid.spiffe_id())?;
        let bundle = bundle_of(bundles, spiffe_id.trust_domain())?;
        Ok(Self {
            spiffe_id,
            chain: svid
                .cert_chain()
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
            key: Zeroizing::new(svid.private_key().as_bytes().to_vec()),
            bundle,
        })
    }
}

/// The `spiffe` crate's ID as a Signet one.
pub fn to_signet_id(id: &spiffe::SpiffeId) -> Result<SpiffeId> {
    SpiffeId::parse(&id.to_string()).map_err(|e| anyhow!("SPIFFE ID {id}: {e}"))
}

/// The bundle of `td` in `bundles`, as a Signet bundle (X.509 authorities).
pub fn bundle_of(bundles: &X509BundleSet, td: &TrustDomain) -> Result<Bundle> {
    let name = spiffe::TrustDomain::new(td.name()).map_err(|e| anyhow!("{td}: {e}"))?;
    let b = bundles
        .get(&name)
        .ok_or_else(|| anyhow!("the Workload API sent no bundle for trust domain {td}"))?;
    let mut bundle = Bundle::new(td.clone());
    bundle.x509_authorities = b
        .authorities()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    Ok(bundle)
}

/// The index of the SVID whose ID is `want` (`None`: the first, the Workload API's default).
fn position(svids: &[Arc<X509Svid>], want: Option<&str>) -> Option<usize> {
    match want {
        None => (!svids.is_empty()).then_some(0),
        Some(id) => svids.iter().position(|s| s.spiffe_id().to_string() == id),
    }
}

/// Picks the SVID of one SPIFFE ID for an [`X509Source`].
#[derive(Debug, Clone)]
pub struct ById(pub Option<String>);

impl SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        position(svids, self.0.as_deref())
    }
}

/// Fetches this process's identity `spiffe_id` (`None`: its first) once.
pub async fn fetch_identity(endpoint: &str, spiffe_id: Option<&str>) -> Result<Identity> {
    let fetch = async {
        let client = WorkloadApiClient::connect_to(endpoint)
            .await
            .with_context(|| format!("cannot connect to the Workload API at {endpoint}"))?;
        let ctx = client
            .fetch_x509_context()
            .await
            .with_context(|| format!("the Workload API at {endpoint} gave no X509-SVID"))?;
        let Some(i) = position(ctx.svids(), spiffe_id) else {
            let have: Vec<String> = ctx
                .svids()
                .iter()
                .map(|s| s.spiffe_id().to_string())
                .collect();
            bail!(
                "this process has no identity {}; it has: {}",
                spiffe_id.unwrap_or("(any)"),
                have.join(", ")
            );
        };
        let svid = ctx.svids().get(i).ok_or_else(|| anyhow!("no SVID {i}"))?;
        Identity::from_svid(svid, ctx.bundle_set())
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("no answer from the Workload API at {endpoint} within {TIMEOUT:?}"))?
}

/// An [`X509Source`] that keeps the identity `spiffe_id` (`None`: the first) and the bundles
/// current as the agent rotates them.
pub async fn source(endpoint: &str, spiffe_id: Option<&str>) -> Result<X509Source> {
    let build = X509Source::builder()
        .endpoint(endpoint)
        .picker(ById(spiffe_id.map(str::to_owned)))
        .build();
    tokio::time::timeout(TIMEOUT, build)
        .await
        .map_err(|_| {
            anyhow!("no X509-SVID from the Workload API at {endpoint} within {TIMEOUT:?}")
        })?
        .with_context(|| {
            format!(
                "cannot get the X509-SVID {} from the Workload API at {endpoint}",
                spiffe_id.unwrap_or("(default)")
            )
        })
}
