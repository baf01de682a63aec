//! The real `signet-issuer` publishing its audit log to a real NATS JetStream server
//! (`SIGNET_TEST_NATS_URL`, e.g. `nats://127.0.0.1:4222`; without it the tests print `SKIPPED:`
//! and pass, except under `SIGNET_REQUIRE_SERVICES=1`). Each test uses its own stream and subject
//! and deletes the stream afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{Value, json};
use signet_tests::{Issuer, IssuerBuilder, toml_str};

const ENV: &str = "SIGNET_TEST_NATS_URL";
const WAIT: Duration = Duration::from_secs(90);

fn nats_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("SIGNET_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{ENV} is not set and SIGNET_REQUIRE_SERVICES=1"
            );
            eprintln!("SKIPPED: {ENV} not set (audit publishing to NATS JetStream)");
            None
        }
    }
}

/// A stream name and subject of this test run alone.
fn unique(test: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{test}_{}_{nanos}", std::process::id());
    (
        format!("SIGNET_E2E_{}", id.to_uppercase()),
        format!("e2e.{id}"),
    )
}

fn issuer_with_nats(url: &str, stream: &str, subject: &str) -> IssuerBuilder {
    IssuerBuilder::new().raw(&format!(
        "[audit.nats]\nurl = {}\nstream = {}\nsubject = {}\n",
        toml_str(url),
        toml_str(stream),
        toml_str(subject)
    ))
}

fn create_entry(issuer: &Issuer, name: &str) {
    issuer
        .cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org/{name}"),
            "--parent-id",
            "spiffe://example.org/node/a",
            "--selector",
            &format!("unix:user:{name}"),
        ])
        .unwrap();
}

/// The issuer's log as `audit list` shows it.
fn log(issuer: &Issuer) -> Vec<Value> {
    issuer
        .cli_json(&["audit", "list", "--limit", "0", "--output", "json"])
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A metric's value on `/metrics`.
fn metric(issuer: &Issuer, name: &str) -> Option<f64> {
    let (_, body) = issuer.http_get("/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every message of `stream`, in stream order: (subject, Nats-Msg-Id, payload).
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, Value)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .messages()
        .await
        .unwrap();
    while let Some(m) = batch.next().await {
        let m = m.unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((
            m.subject.to_string(),
            id,
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    out
}

async fn stream_count(url: &str, stream: &str) -> u64 {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

async fn delete_stream(url: &str, stream: &str) {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let _ = js.delete_stream(stream).await;
}

/// The stream holds exactly the log, in seq order, each event once under `<subject>.<kind>`
/// with its hash as `Nats-Msg-Id`.
fn assert_stream_is_log(messages: &[(String, String, Value)], log: &[Value], subject: &str) {
    let seqs: Vec<i64> = messages
        .iter()
        .map(|(_, _, v)| v["seq"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = log.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, want, "every event once, in order");
    for ((subj, id, payload), event) in messages.iter().zip(log) {
        assert_eq!(
            subj,
            &format!("{subject}.{}", event["kind"].as_str().unwrap())
        );
        assert_eq!(id, event["hash"].as_str().unwrap());
        for key in [
            "seq",
            "hash",
            "prev_hash",
            "kind",
            "actor",
            "subject",
            "outcome",
            "time_ms",
            "details",
        ] {
            assert_eq!(payload[key], event[key], "{key} of seq {}", event["seq"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_reach_a_jetstream_consumer() {
    let Some(url) = nats_url() else { return };
    let (stream, subject) = unique("live");
    let issuer = issuer_with_nats(&url, &stream, &subject).start().unwrap();
    issuer
        .wait_for_log(
            "audit publisher connected",
            |v| v["stream"] == json!(stream),
            WAIT,
        )
        .unwrap();
    create_entry(&issuer, "a");
    create_entry(&issuer, "b");
    let log = log(&issuer);
    assert!(log.len() >= 3, "ca.init and two entry.create");
    let n = log.len() as u64;
    let deadline = std::time::Instant::now() + WAIT;
    while stream_count(&url, &stream).await < n {
        assert!(std::time::Instant::now() < deadline, "events not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = stream_messages(&url, &stream).await;
    assert_stream_is_log(&messages, &log, &subject);
    wait_until("pending 0", || {
        metric(&issuer, "signet_audit_events_pending") == Some(0.0)
    });
    assert_eq!(
        metric(&issuer, "signet_audit_events_published_total"),
        Some(n as f64)
    );
    assert_eq!(
        metric(&issuer, "signet_audit_publisher_connected"),
        Some(1.0)
    );
    // The NATS cursor is an anchor of `audit verify`.
    let v = issuer
        .cli_json(&["audit", "verify", "--output", "json"])
        .unwrap();
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["anchors"][0]["source"], json!("NATS publisher cursor"));
    assert_eq!(v["anchors"][0]["status"], json!("matched"));
    delete_stream(&url, &stream).await;
}

/// A TCP forwarder from `port` to the NATS server, started late: until then the port is closed.
async fn forward(port: u16, target: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_while_nats_is_unreachable_and_arrive_once_in_order() {
    let Some(url) = nats_url() else { return };
    let target = url
        .strip_prefix("nats://")
        .unwrap_or(&url)
        .trim_end_matches('/')
        .to_owned();
    let (stream, subject) = unique("outage");
    // A port with nothing listening (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy_url = format!("nats://127.0.0.1:{port}");
    let mut issuer = issuer_with_nats(&proxy_url, &stream, &subject)
        .start()
        .unwrap();
    let warning = issuer
        .wait_for_log_matching(
            "NATS unreachable",
            |v| {
                v["message"].as_str().is_some_and(|m| {
                    m.starts_with("NATS unreachable; ") && m.ends_with(" audit events waiting")
                })
            },
            WAIT,
        )
        .unwrap();
    assert_eq!(warning["level"], json!("WARN"), "{warning}");
    assert_eq!(warning["url"], json!(proxy_url));
    create_entry(&issuer, "during-outage-1");
    create_entry(&issuer, "during-outage-2");
    let n = log(&issuer).len() as f64;
    wait_until("pending = every event", || {
        metric(&issuer, "signet_audit_events_pending") == Some(n)
    });
    assert_eq!(
        metric(&issuer, "signet_audit_publisher_connected"),
        Some(0.0)
    );
    // Not one warning per attempt.
    let warnings = issuer
        .logs()
        .iter()
        .filter(|l| l.contains("NATS unreachable"))
        .count();
    assert!(warnings <= 2, "{warnings} warnings");
    assert_eq!(stream_count(&url, &stream).await, 0);

    // NATS becomes reachable: the waiting events arrive, in order.
    let proxy = forward(port, target).await;
    issuer
        .wait_for_log("audit publisher connected", |_| true, WAIT)
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while (stream_count(&url, &stream).await as f64) < n {
        assert!(std::time::Instant::now() < deadline, "events not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_stream_is_log(
        &stream_messages(&url, &stream).await,
        &log(&issuer),
        &subject,
    );

    // After a restart the publisher goes on from its stored cursor: nothing is sent twice.
    issuer.restart().unwrap();
    issuer
        .wait_for_log("audit publisher connected", |_| true, WAIT)
        .unwrap();
    create_entry(&issuer, "after-restart");
    let all = log(&issuer);
    let deadline = std::time::Instant::now() + WAIT;
    while stream_count(&url, &stream).await < all.len() as u64 {
        assert!(std::time::Instant::now() < deadline, "events not published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_stream_is_log(&stream_messages(&url, &stream).await, &all, &subject);
    wait_until("the new event is published", || {
        metric(&issuer, "signet_audit_events_pending") == Some(0.0)
    });
    // This process published only what it found after the cursor.
    assert_eq!(
        metric(&issuer, "signet_audit_events_published_total"),
        Some((all.len() as f64) - n)
    );
    proxy.abort();
    delete_stream(&url, &stream).await;
}
