//! The `:authority` repair against the real server: a raw HTTP/2 client (hand-written frames,
//! HPACK by `loona-hpack`) sends what grpcio sends, `:authority` = the percent-encoded socket
//! path, Huffman-coded and indexed, which no Rust client can send (`http::Uri` refuses it).
//! Served through [`serve`] it gets its SVID; through a bare tonic server on the same service,
//! h2 resets the stream (the bug this works around; if this part starts failing, h2 has been
//! fixed and the rewriting layer can go).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use loona_hpack::{Decoder, Encoder};
use prost::Message as _;
use signet_proto::workload as pb;
use signet_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

use super::jwt::testing::NoIssuer;
use super::{
    AttestationFailure, PeerCred, ProcessPin, WorkloadApiService, WorkloadAttestation, serve,
};
use crate::cache::Cache;
use crate::cache::testing::{bundle, ca, svid};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// `%2Ftmp%2Fx.sock`, Huffman-coded.
const HUFFMAN_SOCKET_PATH: [u8; 11] = [
    0x54, 0x58, 0x53, 0x4d, 0x6a, 0x8b, 0x0f, 0x95, 0xd0, 0x72, 0x75,
];
/// A guard against a hung test, not a timed assertion.
const GUARD: Duration = Duration::from_secs(60);

/// `unix:uid:<uid>`, only for a process pinned at accept time (so the test also proves that the
/// rewriting wrapper keeps the connection's pinned process).
struct PinnedUid;

#[async_trait]
impl WorkloadAttestation for PinnedUid {
    async fn attest(&self, peer: PeerCred) -> Result<Vec<(String, String)>, AttestationFailure> {
        match peer.pin {
            ProcessPin::Pinned(_) => Ok(vec![("unix".into(), format!("uid:{}", peer.uid))]),
            other => Err(AttestationFailure::Attestor {
                attestor: "test".into(),
                reason: format!("not pinned: {other:?}"),
            }),
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What the raw client got on stream 1 (shown by the assertions' `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum Outcome {
    Message(pb::X509svidResponse),
    /// A trailers-only answer: `grpc-status`, `grpc-message`.
    Status(String, String),
    Reset(u32),
    GoAway(u32),
    Closed,
}

/// The request's fields after `:authority`.
const FIELDS: [(&[u8], &[u8]); 6] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"workload.spiffe.io", b"true"),
];

/// A raw HTTP/2 client connection (preface and SETTINGS sent).
struct RawConn {
    conn: UnixStream,
    /// Decodes every header block of the server (its dynamic table spans the connection).
    decoder: Decoder<'static>,
}

impl RawConn {
    async fn open(socket: &Path) -> Self {
        let mut conn = UnixStream::connect(socket).await.unwrap();
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        conn.write_all(&out).await.unwrap();
        Self {
            conn,
            decoder: Decoder::new(),
        }
    }

    /// Calls `FetchX509SVID` on `stream` with the header block `block` and returns the first
    /// thing the server answers on that stream.
    async fn call(&mut self, stream_id: u32, block: &[u8]) -> Outcome {
        let mut message = vec![0];
        let request = pb::X509svidRequest {}.encode_to_vec();
        message.extend(u32::try_from(request.len()).unwrap().to_be_bytes());
        message.extend(request);
        let mut out = frame(0x1, 0x4, stream_id, block);
        out.extend(frame(0x0, 0x1, stream_id, &message));
        self.conn.write_all(&out).await.unwrap();

        let mut data = Vec::new();
        loop {
            let mut head = [0u8; 9];
            if self.conn.read_exact(&mut head).await.is_err() {
                return Outcome::Closed;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            self.conn.read_exact(&mut payload).await.unwrap();
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    // The server may already be closing (after a GOAWAY): ignore a failed ACK.
                    let _ = self.conn.write_all(&frame(0x4, 0x1, 0, &[])).await;
                }
                0x7 => {
                    return Outcome::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                0x3 if stream == stream_id => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x1 => {
                    assert_eq!(flags & 0x4, 0x4, "the server sent CONTINUATION");
                    let fields = self.decoder.decode(&payload).unwrap();
                    if stream != stream_id {
                        continue;
                    }
                    let get = |name: &str| {
                        fields
                            .iter()
                            .find(|(n, _)| n == name.as_bytes())
                            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    };
                    if let Some(status) = get("grpc-status") {
                        return Outcome::Status(status, get("grpc-message").unwrap_or_default());
                    }
                    assert_eq!(get(":status").as_deref(), Some("200"));
                }
                0x0 if stream == stream_id => {
                    data.extend(payload);
                    if data.len() >= 5 {
                        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
                        if data.len() >= 5 + len {
                            let msg = pb::X509svidResponse::decode(&data[5..5 + len]).unwrap();
                            return Outcome::Message(msg);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Calls `FetchX509SVID` on stream 1 of a new connection with `authority` (an HPACK field
/// representation, sent first) and returns the first thing the server answers on that stream.
/// `block_override` replaces the whole header block.
async fn raw_fetch(socket: &Path, authority: &[u8], block_override: Option<Vec<u8>>) -> Outcome {
    let mut block = authority.to_vec();
    block.extend(Encoder::new().encode(FIELDS));
    let block = block_override.unwrap_or(block);
    RawConn::open(socket).await.call(1, &block).await
}

/// The parameters of the server's first SETTINGS frame.
async fn server_settings(socket: &Path) -> Vec<(u16, u32)> {
    let mut conn = UnixStream::connect(socket).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    conn.write_all(&out).await.unwrap();
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(
        (head[3], head[4]),
        (0x4, 0),
        "the server did not start with SETTINGS"
    );
    let mut payload = vec![0; usize::from(head[1]) << 8 | usize::from(head[2])];
    conn.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
            )
        })
        .collect()
}

fn fixture(dir: &Path) -> (Cache, String) {
    let uid = std::fs::metadata(dir).unwrap().uid();
    let ca = ca("example.org");
    let cache = Cache::new();
    cache
        .replace(
            vec![svid(&ca, "e1", "/raw", &[&format!("unix:uid:{uid}")], "")],
            Some(bundle(&ca)),
            BTreeMap::new(),
        )
        .unwrap();
    (cache, "spiffe://example.org/raw".to_owned())
}

async fn guarded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .expect("the raw client hung")
}

#[tokio::test]
async fn a_raw_client_sending_the_socket_path_as_authority_gets_its_svid() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, id) = fixture(dir.path());
    let socket = dir.path().join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(serve(
        listener,
        cache.clone(),
        Arc::new(PinnedUid),
        Arc::new(NoIssuer),
        super::DelegationBackend::disabled("not in this test"),
        std::future::pending(),
    ));
    // What the rewriter assumes of the server: HPACK table size (0x1) and maximum frame size
    // (0x5) left at their defaults, 4096 and 16384.
    for (id, value) in guarded(server_settings(&socket)).await {
        match id {
            0x1 => assert_eq!(value, 4096, "SETTINGS_HEADER_TABLE_SIZE"),
            0x5 => assert_eq!(value, 16_384, "SETTINGS_MAX_FRAME_SIZE"),
            _ => {}
        }
    }
    // As grpcio: literal with incremental indexing, name `:authority` (static 1), Huffman value.
    let mut grpcio = vec![0x41, 0x80 | 11];
    grpcio.extend(HUFFMAN_SOCKET_PATH);
    for authority in [grpcio, b"\x01\x09localhost".to_vec()] {
        match guarded(raw_fetch(&socket, &authority, None)).await {
            Outcome::Message(m) => {
                assert_eq!(m.svids.len(), 1);
                assert_eq!(m.svids[0].spiffe_id, id);
            }
            other => panic!("{other:?}"),
        }
    }
    // Malformed HPACK (index 0): h2 itself answers GOAWAY(PROTOCOL_ERROR).
    match guarded(raw_fetch(&socket, &[], Some(vec![0x80]))).await {
        Outcome::GoAway(code) => assert_eq!(code, 0x1),
        other => panic!("{other:?}"),
    }
    // The server still serves.
    match guarded(raw_fetch(&socket, b"\x01\x09localhost", None)).await {
        Outcome::Message(m) => assert_eq!(m.svids[0].spiffe_id, id),
        other => panic!("{other:?}"),
    }
    server.abort();

    // Control: the same service on a bare tonic server. h2 resets the stream (PROTOCOL_ERROR).
    let bare = dir.path().join("bare.sock");
    let listener = UnixListener::bind(&bare).unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    let service = WorkloadApiService::new(cache, Arc::new(PinnedUid), Arc::new(NoIssuer), stop);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(service))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let mut grpcio = vec![0x41, 0x80 | 11];
    grpcio.extend(HUFFMAN_SOCKET_PATH);
    match guarded(raw_fetch(&bare, &grpcio, None)).await {
        Outcome::Reset(code) => assert_eq!(code, 0x1, "PROTOCOL_ERROR"),
        other => panic!("h2 accepted the percent-encoded authority: {other:?}"),
    }
    server.abort();
}

/// A request block with `authority` from `encoder`, which indexes `te` and `workload.spiffe.io`
/// in the connection's dynamic table on its first use, and refers to them afterwards.
fn request_block(encoder: &mut Encoder<'_>, authority: &str) -> Vec<u8> {
    let mut fields = vec![(&b":authority"[..], authority.as_bytes())];
    fields.extend(FIELDS);
    encoder.encode(fields)
}

#[tokio::test]
async fn each_connection_keeps_the_mode_of_its_first_block_and_the_clients_dynamic_table() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, id) = fixture(dir.path());
    let socket = dir.path().join("api.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(serve(
        listener,
        cache,
        Arc::new(PinnedUid),
        Arc::new(NoIssuer),
        super::DelegationBackend::disabled("not in this test"),
        std::future::pending(),
    ));
    let expect_svid = |outcome: Outcome| match outcome {
        Outcome::Message(m) => assert_eq!(m.svids[0].spiffe_id, id),
        other => panic!("{other:?}"),
    };

    // A valid first authority: pass-through. The server decodes the client's own bytes, so
    // requests referring to the client's dynamic table are understood.
    let mut conn = RawConn::open(&socket).await;
    let mut encoder = Encoder::new();
    let first = request_block(&mut encoder, "localhost");
    let second = request_block(&mut encoder, "localhost");
    assert!(second.contains(&(0x80 | 62)), "{second:x?}");
    expect_svid(guarded(conn.call(1, &first)).await);
    expect_svid(guarded(conn.call(3, &second)).await);
    // A later authority that h2 refuses is not repaired any more: h2 resets that stream, as
    // without the layer, and the connection goes on.
    let bad = request_block(&mut encoder, "%2Ftmp%2Fx.sock");
    match guarded(conn.call(5, &bad)).await {
        Outcome::Reset(code) => assert_eq!(code, 0x1, "PROTOCOL_ERROR"),
        other => panic!("{other:?}"),
    }
    let again = request_block(&mut encoder, "localhost");
    expect_svid(guarded(conn.call(7, &again)).await);

    // A first authority that needs repair: rewrite mode for the whole connection, every
    // authority h2 would refuse repaired, dynamic-table references resolved by the rewriter.
    let mut conn = RawConn::open(&socket).await;
    let mut encoder = Encoder::new();
    for (stream, authority) in [
        (1, "%2Ftmp%2Fx.sock"),
        (3, "%2Ftmp%2Fx.sock"),
        (5, "localhost"),
        (7, "%2Ftmp%2Fy.sock"),
    ] {
        let block = request_block(&mut encoder, authority);
        if stream > 1 {
            assert!(block.contains(&(0x80 | 62)), "{block:x?}");
        }
        expect_svid(guarded(conn.call(stream, &block)).await);
    }
    server.abort();
}
