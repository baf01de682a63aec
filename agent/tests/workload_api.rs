//! The Workload API server end to end: a real Unix socket, a cache holding real certificates
//! (minted here with rcgen), a test attestor giving `unix:uid:<uid>` / `unix:gid:<gid>` from the
//! kernel's credentials, and the real `spiffe` crate client (plus a raw tonic client where the
//! exact wire answer matters, or where a conforming client cannot misbehave on purpose).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use signet_agent::cache::{Cache, CachedSvid};
use signet_agent::workload_api::{
    self, AttestationFailure, MISSING_HEADER, NO_IDENTITY_ISSUED, PeerCred, ProcessAttestation,
    ServeError, WorkloadAttestation,
};
use signet_attestors::workload::{CgroupConfig, UnixConfig};
use signet_proto::workload as pb;
use signet_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use signet_spiffe::{Bundle, TrustDomain};
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
        }
    }

    fn bundle(&self) -> Bundle {
        let mut b = Bundle::new(self.td.clone());
        b.x509_authorities.push(self.der.clone());
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

struct Server {
    dir: tempfile::TempDir,
    socket: PathBuf,
    cache: Cache,
    attestor: Arc<UidAttestor>,
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
        let task = tokio::spawn(workload_api::serve(
            listener,
            cache.clone(),
            attestation,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            dir,
            socket,
            cache,
            attestor,
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
    a: Minted,
    b: Minted,
}

impl Fixture {
    fn start() -> Self {
        let own = Ca::new("example.org");
        let partner = Ca::new("partner.example");
        let cache = Cache::new();
        let server = Server::start(cache);
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

#[tokio::test]
async fn the_jwt_rpcs_and_unknown_methods_are_unimplemented() {
    let f = Fixture::start();
    let client = f.server.client().await;

    let err = client.fetch_jwt_svid(["aud"], None).await.unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(GrpcStatusCode::Unimplemented),
        "{err}"
    );
    let err = client.fetch_jwt_bundles().await.unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(GrpcStatusCode::Unimplemented),
        "{err}"
    );
    let err = client
        .validate_jwt_token("aud", "eyJhbGciOiJFUzI1NiJ9.e30.c2ln")
        .await
        .unwrap_err();
    assert_eq!(
        status_code(&err),
        Some(GrpcStatusCode::Unimplemented),
        "{err}"
    );

    // FetchWITSVID (on the standard's experimental branch only) is an unknown method here.
    let mut grpc = tonic::client::Grpc::new(f.server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::X509svidRequest, pb::X509svidResponse>::default();
    let err = grpc
        .server_streaming(
            with_header(pb::X509svidRequest {}),
            tonic::codegen::http::uri::PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchWITSVID"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
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
