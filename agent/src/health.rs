//! The agent's health endpoints (plain HTTP/1.1 on `[health] bind_address`):
//!
//! - `GET /live`: 200 while the process serves HTTP at all;
//! - `GET /ready`: 200 when the Workload API socket is bound and the cache can serve (the first
//!   entry sync is done or the persisted state was restored, and the trust bundle is known); 503
//!   otherwise. The JSON body gives the checks and, for information, whether the last entry sync
//!   reached the issuer and when the agent SVID expires. An agent cut off from the issuer stays
//!   ready: it keeps serving its cached SVIDs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::cache::Cache;
use crate::runtime::certs::unix_secs;

/// Readiness inputs, shared by the runtime tasks and the HTTP handlers.
#[derive(Debug)]
pub struct Health {
    cache: Cache,
    workload_api_bound: AtomicBool,
    /// 1 = last sync OK, 0 = failed, -1 = none yet.
    last_sync_ok: AtomicI64,
    /// Unix seconds; 0 = no agent SVID.
    agent_svid_expires_at: AtomicI64,
}

/// The result of the readiness checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The agent serves the Workload API.
    pub ready: bool,
    /// The Workload API socket is bound.
    pub workload_api_bound: bool,
    /// The cache has been filled (first sync, or restored) and has the trust bundle.
    pub cache_ready: bool,
    /// Number of cached workload SVIDs.
    pub svids: usize,
    /// Whether the last entry sync reached the issuer (`null` before the first one).
    pub issuer_reachable: Option<bool>,
    /// When the agent SVID expires (Unix seconds; `null` without one).
    pub agent_svid_expires_at: Option<i64>,
}

impl Health {
    /// Health state over `cache`; the Workload API is not yet bound.
    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            workload_api_bound: AtomicBool::new(false),
            last_sync_ok: AtomicI64::new(-1),
            agent_svid_expires_at: AtomicI64::new(0),
        }
    }

    /// Records whether the Workload API socket is bound.
    pub fn set_workload_api_bound(&self, bound: bool) {
        self.workload_api_bound.store(bound, Ordering::SeqCst);
    }

    /// Records the outcome of the last entry sync.
    pub fn set_sync_ok(&self, ok: bool) {
        self.last_sync_ok.store(i64::from(ok), Ordering::SeqCst);
    }

    /// Records the agent SVID's expiry.
    pub fn set_agent_svid_expiry(&self, expires_at: Option<SystemTime>) {
        self.agent_svid_expires_at
            .store(expires_at.map_or(0, unix_secs), Ordering::SeqCst);
    }

    /// Runs the readiness checks.
    pub fn readiness(&self) -> Readiness {
        let snapshot = self.cache.current();
        let bound = self.workload_api_bound.load(Ordering::SeqCst);
        let cache_ready = snapshot.is_ready();
        let sync = self.last_sync_ok.load(Ordering::SeqCst);
        let exp = self.agent_svid_expires_at.load(Ordering::SeqCst);
        Readiness {
            ready: bound && cache_ready,
            workload_api_bound: bound,
            cache_ready,
            svids: snapshot.svids.len(),
            issuer_reachable: (sync >= 0).then_some(sync == 1),
            agent_svid_expires_at: (exp > 0).then_some(exp),
        }
    }
}

/// The health router (`/live`, `/ready`).
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(health)
}

async fn live() -> Response {
    json(StatusCode::OK, r#"{"live":true}"#.to_owned())
}

async fn ready(State(health): State<Arc<Health>>) -> Response {
    let r = health.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        serde_json::to_string(&r).unwrap_or_else(|_| "{}".to_owned()),
    )
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serves the health endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_the_socket_and_a_ready_cache() {
        let cache = Cache::new();
        let h = Health::new(cache.clone());
        let r = h.readiness();
        assert!(!r.ready);
        assert_eq!(r.issuer_reachable, None);
        assert_eq!(r.agent_svid_expires_at, None);
        h.set_workload_api_bound(true);
        h.set_sync_ok(false);
        h.set_agent_svid_expiry(Some(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5),
        ));
        let r = h.readiness();
        assert!(r.workload_api_bound && !r.cache_ready && !r.ready);
        assert_eq!(r.issuer_reachable, Some(false));
        assert_eq!(r.agent_svid_expires_at, Some(5));
        // A cache marked ready but without a bundle is not ready.
        cache.mark_ready();
        assert!(!h.readiness().ready);
    }
}
