//! Signed values ([`RedisTier::signing_key`](super::RedisTier::signing_key)): an
//! HMAC-SHA-256 over every entry, journal record and revocation the tier writes, so a
//! party that can write to Redis but does not hold the key cannot plant an answer, a
//! purge or a revocation. Without a key, values carry a checksum that catches accidents
//! only.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a tag.
pub(crate) const TAG_LEN: usize = 32;
/// Separates a journal record's or a revocation's text from its tag (never in JSON).
const SEPARATOR: u8 = 0x1f;

/// The key, ready to sign: derived from the configured key and the key prefix, so a
/// value signed under one prefix (another schema version, another app sharing the key) is
/// not valid under another.
#[derive(Clone)]
pub(crate) struct Signer(Hmac<Sha256>);

/// The key is secret: never shown.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// What a tag is over, so that one kind of value is never taken for another: an entry, a
/// revocation in the set, or the journal record under one number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Domain {
    Entry,
    Revocation,
    Record(u64),
    /// The fleet's key check (`P keycheck`).
    KeyCheck,
}

impl Signer {
    /// `None` only if HMAC refused a key, which it never does (any length is a key).
    pub(crate) fn new(key: &[u8], prefix: &str) -> Option<Self> {
        let mut derive = Hmac::<Sha256>::new_from_slice(key).ok()?;
        derive.update(b"scoped-cache signing key\0");
        derive.update(prefix.as_bytes());
        let derived = derive.finalize().into_bytes();
        Hmac::<Sha256>::new_from_slice(&derived).ok().map(Self)
    }

    fn mac(&self, domain: Domain, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        match domain {
            Domain::Entry => mac.update(b"entry\0"),
            Domain::Revocation => mac.update(b"revocation\0"),
            Domain::Record(seq) => {
                mac.update(b"record\0");
                mac.update(&seq.to_be_bytes());
            }
            Domain::KeyCheck => mac.update(b"keycheck\0"),
        }
        mac.update(bytes);
        mac
    }

    pub(crate) fn tag(&self, domain: Domain, bytes: &[u8]) -> [u8; TAG_LEN] {
        self.mac(domain, bytes).finalize().into_bytes().into()
    }

    /// Whether `tag` is this key's over `bytes`, compared in constant time.
    pub(crate) fn verify(&self, domain: Domain, bytes: &[u8], tag: &[u8]) -> bool {
        self.mac(domain, bytes).verify_slice(tag).is_ok()
    }

    /// `text`, then the separator and its tag in lowercase hex.
    pub(crate) fn seal_text(&self, domain: Domain, text: &[u8]) -> Vec<u8> {
        let tag = self.tag(domain, text);
        let mut out = Vec::with_capacity(text.len() + 1 + 2 * TAG_LEN);
        out.extend_from_slice(text);
        out.push(SEPARATOR);
        out.extend_from_slice(hex(&tag).as_bytes());
        out
    }

    /// The text of a value [`seal_text`](Self::seal_text) made with this key for
    /// `domain`; `None` for anything else (unsigned, another key or domain, altered, a
    /// tag not in lowercase hex: one value has one spelling).
    pub(crate) fn open_text<'a>(&self, domain: Domain, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let at = sealed.iter().rposition(|b| *b == SEPARATOR)?;
        let (text, hex) = (&sealed[..at], &sealed[at + 1..]);
        if hex.len() != 2 * TAG_LEN {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut tag = [0u8; TAG_LEN];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            tag[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        self.verify(domain, text, &tag).then_some(text)
    }

    /// What this key writes to `P keycheck`: instances with another key (or none) see
    /// it differs and stay out of step rather than skip what they cannot read.
    pub(crate) fn key_check(&self) -> String {
        format!("signed:{}", hex(&self.tag(Domain::KeyCheck, b"")[..16]))
    }
}

/// `P keycheck` of instances without a key.
pub(crate) const UNSIGNED: &str = "unsigned";

/// What `signer` (or its absence) writes to `P keycheck`.
pub(crate) fn key_check(signer: Option<&Signer>) -> String {
    signer.map_or_else(|| UNSIGNED.to_owned(), Signer::key_check)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// With a key, `text` sealed for `domain`; without, as it is.
pub(crate) fn seal(signer: Option<&Signer>, domain: Domain, text: Vec<u8>) -> Vec<u8> {
    match signer {
        Some(signer) => signer.seal_text(domain, &text),
        None => text,
    }
}

/// With a key, the text of a value sealed with it for `domain` (else `None`); without,
/// as it is.
pub(crate) fn open<'a>(
    signer: Option<&Signer>,
    domain: Domain,
    value: &'a [u8],
) -> Option<&'a [u8]> {
    match signer {
        Some(signer) => signer.open_text(domain, value),
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a-signing-key-of-at-least-32-bytes!!";

    #[test]
    fn only_the_key_opens_what_it_sealed() {
        let signer = Signer::new(KEY, "app:").unwrap();
        let text = br#"{"change":"recovered"}"#;
        let sealed = signer.seal_text(Domain::Record(7), text);
        assert_eq!(
            signer.open_text(Domain::Record(7), &sealed),
            Some(text.as_slice())
        );
        let other = Signer::new(b"another-signing-key-of-32-bytes-or-more", "app:").unwrap();
        assert_eq!(
            other.open_text(Domain::Record(7), &sealed),
            None,
            "another key"
        );
        let elsewhere = Signer::new(KEY, "other-app:").unwrap();
        assert_eq!(
            elsewhere.open_text(Domain::Record(7), &sealed),
            None,
            "another prefix"
        );
        assert_eq!(
            signer.open_text(Domain::Record(8), &sealed),
            None,
            "another number"
        );
        assert_eq!(
            signer.open_text(Domain::Revocation, &sealed),
            None,
            "another kind"
        );
        assert_eq!(signer.open_text(Domain::Record(7), text), None, "unsigned");
        let mut altered = sealed.clone();
        altered[2] ^= 1;
        assert_eq!(
            signer.open_text(Domain::Record(7), &altered),
            None,
            "altered text"
        );
        let last = sealed.len() - 1;
        for spelling in [b'z', b'A'] {
            let mut respelled = sealed.clone();
            respelled[last] = spelling;
            assert_eq!(
                signer.open_text(Domain::Record(7), &respelled),
                None,
                "not lowercase hex"
            );
        }
        let upper = [
            &sealed[..sealed.len() - 64],
            sealed[sealed.len() - 64..].to_ascii_uppercase().as_slice(),
        ]
        .concat();
        assert_eq!(
            signer.open_text(Domain::Record(7), &upper),
            None,
            "one spelling"
        );
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }

    #[test]
    fn the_key_check_tells_keys_apart_and_shows_none() {
        let one = Signer::new(KEY, "app:").unwrap();
        let again = Signer::new(KEY, "app:").unwrap();
        let other = Signer::new(b"another-signing-key-of-32-bytes-or-more", "app:").unwrap();
        assert_eq!(key_check(Some(&one)), key_check(Some(&again)));
        assert_ne!(key_check(Some(&one)), key_check(Some(&other)));
        assert_ne!(key_check(Some(&one)), key_check(None));
        assert!(!key_check(Some(&one)).contains("signing-key"));
    }
}
