//! The hasher of the verified-token cache, whose keys no client chooses: a token is only
//! inserted once its signature checked.
//!
//! moka's default, SipHash-1-3, is what keys clients can choose need, and the prepared
//! request texts (any request body) and the responses (any cacheable request makes an
//! entry, and its SHA-256 key can be ground offline towards chosen hash bits) keep it.
//! For verified tokens it costs a noticeable share of a hit (a 300-byte token is hashed
//! on every request); foldhash, already in the tree as hashbrown's default hasher, is
//! several times faster and randomly seeded per process. Lookups compare the whole token
//! after the hash, so a collision could only ever cost time, never serve the wrong entry,
//! and no client can insert the tokens it would need to make one.

/// A randomly seeded fast hasher for keys clients cannot choose.
pub(crate) type Trusted = foldhash::quality::RandomState;

/// A short, per-process hash of `bytes` for traces (a bucket's): it tells requests of
/// one bucket apart from another's on this instance, and is seeded randomly per process
/// so that no one can test guessed claim values against it.
pub(crate) fn short(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<Trusted> = std::sync::OnceLock::new();
    SEED.get_or_init(Trusted::default).hash_one(bytes)
}
