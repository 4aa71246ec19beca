//! [`ScopedCache`]: the tower `Service`. It drives the inner service to readiness and
//! hands each request to the [pipeline](crate::pipeline), which runs it.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use http::Request;
use tower::Service;

use crate::future::ResponseFuture;
use crate::observe::Observer;
use crate::pipeline::Pipeline;

/// The service made by [`ScopedCacheLayer`](crate::ScopedCacheLayer). It always answers with
/// a response: rejections are responses, and cache failures fall back to the inner service.
#[derive(Debug, Clone)]
pub struct ScopedCache<S> {
    inner: S,
    shared: Arc<Pipeline>,
}

impl<S> ScopedCache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Pipeline>) -> Self {
        Self { inner, shared }
    }
}

impl<S> Service<Request<Body>> for ScopedCache<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Take the service that was driven to readiness and leave its clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let span = Observer::span();
        let handled = Pipeline::handle(Arc::clone(&self.shared), req, inner, span.clone());
        ResponseFuture::in_span(handled, span)
    }
}
