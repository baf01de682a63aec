//! Prometheus metrics of the issuer (text exposition on the health listener's `/metrics`).
//!
//! Metric names (all prefixed `signet_`):
//! - `signet_signatures_total{kind}` and `signet_signature_duration_seconds{kind}`: signatures made
//!   (`x509_svid`, `agent_svid`, `ca`, `jwt_svid`, `wit_svid`) and how long each took;
//! - `signet_entries`, `signet_agents`: registration entries and attested agents in the store;
//! - `signet_store_call_duration_seconds{op}`: latency of each datastore call;
//! - `signet_attestations_total{attestor,outcome}`: node attestations by result;
//! - `signet_rpcs_total{api,method,code}`: finished RPCs by gRPC status code;
//! - `signet_audit_events_pending`: audit events not yet acknowledged by NATS JetStream (when
//!   `[audit.nats]` is configured), `signet_audit_events_published_total`: events JetStream
//!   acknowledged, `signet_audit_publisher_connected`: 1 while the publisher reaches JetStream.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttestationLabels {
    attestor: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    api: String,
    method: String,
    code: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The issuer's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    signatures: Family<KindLabels, Counter>,
    signature_seconds: HistogramFamily<KindLabels>,
    entries: Gauge,
    agents: Gauge,
    store_call_seconds: HistogramFamily<OpLabels>,
    attestations: Family<AttestationLabels, Counter>,
    rpcs: Family<RpcLabels, Counter>,
    audit_pending: Gauge,
    audit_published: Counter,
    audit_connected: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metric set.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("signet");
        let signatures = Family::<KindLabels, Counter>::default();
        registry.register(
            "signatures",
            "Signatures made, by kind (x509_svid, agent_svid, ca, jwt_svid, wit_svid)",
            signatures.clone(),
        );
        let signature_seconds: HistogramFamily<KindLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "signature_duration_seconds",
            "Time to make one signature, by kind",
            signature_seconds.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "entries",
            "Registration entries in the store",
            entries.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents", "Attested agents in the store", agents.clone());
        let store_call_seconds: HistogramFamily<OpLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "store_call_duration_seconds",
            "Latency of datastore calls, by operation",
            store_call_seconds.clone(),
        );
        let attestations = Family::<AttestationLabels, Counter>::default();
        registry.register(
            "attestations",
            "Node attestations, by attestor and outcome (ok, denied, error)",
            attestations.clone(),
        );
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpcs",
            "Finished RPCs, by API (node, admin), method and gRPC status code",
            rpcs.clone(),
        );
        let audit_pending = Gauge::default();
        registry.register(
            "audit_events_pending",
            "Audit events not yet acknowledged by NATS JetStream (the outbox backlog)",
            audit_pending.clone(),
        );
        let audit_published = Counter::default();
        registry.register(
            "audit_events_published",
            "Audit events acknowledged by NATS JetStream",
            audit_published.clone(),
        );
        let audit_connected = Gauge::default();
        registry.register(
            "audit_publisher_connected",
            "1 while the audit publisher reaches NATS JetStream, else 0",
            audit_connected.clone(),
        );
        Self {
            registry,
            signatures,
            signature_seconds,
            entries,
            agents,
            store_call_seconds,
            attestations,
            rpcs,
            audit_pending,
            audit_published,
            audit_connected,
        }
    }
    /// One signature made: `kind` is `x509_svid`, `agent_svid`, `ca`, `jwt_svid`, `wit_svid`;
    /// latency in seconds.
    pub fn record_signature(&self, kind: &str, seconds: f64) {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.signatures.get_or_create(&labels).inc();
        self.signature_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }
    /// One node attestation: `attestor` (`join_token`, `x509pop`), `outcome` (`ok`, `denied`, `error`).
    pub fn record_attestation(&self, attestor: &str, outcome: &str) {
        self.attestations
            .get_or_create(&AttestationLabels {
                attestor: attestor.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
    /// One store call: operation name and latency in seconds.
    pub fn record_store_call(&self, op: &str, seconds: f64) {
        self.store_call_seconds
            .get_or_create(&OpLabels { op: op.to_owned() })
            .observe(seconds);
    }
    /// One RPC finished: `api` (`node`, `admin`), method, gRPC code name.
    pub fn record_rpc(&self, api: &str, method: &str, code: &str) {
        self.rpcs
            .get_or_create(&RpcLabels {
                api: api.to_owned(),
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
    }
    /// Sets the gauges of entries and agents.
    pub fn set_counts(&self, entries: u64, agents: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.agents.set(i64::try_from(agents).unwrap_or(i64::MAX));
    }
    /// Sets the number of audit events waiting for NATS JetStream.
    pub fn set_audit_pending(&self, events: u64) {
        self.audit_pending
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }
    /// Counts audit events acknowledged by NATS JetStream.
    pub fn add_audit_published(&self, events: u64) {
        self.audit_published.inc_by(events);
    }
    /// Whether the audit publisher reaches NATS JetStream.
    pub fn set_audit_publisher_connected(&self, connected: bool) {
        self.audit_connected.set(i64::from(connected));
    }
    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The gRPC status code name used in the `code` label (`OK`, `InvalidArgument`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "Ok",
        tonic::Code::Cancelled => "Cancelled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_labels() {
        let m = Metrics::new();
        m.record_signature("x509_svid", 0.001);
        m.record_attestation("join_token", "ok");
        m.record_store_call("get_entry", 0.0002);
        m.record_rpc(
            "admin",
            "CreateEntry",
            code_name(tonic::Code::InvalidArgument),
        );
        m.set_counts(3, 2);
        m.set_audit_pending(7);
        m.add_audit_published(2);
        m.set_audit_publisher_connected(true);
        let text = m.encode().unwrap();
        for needle in [
            "signet_signatures_total{kind=\"x509_svid\"} 1",
            "signet_signature_duration_seconds_count{kind=\"x509_svid\"} 1",
            "signet_entries 3",
            "signet_agents 2",
            "signet_store_call_duration_seconds_count{op=\"get_entry\"} 1",
            "signet_attestations_total{attestor=\"join_token\",outcome=\"ok\"} 1",
            "signet_rpcs_total{api=\"admin\",method=\"CreateEntry\",code=\"InvalidArgument\"} 1",
            "signet_audit_events_pending 7",
            "signet_audit_events_published_total 2",
            "signet_audit_publisher_connected 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
