//! Health and metrics endpoints (HTTP/1.1, plain, on `[health] bind_address`):
//!
//! - `GET /live`: 200 while the process serves HTTP at all;
//! - `GET /ready`: 200 when the store answers a ping, the CA has an active slot and the node API
//!   listener is bound; 503 otherwise, with the failing checks in the JSON body;
//! - `GET /metrics`: Prometheus / OpenMetrics text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use signet_ca::SlotState;

use crate::state::Issuer;

/// Readiness inputs shared by the health endpoints and the admin `Healthcheck` RPC.
pub struct Health {
    issuer: Arc<Issuer>,
    node_api_bound: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field(
                "node_api_bound",
                &self.node_api_bound.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// The result of the readiness checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// All checks pass.
    pub ready: bool,
    /// The store answered a ping.
    pub store_ok: bool,
    /// The CA has an active slot.
    pub ca_active: bool,
    /// The node API listener is bound.
    pub node_api_bound: bool,
    /// Why the store check failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

impl Health {
    /// Creates the health state; the node API is not yet bound.
    pub fn new(issuer: Arc<Issuer>) -> Self {
        Self {
            issuer,
            node_api_bound: AtomicBool::new(false),
        }
    }

    /// Records whether the node API listener is bound.
    pub fn set_node_api_bound(&self, bound: bool) {
        self.node_api_bound.store(bound, Ordering::SeqCst);
    }

    /// Runs the readiness checks.
    pub async fn readiness(&self) -> Readiness {
        let store = self.issuer.store.ping().await;
        let ca_active = self
            .issuer
            .ca
            .slots()
            .iter()
            .any(|s| s.state == SlotState::Active);
        let node_api_bound = self.node_api_bound.load(Ordering::SeqCst);
        Readiness {
            ready: store.is_ok() && ca_active && node_api_bound,
            store_ok: store.is_ok(),
            ca_active,
            node_api_bound,
            store_error: store.err().map(|e| e.to_string()),
        }
    }

    /// The issuer.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }
}

/// The router of `/live`, `/ready` and `/metrics`.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(health): State<Arc<Health>>) -> Response {
    let r = health.readiness().await;
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&r).unwrap_or_else(|_| "{}".to_owned());
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    match health.issuer.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
