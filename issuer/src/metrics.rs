//! Prometheus metrics of the issuer (text exposition on the health listener's `/metrics`).
//!
//! The recording API below is stable; the registry behind it is filled in by the observability work.

/// The issuer's metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Creates the metric set.
    pub fn new() -> Self {
        Self::default()
    }
    /// One signature made: `kind` is `x509_svid`, `agent_svid`, `ca`, `jwt_svid`; latency in seconds.
    pub fn record_signature(&self, _kind: &str, _seconds: f64) {}
    /// One node attestation: `attestor` (`join_token`, `x509pop`), `outcome` (`ok`, `denied`, `error`).
    pub fn record_attestation(&self, _attestor: &str, _outcome: &str) {}
    /// One store call: operation name and latency in seconds.
    pub fn record_store_call(&self, _op: &str, _seconds: f64) {}
    /// One RPC finished: `api` (`node`, `admin`), method, gRPC code name.
    pub fn record_rpc(&self, _api: &str, _method: &str, _code: &str) {}
    /// Sets the gauges of entries and agents.
    pub fn set_counts(&self, _entries: u64, _agents: u64) {}
}
