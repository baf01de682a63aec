//! The Workload API server end to end: a real Unix socket, a cache holding real certificates
//! (minted here with rcgen), a test attestor giving `unix:uid:<uid>` / `unix:gid:<gid>` from the
//! kernel's credentials, and the real `spiffe` crate client (plus a raw tonic client where the
//! exact wire answer matters, or where a conforming client cannot misbehave on purpose).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use signet_agent::cache::{Cache, CachedSvid};
use signet_agent::workload_api::{
    self, AttestationFailure, IssuerFailure, MISSING_HEADER, MintedToken, NO_IDENTITY_ISSUED,
    PeerCred, ProcessAttestation, ServeError, SvidIssuer, WorkloadAttestation,
};
use signet_attestors::workload::{CgroupConfig, UnixConfig};
use signet_ca::KeyType;
use signet_ca::jwt::{JwtKeyConfig, JwtKeyManager, TokenKind};
use signet_proto::workload as pb;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_spiffe::{Bundle, JwtAuthority, SpiffeId, TrustDomain};
use spiffe::transport::{GrpcStatusCode, TransportError};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Source};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Streaming};
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

static SERIAL: AtomicU64 = AtomicU64::new(1);

struct Ca {
    td: TrustDomain,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    /// JWT authorities published in the bundle next to the CA certificate.
    jwt: Vec<JwtAuthority>,
    /// WIT authorities, likewise.
    wit: Vec<JwtAuthority>,
}

struct Minted {
    chain: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    serial: Vec<u8>,
    expires_at: SystemTime,
}

fn now_offset(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::seconds(secs)
}

impl Ca {
    fn new(td: &str) -> Self {
        let td = TrustDomain::new(td).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::OrganizationName, td.name());
        params.subject_alt_names = vec![SanType::URI(td.id_string().try_into().unwrap())];
        params.not_before = now_offset(-60);
        params.not_after = now_offset(86_400);
        params.serial_number = Some(next_serial());
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self {
            td,
            der,
            issuer: Issuer::new(params, key),
            jwt: Vec::new(),
            wit: Vec::new(),
        }
    }

    fn bundle(&self) -> Bundle {
        let mut b = Bundle::new(self.td.clone());
        b.x509_authorities.push(self.der.clone());
        b.jwt_authorities = self.jwt.clone();
        b.wit_authorities = self.wit.clone();
        b
    }

    /// An X509-SVID for `path`, valid for `ttl`.
    fn mint(&self, path: &str, ttl: Duration) -> Minted {
        let id = self.td.spiffe_id(path).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
        params.not_before = now_offset(-10);
        let not_after = now_offset(i64::try_from(ttl.as_secs()).unwrap());
        params.not_after = not_after;
        let serial = next_serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Minted {
            chain: cert.der().to_vec(),
            key: Zeroizing::new(key.serialize_der()),
            serial: serial.to_bytes(),
            expires_at: UNIX_EPOCH
                + Duration::from_secs(u64::try_from(not_after.unix_timestamp()).unwrap()),
        }
    }
}

fn next_serial() -> SerialNumber {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut bytes = vec![0x01];
    bytes.extend_from_slice(&n.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

struct EntrySpec<'a> {
    id: &'a str,
    path: &'a str,
    selectors: Vec<(String, String)>,
    hint: &'a str,
    federates_with: Vec<TrustDomain>,
    ttl: Duration,
}

/// A cached SVID for an entry, freshly minted; returns the minted material too.
fn cached(ca: &Ca, spec: EntrySpec<'_>) -> (CachedSvid, Minted) {
    let minted = ca.mint(spec.path, spec.ttl);
    let svid = CachedSvid {
        entry_id: spec.id.into(),
        spiffe_id: ca.td.spiffe_id(spec.path).unwrap(),
        hint: spec.hint.into(),
        selectors: spec.selectors.into(),
        federates_with: spec.federates_with.into(),
        cert_chain_der: minted.chain.clone().into(),
        private_key_pkcs8: Zeroizing::new(minted.key.as_slice().into()),
        expires_at: minted.expires_at,
    };
    // The serial is read from the certificate, not stored.
    assert_eq!(svid.serial(), Some(&minted.serial[..]));
    (svid, minted)
}

fn sel(kind: &str, value: impl Into<String>) -> (String, String) {
    (kind.to_string(), value.into())
}

// ---------------------------------------------------------------------------------------------
// Server harness
// ---------------------------------------------------------------------------------------------

/// Attests by the kernel's credentials, like the unix attestor: `unix:uid:<uid>`,
/// `unix:gid:<gid>`. Can be told to fail.
#[derive(Default)]
struct UidAttestor {
    fail: AtomicBool,
}

#[async_trait]
impl WorkloadAttestation for UidAttestor {
    async fn attest(&self, peer: PeerCred) -> Result<Vec<(String, String)>, AttestationFailure> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(AttestationFailure::ProcessChanged { pid: peer.pid });
        }
        Ok(vec![
            sel("unix", format!("uid:{}", peer.uid)),
            sel("unix", format!("gid:{}", peer.gid)),
        ])
    }
}

/// The issuer side of JWT-SVIDs for a trust domain: real signing keys (`signet-ca`'s
/// `JwtKeyManager`, as the issuer uses them), the entry -> SPIFFE ID table the issuer would hold,
/// and switches to make it refuse or be unreachable.
struct JwtIssuer {
    keys: JwtKeyManager,
    /// The WIT-SVID signing keys (a separate key set, as on the issuer).
    wit_keys: JwtKeyManager,
    /// Lifetime of minted WIT-SVIDs, seconds.
    wit_ttl: AtomicU64,
    td: TrustDomain,
    ids: Mutex<HashMap<String, SpiffeId>>,
    mints: AtomicUsize,
    down: AtomicBool,
    _dir: tempfile::TempDir,
}

impl JwtIssuer {
    fn new(td: &TrustDomain) -> Self {
        Self::with_key_type(td, KeyType::EcP256)
    }

    fn with_key_type(td: &TrustDomain, key_type: KeyType) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = |sub: &str| JwtKeyConfig {
            trust_domain: td.clone(),
            key_type,
            key_ttl: Duration::from_secs(86_400),
            max_token_ttl: Duration::from_secs(86_400),
            key_dir: dir.path().join(sub),
        };
        let keys = JwtKeyManager::open(config("jwt"), None, SystemTime::now()).unwrap();
        let wit_keys =
            JwtKeyManager::open_for(TokenKind::WitSvid, config("wit"), None, SystemTime::now())
                .unwrap();
        Self {
            keys,
            wit_keys,
            wit_ttl: AtomicU64::new(3600),
            td: td.clone(),
            ids: Mutex::new(HashMap::new()),
            mints: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            _dir: dir,
        }
    }

    fn register(&self, entry_id: &str, path: &str) {
        self.ids
            .lock()
            .unwrap()
            .insert(entry_id.to_owned(), self.td.spiffe_id(path).unwrap());
    }

    fn authorities(&self) -> Vec<JwtAuthority> {
        self.keys.authorities()
    }

    /// A token for `path`, issued at `now` for `ttl`.
    fn token(&self, path: &str, audience: &[&str], ttl: Duration, now: SystemTime) -> String {
        let audience: Vec<String> = audience.iter().map(|a| a.to_string()).collect();
        self.keys
            .mint_jwt_svid(&self.td.spiffe_id(path).unwrap(), &audience, ttl, now, None)
            .unwrap()
            .token
    }
}

impl JwtIssuer {
    /// What the issuer checks first: reachable, and the entry authorized (counts the mint).
    fn authorized(&self, entry_id: &str) -> Result<SpiffeId, IssuerFailure> {
        if self.down.load(Ordering::SeqCst) {
            return Err(IssuerFailure::Unavailable("connection refused".into()));
        }
        let Some(id) = self.ids.lock().unwrap().get(entry_id).cloned() else {
            return Err(IssuerFailure::Refused(format!(
                "entry {entry_id} is not authorized for this agent"
            )));
        };
        self.mints.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }
}

#[async_trait]
impl SvidIssuer for JwtIssuer {
    async fn mint_jwt_svid(
        &self,
        entry_id: &str,
        audience: &[String],
    ) -> Result<MintedToken, IssuerFailure> {
        let id = self.authorized(entry_id)?;
        let minted = self
            .keys
            .mint_jwt_svid(
                &id,
                audience,
                Duration::from_secs(300),
                SystemTime::now(),
                None,
            )
            .map_err(|e| IssuerFailure::Unavailable(e.to_string()))?;
        Ok(MintedToken::new(
            id,
            minted.token,
            minted.issued_at,
            minted.expiry,
        ))
    }

    async fn mint_wit_svid(
        &self,
        entry_id: &str,
        public_key_spki: &[u8],
    ) -> Result<MintedToken, IssuerFailure> {
        let id = self.authorized(entry_id)?;
        let minted = self
            .wit_keys
            .mint_wit_svid(
                &id,
                public_key_spki,
                Duration::from_secs(self.wit_ttl.load(Ordering::SeqCst)),
                SystemTime::now(),
            )
            .map_err(|e| IssuerFailure::Unavailable(e.to_string()))?;
        Ok(MintedToken::new(
            id,
            minted.token,
            minted.issued_at,
            minted.expiry,
        ))
    }
}

struct Server {
    dir: tempfile::TempDir,
    socket: PathBuf,
    cache: Cache,
    attestor: Arc<UidAttestor>,
    jwt: Arc<JwtIssuer>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Binds a fresh socket and serves `cache` on it (the listener is bound before this returns,
    /// so clients can connect at once), attesting callers with a [`UidAttestor`].
    fn start(cache: Cache) -> Self {
        let attestor = Arc::new(UidAttestor::default());
        Self::start_with(cache, attestor.clone(), attestor)
    }

    /// Same, attesting callers with `attestation`.
    fn start_with(
        cache: Cache,
        attestor: Arc<UidAttestor>,
        attestation: Arc<dyn WorkloadAttestation>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let jwt = Arc::new(JwtIssuer::new(&TrustDomain::new("example.org").unwrap()));
        let task = tokio::spawn(workload_api::serve(
            listener,
            cache.clone(),
            attestation,
            jwt.clone(),
            workload_api::DelegationBackend::disabled("not in this test"),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            dir,
            socket,
            cache,
            attestor,
            jwt,
            stop: Some(stop),
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn client(&self) -> WorkloadApiClient {
        WorkloadApiClient::connect_to(self.endpoint())
            .await
            .unwrap()
    }

    /// A generated tonic client that sends exactly what the test asks (no header unless added).
    async fn raw(&self) -> SpiffeWorkloadApiClient<Channel> {
        SpiffeWorkloadApiClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .unwrap()
    }
}

/// Our own credentials, as the server will see them.
fn me(server: &Server) -> (u32, u32) {
    let meta = std::fs::metadata(server.dir.path()).unwrap();
    (meta.uid(), meta.gid())
}

fn with_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// The standard fixture: trust domain `example.org` with a federated `partner.example`; two
/// entries for the test's uid (`/workload/a`, hint `internal`, federated with the partner;
/// `/workload/b`, hint `external`, also requiring the gid) and one for another uid.
struct Fixture {
    server: Server,
    own: Ca,
    partner: Ca,
    /// The partner trust domain's JWT signing keys (its authorities are in `partner`'s bundle).
    partner_jwt: JwtIssuer,
    a: Minted,
    b: Minted,
}

impl Fixture {
    fn start() -> Self {
        let mut own = Ca::new("example.org");
        let mut partner = Ca::new("partner.example");
        let partner_jwt = JwtIssuer::new(&partner.td);
        partner.jwt = partner_jwt.authorities();
        partner.wit = partner_jwt.wit_keys.authorities();
        let cache = Cache::new();
        let server = Server::start(cache);
        own.jwt = server.jwt.authorities();
        own.wit = server.jwt.wit_keys.authorities();
        for (entry, path) in [
            ("e-a", "/workload/a"),
            ("e-b", "/workload/b"),
            ("e-other", "/other"),
        ] {
            server.jwt.register(entry, path);
        }
        let (uid, gid) = me(&server);
        let (sa, a) = cached(
            &own,
            EntrySpec {
                id: "e-a",
                path: "/workload/a",
                selectors: vec![sel("unix", format!("uid:{uid}"))],
                hint: "internal",
                federates_with: vec![partner.td.clone()],
                ttl: Duration::from_secs(3600),
            },
        );
        let (sb, b) = cached(
            &own,
            EntrySpec {
                id: "e-b",
                path: "/workload/b",
                selectors: vec![
                    sel("unix", format!("uid:{uid}")),
                    sel("unix", format!("gid:{gid}")),
                ],
                hint: "external",
                federates_with: Vec::new(),
                ttl: Duration::from_secs(3600),
            },
        );
        let (sother, _) = cached(
            &own,
            EntrySpec {
                id: "e-other",
                path: "/other",
                selectors: vec![sel("unix", format!("uid:{}", uid.wrapping_add(1)))],
                hint: "",
                federates_with: Vec::new(),
                ttl: Duration::from_secs(3600),
            },
        );
        // Inserted out of order on purpose: the default SVID does not depend on it.
        server
            .cache
            .replace(
                vec![sother, sb, sa],
                Some(own.bundle()),
                BTreeMap::from([(partner.td.clone(), partner.bundle())]),
            )
            .unwrap();
        Self {
            server,
            own,
            partner,
            partner_jwt,
            a,
            b,
        }
    }

    fn uid(&self) -> u32 {
        me(&self.server).0
    }

    /// A rotated SVID for entry `e-b`.
    fn rotate_b(&self) -> (CachedSvid, Minted) {
        let (uid, gid) = me(&self.server);
        cached(
            &self.own,
            EntrySpec {
                id: "e-b",
                path: "/workload/b",
                selectors: vec![
                    sel("unix", format!("uid:{uid}")),
                    sel("unix", format!("gid:{gid}")),
                ],
                hint: "external",
                federates_with: Vec::new(),
                ttl: Duration::from_secs(3600),
            },
        )
    }

    /// A rotated SVID for entry `e-a`.
    fn rotate_a(&self) -> (CachedSvid, Minted) {
        cached(
            &self.own,
            EntrySpec {
                id: "e-a",
                path: "/workload/a",
                selectors: vec![sel("unix", format!("uid:{}", self.uid()))],
                hint: "internal",
                federates_with: vec![self.partner.td.clone()],
                ttl: Duration::from_secs(3600),
            },
        )
    }
}

fn status_code(err: &WorkloadApiError) -> Option<GrpcStatusCode> {
    match err {
        WorkloadApiError::Transport(TransportError::Status(s)) => Some(s.code()),
        _ => None,
    }
}

async fn next_message<T>(stream: &mut Streaming<T>) -> T {
    stream.message().await.unwrap().unwrap()
}

async fn next_status<T>(stream: &mut Streaming<T>) -> tonic::Status {
    match stream.message().await {
        Err(status) => status,
        Ok(Some(_)) => panic!("expected the stream to end with a status, got a message"),
        Ok(None) => panic!("expected the stream to end with a status, it ended with OK"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_spiffe_client_fetches_the_default_svid_all_svids_and_bundles() {
    let f = Fixture::start();
    let client = f.server.client().await;

    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/workload/a"
    );
    assert_eq!(svid.hint(), Some("internal"));
    assert_eq!(svid.leaf().as_bytes(), f.a.chain.as_slice());
    assert_eq!(svid.private_key().as_bytes(), f.a.key.as_slice());

    let all = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/workload/a",
            "spiffe://example.org/workload/b"
        ],
        "the other uid's entry is not served; the default comes first"
    );
    assert_eq!(all[1].leaf().as_bytes(), f.b.chain.as_slice());
    assert_eq!(all[1].hint(), Some("external"));

    let context = client.fetch_x509_context().await.unwrap();
    let bundles = context.bundle_set();
    let own = bundles
        .get(&spiffe::TrustDomain::new("example.org").unwrap())
        .unwrap();
    assert_eq!(own.authorities().len(), 1);
    assert_eq!(own.authorities()[0].as_bytes(), f.own.der.as_slice());
    let partner = bundles
        .get(&spiffe::TrustDomain::new("partner.example").unwrap())
        .unwrap();
    assert_eq!(
        partner.authorities()[0].as_bytes(),
        f.partner.der.as_slice()
    );

    let set = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(set.len(), 2);
}

#[tokio::test]
async fn the_wire_messages_follow_the_standard() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;

    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;
    assert!(first.crl.is_empty());
    assert_eq!(first.svids.len(), 2);
    let a = &first.svids[0];
    assert_eq!(a.spiffe_id, "spiffe://example.org/workload/a");
    assert_eq!(a.x509_svid, f.a.chain, "DER chain, leaf first");
    assert_eq!(a.x509_svid_key, *f.a.key, "PKCS#8 DER");
    assert_eq!(
        a.bundle, f.own.der,
        "DER authorities of the own trust domain"
    );
    assert_eq!(a.hint, "internal");
    assert_eq!(first.svids[1].hint, "external");
    assert_eq!(
        first.federated_bundles.keys().collect::<Vec<_>>(),
        ["spiffe://partner.example"],
        "keyed by trust-domain ID; only the domains the entries federate with"
    );
    assert_eq!(
        first.federated_bundles["spiffe://partner.example"],
        f.partner.der
    );

    let mut bundles = raw
        .fetch_x509_bundles(with_header(pb::X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut bundles).await;
    let keys: HashSet<&str> = first.bundles.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from(["spiffe://example.org", "spiffe://partner.example"])
    );
    assert_eq!(first.bundles["spiffe://example.org"], f.own.der);
}

#[tokio::test]
async fn x509_source_gets_the_svid_then_sees_a_rotation() {
    let f = Fixture::start();
    let source = X509Source::builder()
        .endpoint(f.server.endpoint())
        .build()
        .await
        .unwrap();
    let svid = source.svid().unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/workload/a"
    );
    assert_eq!(svid.leaf().as_bytes(), f.a.chain.as_slice());

    let mut updates = source.updated();
    let (rotated, minted) = f.rotate_a();
    assert!(f.server.cache.upsert_svids([rotated]).unwrap());
    updates.changed().await.unwrap();
    let svid = source.svid().unwrap();
    assert_eq!(svid.leaf().as_bytes(), minted.chain.as_slice());
    assert_eq!(svid.private_key().as_bytes(), minted.key.as_slice());
    source.shutdown().await;
}

#[tokio::test]
async fn a_stream_follows_rotations_and_bundle_changes_with_the_full_state() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;

    // Changes that do not alter this workload's answer (the other uid's SVID rotates, a bundle it
    // does not federate with appears, the own bundle is set again unchanged). That they send
    // nothing is proven without timing by the service's unit tests; here they must not disturb
    // what follows.
    let (uid, _) = me(&f.server);
    let (other, _) = cached(
        &f.own,
        EntrySpec {
            id: "e-other",
            path: "/other",
            selectors: vec![sel("unix", format!("uid:{}", uid.wrapping_add(1)))],
            hint: "",
            federates_with: Vec::new(),
            ttl: Duration::from_secs(3600),
        },
    );
    assert!(f.server.cache.upsert_svids([other]).unwrap());
    let unrelated = Ca::new("unrelated.example");
    assert!(
        f.server
            .cache
            .set_federated(BTreeMap::from([
                (f.partner.td.clone(), f.partner.bundle()),
                (unrelated.td.clone(), unrelated.bundle()),
            ]))
            .unwrap()
    );
    assert!(!f.server.cache.set_bundle(f.own.bundle()).unwrap());

    // The second SVID rotates: the next message carries the full state with the new SVID.
    let (rotated, minted) = f.rotate_b();
    assert!(f.server.cache.upsert_svids([rotated]).unwrap());
    let second = next_message(&mut stream).await;
    assert_eq!(second.svids.len(), 2);
    assert_eq!(second.svids[0], first.svids[0]);
    assert_eq!(second.svids[1].x509_svid, minted.chain);
    assert_eq!(second.federated_bundles, first.federated_bundles);

    // The own trust domain's CA rotates: every SVID's bundle carries both authorities.
    let next_ca = Ca::new("example.org");
    let mut bundle = f.own.bundle();
    bundle.x509_authorities.push(next_ca.der.clone());
    assert!(f.server.cache.set_bundle(bundle).unwrap());
    let third = next_message(&mut stream).await;
    let expected = [f.own.der.clone(), next_ca.der.clone()].concat();
    assert!(third.svids.iter().all(|s| s.bundle == expected));

    // The federated bundle it does federate with changes.
    let partner_next = Ca::new("partner.example");
    assert!(
        f.server
            .cache
            .set_federated(BTreeMap::from([(
                partner_next.td.clone(),
                partner_next.bundle()
            )]))
            .unwrap()
    );
    let fourth = next_message(&mut stream).await;
    assert_eq!(
        fourth.federated_bundles["spiffe://partner.example"],
        partner_next.der
    );
}

#[tokio::test]
async fn a_request_without_the_security_header_is_invalid_argument() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;

    let err = raw
        .fetch_x509svid(Request::new(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), MISSING_HEADER);

    let err = raw
        .fetch_x509_bundles(Request::new(pb::X509BundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = raw
        .fetch_jwtsvid(Request::new(pb::JwtsvidRequest {
            audience: vec!["x".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut wrong = Request::new(pb::X509svidRequest {});
    wrong
        .metadata_mut()
        .insert("workload.spiffe.io", "false".parse().unwrap());
    let err = raw.fetch_x509svid(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_workload_matching_no_entry_gets_permission_denied_no_identity_issued() {
    let f = Fixture::start();
    f.server.cache.remove_entries(&["e-a", "e-b"]);

    let err = f.server.client().await.fetch_x509_svid().await.unwrap_err();
    assert!(
        matches!(err, WorkloadApiError::NoIdentityIssued),
        "the Rust client recognises the text: {err}"
    );

    let mut raw = f.server.raw().await;
    let err = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), NO_IDENTITY_ISSUED);

    let err = raw
        .fetch_x509_bundles(with_header(pb::X509BundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), NO_IDENTITY_ISSUED);
}

#[tokio::test]
async fn removing_the_entries_withdraws_svids_then_ends_the_stream() {
    let f = Fixture::start();
    let client = f.server.client().await;
    let mut contexts = client.stream_x509_contexts().await.unwrap();
    let first = contexts.next().await.unwrap().unwrap();
    assert_eq!(first.svids().len(), 2);

    // One entry deleted: the next message has only the other one, which becomes the default.
    assert!(f.server.cache.remove_entries(&["e-a"]));
    let second = contexts.next().await.unwrap().unwrap();
    let ids: Vec<String> = second
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    assert_eq!(ids, ["spiffe://example.org/workload/b"]);
    assert!(
        second
            .bundle_set()
            .get(&spiffe::TrustDomain::new("partner.example").unwrap())
            .is_none(),
        "the federated bundle came with the deleted entry and is withdrawn with it"
    );

    // The last one deleted: the stream ends with PermissionDenied "no identity issued".
    assert!(f.server.cache.remove_entries(&["e-b"]));
    let err = contexts.next().await.unwrap().unwrap_err();
    assert!(matches!(err, WorkloadApiError::NoIdentityIssued), "{err}");

    // Same on the wire.
    let (a, _) = f.rotate_a();
    f.server.cache.upsert_svids([a]).unwrap();
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    next_message(&mut stream).await;
    f.server.cache.remove_entries(&["e-a"]);
    let status = next_status(&mut stream).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), NO_IDENTITY_ISSUED);
}

#[tokio::test]
async fn an_expired_svid_is_withdrawn_from_open_streams() {
    let f = Fixture::start();
    let (uid, _) = me(&f.server);
    let (short, _) = cached(
        &f.own,
        EntrySpec {
            id: "e-short",
            path: "/workload/0-short",
            selectors: vec![sel("unix", format!("uid:{uid}"))],
            hint: "",
            federates_with: Vec::new(),
            ttl: Duration::from_secs(3600),
        },
    );
    // Expires in one second in the cache's view (the certificate itself is valid longer).
    let short = CachedSvid {
        expires_at: SystemTime::now() + Duration::from_secs(1),
        ..short
    };
    f.server.cache.upsert_svids([short]).unwrap();
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;
    assert_eq!(first.svids.len(), 3);
    assert_eq!(
        first.svids[0].spiffe_id,
        "spiffe://example.org/workload/0-short"
    );
    // No cache change: the server wakes at the expiry by itself.
    let second = next_message(&mut stream).await;
    let ids: Vec<&str> = second.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/workload/a",
            "spiffe://example.org/workload/b"
        ]
    );
}

#[tokio::test]
async fn the_bundles_stream_is_updated_when_a_federated_bundle_changes() {
    let f = Fixture::start();
    let client = f.server.client().await;
    let mut stream = client.stream_x509_bundles().await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let partner_td = spiffe::TrustDomain::new("partner.example").unwrap();
    assert_eq!(
        first.get(&partner_td).unwrap().authorities()[0].as_bytes(),
        f.partner.der.as_slice()
    );

    // A bundle no entry of this workload federates with, and an SVID rotation: the bundles
    // served do not change (no message; see the service's unit tests).
    let unrelated = Ca::new("unrelated.example");
    f.server
        .cache
        .set_federated(BTreeMap::from([
            (f.partner.td.clone(), f.partner.bundle()),
            (unrelated.td.clone(), unrelated.bundle()),
        ]))
        .unwrap();
    let (a, _) = f.rotate_a();
    f.server.cache.upsert_svids([a]).unwrap();

    // The partner's bundle changes: a message with the new authorities.
    let partner_next = Ca::new("partner.example");
    let mut bundle = f.partner.bundle();
    bundle.x509_authorities.push(partner_next.der.clone());
    f.server
        .cache
        .set_federated(BTreeMap::from([
            (f.partner.td.clone(), bundle),
            (unrelated.td.clone(), unrelated.bundle()),
        ]))
        .unwrap();
    let second = stream.next().await.unwrap().unwrap();
    let partner = second.get(&partner_td).unwrap();
    let authorities: Vec<&[u8]> = partner.authorities().iter().map(|c| c.as_bytes()).collect();
    assert_eq!(
        authorities,
        [f.partner.der.as_slice(), partner_next.der.as_slice()]
    );
    assert_eq!(second.len(), 2, "the unrelated trust domain is not served");
}

/// A compact JWS with these header and claims, signed by `sign` over the signing input.
fn forge(
    header: serde_json::Value,
    claims: serde_json::Value,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A P-256 key pair (PKCS#8), with its ES256 signer.
fn es256_key() -> aws_lc_rs::signature::EcdsaKeyPair {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
}

fn es256_sign(key: &aws_lc_rs::signature::EcdsaKeyPair, input: &[u8]) -> Vec<u8> {
    key.sign(&aws_lc_rs::rand::SystemRandom::new(), input)
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn validate(
    raw: &mut SpiffeWorkloadApiClient<Channel>,
    audience: &str,
    token: &str,
) -> Result<pb::ValidateJwtsvidResponse, tonic::Status> {
    raw.validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
        audience: audience.to_owned(),
        svid: token.to_owned(),
    }))
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn jwt_svids_are_minted_per_identity_cached_and_verify_with_the_jwt_bundles() {
    let f = Fixture::start();
    let client = f.server.client().await;

    // The default identity, as the spiffe crate picks it; verified by the crate itself with the
    // bundles from FetchJWTBundles (a verifier that is not ours).
    let svid = client.fetch_jwt_svid(["svc"], None).await.unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/workload/a"
    );
    assert_eq!(svid.audience(), ["svc"]);
    assert_eq!(svid.hint(), Some("internal"));
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let verified = spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["svc"]).unwrap();
    assert_eq!(verified.spiffe_id(), svid.spiffe_id());
    assert!(
        spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["other"]).is_err(),
        "the audience is checked"
    );

    // Every identity, in default order with its hint; or the one asked for.
    let all = client.fetch_all_jwt_svids(["svc"], None).await.unwrap();
    let ids: Vec<(String, Option<&str>)> = all
        .iter()
        .map(|s| (s.spiffe_id().to_string(), s.hint()))
        .collect();
    assert_eq!(
        ids,
        [
            (
                "spiffe://example.org/workload/a".to_owned(),
                Some("internal")
            ),
            (
                "spiffe://example.org/workload/b".to_owned(),
                Some("external")
            ),
        ]
    );
    let b_id = spiffe::SpiffeId::new("spiffe://example.org/workload/b").unwrap();
    let b = client.fetch_jwt_svid(["svc"], Some(&b_id)).await.unwrap();
    assert_eq!(b.spiffe_id(), &b_id);

    // Cached per identity and audience set (order and duplicates do not matter) ...
    let mints = f.server.jwt.mints.load(Ordering::SeqCst);
    assert_eq!(mints, 2, "one token per identity so far");
    let again = client.fetch_jwt_svid(["svc", "svc"], None).await.unwrap();
    assert_eq!(again.token(), svid.token());
    let two = client.fetch_jwt_svid(["y", "x"], None).await.unwrap();
    let two_again = client.fetch_jwt_svid(["x", "y"], None).await.unwrap();
    assert_eq!(two.token(), two_again.token());
    assert_ne!(two.token(), svid.token());
    let mut aud = two.audience().to_vec();
    aud.sort();
    assert_eq!(aud, ["x", "y"]);
    // ... one mint per (identity, audience set): a, b for "svc"; a and b for {x, y}.
    assert_eq!(f.server.jwt.mints.load(Ordering::SeqCst), 4);

    // The wire: JWT authorities only, as JWK Sets keyed by trust-domain ID; the partner's too
    // (entry e-a federates with it), nothing else.
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_jwt_bundles(with_header(pb::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;
    let mut keys: Vec<&String> = first.bundles.keys().collect();
    keys.sort();
    assert_eq!(keys, ["spiffe://example.org", "spiffe://partner.example"]);
    for (td, expected) in [
        ("spiffe://example.org", f.server.jwt.authorities()),
        ("spiffe://partner.example", f.partner_jwt.authorities()),
    ] {
        let jwks: serde_json::Value = serde_json::from_slice(&first.bundles[td]).unwrap();
        let doc = jwks.as_object().unwrap();
        assert_eq!(doc.keys().collect::<Vec<_>>(), ["keys"], "{jwks}");
        let got: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                assert_eq!(k["use"], "jwt-svid");
                assert!(k.get("x5c").is_none());
                k["kid"].as_str().unwrap()
            })
            .collect();
        let want: Vec<&str> = expected.iter().map(|a| a.key_id.as_str()).collect();
        assert_eq!(got, want);
    }

    // A JWT key rotation reaches the stream: the prepared key is published before it signs.
    f.server.jwt.keys.prepare(SystemTime::now()).unwrap();
    let mut bundle = f.own.bundle();
    bundle.jwt_authorities = f.server.jwt.authorities();
    assert_eq!(bundle.jwt_authorities.len(), 2);
    assert!(f.server.cache.set_bundle(bundle).unwrap());
    let second = next_message(&mut stream).await;
    let jwks: serde_json::Value =
        serde_json::from_slice(&second.bundles["spiffe://example.org"]).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        second.bundles["spiffe://partner.example"],
        first.bundles["spiffe://partner.example"]
    );

    // The federated trust domain's JWT keys change: the stream carries them too.
    f.partner_jwt.keys.prepare(SystemTime::now()).unwrap();
    let mut partner = f.partner.bundle();
    partner.jwt_authorities = f.partner_jwt.authorities();
    assert!(
        f.server
            .cache
            .set_federated(BTreeMap::from([(f.partner.td.clone(), partner)]))
            .unwrap()
    );
    let third = next_message(&mut stream).await;
    let jwks: serde_json::Value =
        serde_json::from_slice(&third.bundles["spiffe://partner.example"]).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        third.bundles["spiffe://example.org"],
        second.bundles["spiffe://example.org"]
    );
}

#[tokio::test]
async fn fetch_jwt_svid_refusals_are_clear() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;
    let fetch = |audience: &[&str], spiffe_id: &str| pb::JwtsvidRequest {
        audience: audience.iter().map(|a| a.to_string()).collect(),
        spiffe_id: spiffe_id.to_owned(),
    };

    let err = raw
        .fetch_jwtsvid(Request::new(fetch(&["svc"], "")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, MISSING_HEADER)
    );
    let err = raw
        .fetch_jwtsvid(with_header(fetch(&[], "")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "audience must be specified")
    );
    let err = raw
        .fetch_jwtsvid(with_header(fetch(&["svc", ""], "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = raw
        .fetch_jwtsvid(with_header(fetch(&["svc"], "spiffe://Example.org/x")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("invalid spiffe_id"), "{err:?}");
    // An identity this workload is not entitled to (another uid's entry) or one that does not
    // exist: exactly the "no identity" answer.
    for id in ["spiffe://example.org/other", "spiffe://example.org/nobody"] {
        let err = raw
            .fetch_jwtsvid(with_header(fetch(&["svc"], id)))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::PermissionDenied, NO_IDENTITY_ISSUED),
            "{id}"
        );
    }

    // The issuer refuses an entry (e.g. deleted since the last sync): PermissionDenied, nothing
    // cached; unreachable: Unavailable (the client retries).
    f.server.jwt.ids.lock().unwrap().remove("e-b");
    let err = raw
        .fetch_jwtsvid(with_header(fetch(
            &["svc"],
            "spiffe://example.org/workload/b",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not authorized"), "{err:?}");
    f.server.jwt.down.store(true, Ordering::SeqCst);
    let err = raw
        .fetch_jwtsvid(with_header(fetch(&["fresh"], "")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("connection refused"), "{err:?}");
    let err = f
        .server
        .client()
        .await
        .fetch_jwt_svid(["fresh"], None)
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(GrpcStatusCode::Unavailable),
        "{err}"
    );
    // A token cached before the outage is still served while fresh.
    f.server.jwt.down.store(false, Ordering::SeqCst);
    let first = raw
        .fetch_jwtsvid(with_header(fetch(
            &["kept"],
            "spiffe://example.org/workload/a",
        )))
        .await
        .unwrap()
        .into_inner();
    f.server.jwt.down.store(true, Ordering::SeqCst);
    let cached = raw
        .fetch_jwtsvid(with_header(fetch(
            &["kept"],
            "spiffe://example.org/workload/a",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, cached);
}

#[tokio::test]
async fn validate_jwt_svid_accepts_own_and_federated_tokens_and_refuses_the_rest() {
    let f = Fixture::start();
    let client = f.server.client().await;
    let mut raw = f.server.raw().await;
    let now = SystemTime::now();
    let ttl = Duration::from_secs(300);

    // Our own token: the SPIFFE ID and every claim come back.
    let token = client.fetch_jwt_token(["svc"], None).await.unwrap();
    let answer = validate(&mut raw, "svc", &token).await.unwrap();
    assert_eq!(answer.spiffe_id, "spiffe://example.org/workload/a");
    let claims = answer.claims.unwrap().fields;
    let mut names: Vec<&String> = claims.keys().collect();
    names.sort();
    assert_eq!(names, ["aud", "exp", "iat", "jti", "sub"]);
    assert_eq!(
        claims["sub"].kind,
        Some(prost_types::value::Kind::StringValue(
            "spiffe://example.org/workload/a".into()
        ))
    );
    let parsed = client.validate_jwt_token("svc", &token).await.unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), answer.spiffe_id);

    // A federated trust domain's token: accepted because entry e-a federates with it.
    let partner = f.partner_jwt.token("/api", &["svc"], ttl, now);
    let answer = validate(&mut raw, "svc", &partner).await.unwrap();
    assert_eq!(answer.spiffe_id, "spiffe://partner.example/api");

    // Keys for forgeries.
    let stranger = JwtIssuer::new(&TrustDomain::new("stranger.example").unwrap());
    let kid = f.server.jwt.authorities()[0].key_id.clone();
    let own_jwk = f.server.jwt.authorities()[0].jwk.clone();
    let claims = |sub: &str, aud: &str| serde_json::json!({"sub": sub, "aud": aud, "exp": unix_now() + 300, "iat": unix_now()});
    let good_claims = claims("spiffe://example.org/workload/a", "svc");
    let attacker = es256_key();
    let hmac = |key: &[u8]| {
        let key = key.to_vec();
        move |input: &[u8]| {
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
            aws_lc_rs::hmac::sign(&k, input).as_ref().to_vec()
        }
    };
    // An RSA authority in the own bundle, to show an EC token is not checked against it.
    let rsa = JwtIssuer::with_key_type(&f.own.td, KeyType::Rsa2048);
    let rsa_kid = rsa.authorities()[0].key_id.clone();
    let mut bundle = f.own.bundle();
    bundle.jwt_authorities.extend(rsa.authorities());
    f.server.cache.set_bundle(bundle).unwrap();

    let tampered = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value =
            serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "spiffe://example.org/workload/admin".into();
        parts[1] = engine.encode(payload.to_string());
        parts.join(".")
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "alg none",
            forge(
                serde_json::json!({"alg": "none", "kid": kid, "typ": "JWT"}),
                good_claims.clone(),
                |_| Vec::new(),
            ),
            "svc",
            "none",
        ),
        (
            "HS256 keyed with the public JWK",
            forge(
                serde_json::json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
                good_claims.clone(),
                hmac(own_jwk.to_string().as_bytes()),
            ),
            "svc",
            "HS256",
        ),
        (
            "an EC token against an RSA key",
            forge(
                serde_json::json!({"alg": "ES256", "kid": rsa_kid, "typ": "JWT"}),
                good_claims.clone(),
                |input| es256_sign(&attacker, input),
            ),
            "svc",
            "it is an RSA key",
        ),
        (
            "no kid",
            forge(
                serde_json::json!({"alg": "ES256", "typ": "JWT"}),
                good_claims.clone(),
                |input| es256_sign(&attacker, input),
            ),
            "svc",
            "kid",
        ),
        (
            "an unknown kid",
            forge(
                serde_json::json!({"alg": "ES256", "kid": "not-a-key", "typ": "JWT"}),
                good_claims.clone(),
                |input| es256_sign(&attacker, input),
            ),
            "svc",
            "not-a-key",
        ),
        (
            "a known kid, signed by another key",
            forge(
                serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"}),
                good_claims.clone(),
                |input| es256_sign(&attacker, input),
            ),
            "svc",
            "signature",
        ),
        ("a tampered payload", tampered, "svc", "signature"),
        (
            "expired (beyond the leeway)",
            f.server.jwt.token(
                "/workload/a",
                &["svc"],
                Duration::from_secs(60),
                now - Duration::from_secs(600),
            ),
            "svc",
            "expired",
        ),
        (
            "a wrong audience",
            token.clone(),
            "someone-else",
            "audience",
        ),
        (
            "a trust domain we do not federate with",
            stranger.token("/api", &["svc"], ttl, now),
            "svc",
            "stranger.example",
        ),
        ("not a JWT", "not.a.jwt".to_owned(), "svc", "base64url"),
    ];
    for (what, token, audience, needle) in cases {
        let err = validate(&mut raw, audience, &token).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("invalid JWT-SVID: ") && err.message().contains(needle),
            "{what}: {}",
            err.message()
        );
    }

    // Missing fields and the header.
    for (audience, svid, message) in [
        ("", token.as_str(), "audience must be specified"),
        ("svc", "", "svid must be specified"),
    ] {
        let err = validate(&mut raw, audience, svid).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, message)
        );
    }
    let err = raw
        .validate_jwtsvid(Request::new(pb::ValidateJwtsvidRequest {
            audience: "svc".into(),
            svid: token.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, MISSING_HEADER)
    );

    // Federation follows the caller's entries: once e-a no longer federates with the partner,
    // its tokens are refused.
    let (mut a, _) = f.rotate_a();
    a.federates_with = Box::default();
    f.server.cache.upsert_svids([a]).unwrap();
    let err = validate(&mut raw, "svc", &partner).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("partner.example"),
        "{}",
        err.message()
    );
}

/// The WIT authorities of the JWK Sets a `FetchWITBundles` message carries, per trust domain.
fn wit_bundles(msg: &pb::WitBundlesResponse) -> BTreeMap<String, Bundle> {
    msg.bundles
        .iter()
        .map(|(td, jwks)| {
            let name = td.strip_prefix("spiffe://").unwrap();
            let jwks: serde_json::Value = serde_json::from_str(jwks).unwrap();
            let keys = jwks["keys"].as_array().unwrap();
            assert!(keys.iter().all(|k| k["use"] == "wit-svid"), "{jwks}");
            let bundle = Bundle::from_json(
                &TrustDomain::new(name).unwrap(),
                jwks.to_string().as_bytes(),
            )
            .unwrap();
            assert!(bundle.x509_authorities.is_empty() && bundle.jwt_authorities.is_empty());
            (td.clone(), bundle)
        })
        .collect()
}

#[tokio::test]
async fn wit_svids_bind_a_key_handed_to_the_workload_and_verify_with_a_proof_token() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;
    let ids: Vec<(&str, &str)> = first
        .svids
        .iter()
        .map(|s| (s.spiffe_id.as_str(), s.hint.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("spiffe://example.org/workload/a", "internal"),
            ("spiffe://example.org/workload/b", "external")
        ]
    );

    // The WIT bundles: the own and the federated trust domain's WIT keys, nothing else.
    let mut bundles_stream = raw
        .fetch_wit_bundles(with_header(pb::WitBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let wit_msg = next_message(&mut bundles_stream).await;
    assert!(!wit_msg.more);
    let bundles = wit_bundles(&wit_msg);
    assert_eq!(
        bundles.keys().collect::<Vec<_>>(),
        ["spiffe://example.org", "spiffe://partner.example"]
    );
    let kids = |a: &[JwtAuthority]| a.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>();
    assert_eq!(
        kids(&bundles["spiffe://example.org"].wit_authorities),
        kids(&f.server.jwt.wit_keys.authorities())
    );
    assert_eq!(
        kids(&bundles["spiffe://partner.example"].wit_authorities),
        kids(&f.partner_jwt.wit_keys.authorities())
    );
    let own = bundles["spiffe://example.org"].clone();

    let verifier = signet_sdk::WptVerifier::new();
    let now = SystemTime::now();
    for svid in &first.svids {
        // The token validates as a WIT-SVID with the bundle from FetchWITBundles, and binds
        // exactly the key handed over with it.
        let validated = signet_spiffe::wit::validate_wit_svid(
            &svid.wit_svid,
            |_| Some(&own),
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(validated.spiffe_id.to_string(), svid.spiffe_id);
        let key = signet_sdk::WitKey::from_private_jwk(&svid.wit_svid_key).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&svid.wit_svid_key).unwrap();
        assert_eq!(jwk["alg"], "ES256");
        assert!(jwk["d"].is_string(), "a private JWK");
        // A proof of possession made with that key verifies; a WIT-SVID is never a JWT-SVID.
        let wpt = signet_sdk::mint_wpt(
            &svid.wit_svid,
            &key,
            "https://api.example.org/flights",
            Duration::from_secs(30),
            now,
            &signet_sdk::BoundTokens::default(),
        )
        .unwrap();
        let caller = verifier
            .verify(
                &signet_sdk::WptRequest {
                    wit: &svid.wit_svid,
                    wpt: &wpt,
                    audience: "https://api.example.org/flights",
                    bound: signet_sdk::BoundTokens::default(),
                },
                |_| Some(&own),
                now,
            )
            .unwrap();
        assert_eq!(caller.spiffe_id.to_string(), svid.spiffe_id);
        let err = validate(&mut raw, "https://api.example.org/flights", &svid.wit_svid)
            .await
            .unwrap_err();
        assert!(err.message().contains("wit+jwt"), "{}", err.message());
    }
    // Each identity has its own key.
    assert_ne!(first.svids[0].wit_svid_key, first.svids[1].wit_svid_key);

    // The same entry's WIT-SVID (and key) is shared by every stream while it is fresh.
    let mut again = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_message(&mut again).await, first);

    // A WIT key rotation reaches the bundles stream.
    f.server.jwt.wit_keys.prepare(SystemTime::now()).unwrap();
    let mut bundle = f.own.bundle();
    bundle.wit_authorities = f.server.jwt.wit_keys.authorities();
    assert!(f.server.cache.set_bundle(bundle).unwrap());
    let second = wit_bundles(&next_message(&mut bundles_stream).await);
    assert_eq!(second["spiffe://example.org"].wit_authorities.len(), 2);
}

#[tokio::test]
async fn an_open_wit_stream_renews_at_half_life_with_a_new_key() {
    let f = Fixture::start();
    f.server.jwt.wit_ttl.store(2, Ordering::SeqCst);
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = next_message(&mut stream).await;
    // Renewed after one second (half of two): a new token over a new key, for each identity.
    let second = tokio::time::timeout(Duration::from_secs(10), next_message(&mut stream))
        .await
        .expect("a renewal within 10 s");
    assert_eq!(second.svids.len(), first.svids.len());
    for (a, b) in first.svids.iter().zip(&second.svids) {
        assert_eq!(a.spiffe_id, b.spiffe_id);
        assert_ne!(a.wit_svid, b.wit_svid);
        assert_ne!(a.wit_svid_key, b.wit_svid_key);
    }

    // The issuer goes away: once every WIT-SVID has expired without renewal, the stream ends
    // with Unavailable (the client reconnects).
    f.server.jwt.down.store(true, Ordering::SeqCst);
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Err(status) => return status,
                Ok(None) => panic!("the stream ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("connection refused"),
        "{status:?}"
    );
}

#[tokio::test]
async fn fetch_wit_svid_refusals_are_clear() {
    let f = Fixture::start();
    let mut raw = f.server.raw().await;
    let err = raw
        .fetch_witsvid(Request::new(pb::WitsvidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, MISSING_HEADER)
    );
    let err = raw
        .fetch_wit_bundles(Request::new(pb::WitBundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The issuer unreachable before anything was minted: Unavailable.
    f.server.jwt.down.store(true, Ordering::SeqCst);
    let err = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // No identity: exactly the standard's answer.
    f.server.jwt.down.store(false, Ordering::SeqCst);
    assert!(f.server.cache.remove_entries(&["e-a", "e-b"]));
    let err = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::PermissionDenied, NO_IDENTITY_ISSUED)
    );
}

#[tokio::test]
async fn an_agent_not_ready_or_a_failed_attestation_answers_unavailable() {
    let server = Server::start(Cache::new());
    let mut raw = server.raw().await;
    let err = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    let f = Fixture::start();
    f.server.attestor.fail.store(true, Ordering::SeqCst);
    let mut raw = f.server.raw().await;
    let err = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("attestation failed"),
        "{}",
        err.message()
    );
    let err = raw
        .fetch_x509_bundles(with_header(pb::X509BundlesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let mut f = Fixture::start();
    let mut raw = f.server.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    next_message(&mut stream).await;

    f.server.stop.take().unwrap().send(()).unwrap();
    let status = next_status(&mut stream).await;
    assert_eq!(status.code(), Code::Unavailable);
    drop(stream);
    drop(raw);
    (&mut f.server.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_real_attestors_identify_the_caller_by_uid_and_executable_path() {
    let attestation = ProcessAttestation::new(
        UnixConfig {
            hash_executable: false,
            ..UnixConfig::default()
        },
        CgroupConfig::default(),
    )
    .unwrap();
    let own = Ca::new("example.org");
    let server = Server::start_with(
        Cache::new(),
        Arc::new(UidAttestor::default()),
        Arc::new(attestation),
    );
    let (uid, _) = me(&server);
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let (mine, minted) = cached(
        &own,
        EntrySpec {
            id: "e-exe",
            path: "/this-test",
            selectors: vec![
                sel("unix", format!("uid:{uid}")),
                sel("unix", format!("path:{}", exe.display())),
            ],
            hint: "",
            federates_with: Vec::new(),
            ttl: Duration::from_secs(3600),
        },
    );
    let (elsewhere, _) = cached(
        &own,
        EntrySpec {
            id: "e-other-exe",
            path: "/another-program",
            selectors: vec![
                sel("unix", format!("uid:{uid}")),
                sel("unix", "path:/usr/bin/another-program"),
            ],
            hint: "",
            federates_with: Vec::new(),
            ttl: Duration::from_secs(3600),
        },
    );
    server
        .cache
        .replace(vec![mine, elsewhere], Some(own.bundle()), BTreeMap::new())
        .unwrap();

    let all = server.client().await.fetch_all_x509_svids().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].spiffe_id().to_string(),
        "spiffe://example.org/this-test"
    );
    assert_eq!(all[0].leaf().as_bytes(), minted.chain.as_slice());
}
