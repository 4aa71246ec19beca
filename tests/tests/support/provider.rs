//! A real identity provider on loopback: a JWKS endpoint and an OIDC discovery document,
//! with a fetch counter and a switch to take it down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
struct ProviderState {
    keys: RwLock<Vec<Value>>,
    cache_control: RwLock<Option<String>>,
    issuer: RwLock<String>,
    jwks_fetches: AtomicUsize,
    /// Every JWKS request, answered or refused while down.
    jwks_requests: AtomicUsize,
    discoveries: AtomicUsize,
    down: AtomicBool,
}

#[derive(Clone)]
pub(crate) struct Provider {
    pub(crate) addr: SocketAddr,
    state: Arc<ProviderState>,
}

impl Provider {
    pub(crate) async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(ProviderState::default());
        *state.keys.write().unwrap() = keys;
        let app = Router::new()
            .route("/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(Arc::clone(&state));
        let addr = super::serve(app).await;
        *state.issuer.write().unwrap() = format!("http://{addr}");
        Self { addr, state }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn jwks_url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub(crate) fn publish(&self, keys: Vec<Value>) {
        *self.state.keys.write().unwrap() = keys;
    }

    pub(crate) fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.write().unwrap() = Some(value.to_owned());
    }

    pub(crate) fn claim_issuer(&self, issuer: &str) {
        *self.state.issuer.write().unwrap() = issuer.to_owned();
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub(crate) fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// JWKS requests received, including those refused while down.
    pub(crate) fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    pub(crate) fn discoveries(&self) -> usize {
        self.state.discoveries.load(Ordering::SeqCst)
    }
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    state.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = state.keys.read().unwrap().clone();
    let mut headers = HeaderMap::new();
    if let Some(cc) = state.cache_control.read().unwrap().clone() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cc).unwrap());
    }
    (headers, Json(json!({ "keys": keys }))).into_response()
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> Response {
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.discoveries.fetch_add(1, Ordering::SeqCst);
    let base = state.issuer.read().unwrap().clone();
    // `jwks_uri` points at this server whatever issuer it claims.
    let jwks_uri = format!("{}/jwks.json", base.trim_end_matches('/'));
    Json(json!({ "issuer": base, "jwks_uri": jwks_uri })).into_response()
}
