//! Every answer's cache headers, in one place: `x-cache`, `private`, `Vary`, `Age`,
//! `ETag` and `304`, for hits, misses and the layer's own refusals.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::ETAG;
use tokio::time::Instant;

use crate::cache::purge::{EntryMeta, Tag};
use crate::cache::store::Hit;
use crate::cache::{self, CacheStatus, validator};
use crate::observe::{Reason, because};
use crate::rejection::{AuthError, AuthErrorKind, negotiated};
use crate::report::ExecutionReport;
use crate::scope::Decision;

use super::Pipeline;
use super::lookup::{Asked, Lookup, Outer};

impl Pipeline {
    /// Serves `entry`: the body, or `304` when the request already holds it. Fresh
    /// (`HIT`) without a `stale` reason, `STALE` with one.
    pub(super) fn hit(
        &self,
        asked: &Asked,
        hit: &Hit,
        lookup: &Lookup<'_>,
        stale: Option<Reason>,
        now: Instant,
    ) -> Response {
        let status = match stale {
            None => CacheStatus::Hit,
            Some(_) => CacheStatus::Stale,
        };
        let entry = &hit.entry;
        // An outer layer that stores this answer must know which claims it depends on.
        if let Some(reads) = &asked.outer_reads {
            reads.log().record_scope(&lookup.decision.scope);
        }
        let mut response = if validator::none_match_hits(&asked.none_match, &entry.etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = validator::not_modified_headers(&entry.headers, &entry.etag);
            response
        } else {
            let mut response = Response::new(Body::from(entry.body.clone()));
            *response.headers_mut() = cache::served_headers(&entry.headers, &entry.etag);
            response
        };
        let headers = response.headers_mut();
        cache::set_age(headers, now.saturating_duration_since(entry.stored_at));
        if let Some(tier) = self.store.tier_header(hit.source) {
            headers.insert(cache::X_CACHE_TIER, tier);
        }
        // An outer layer that stores this answer tags it as this entry is tagged, so the
        // mutations that purge this entry purge its copy too.
        if lookup.outer.exists() {
            let mut report = report_of(&entry.meta);
            report.fresh_for = Some(entry.expires_at.saturating_duration_since(now).as_secs());
            report.attach(headers);
        }
        self.labelled(
            response,
            (status, stale),
            Some(lookup.decision),
            lookup.claims.is_some(),
            lookup.outer,
        )
    }

    /// A miss that was not stored: like any uncached answer to an authenticated caller,
    /// `private`, so a shared cache in front cannot store what this layer would not (it
    /// may have read a claim no scope covers).
    ///
    /// An outer layer does not store it either: this one may have had a reason the outer
    /// cannot see (a `Vary` on the token, a rule that bypasses it).
    pub(super) fn unstored_miss(
        &self,
        mut response: Response,
        lookup: &Lookup<'_>,
        reason: Reason,
    ) -> Response {
        if lookup.claims.is_some() {
            crate::wire::control::make_private(response.headers_mut());
        }
        if lookup.outer.exists() {
            not_for_outer(response.headers_mut());
        }
        self.labelled_miss(response, lookup, reason)
    }

    /// A miss, and why it was one (or why it was not stored).
    pub(super) fn labelled_miss(
        &self,
        response: Response,
        lookup: &Lookup<'_>,
        reason: Reason,
    ) -> Response {
        self.labelled(
            response,
            (CacheStatus::Miss, Some(reason)),
            Some(lookup.decision),
            lookup.claims.is_some(),
            lookup.outer,
        )
    }

    /// An answer the layer made itself depends on the same request headers as any other
    /// (the token, `Accept`): say so, for caches in front.
    pub(super) fn refused(&self, mut response: Response, reason: Reason) -> Response {
        cache::merge_vary(response.headers_mut(), &self.vary, false);
        because(response, reason)
    }

    /// A refusal of the request's credentials (or of its revoked token).
    pub(super) fn refused_auth(&self, kind: AuthErrorKind, headers: &http::HeaderMap) -> Response {
        let refusal = negotiated(AuthError::new(kind).into_response(), headers);
        let reason = match kind {
            AuthErrorKind::Revoked => Reason::Revoked,
            AuthErrorKind::KeysUnavailable | AuthErrorKind::RevocationsUnavailable => {
                Reason::AuthUnavailable
            }
            _ => Reason::Unauthorized,
        };
        self.refused(refusal, reason)
    }

    /// Gives `response` its cache headers for `status`, and its reason if it is not a
    /// fresh hit.
    pub(super) fn labelled(
        &self,
        mut response: Response,
        (status, reason): (CacheStatus, Option<Reason>),
        decision: Option<&Decision>,
        authenticated: bool,
        outer: Outer,
    ) -> Response {
        // An outer layer of the same caller is told the headers this one keys besides the
        // token's; one of another caller stores nothing this layer says.
        let vary = match outer {
            Outer::SameCaller => &self.vary_for_outer,
            Outer::None | Outer::OtherCaller => &self.vary,
        };
        if outer == Outer::OtherCaller {
            not_for_outer(response.headers_mut());
        }
        cache::label(
            response.headers_mut(),
            status,
            decision,
            authenticated,
            vary,
            outer == Outer::SameCaller,
        );
        match reason {
            Some(reason) => because(response, reason),
            None => response,
        }
    }
}

/// A stored miss answers `304` when the request already holds what was stored.
pub(super) fn not_modified_if_matching(asked: &Asked, response: Response) -> Response {
    let Some(etag) = response.headers().get(ETAG) else {
        return response;
    };
    if !validator::none_match_hits(&asked.none_match, etag) {
        return response;
    }
    let mut headers = validator::not_modified_headers(response.headers(), etag);
    if let Some(status) = response.headers().get(cache::X_CACHE) {
        headers.insert(cache::X_CACHE, status.clone());
    }
    let mut not_modified = Response::new(Body::empty());
    *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
    *not_modified.headers_mut() = headers;
    // Still the miss it was: its reason goes with it.
    if let Some(reason) = response.extensions().get::<Reason>() {
        not_modified.extensions_mut().insert(*reason);
    }
    not_modified
}

/// What an entry's tags say, as the execution report that tagged it said it.
fn report_of(meta: &EntryMeta) -> ExecutionReport {
    let mut report = ExecutionReport::default();
    for tag in &meta.tags {
        match tag {
            Tag::Type(ty) => report.types.push(ty.to_string()),
            Tag::Entity(ty, id) => report.entities.push((ty.to_string(), id.to_string())),
            Tag::AnyOf(ty) => report.overflowed.push(ty.to_string()),
        }
    }
    report
}

/// Tells an outer layer not to store this answer (an unreliable report makes any layer
/// refuse it; the outermost layer strips it, so no client sees it).
pub(super) fn not_for_outer(headers: &mut http::HeaderMap) {
    ExecutionReport {
        unreliable: true,
        ..ExecutionReport::default()
    }
    .attach(headers);
}
