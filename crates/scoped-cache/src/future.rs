//! The response future of [`ScopedCache`](crate::ScopedCache) and of the
//! [`GraphQL`](crate::graphql::GraphQL) handler.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::Response;
use tracing::Span;

/// Response future of [`ScopedCache`](crate::ScopedCache) and of the
/// [`GraphQL`](crate::graphql::GraphQL) handler.
///
/// Opaque, so the boxed future inside can become a hand-written state machine later
/// without an API change.
pub struct ResponseFuture<E> {
    inner: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>,
    /// The request's span, entered while the future runs (as `Instrumented` would, without
    /// moving the boxed future into another one).
    span: Span,
}

impl<E> ResponseFuture<E> {
    pub(crate) fn new(future: impl Future<Output = Result<Response, E>> + Send + 'static) -> Self {
        Self::in_span(future, Span::none())
    }

    /// A future that runs in `span`.
    pub(crate) fn in_span(
        future: impl Future<Output = Result<Response, E>> + Send + 'static,
        span: Span,
    ) -> Self {
        Self {
            inner: Box::pin(future),
            span,
        }
    }
}

impl<E> Future for ResponseFuture<E> {
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.span.is_disabled() {
            return this.inner.as_mut().poll(cx);
        }
        let _entered = this.span.enter();
        this.inner.as_mut().poll(cx)
    }
}

impl<E> fmt::Debug for ResponseFuture<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
