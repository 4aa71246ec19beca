//! The hasher of the caches whose keys no client chooses: verified tokens (a token is
//! only inserted once its signature checked) and cache keys (SHA-256 digests).
//!
//! moka's default, SipHash-1-3, is what keys chosen by clients need, and the prepared
//! request texts (any request body) keep it. For these two caches it costs a noticeable
//! share of a hit (a 300-byte token is hashed on every request); foldhash, already in the
//! tree as hashbrown's default hasher, is several times faster and randomly seeded per
//! process. Lookups compare the whole key after the hash, so a collision could only ever
//! cost time, never serve the wrong entry, and no client can insert the keys it would
//! need to make one.

/// A randomly seeded fast hasher for keys clients cannot choose.
pub(crate) type Trusted = foldhash::quality::RandomState;
