//! HTTP wire formats that verification, caching and the operator routes all read:
//! `Cache-Control` ([`control`]), the two GraphQL JSON media types ([`media`]), the
//! credential headers ([`credential`]) and bounded bodies ([`body`]).
//!
//! A leaf: it imports nothing else of the crate, so token verification can read a JWKS
//! response's `Cache-Control` without importing the cache.

pub(crate) mod body;
pub(crate) mod control;
pub(crate) mod credential;
pub(crate) mod get;
pub(crate) mod media;
