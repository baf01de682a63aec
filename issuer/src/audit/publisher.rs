//! The audit stream: publishes every audit event to NATS JetStream, in seq order, with the audit
//! table itself as the outbox.
//!
//! A cursor in the store ([`NATS_CURSOR_JOURNAL`]: the seq and hash of the last event JetStream
//! acknowledged) says where to go on. Each round reads the events after the cursor, checks that
//! they continue the chain from it (an edited, deleted or truncated log is not published: the
//! publisher stops and says so), publishes each to `<subject>.<kind>` as JSON with the header
//! `Nats-Msg-Id` = the event's hash, waits for its acknowledgment before the next (so the stream
//! holds the events in seq order), and then stores the new cursor. While NATS is unreachable the
//! events simply wait in the table; a crash between an acknowledgment and the cursor write makes
//! the next round publish those events again, and JetStream drops them as duplicates of their
//! `Nats-Msg-Id` (within the stream's duplicate window, 2 minutes by default).

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use signet_store::{AuditEvent, Store, StoreError, verify_audit_chain_after};

use super::verify::{AuditPosition, NATS_CURSOR_JOURNAL, load_nats_cursor};
use crate::config::{AuditNatsSettings, NatsCredentials};
use crate::metrics::Metrics;

/// Events published per round (the cursor is stored after each round).
pub const BATCH_SIZE: u32 = 100;
/// How often the log is checked for events appended by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// First pause after a failure; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a persisting failure is logged again.
pub const REPEAT_WARNING: Duration = Duration::from_secs(60);
/// How long to wait for a connection or an acknowledgment.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// Header carrying the event's seq (next to `Nats-Msg-Id`, the hash).
pub const SEQ_HEADER: &str = "Signet-Audit-Seq";

/// Why a publishing round failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// Why (never its content).
        reason: String,
    },
    /// No server answered.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The server URLs, passwords redacted.
        urls: String,
        /// Why.
        reason: String,
    },
    /// The stream could not be found or created.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// JetStream did not acknowledge an event.
    #[error("JetStream did not acknowledge audit event seq {seq}: {reason}")]
    Publish {
        /// The event.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// The store could not be read or written.
    #[error("datastore: {0}")]
    Store(#[from] StoreError),
    /// The log no longer continues from the published cursor.
    #[error("the audit log does not continue from the last published event: {0}")]
    Diverged(String),
}

impl PublishError {
    /// Whether this is NATS being unreachable or refusing (as opposed to the store or the log).
    fn is_nats(&self) -> bool {
        matches!(
            self,
            PublishError::Connect { .. }
                | PublishError::Stream { .. }
                | PublishError::Publish { .. }
        )
    }
}

/// The NATS subject of an event of kind `kind`: `<subject>.<kind>`, each character of the kind
/// other than ASCII letters, digits, `-`, `_` and the dots between tokens replaced by `_` (an
/// empty token becomes `_`), so that any kind makes a valid subject without wildcards.
pub fn event_subject(subject: &str, kind: &str) -> String {
    let tokens: Vec<String> = kind
        .split('.')
        .map(|t| {
            if t.is_empty() {
                "_".to_owned()
            } else {
                t.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            }
        })
        .collect();
    format!("{subject}.{}", tokens.join("."))
}

/// What the publisher last told the logs, so that it logs changes, not every attempt.
#[derive(Debug, Default)]
struct LogState {
    /// `Some(true)` after "connected", `Some(false)` after "unreachable".
    connected: Option<bool>,
    last_warning: Option<Instant>,
}

/// Logs a failure: at once when the state changes, then every [`REPEAT_WARNING`].
fn report(
    e: &PublishError,
    waiting: Option<u64>,
    settings: &AuditNatsSettings,
    log: &mut LogState,
) {
    let nats = e.is_nats();
    let due = log.connected != Some(false)
        || log
            .last_warning
            .is_none_or(|t| t.elapsed() >= REPEAT_WARNING);
    if !due {
        return;
    }
    log.connected = Some(false);
    log.last_warning = Some(Instant::now());
    let count = waiting.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    if nats {
        tracing::warn!(
            error = %e,
            url = %settings.redacted_urls(),
            waiting = waiting.unwrap_or(0),
            "NATS unreachable; {count} audit events waiting"
        );
    } else {
        tracing::error!(
            error = %e,
            waiting = waiting.unwrap_or(0),
            "audit publisher stopped; {count} audit events waiting"
        );
    }
}

/// Publishes the audit log to NATS JetStream; see the module documentation.
pub struct AuditPublisher {
    store: Arc<dyn Store>,
    settings: AuditNatsSettings,
    metrics: Arc<Metrics>,
    poll: Duration,
}

impl std::fmt::Debug for AuditPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditPublisher")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A JetStream context whose stream is known to exist (or not yet).
struct Connection {
    js: jetstream::Context,
    stream_ready: bool,
}

impl AuditPublisher {
    /// A publisher of `store`'s audit log with `settings`, reporting in `metrics`.
    pub fn new(store: Arc<dyn Store>, settings: AuditNatsSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            settings,
            metrics,
            poll: POLL_INTERVAL,
        }
    }

    /// Publishes until `shutdown` completes (finishing the round under way), retrying with
    /// backoff while NATS or the store fail.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let mut log = LogState::default();
        let mut backoff = MIN_BACKOFF;
        let mut conn: Option<Connection> = None;
        let mut cursor: Option<AuditPosition> = None;
        loop {
            let result = self.round(&mut conn, &mut cursor).await;
            let pause = match result {
                Ok(published) => {
                    if log.connected != Some(true) {
                        tracing::info!(
                            url = %self.settings.redacted_urls(),
                            stream = %self.settings.stream,
                            subject = %self.settings.subject,
                            "audit publisher connected"
                        );
                        log.connected = Some(true);
                    }
                    self.metrics.set_audit_publisher_connected(true);
                    backoff = MIN_BACKOFF;
                    if published > 0 {
                        continue;
                    }
                    None
                }
                Err(e) => {
                    if e.is_nats() {
                        self.metrics.set_audit_publisher_connected(false);
                        if let Some(c) = conn.as_mut() {
                            // A deleted stream is created again on the next round.
                            c.stream_ready = false;
                        }
                    }
                    let waiting = self.pending(cursor.as_ref()).await;
                    report(&e, waiting, &self.settings, &mut log);
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(pause)
                }
            };
            // Idle: wait for an append (or a poll tick); after a failure: the backoff.
            let wait = async {
                match pause {
                    Some(p) => tokio::time::sleep(p).await,
                    None => {
                        let _ = tokio::time::timeout(self.poll, super::APPENDED.notified()).await;
                    }
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = wait => {}
            }
        }
    }

    /// Events after the cursor (`None`: the stored one), and sets the pending gauge.
    async fn pending(&self, cursor: Option<&AuditPosition>) -> Option<u64> {
        let cursor_seq = match cursor {
            Some(c) => c.seq,
            None => load_nats_cursor(self.store.as_ref())
                .await
                .ok()?
                .map_or(0, |c| c.seq),
        };
        let head = self
            .store
            .last_audit_event()
            .await
            .ok()?
            .map_or(0, |e| e.seq);
        let n = u64::try_from(head.saturating_sub(cursor_seq)).unwrap_or(0);
        self.metrics.set_audit_pending(n);
        Some(n)
    }

    async fn connect(&self) -> Result<jetstream::Context, PublishError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name("signet-issuer audit publisher")
            .connection_timeout(NATS_TIMEOUT);
        match &self.settings.credentials {
            NatsCredentials::None => {}
            NatsCredentials::TokenFile(path) => {
                let text = zeroize::Zeroizing::new(tokio::fs::read_to_string(path).await.map_err(
                    |e| PublishError::Credentials {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    },
                )?);
                let token = text.trim();
                if token.is_empty() {
                    return Err(PublishError::Credentials {
                        path: path.display().to_string(),
                        reason: "the file is empty".to_owned(),
                    });
                }
                opts = opts.token(token.to_owned());
            }
            NatsCredentials::CredsFile(path) => {
                opts =
                    opts.credentials_file(path)
                        .await
                        .map_err(|e| PublishError::Credentials {
                            path: path.display().to_string(),
                            reason: e.kind().to_string(),
                        })?;
            }
        }
        let mut addrs = Vec::with_capacity(self.settings.urls.len());
        for u in &self.settings.urls {
            addrs.push(
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| PublishError::Connect {
                        urls: self.settings.redacted_urls(),
                        reason: e.to_string(),
                    })?,
            );
        }
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| PublishError::Connect {
                urls: self.settings.redacted_urls(),
                reason: e.to_string(),
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(NATS_TIMEOUT);
        Ok(js)
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), PublishError> {
        let wanted = format!("{}.>", self.settings.subject);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.settings.stream.clone(),
                subjects: vec![wanted.clone()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| PublishError::Stream {
                stream: self.settings.stream.clone(),
                reason: e.to_string(),
            })?;
        let subjects = &stream.cached_info().config.subjects;
        if !subjects.iter().any(|s| *s == wanted || s == ">") {
            tracing::warn!(
                stream = %self.settings.stream,
                subjects = ?subjects,
                wanted = %wanted,
                "the JetStream stream exists with other subjects; make sure it captures the audit subjects"
            );
        }
        Ok(())
    }

    /// One round: connect if needed, publish up to [`BATCH_SIZE`] events, store the cursor.
    /// Returns how many events JetStream acknowledged.
    async fn round(
        &self,
        conn: &mut Option<Connection>,
        cursor: &mut Option<AuditPosition>,
    ) -> Result<usize, PublishError> {
        let pos = match cursor {
            Some(c) => c.clone(),
            None => {
                let c = load_nats_cursor(self.store.as_ref())
                    .await?
                    .unwrap_or_else(AuditPosition::start);
                *cursor = Some(c.clone());
                c
            }
        };
        let events = self.store.list_audit_events(pos.seq, BATCH_SIZE).await?;
        if events.is_empty() {
            let head = self.store.last_audit_event().await?;
            let head_seq = head.as_ref().map_or(0, |h| h.seq);
            self.metrics
                .set_audit_pending(u64::try_from(head_seq.saturating_sub(pos.seq)).unwrap_or(0));
            if head_seq < pos.seq {
                return Err(PublishError::Diverged(format!(
                    "the log ends at seq {head_seq}, but seq {} (hash {}) was published: events were removed",
                    pos.seq, pos.hash
                )));
            }
            // Nothing to send, but make sure NATS is reachable so that the state is true.
            if conn.is_none() {
                *conn = Some(Connection {
                    js: self.connect().await?,
                    stream_ready: false,
                });
            }
            if let Some(c) = conn.as_mut()
                && !c.stream_ready
            {
                self.ensure_stream(&c.js).await?;
                c.stream_ready = true;
            }
            return Ok(0);
        }
        verify_audit_chain_after(pos.seq, &pos.hash, &events)
            .map_err(|e| PublishError::Diverged(e.to_string()))?;
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Connection {
                js: self.connect().await?,
                stream_ready: false,
            }),
        };
        if !c.stream_ready {
            self.ensure_stream(&c.js).await?;
            c.stream_ready = true;
        }
        let mut done = pos.clone();
        let mut published = 0usize;
        let mut failure = None;
        for e in &events {
            match self.publish_one(&c.js, e).await {
                Ok(()) => {
                    done = AuditPosition {
                        seq: e.seq,
                        hash: e.hash.clone(),
                    };
                    published += 1;
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if published > 0 {
            let data = serde_json::to_vec(&done)
                .map_err(|e| StoreError::Corrupt(format!("encoding the cursor: {e}")))?;
            self.store.save_journal(NATS_CURSOR_JOURNAL, &data).await?;
            *cursor = Some(done.clone());
            self.metrics.add_audit_published(published as u64);
        }
        let head = self.store.last_audit_event().await?.map_or(0, |h| h.seq);
        self.metrics
            .set_audit_pending(u64::try_from(head.saturating_sub(done.seq)).unwrap_or(0));
        match failure {
            Some(e) => Err(e),
            None => Ok(published),
        }
    }

    /// Publishes one event and waits for JetStream's acknowledgment.
    async fn publish_one(
        &self,
        js: &jetstream::Context,
        e: &AuditEvent,
    ) -> Result<(), PublishError> {
        let fail = |reason: String| PublishError::Publish { seq: e.seq, reason };
        let payload = serde_json::to_vec(e).map_err(|err| fail(err.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, e.hash.as_str());
        headers.insert(SEQ_HEADER, e.seq.to_string().as_str());
        let ack = js
            .publish_with_headers(
                event_subject(&self.settings.subject, &e.event.kind),
                headers,
                payload.into(),
            )
            .await
            .map_err(|err| fail(err.to_string()))?
            .await
            .map_err(|err| fail(err.to_string()))?;
        if ack.duplicate {
            tracing::debug!(seq = e.seq, "audit event already in the stream (duplicate)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use signet_store::NewAuditEvent;

    use crate::audit::testing::temp_store as store;

    #[test]
    fn subjects_are_valid_for_any_kind() {
        assert_eq!(
            event_subject("signet.audit", "delegation.mint"),
            "signet.audit.delegation.mint"
        );
        assert_eq!(event_subject("a", "entry.create"), "a.entry.create");
        assert_eq!(event_subject("a", ""), "a._");
        assert_eq!(event_subject("a", "x..y."), "a.x._.y._");
        assert_eq!(event_subject("a", "k*>"), "a.k__");
        assert_eq!(event_subject("a", "sp ace.é"), "a.sp_ace._");
    }

    async fn append(store: &dyn Store, kind: &str, i: usize) -> AuditEvent {
        store
            .append_audit_event(NewAuditEvent {
                time_ms: i as i64,
                kind: kind.into(),
                actor: "admin:uid=0".into(),
                subject: format!("s{i}"),
                outcome: "ok".into(),
                details: serde_json::json!({"i": i}),
            })
            .await
            .unwrap()
    }

    fn settings(url: &str, name: &str) -> AuditNatsSettings {
        AuditNatsSettings {
            urls: vec![url.to_owned()],
            subject: format!("test.{name}"),
            stream: name.to_owned(),
            credentials: NatsCredentials::None,
        }
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn unreachable_nats_leaves_events_pending() {
        let (_d, store) = store().await;
        for i in 0..3 {
            append(store.as_ref(), "entry.create", i).await;
        }
        let metrics = Arc::new(Metrics::new());
        let p = AuditPublisher::new(
            store.clone(),
            settings(&format!("nats://127.0.0.1:{}", closed_port()), "X"),
            metrics.clone(),
        );
        let mut conn = None;
        let mut cursor = None;
        let e = p.round(&mut conn, &mut cursor).await.unwrap_err();
        assert!(matches!(e, PublishError::Connect { .. }), "{e}");
        assert!(e.is_nats());
        assert_eq!(load_nats_cursor(store.as_ref()).await.unwrap(), None);
        assert_eq!(p.pending(None).await, Some(3));
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("signet_audit_events_pending 3")
        );
    }

    #[tokio::test]
    async fn unreadable_credentials_are_named_without_content() {
        let (_d, store) = store().await;
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings("nats://127.0.0.1:1", "X");
        let empty = dir.path().join("empty-token");
        std::fs::write(&empty, "  \n").unwrap();
        s.credentials = NatsCredentials::TokenFile(empty.clone());
        let p = AuditPublisher::new(store.clone(), s.clone(), Arc::new(Metrics::new()));
        let e = p.connect().await.unwrap_err().to_string();
        assert!(
            e.contains("empty-token") && e.contains("the file is empty"),
            "{e}"
        );
        s.credentials = NatsCredentials::TokenFile(dir.path().join("missing"));
        let p = AuditPublisher::new(store.clone(), s.clone(), Arc::new(Metrics::new()));
        let e = p.connect().await.unwrap_err().to_string();
        assert!(e.starts_with("cannot read the NATS credentials"), "{e}");
        let bad = dir.path().join("bad.creds");
        std::fs::write(&bad, "SUAsecretseed not a creds file").unwrap();
        s.credentials = NatsCredentials::CredsFile(bad);
        let p = AuditPublisher::new(store.clone(), s, Arc::new(Metrics::new()));
        let e = p.connect().await.unwrap_err().to_string();
        assert!(e.contains("bad.creds"), "{e}");
        assert!(!e.contains("SUAsecretseed"), "{e}");
    }

    #[tokio::test]
    async fn a_truncated_or_edited_log_is_not_published() {
        let (_d, store) = store().await;
        let e1 = append(store.as_ref(), "entry.create", 1).await;
        // The cursor says seq 3 was published, but the log ends at seq 1.
        let ahead = AuditPosition {
            seq: 3,
            hash: "f".repeat(64),
        };
        store
            .save_journal(NATS_CURSOR_JOURNAL, &serde_json::to_vec(&ahead).unwrap())
            .await
            .unwrap();
        let p = AuditPublisher::new(
            store.clone(),
            settings("nats://127.0.0.1:1", "X"),
            Arc::new(Metrics::new()),
        );
        let e = p.round(&mut None, &mut None).await.unwrap_err();
        assert!(
            e.to_string().contains("the log ends at seq 1, but seq 3"),
            "{e}"
        );
        // The cursor is at seq 1 with another hash: seq 2 does not link to it.
        append(store.as_ref(), "entry.create", 2).await;
        let other = AuditPosition {
            seq: 1,
            hash: "0".repeat(63) + "1",
        };
        assert_ne!(other.hash, e1.hash);
        let e = p.round(&mut None, &mut Some(other)).await.unwrap_err();
        assert!(matches!(e, PublishError::Diverged(_)), "{e}");
        assert!(e.to_string().contains("seq 2"), "{e}");
        assert!(!e.is_nats());
    }

    /// With a real NATS server (`SIGNET_TEST_NATS_URL`): every event arrives once, in order, across
    /// a restart of the publisher and events appended while it was away.
    #[tokio::test]
    async fn events_reach_jetstream_in_order_once() {
        let Some(url) = crate::audit::publisher::tests::nats_url() else {
            return;
        };
        let name = format!(
            "SIGNET_UNIT_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let (_d, store) = store().await;
        for i in 0..5 {
            append(store.as_ref(), "delegation.mint", i).await;
        }
        let metrics = Arc::new(Metrics::new());
        let publisher =
            || AuditPublisher::new(store.clone(), settings(&url, &name), metrics.clone());
        let mut conn = None;
        let mut cursor = None;
        assert_eq!(publisher().round(&mut conn, &mut cursor).await.unwrap(), 5);
        assert_eq!(publisher().round(&mut conn, &mut cursor).await.unwrap(), 0);
        // A new publisher (a restart) goes on from the stored cursor.
        for i in 5..8 {
            append(store.as_ref(), "entry.update", i).await;
        }
        let mut conn2 = None;
        assert_eq!(publisher().round(&mut conn2, &mut None).await.unwrap(), 3);
        assert_eq!(publisher().round(&mut conn2, &mut None).await.unwrap(), 0);
        // Publishing an event again (lost cursor) is dropped by JetStream as a duplicate.
        store
            .save_journal(
                NATS_CURSOR_JOURNAL,
                &serde_json::to_vec(&AuditPosition::start()).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(publisher().round(&mut conn2, &mut None).await.unwrap(), 8);
        assert!(
            metrics
                .encode()
                .unwrap()
                .contains("signet_audit_events_pending 0")
        );

        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = jetstream::new(client);
        let mut stream = js.get_stream(&name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 8);
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut messages = consumer.fetch().max_messages(20).messages().await.unwrap();
        let log = store.list_audit_events(0, 0).await.unwrap();
        let mut got = Vec::new();
        while let Some(m) = messages.next().await {
            let m = m.unwrap();
            let ev: AuditEvent = serde_json::from_slice(&m.payload).unwrap();
            let headers = m.headers.clone().unwrap();
            assert_eq!(
                headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .unwrap()
                    .as_str(),
                ev.hash
            );
            assert_eq!(
                headers.get(SEQ_HEADER).unwrap().as_str(),
                ev.seq.to_string()
            );
            assert_eq!(m.subject.as_str(), format!("test.{name}.{}", ev.event.kind));
            got.push(ev);
        }
        assert_eq!(got, log);
        js.delete_stream(&name).await.unwrap();
    }

    /// `SIGNET_TEST_NATS_URL`, or `None` after printing `SKIPPED:` (a failure under
    /// `SIGNET_REQUIRE_SERVICES=1`).
    pub(crate) fn nats_url() -> Option<String> {
        match std::env::var("SIGNET_TEST_NATS_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                assert!(
                    std::env::var("SIGNET_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "SIGNET_TEST_NATS_URL is not set and SIGNET_REQUIRE_SERVICES=1"
                );
                println!("SKIPPED: SIGNET_TEST_NATS_URL not set (NATS JetStream publishing test)");
                None
            }
        }
    }
}
