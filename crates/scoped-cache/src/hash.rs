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

/// A bucket's name in traces: the first 64 bits of HMAC-SHA-256 over its bytes, keyed once
/// per process with 128 bits of the OS's randomness (std's `RandomState` keys). It tells
/// one bucket from another on this instance, and without the key nobody can test guessed
/// claim values against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BucketId([u8; 16]);

impl BucketId {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        use hmac::{Hmac, Mac};
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(|| {
            let state = std::collections::hash_map::RandomState::new();
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&state.hash_one(0u8).to_le_bytes());
            key[8..].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
            key
        });
        let mut hex = [b'0'; 16];
        // HMAC takes a key of any length: this never fails.
        if let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) {
            mac.update(bytes);
            let digest = mac.finalize().into_bytes();
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for (i, byte) in digest.iter().take(8).enumerate() {
                hex[2 * i] = DIGITS[usize::from(byte >> 4)];
                hex[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
            }
        }
        Self(hex)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}
