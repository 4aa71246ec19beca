//! Key names (see the table in the [module docs](super)). Index and claim keys are
//! SHA-256 hashes of exact encodings, so two different tags never share a key and an index
//! set needs no confirming read.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::cache::key::CacheKey;
use crate::cache::purge::{IndexKey, Tag};

/// Bytes of a claim hash inside a scope record's field.
pub(crate) const CLAIM_HASH: usize = 16;
/// Bytes of a cache key that name its Redis keys and index members: 128 bits of SHA-256.
/// Two requests sharing them would share a slot, never an answer (every value carries its
/// whole key and is checked on read).
pub(crate) const MEMBER: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn with(&self, kind: &str, hex: &[u8]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + 2 * hex.len());
        key.push_str(&self.prefix);
        key.push_str(kind);
        for byte in hex {
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    pub(crate) fn entry(&self, key: &CacheKey) -> String {
        self.with("e:", member(key))
    }

    /// The entry key of an index member ([`member`]).
    pub(crate) fn entry_of_member(&self, member: &[u8]) -> String {
        self.with("e:", member)
    }

    pub(crate) fn lease(&self, key: &CacheKey) -> String {
        self.with("l:", member(key))
    }

    /// The purge record of an operation name or a root field (a sequence number).
    pub(crate) fn record(&self, index_key: &IndexKey) -> String {
        self.with("r:", &index_hash(index_key))
    }

    pub(crate) fn index(&self, index_key: &IndexKey) -> String {
        self.with("t:", &index_hash(index_key))
    }

    /// The scope records of one claim value (a [`claim_tag`](crate::cache::purge::claim_tag)).
    pub(crate) fn scope(&self, claim: &[u8]) -> String {
        self.with("s:", &claim_hash(claim))
    }

    /// A `SCAN` pattern for every entry of this prefix (glob characters in the prefix
    /// escaped).
    pub(crate) fn entry_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() * 2 + 3);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("e:*");
        pattern
    }

    pub(crate) fn named(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// A cache key's index member (and the name of its entry).
pub(crate) fn member(key: &CacheKey) -> &[u8] {
    &key.as_bytes()[..MEMBER]
}

pub(crate) fn claim_hash(claim: &[u8]) -> [u8; CLAIM_HASH] {
    let digest = Sha256::new_with_prefix(b"claim\0")
        .chain_update(claim)
        .finalize();
    let mut out = [0; CLAIM_HASH];
    out.copy_from_slice(&digest[..CLAIM_HASH]);
    out
}

/// 16 bytes of SHA-256 over a length-prefixed encoding of the index key.
fn index_hash(index_key: &IndexKey) -> [u8; 16] {
    let mut hasher = Sha256::new_with_prefix(b"index\0");
    let mut put = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    match index_key {
        IndexKey::Tag(Tag::Type(ty)) => {
            put(b"type");
            put(ty.as_bytes());
        }
        IndexKey::Tag(Tag::AnyOf(ty)) => {
            put(b"any");
            put(ty.as_bytes());
        }
        IndexKey::Tag(Tag::Entity(ty, id)) => {
            put(b"entity");
            put(ty.as_bytes());
            put(id.as_bytes());
        }
        IndexKey::Operation(name) => {
            put(b"operation");
            put(name.as_bytes());
        }
        IndexKey::Field(field) => {
            put(b"field");
            put(field.as_bytes());
        }
        IndexKey::Claim(claim) => {
            put(b"claim");
            put(claim);
        }
    }
    let digest = hasher.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_key_carries_the_prefix_and_tags_never_collide() {
        let keys = Keys::new("forum:");
        let a = keys.index(&IndexKey::Tag(Tag::Entity("Post".into(), "1:2".into())));
        let b = keys.index(&IndexKey::Tag(Tag::Entity("Post:1".into(), "2".into())));
        assert_ne!(a, b, "length prefixes keep neighbours apart");
        assert!(a.starts_with("forum:t:"));
        assert_ne!(
            keys.index(&IndexKey::Tag(Tag::Type("Post".into()))),
            keys.index(&IndexKey::Tag(Tag::AnyOf("Post".into())))
        );
        assert_ne!(
            keys.index(&IndexKey::Operation(Arc::from("x"))),
            keys.index(&IndexKey::Field(Arc::from("x")))
        );
        assert!(keys.scope(b"c").starts_with("forum:s:"));
        assert_eq!(keys.named("seq"), "forum:seq");
        assert_eq!(Keys::new("a*[b]:").entry_pattern(), r"a\*\[b\]:e:*");
    }
}
