//! The journal (`P log`): every purge and revocation the fleet recorded, in the order of
//! the purge sequence (`P seq`). Redis is the record and the journal is how an instance
//! reads it back: the syncer reads what it has not applied yet on every tick, whether or
//! not pub/sub works (a message only makes it read sooner).
//!
//! A change is recorded by one script that takes the next sequence number, appends the
//! change under it and, for a revocation, adds it to the `P revocations` set, so the
//! journal has no holes: number `n` is either there or was never taken. The journal keeps
//! the last [`JOURNAL_LEN`] changes; an instance that falls further behind starts over
//! (memory flushed, revocations reloaded).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use super::seal::Signer;
use crate::cache::purge::{Selector, Tag};
use crate::revocation::{Revoke, RevokeKind};

/// Changes the journal keeps (the oldest go first): an instance more than this many
/// changes behind starts over. At most about 2 KiB each (a selector's tags and a
/// revocation's names are bounded), so at most about 20 MiB of Redis.
pub(crate) const JOURNAL_LEN: u64 = 10_000;
/// Longest journal record read; anything longer is not ours.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// Takes the next sequence number (never at or below `ARGV[2]`, the highest this instance
/// has seen: after Redis lost data the sequence goes on above what the fleet knew),
/// appends `ARGV[1]` under it, keeps the last `ARGV[3]` changes, and with `KEYS[3]` adds
/// the revocation `ARGV[4]` scored `ARGV[5]` to the revocation set, trimming what Redis's
/// own clock says can be forgotten. `#!lua` with no flags: Redis refuses the whole script
/// when its memory is full, so a record is all or nothing.
pub(crate) const RECORD: &str = r"#!lua
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
if KEYS[3] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
redis.call('ZADD', KEYS[2], seq, seq .. ':' .. ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
return seq";

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    Purge {
        selector: WireSelector,
    },
    Revoke {
        revoke: WireRevoke,
    },
    /// Redis lost changes (a restart from a snapshot, a flush, a failover to a replica
    /// that lagged): everything written before is purged, and the revocation set, which
    /// the instance that noticed wrote back, is read again.
    Recovered,
}

impl Change {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A journal record as read back: its sequence number, the change (`None` when it is not
/// one this version reads: it is skipped) and a digest of the whole record, which tells a
/// record from another under the same number (Redis lost the first).
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) change: Option<Change>,
    pub(crate) digest: [u8; 16],
}

impl Record {
    /// `None` for a member that is not a record at all. With a signer, a change not
    /// signed with its key is `None` (the record is skipped).
    pub(crate) fn decode(member: &[u8], signer: Option<&Signer>) -> Option<Self> {
        if member.len() > MAX_RECORD_BYTES {
            return None;
        }
        let colon = member.iter().position(|b| *b == b':')?;
        let seq = std::str::from_utf8(&member[..colon]).ok()?.parse().ok()?;
        // serde_json bounds nesting.
        let change = super::seal::open(signer, &member[colon + 1..])
            .and_then(|text| serde_json::from_slice(text).ok());
        Some(Self {
            seq,
            change,
            digest: digest(member),
        })
    }
}

fn digest(member: &[u8]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let full = Sha256::digest(member);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireSelector {
    Tags {
        tags: Vec<WireTag>,
    },
    Operation {
        name: String,
    },
    /// Claim tags, base64.
    Scope {
        claims: Vec<String>,
    },
    Fields {
        fields: Vec<String>,
    },
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireTag {
    Type(String),
    Entity(String, String),
    AnyOf(String),
}

impl From<&Selector> for WireSelector {
    fn from(selector: &Selector) -> Self {
        match selector {
            Selector::Tags(tags) => WireSelector::Tags {
                tags: tags
                    .iter()
                    .map(|tag| match tag {
                        Tag::Type(ty) => WireTag::Type(ty.to_string()),
                        Tag::Entity(ty, id) => WireTag::Entity(ty.to_string(), id.to_string()),
                        Tag::AnyOf(ty) => WireTag::AnyOf(ty.to_string()),
                    })
                    .collect(),
            },
            Selector::Operation(name) => WireSelector::Operation {
                name: name.to_string(),
            },
            Selector::Scope(claims) => WireSelector::Scope {
                claims: claims.iter().map(|c| B64.encode(c)).collect(),
            },
            Selector::Fields(fields) => WireSelector::Fields {
                fields: fields.iter().map(ToString::to_string).collect(),
            },
            Selector::All => WireSelector::All,
        }
    }
}

impl WireSelector {
    pub(crate) fn into_selector(self) -> Option<Selector> {
        Some(match self {
            WireSelector::Tags { tags } => Selector::Tags(
                tags.into_iter()
                    .map(|tag| match tag {
                        WireTag::Type(ty) => Tag::Type(ty.into()),
                        WireTag::Entity(ty, id) => Tag::Entity(ty.into(), id.into()),
                        WireTag::AnyOf(ty) => Tag::AnyOf(ty.into()),
                    })
                    .collect(),
            ),
            WireSelector::Operation { name } => Selector::Operation(name.into()),
            WireSelector::Scope { claims } => Selector::Scope(
                claims
                    .iter()
                    .map(|c| B64.decode(c).ok().map(Arc::from))
                    .collect::<Option<Vec<_>>>()?,
            ),
            WireSelector::Fields { fields } => {
                Selector::Fields(fields.into_iter().map(Arc::from).collect())
            }
            WireSelector::All => Selector::All,
        })
    }
}

/// A revocation in the journal and in the `P revocations` set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct WireRevoke(RevokeKind);

impl From<&Revoke> for WireRevoke {
    fn from(revoke: &Revoke) -> Self {
        Self(revoke.kind.clone())
    }
}

impl WireRevoke {
    /// `None` unless it is a revocation `Revoke` itself would accept.
    pub(crate) fn into_revoke(self) -> Option<Revoke> {
        let revoke = Revoke { kind: self.0 };
        revoke.check().ok().map(|()| revoke)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::purge::Purge;

    fn record(seq: u64, change: &Change) -> Vec<u8> {
        let mut member = format!("{seq}:").into_bytes();
        member.extend(change.encode());
        member
    }

    #[test]
    fn selectors_and_revocations_survive_the_journal() {
        for purge in [
            Purge::tags(["Post:1", "User"]),
            Purge::operation("Feed"),
            Purge::scope([("sub", "alice"), ("org.id", "7")]).unwrap(),
            Purge::all(),
        ] {
            let change = Change::Purge {
                selector: (&purge.selector).into(),
            };
            let read = Record::decode(&record(7, &change), None).unwrap();
            assert_eq!(read.seq, 7);
            let Some(Change::Purge { selector }) = read.change else {
                panic!("round trip");
            };
            assert_eq!(selector.into_selector(), Some(purge.selector));
        }
        let revoke = Revoke::subject_unix("alice", 10).of_issuer("idp");
        let change = Change::Revoke {
            revoke: (&revoke).into(),
        };
        let Some(Change::Revoke { revoke: wire }) =
            Record::decode(&record(1, &change), None).unwrap().change
        else {
            panic!("round trip");
        };
        assert_eq!(wire.into_revoke(), Some(revoke));
    }

    #[test]
    fn two_records_under_one_number_differ() {
        let a = Record::decode(&record(3, &Change::Recovered), None).unwrap();
        let b = Record::decode(
            &record(
                3,
                &Change::Purge {
                    selector: WireSelector::All,
                },
            ),
            None,
        )
        .unwrap();
        assert_eq!(a.seq, b.seq);
        assert_ne!(
            a.digest, b.digest,
            "a lost record is told from its successor"
        );
    }

    #[test]
    fn with_a_key_unsigned_or_forged_changes_are_skipped() {
        let signer = Signer::new(b"a-signing-key-of-at-least-32-bytes!!");
        let change = Change::Purge {
            selector: WireSelector::All,
        };
        let mut signed = b"4:".to_vec();
        signed.extend(signer.seal_text(&change.encode()));
        assert_eq!(
            Record::decode(&signed, Some(&signer)).unwrap().change,
            Some(change.clone())
        );
        let planted = record(4, &change);
        let read = Record::decode(&planted, Some(&signer)).unwrap();
        assert_eq!((read.seq, read.change), (4, None), "counted, never applied");
    }

    #[test]
    fn foreign_or_invalid_records_are_skipped() {
        assert!(Record::decode(b"hello", None).is_none(), "no number");
        assert!(Record::decode(&vec![b'1'; MAX_RECORD_BYTES + 1], None).is_none());
        let unknown = Record::decode(b"5:{\"change\":\"from_the_future\"}", None).unwrap();
        assert_eq!((unknown.seq, unknown.change), (5, None));
        let deep = [b"9:".as_slice(), &vec![b'['; 100_000]].concat();
        assert!(Record::decode(&deep, None).unwrap().change.is_none());
        let empty = WireRevoke(RevokeKind::Token {
            jti: String::new(),
            exp: 1,
        });
        assert!(empty.into_revoke().is_none(), "checked like the API");
    }
}
