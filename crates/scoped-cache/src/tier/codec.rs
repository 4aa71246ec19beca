//! The binary format of one cached response as stored in Redis.
//!
//! A value read back from Redis is hostile input: anyone with access to the server can
//! write anything under any key, a write can be cut short, and another version of this
//! crate (or another program) may share the database. So every value is:
//!
//! - **versioned**: a magic and a format version, so a value written in another format
//!   is recognised as such instead of being read with the wrong meaning;
//! - **checksummed**: the first 8 bytes of SHA-256 over everything before them, so a
//!   truncated or corrupted value is detected. It is not a MAC: it catches accidents,
//!   not a deliberate writer, who could compute it too; with a
//!   [`signing_key`](super::RedisTier::signing_key), version 2 ends with an
//!   HMAC-SHA-256 tag instead (32 bytes), and only values tagged with the key are read;
//! - **keyed**: the value repeats the cache key it was stored under, so a value moved,
//!   copied or renamed to another key (another bucket's!) is never served there.
//!
//! Anything that fails a check is a [`CodecError`], which the tier treats as a miss:
//! a bad value is never served. Decoding never panics, never recurses, and never
//! allocates more than the input's own length implies: every declared length or count
//! is checked against the bytes that remain before anything is allocated for it.
//!
//! Layout (little-endian), version 1:
//!
//! ```text
//! magic  b"SCR\0"   version u8 = 1   key [u8; 32]   since u64
//! stored_at, expires_at, stale_until, error_until: u64 Unix milliseconds
//! etag:      u16 len + bytes
//! headers:   u16 count, each u16 name len + name, u32 value len + value
//! tags:      u32 count, each u8 kind (0 Type, 1 Entity, 2 AnyOf) + 1 or 2 u16-len strings
//! operation: u8 present (0/1) [+ u16-len string]
//! claims:    u32 count, each u32 len + bytes
//! fields:    u32 count, each u16-len string
//! body:      u32 len + bytes
//! checksum:  first 8 bytes of SHA-256 over everything above
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::seal::{Domain, Signer, TAG_LEN};
use crate::cache::key::CacheKey;
use crate::cache::purge::{EntryMeta, Tag};
use crate::cache::store::CachedResponse;

const MAGIC: [u8; 4] = *b"SCR\x00";
/// Bumped whenever the layout changes: an old process reading a new value (or the other
/// way round) sees [`CodecError::UnknownVersion`], a miss, rather than misreading it.
const VERSION: u8 = 1;
/// Version 1's layout, ending with an HMAC-SHA-256 tag instead of the checksum.
const VERSION_SIGNED: u8 = 2;
/// Magic and version: read before the checksum, whose definition belongs to the version.
const PREFIX_LEN: usize = MAGIC.len() + 1;
const CHECKSUM_LEN: usize = 8;

const TAG_TYPE: u8 = 0;
const TAG_ENTITY: u8 = 1;
const TAG_ANY_OF: u8 = 2;

/// The fewest bytes one item of each list can take, to bound a declared count by the
/// bytes that remain before allocating for it.
const MIN_HEADER_LEN: usize = 2 + 4;
/// More tags, claims or root fields than an entry this crate writes can hold: entity tags
/// are capped at `max_entity_tags` (1,000 by default) plus the types, a scope names a few
/// claims, and an analysed document at most 256 root fields.
const MAX_TAGS: usize = 1 << 17;
const MAX_CLAIMS: usize = 1024;
const MAX_FIELDS: usize = 1024;
const MIN_TAG_LEN: usize = 1 + 2;
const MIN_CLAIM_LEN: usize = 4;
const MIN_FIELD_LEN: usize = 2;

/// Clock pair used to convert tokio Instants to and from Unix milliseconds.
///
/// Instants mean nothing outside the process that took them, so a stored value carries
/// wall-clock times instead; `now` and `unix_ms` are the same moment on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) now: Instant,
    pub(crate) unix_ms: u64,
}

impl Clock {
    /// `t` as Unix milliseconds (saturating; sub-millisecond parts are dropped).
    fn to_unix_ms(self, t: Instant) -> u64 {
        if t >= self.now {
            self.unix_ms.saturating_add(millis(t - self.now))
        } else {
            self.unix_ms.saturating_sub(millis(self.now - t))
        }
    }

    /// Unix milliseconds as an Instant. A past time the Instant cannot reach (before
    /// the monotonic clock's origin) becomes `now`, so it stays in the past; a future
    /// time it cannot reach is invalid (no writer of this format produces one).
    fn instant(self, unix_ms: u64) -> Result<Instant, CodecError> {
        if unix_ms >= self.unix_ms {
            self.now
                .checked_add(Duration::from_millis(unix_ms - self.unix_ms))
                .ok_or(CodecError::Invalid("time out of range"))
        } else {
            Ok(self
                .now
                .checked_sub(Duration::from_millis(self.unix_ms - unix_ms))
                .unwrap_or(self.now))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why a stored value was rejected (or, for [`CodecError::TooLong`], could not be
/// written). Every one of them is a miss.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CodecError {
    #[error("not a scoped-cache response (bad magic)")]
    BadMagic,
    #[error("unknown response format version {0}")]
    UnknownVersion(u8),
    #[error("truncated value")]
    Truncated,
    #[error("trailing bytes after the value")]
    TrailingBytes,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    /// A signing key is set and the value is not signed with it.
    #[error("not signed with this deployment's key")]
    Unsigned,
    /// The value was written for another key: moved, copied, or planted.
    #[error("value belongs to another key")]
    ForeignKey,
    /// The body is longer than the entry-size limit.
    #[error("body exceeds the entry-size limit")]
    TooLarge,
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Encoding only: a field is longer than its length prefix can say. Writing it
    /// anyway would shift every later field, so the entry is not stored at all.
    #[error("{0} too long to encode")]
    TooLong(&'static str),
}

/// Encodes `entry`, stored under `key` with purge epoch `since`.
///
/// # Errors
///
/// [`CodecError::TooLong`] when a field does not fit its length prefix (an operation
/// name or entity id over 64 KiB, say): such an entry is not stored, since a wrong
/// length would make the value mean something else.
#[cfg(test)]
pub(crate) fn encode(
    key: &CacheKey,
    entry: &CachedResponse,
    since: u64,
    clock: Clock,
) -> Result<Vec<u8>, CodecError> {
    encode_sealed(key, entry, since, clock, None)
}

/// Encodes `entry`, stored under `key` with purge epoch `since`, signed with `signer`
/// when there is one (else checksummed).
///
/// # Errors
///
/// [`CodecError::TooLong`], as for an unsigned value.
pub(crate) fn encode_sealed(
    key: &CacheKey,
    entry: &CachedResponse,
    since: u64,
    clock: Clock,
    signer: Option<&Signer>,
) -> Result<Vec<u8>, CodecError> {
    let headers_len: usize = entry
        .headers
        .iter()
        .map(|(name, value)| MIN_HEADER_LEN + name.as_str().len() + value.len())
        .sum();
    let mut out = Vec::with_capacity(
        PREFIX_LEN + 32 + 5 * 8 + 256 + entry.etag.len() + headers_len + entry.body.len(),
    );
    out.extend_from_slice(&MAGIC);
    out.push(if signer.is_some() {
        VERSION_SIGNED
    } else {
        VERSION
    });
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&since.to_le_bytes());
    for t in [
        entry.stored_at,
        entry.expires_at,
        entry.stale_until,
        entry.error_until,
    ] {
        out.extend_from_slice(&clock.to_unix_ms(t).to_le_bytes());
    }
    put16(&mut out, entry.etag.as_bytes(), "etag")?;

    count16(&mut out, entry.headers.len(), "header count")?;
    for (name, value) in &entry.headers {
        put16(&mut out, name.as_str().as_bytes(), "header name")?;
        put32(&mut out, value.as_bytes(), "header value")?;
    }

    let meta = &entry.meta;
    count32(&mut out, meta.tags.len(), "tag count")?;
    for tag in &meta.tags {
        match tag {
            Tag::Type(ty) => {
                out.push(TAG_TYPE);
                put16(&mut out, ty.as_bytes(), "tag")?;
            }
            Tag::Entity(ty, id) => {
                out.push(TAG_ENTITY);
                put16(&mut out, ty.as_bytes(), "tag")?;
                put16(&mut out, id.as_bytes(), "tag")?;
            }
            Tag::AnyOf(ty) => {
                out.push(TAG_ANY_OF);
                put16(&mut out, ty.as_bytes(), "tag")?;
            }
        }
    }
    match &meta.operation {
        None => out.push(0),
        Some(name) => {
            out.push(1);
            put16(&mut out, name.as_bytes(), "operation name")?;
        }
    }
    count32(&mut out, meta.claims.len(), "claim count")?;
    for claim in &meta.claims {
        put32(&mut out, claim, "claim")?;
    }
    count32(&mut out, meta.fields.len(), "field count")?;
    for field in &meta.fields {
        put16(&mut out, field.as_bytes(), "field")?;
    }

    put32(&mut out, &entry.body, "body")?;
    match signer {
        Some(signer) => {
            let tag = signer.tag(Domain::Entry, &out);
            out.extend_from_slice(&tag);
        }
        None => {
            let sum = checksum(&out);
            out.extend_from_slice(&sum);
        }
    }
    Ok(out)
}

/// A decoded value: the entry and the purge epoch it was stored with.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) entry: CachedResponse,
    pub(crate) since: u64,
}

/// Decodes a value read from under `key`.
///
/// `max_body`: the entry-size limit; a longer body is `TooLarge`.
///
/// # Errors
///
/// Any [`CodecError`]: the value must be treated as a miss.
#[cfg(test)]
pub(crate) fn decode(
    key: &CacheKey,
    bytes: &[u8],
    max_body: usize,
    clock: Clock,
) -> Result<Decoded, CodecError> {
    decode_sealed(key, bytes, max_body, clock, None)
}

/// Decodes a value read from under `key`; with `signer`, only a value signed with its
/// key is read ([`CodecError::Unsigned`] otherwise).
///
/// # Errors
///
/// Any [`CodecError`]: the value must be treated as a miss.
pub(crate) fn decode_sealed(
    key: &CacheKey,
    bytes: &[u8],
    max_body: usize,
    clock: Clock,
    signer: Option<&Signer>,
) -> Result<Decoded, CodecError> {
    // Magic and version first: another format's checksum need not be ours.
    let mut prefix = Reader { rest: bytes };
    if prefix.array::<4>()? != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let version = prefix.u8()?;
    // Then the checksum or the tag over the whole value, before reading any field: a
    // cut, corrupted or planted value stops here, and what follows only sees bytes a
    // writer meant.
    let fields = match (signer, version) {
        (None, VERSION) => {
            let (signed, sum) = bytes
                .split_last_chunk::<CHECKSUM_LEN>()
                .ok_or(CodecError::Truncated)?;
            if checksum(signed) != *sum {
                return Err(CodecError::ChecksumMismatch);
            }
            signed.get(PREFIX_LEN..).ok_or(CodecError::Truncated)?
        }
        (Some(signer), VERSION_SIGNED) => {
            let (signed, tag) = bytes
                .split_last_chunk::<{ TAG_LEN }>()
                .ok_or(CodecError::Truncated)?;
            if signed.len() < PREFIX_LEN || !signer.verify(Domain::Entry, signed, tag) {
                return Err(CodecError::Unsigned);
            }
            signed.get(PREFIX_LEN..).ok_or(CodecError::Truncated)?
        }
        (Some(_), VERSION) => return Err(CodecError::Unsigned),
        (_, version) => return Err(CodecError::UnknownVersion(version)),
    };

    let mut r = Reader { rest: fields };
    if r.array::<32>()? != *key.as_bytes() {
        return Err(CodecError::ForeignKey);
    }
    let since = r.u64()?;
    let stored_at = clock.instant(r.u64()?)?;
    let expires_at = clock.instant(r.u64()?)?;
    let stale_until = clock.instant(r.u64()?)?;
    let error_until = clock.instant(r.u64()?)?;
    let etag = HeaderValue::from_bytes(r.bytes16()?).map_err(|_| CodecError::Invalid("etag"))?;

    let count = r.u16()?;
    let count = r.count(usize::from(count), MIN_HEADER_LEN)?;
    // Not `with_capacity`: it panics past the map's maximum size; `try_append` reports it.
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let name =
            HeaderName::from_bytes(r.bytes16()?).map_err(|_| CodecError::Invalid("header name"))?;
        let value = HeaderValue::from_bytes(r.bytes32()?)
            .map_err(|_| CodecError::Invalid("header value"))?;
        headers
            .try_append(name, value)
            .map_err(|_| CodecError::Invalid("header count"))?;
    }

    let count = r.count32(MIN_TAG_LEN)?;
    // Each decoded tag holds more memory than its bytes: a value of nothing but empty tags
    // must not turn a few megabytes into a hundred.
    if count > MAX_TAGS {
        return Err(CodecError::Invalid("tag count"));
    }
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        tags.push(match r.u8()? {
            TAG_TYPE => Tag::Type(r.str16()?),
            TAG_ENTITY => Tag::Entity(r.str16()?, r.str16()?),
            TAG_ANY_OF => Tag::AnyOf(r.str16()?),
            _ => return Err(CodecError::Invalid("tag kind")),
        });
    }
    let operation = match r.u8()? {
        0 => None,
        1 => Some(r.str16()?),
        _ => return Err(CodecError::Invalid("operation flag")),
    };
    let count = r.count32(MIN_CLAIM_LEN)?;
    if count > MAX_CLAIMS {
        return Err(CodecError::Invalid("claim count"));
    }
    let mut claims = Vec::with_capacity(count);
    for _ in 0..count {
        claims.push(Arc::from(r.bytes32()?));
    }
    let count = r.count32(MIN_FIELD_LEN)?;
    if count > MAX_FIELDS {
        return Err(CodecError::Invalid("field count"));
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        fields.push(r.str16()?);
    }

    let body_len = r.len32()?;
    if body_len > max_body {
        return Err(CodecError::TooLarge);
    }
    let body = Bytes::copy_from_slice(r.take(body_len)?);
    if !r.rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }

    Ok(Decoded {
        entry: CachedResponse {
            headers,
            body,
            etag,
            stored_at,
            expires_at,
            stale_until,
            error_until,
            // `new` sorts and deduplicates the tags: purge matching binary-searches them,
            // and a hostile value need not have kept them in order.
            meta: EntryMeta::new(tags, operation, claims, fields),
        },
        since,
    })
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(bytes);
    let mut sum = [0; CHECKSUM_LEN];
    sum.copy_from_slice(&digest[..CHECKSUM_LEN]);
    sum
}

fn put16(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), CodecError> {
    count16(out, bytes.len(), what)?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn put32(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), CodecError> {
    count32(out, bytes.len(), what)?;
    out.extend_from_slice(bytes);
    Ok(())
}

fn count16(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), CodecError> {
    let n = u16::try_from(n).map_err(|_| CodecError::TooLong(what))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn count32(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), CodecError> {
    let n = u32::try_from(n).map_err(|_| CodecError::TooLong(what))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

/// Reads fields off the front of a slice; every read checks the bytes that remain.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(CodecError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(CodecError::Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u32 length or count. On a 16-bit target a value past `usize` cannot fit in
    /// the input either, so it is a truncation.
    fn len32(&mut self) -> Result<usize, CodecError> {
        let n = u32::from_le_bytes(self.array()?);
        usize::try_from(n).map_err(|_| CodecError::Truncated)
    }

    /// `n` items of at least `min_len` bytes each, if the remaining bytes can hold
    /// them: the bound that lets the caller allocate for `n` up front.
    fn count(&self, n: usize, min_len: usize) -> Result<usize, CodecError> {
        if n > self.rest.len() / min_len {
            return Err(CodecError::Truncated);
        }
        Ok(n)
    }

    fn count32(&mut self, min_len: usize) -> Result<usize, CodecError> {
        let n = self.len32()?;
        self.count(n, min_len)
    }

    fn bytes16(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn bytes32(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len32()?;
        self.take(n)
    }

    fn str16(&mut self) -> Result<Arc<str>, CodecError> {
        std::str::from_utf8(self.bytes16()?)
            .map(Arc::from)
            .map_err(|_| CodecError::Invalid("UTF-8 string"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cache::purge::claim_tag;
    use crate::scope::ClaimPath;

    const MAX_BODY: usize = 1 << 20;

    fn key(n: u64) -> CacheKey {
        CacheKey::for_test(n)
    }

    fn clock() -> Clock {
        Clock {
            now: Instant::now(),
            unix_ms: 1_700_000_000_000,
        }
    }

    fn entry(now: Instant) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("vary", HeaderValue::from_static("accept"));
        headers.append("vary", HeaderValue::from_static("x-tenant"));
        CachedResponse {
            headers,
            body: Bytes::from_static(br#"{"data":{"me":"alice"}}"#),
            etag: HeaderValue::from_static("\"abc123\""),
            stored_at: now - Duration::from_secs(5),
            expires_at: now + Duration::from_secs(60),
            stale_until: now + Duration::from_secs(120),
            error_until: now + Duration::from_secs(3600),
            meta: EntryMeta::new(
                vec![
                    Tag::Type("Post".into()),
                    Tag::Entity("Post".into(), "42".into()),
                    Tag::AnyOf("User".into()),
                ],
                Some("Feed".into()),
                vec![claim_tag(
                    &ClaimPath::parse("sub").unwrap(),
                    &json!("alice"),
                )],
                vec!["Query.me".into()],
            ),
        }
    }

    fn close(a: Instant, b: Instant) -> bool {
        a.max(b).duration_since(a.min(b)) <= Duration::from_millis(1)
    }

    /// A value with a valid checksum over `fields` (everything after the version), to
    /// reach the checks behind it.
    fn sealed(fields: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        out.extend_from_slice(fields);
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Key, since, times and etag of a valid value: what precedes the headers.
    fn head(k: &CacheKey) -> Vec<u8> {
        let mut out = k.as_bytes().to_vec();
        for n in [7u64, 0, 0, 0, 0] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        put16(&mut out, b"\"e\"", "etag").unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let enc_clock = clock();
        let original = entry(enc_clock.now);
        let bytes = encode(&key(1), &original, 7, enc_clock).unwrap();
        // Another process, whose monotonic clock reads differently at the same moment.
        let dec_clock = Clock {
            now: enc_clock.now + Duration::from_secs(1000),
            unix_ms: enc_clock.unix_ms,
        };
        let Decoded { entry, since } = decode(&key(1), &bytes, MAX_BODY, dec_clock).unwrap();
        let shift = Duration::from_secs(1000);
        assert_eq!(since, 7);
        assert_eq!(entry.headers, original.headers);
        assert_eq!(
            entry.headers.get_all("vary").iter().collect::<Vec<_>>(),
            ["accept", "x-tenant"]
        );
        assert_eq!(entry.body, original.body);
        assert_eq!(entry.etag, original.etag);
        assert!(close(entry.stored_at, original.stored_at + shift));
        assert!(close(entry.expires_at, original.expires_at + shift));
        assert!(close(entry.stale_until, original.stale_until + shift));
        assert!(close(entry.error_until, original.error_until + shift));
        assert_eq!(entry.meta.tags, original.meta.tags);
        assert_eq!(entry.meta.operation, original.meta.operation);
        assert_eq!(entry.meta.claims, original.meta.claims);
        assert_eq!(entry.meta.fields, original.meta.fields);
    }

    #[test]
    fn an_empty_entry_round_trips() {
        let c = clock();
        let original = CachedResponse {
            headers: HeaderMap::new(),
            body: Bytes::new(),
            etag: HeaderValue::from_static("\"\""),
            stored_at: c.now,
            expires_at: c.now,
            stale_until: c.now,
            error_until: c.now,
            meta: EntryMeta::default(),
        };
        let bytes = encode(&key(1), &original, 0, c).unwrap();
        let decoded = decode(&key(1), &bytes, 0, c).unwrap();
        assert!(decoded.entry.body.is_empty());
        assert!(decoded.entry.meta.operation.is_none());
        assert_eq!(decoded.entry.expires_at, c.now);
    }

    #[test]
    fn a_past_time_stays_in_the_past() {
        let c = clock();
        // Possibly before the monotonic clock's origin: then it saturates to `now`,
        // never the future.
        assert!(c.instant(0).unwrap() <= c.now);
        assert!(c.instant(c.unix_ms - 10).unwrap() <= c.now);
        assert_eq!(c.to_unix_ms(c.now), c.unix_ms);
        assert_eq!(
            Clock {
                now: c.now,
                unix_ms: 5
            }
            .to_unix_ms(c.now - Duration::from_secs(1)),
            0
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let c = clock();
        let bytes = encode(&key(1), &entry(c.now), 7, c).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&key(1), &bytes[..n], MAX_BODY, c).is_err(), "{n}");
        }
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let c = clock();
        let bytes = encode(&key(1), &entry(c.now), 7, c).unwrap();
        for i in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                assert!(decode(&key(1), &bad, MAX_BODY, c).is_err(), "{i} {mask}");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let c = clock();
        let mut bytes = encode(&key(1), &entry(c.now), 7, c).unwrap();
        bytes.push(0);
        assert!(decode(&key(1), &bytes, MAX_BODY, c).is_err());
        // Even with a checksum that covers them.
        let valid = encode(&key(1), &entry(c.now), 7, c).unwrap();
        let mut fields = valid[PREFIX_LEN..valid.len() - CHECKSUM_LEN].to_vec();
        fields.push(0);
        assert_eq!(
            decode(&key(1), &sealed(&fields), MAX_BODY, c).unwrap_err(),
            CodecError::TrailingBytes
        );
    }

    #[test]
    fn a_value_under_another_key_is_foreign() {
        let c = clock();
        let bytes = encode(&key(1), &entry(c.now), 7, c).unwrap();
        assert_eq!(
            decode(&key(2), &bytes, MAX_BODY, c).unwrap_err(),
            CodecError::ForeignKey
        );
    }

    #[test]
    fn a_body_over_the_limit_is_too_large() {
        let c = clock();
        let original = entry(c.now);
        let bytes = encode(&key(1), &original, 7, c).unwrap();
        let len = original.body.len();
        assert!(decode(&key(1), &bytes, len, c).is_ok());
        assert_eq!(
            decode(&key(1), &bytes, len - 1, c).unwrap_err(),
            CodecError::TooLarge
        );
    }

    #[test]
    fn foreign_formats_are_rejected() {
        let c = clock();
        let bytes = encode(&key(1), &entry(c.now), 7, c).unwrap();
        let mut other = bytes.clone();
        other[0] = b'X';
        assert_eq!(
            decode(&key(1), &other, MAX_BODY, c).unwrap_err(),
            CodecError::BadMagic
        );
        let mut newer = bytes;
        newer[4] = 2;
        assert_eq!(
            decode(&key(1), &newer, MAX_BODY, c).unwrap_err(),
            CodecError::UnknownVersion(2)
        );
        assert!(decode(&key(1), b"", MAX_BODY, c).is_err());
        assert!(decode(&key(1), br#"{"data":null}"#, MAX_BODY, c).is_err());
    }

    #[test]
    fn with_a_key_only_values_it_signed_are_read() {
        let c = clock();
        let signer = Signer::new(b"a-signing-key-of-at-least-32-bytes!!", "test:").unwrap();
        let other = Signer::new(b"another-key-of-at-least-32-bytes-long", "test:").unwrap();
        let original = entry(c.now);
        let signed = encode_sealed(&key(1), &original, 7, c, Some(&signer)).unwrap();
        let read = decode_sealed(&key(1), &signed, MAX_BODY, c, Some(&signer)).unwrap();
        assert_eq!((read.since, read.entry.body), (7, original.body.clone()));
        let unsigned = encode(&key(1), &original, 7, c).unwrap();
        for (value, signer, why) in [
            (&unsigned, Some(&signer), "a checksum is not a signature"),
            (&signed, Some(&other), "another key"),
        ] {
            assert_eq!(
                decode_sealed(&key(1), value, MAX_BODY, c, signer).unwrap_err(),
                CodecError::Unsigned,
                "{why}"
            );
        }
        // Any byte changed, the tag included, and the value is refused.
        for i in 0..signed.len() {
            let mut altered = signed.clone();
            altered[i] ^= 0x01;
            assert!(
                decode_sealed(&key(1), &altered, MAX_BODY, c, Some(&signer)).is_err(),
                "{i}"
            );
        }
        assert!(
            decode(&key(1), &signed, MAX_BODY, c).is_err(),
            "no key: not read"
        );
    }

    #[test]
    fn huge_declared_counts_and_lengths_are_refused_before_allocating() {
        let c = clock();
        let k = key(1);
        let decode = |fields: &[u8]| decode(&k, &sealed(fields), usize::MAX, c).unwrap_err();

        let mut headers = head(&k);
        headers.extend_from_slice(&u16::MAX.to_le_bytes());
        headers.extend_from_slice(&[0; 16]);
        assert_eq!(decode(&headers), CodecError::Truncated);

        let mut no_headers = head(&k);
        no_headers.extend_from_slice(&0u16.to_le_bytes());

        let mut tags = no_headers.clone();
        tags.extend_from_slice(&u32::MAX.to_le_bytes());
        tags.extend_from_slice(&[0; 16]);
        assert_eq!(decode(&tags), CodecError::Truncated);

        let mut no_tags = no_headers;
        no_tags.extend_from_slice(&0u32.to_le_bytes());
        no_tags.push(0); // no operation

        let mut claims = no_tags.clone();
        claims.extend_from_slice(&u32::MAX.to_le_bytes());
        claims.extend_from_slice(&[0; 16]);
        assert_eq!(decode(&claims), CodecError::Truncated);

        let mut claim_len = no_tags.clone();
        claim_len.extend_from_slice(&1u32.to_le_bytes());
        claim_len.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&claim_len), CodecError::Truncated);

        let mut fields = no_tags.clone();
        fields.extend_from_slice(&0u32.to_le_bytes());
        fields.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&fields), CodecError::Truncated);

        let mut body = no_tags;
        body.extend_from_slice(&0u32.to_le_bytes()); // no claims
        body.extend_from_slice(&0u32.to_le_bytes()); // no fields
        let mut valid = body.clone();
        valid.extend_from_slice(&0u32.to_le_bytes());
        assert!(super::decode(&k, &sealed(&valid), 0, c).is_ok());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(b"tiny");
        assert_eq!(decode(&body), CodecError::Truncated);
    }

    #[test]
    fn invalid_text_and_headers_are_rejected() {
        let c = clock();
        let k = key(1);
        let decode = |fields: &[u8]| decode(&k, &sealed(fields), MAX_BODY, c).unwrap_err();

        let header = |name: &[u8], value: &[u8]| {
            let mut out = head(&k);
            out.extend_from_slice(&1u16.to_le_bytes());
            put16(&mut out, name, "").unwrap();
            put32(&mut out, value, "").unwrap();
            out
        };
        assert_eq!(
            decode(&header(b"bad name", b"v")),
            CodecError::Invalid("header name")
        );
        assert_eq!(
            decode(&header(b"x-ok", b"line\nbreak")),
            CodecError::Invalid("header value")
        );

        let mut tag = head(&k);
        tag.extend_from_slice(&0u16.to_le_bytes());
        tag.extend_from_slice(&1u32.to_le_bytes());
        tag.push(TAG_TYPE);
        put16(&mut tag, b"\xff\xfe", "").unwrap();
        assert_eq!(decode(&tag), CodecError::Invalid("UTF-8 string"));

        let mut kind = head(&k);
        kind.extend_from_slice(&0u16.to_le_bytes());
        kind.extend_from_slice(&1u32.to_le_bytes());
        kind.push(9);
        put16(&mut kind, b"Post", "").unwrap();
        assert_eq!(decode(&kind), CodecError::Invalid("tag kind"));
    }

    #[test]
    fn a_field_too_long_for_its_prefix_is_not_encoded() {
        let c = clock();
        let mut long = entry(c.now);
        long.meta.operation = Some("x".repeat(usize::from(u16::MAX) + 1).into());
        assert_eq!(
            encode(&key(1), &long, 7, c).unwrap_err(),
            CodecError::TooLong("operation name")
        );
    }
}
