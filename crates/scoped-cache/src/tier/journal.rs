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

use super::seal::{Domain, Signer};
use crate::cache::purge::{Selector, Tag};
use crate::revocation::{Revoke, RevokeKind};

/// Changes the journal keeps (the oldest go first): an instance more than this many
/// changes behind starts over. At most [`MAX_RECORD_BYTES`] each, so at most about
/// 170 MiB of Redis, and about 2 KiB each in practice.
pub(crate) const JOURNAL_LEN: u64 = 10_000;
/// Longest change recorded: a longer one (a purge of thousands of long entity ids) is
/// recorded as a purge of everything (more is purged, never less).
pub(crate) const MAX_CHANGE_BYTES: usize = 16 * 1024;
/// Longest journal record (and revocation) read: a change, its number and its tag. A
/// revocation is never collapsed: its two names are at most
/// [`MAX_NAME_BYTES`](crate::revocation::MAX_NAME_BYTES) each, six bytes a byte once
/// escaped in JSON, so it fits too. Redis leaves a longer member out of the read (it is
/// not ours), which the reader sees as a missing number.
pub(crate) const MAX_RECORD_BYTES: usize = 2 * MAX_CHANGE_BYTES;
/// Highest sequence number taken as one: far beyond what a fleet records (a million
/// changes a second for two years), and at most 14 digits, which Redis's scores and
/// Lua's numbers hold exactly. A higher one was not written by a layer: it is
/// unreadable, and the instance stays out of step until an operator deletes it.
pub(crate) const MAX_SEQ: u64 = 1 << 46;

/// Records the change `ARGV[3]` (its member, already numbered `ARGV[2]` and signed) if
/// the purge sequence (`KEYS[1]`) still is `ARGV[1]`, keeps the last `ARGV[4]` changes of
/// the journal (`KEYS[2]`), and with `KEYS[4]` adds the revocation `ARGV[6]` scored
/// `ARGV[7]` to the revocation set, trimming what Redis's own clock says can be
/// forgotten. Answers `{1, n}` when it recorded; `{0, sequence}` when another instance
/// recorded first (try again above it); `{2, check}` when the fleet's key check
/// (`KEYS[3]`) is not the writer's (`ARGV[5]`): the others could not read its record.
///
/// The number is chosen by the writer, not the script, so the writer can sign the
/// record with its number: a record moved under another number is not valid. `#!lua`
/// with no flags: Redis refuses the whole script when its memory is full, so a record is
/// all or nothing and the journal has no holes.
pub(crate) const RECORD: &str = r"#!lua
local check = redis.call('GET', KEYS[3])
if check and check ~= ARGV[5] then return {2, check} end
local current = redis.call('GET', KEYS[1]) or '0'
if current ~= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2])
if KEYS[4] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
return {1, ARGV[2]}";

/// One read of the journal, in one step: the purge sequence (`KEYS[1]`), the journal's
/// length and its oldest record's number (`KEYS[2]`), the fleet's key check (`KEYS[3]`),
/// how many records the read found, then the records: with `ARGV[1]` = `fresh` the newest
/// `ARGV[2]`, else `ARGV[2]` from number `ARGV[3]` on. Members longer than `ARGV[4]`
/// bytes, and a sequence or key check longer than any the layer writes, stay in Redis
/// (`x` stands for the latter), so a planted giant never crosses the network.
pub(crate) const READ: &str = r"#!lua flags=no-writes
local function small(value)
  if not value then return '' end
  if #value > 80 then return 'x' end
  return value
end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local members
if ARGV[1] == 'fresh' then
  members = redis.call('ZRANGE', KEYS[2], -tonumber(ARGV[2]), -1)
else
  members = redis.call('ZRANGE', KEYS[2], ARGV[3], '+inf', 'BYSCORE', 'LIMIT', 0, ARGV[2])
end
local out = {
  small(redis.call('GET', KEYS[1])),
  tostring(redis.call('ZCARD', KEYS[2])),
  small(oldest[2]),
  small(redis.call('GET', KEYS[3])),
  tostring(#members),
}
local limit = tonumber(ARGV[4])
for _, member in ipairs(members) do
  if #member <= limit then out[#out + 1] = member end
end
return out";

/// A sequence number as the layer writes it: decimal digits, no sign, no leading zero,
/// at most [`MAX_SEQ`]. One number has one spelling, so a record cannot be re-spelled
/// into another that is also valid.
pub(crate) fn parse_seq(raw: &[u8]) -> Option<u64> {
    let canonical = !raw.is_empty()
        && raw.len() <= 14
        && raw.iter().all(u8::is_ascii_digit)
        && (raw == b"0" || raw[0] != b'0');
    if !canonical {
        return None;
    }
    let seq: u64 = std::str::from_utf8(raw).ok()?.parse().ok()?;
    (seq <= MAX_SEQ).then_some(seq)
}

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
/// one this version reads: it is counted and skipped) and a digest of the whole record,
/// which tells a record from another under the same number (Redis lost the first).
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) change: Option<Change>,
    pub(crate) digest: [u8; 16],
}

impl Record {
    /// The journal member of `change` (encoded) under `seq`: `seq:change`, the change
    /// signed with its number when there is a key.
    pub(crate) fn member(seq: u64, change: &[u8], signer: Option<&Signer>) -> Vec<u8> {
        let mut member = format!("{seq}:").into_bytes();
        member.extend(super::seal::seal(
            signer,
            Domain::Record(seq),
            change.to_vec(),
        ));
        member
    }

    /// `None` for a member that is not a record: no number, not JSON, or with a signer,
    /// not signed with its key for its number. The reader then sees that number as missing
    /// (a loss, recovered), never as a change it may skip.
    pub(crate) fn decode(member: &[u8], signer: Option<&Signer>) -> Option<Self> {
        if member.len() > MAX_RECORD_BYTES {
            return None;
        }
        let colon = member.iter().position(|b| *b == b':')?;
        let seq = parse_seq(&member[..colon])?;
        let text = super::seal::open(signer, Domain::Record(seq), &member[colon + 1..])?;
        // serde_json bounds nesting (too deep is a syntax error).
        let change = match serde_json::from_slice::<Change>(text) {
            Ok(change) => Some(change),
            // JSON this version does not know: a change of a later one, skipped.
            Err(err) if err.classify() == serde_json::error::Category::Data => None,
            // Not JSON: signed with a key this instance lacks, or not ours.
            Err(_) => return None,
        };
        Some(Self {
            seq,
            change,
            digest: digest(member),
        })
    }
}

/// What tells one record from another under the same number.
pub(crate) fn digest(member: &[u8]) -> [u8; 16] {
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
        Record::member(seq, &change.encode(), None)
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
    fn with_a_key_only_records_signed_for_their_number_are_records() {
        let signer = Signer::new(b"a-signing-key-of-at-least-32-bytes!!", "test:").unwrap();
        let change = Change::Purge {
            selector: WireSelector::All,
        };
        let signed = Record::member(4, &change.encode(), Some(&signer));
        assert_eq!(
            Record::decode(&signed, Some(&signer)).unwrap().change,
            Some(change.clone())
        );
        assert!(
            Record::decode(&record(4, &change), Some(&signer)).is_none(),
            "planted: a missing number, not a skipped change"
        );
        let moved = [b"5".as_slice(), &signed[1..]].concat();
        assert!(
            Record::decode(&moved, Some(&signer)).is_none(),
            "replayed under another number"
        );
    }

    #[test]
    fn a_sequence_number_has_one_spelling_and_a_bound() {
        assert_eq!(parse_seq(b"0"), Some(0));
        assert_eq!(parse_seq(b"42"), Some(42));
        assert_eq!(parse_seq(MAX_SEQ.to_string().as_bytes()), Some(MAX_SEQ));
        for raw in [
            b"".as_slice(),
            b"+5",
            b"05",
            b"-1",
            b"1e5",
            b" 5",
            (MAX_SEQ + 1).to_string().as_bytes(),
            b"100000000000000000000",
        ] {
            assert_eq!(parse_seq(raw), None, "{raw:?}");
        }
        assert!(Record::decode(b"05:{}", None).is_none());
    }

    #[test]
    fn foreign_or_invalid_records_are_skipped() {
        assert!(Record::decode(b"hello", None).is_none(), "no number");
        let giant = [b"1:".as_slice(), &vec![b' '; MAX_RECORD_BYTES]].concat();
        assert!(Record::decode(&giant, None).is_none());
        let unknown = Record::decode(b"5:{\"change\":\"from_the_future\"}", None).unwrap();
        assert_eq!((unknown.seq, unknown.change), (5, None));
        let deep = [b"9:".as_slice(), &vec![b'['; MAX_CHANGE_BYTES]].concat();
        assert!(
            Record::decode(&deep, None).is_none_or(|r| r.change.is_none()),
            "nested too deep: never a change"
        );
        let signer = Signer::new(b"a-signing-key-of-at-least-32-bytes!!", "test:").unwrap();
        let sealed = Record::member(9, &Change::Recovered.encode(), Some(&signer));
        assert!(
            Record::decode(&sealed, None).is_none(),
            "signed, read without the key: not a record it may skip"
        );
        let empty = WireRevoke(RevokeKind::Token {
            jti: String::new(),
            exp: 1,
        });
        assert!(empty.into_revoke().is_none(), "checked like the API");
    }
}
