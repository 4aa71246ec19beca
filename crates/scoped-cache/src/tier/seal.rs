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

/// The key, ready to sign.
#[derive(Clone)]
pub(crate) struct Signer(Hmac<Sha256>);

/// The key is secret: never shown.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC takes a key of any length.
        Self(Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable_key()))
    }

    pub(crate) fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is this key's over `bytes`, compared in constant time.
    pub(crate) fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }

    /// `text`, then the separator and its hex tag.
    pub(crate) fn seal_text(&self, text: &[u8]) -> Vec<u8> {
        let tag = self.tag(text);
        let mut out = Vec::with_capacity(text.len() + 1 + 2 * TAG_LEN);
        out.extend_from_slice(text);
        out.push(SEPARATOR);
        for byte in tag {
            out.extend_from_slice(format!("{byte:02x}").as_bytes());
        }
        out
    }

    /// The text of a value [`seal_text`](Self::seal_text) made with this key; `None` for
    /// anything else (unsigned, another key, altered).
    pub(crate) fn open_text<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let at = sealed.iter().rposition(|b| *b == SEPARATOR)?;
        let (text, hex) = (&sealed[..at], &sealed[at + 1..]);
        if hex.len() != 2 * TAG_LEN {
            return None;
        }
        let mut tag = [0u8; TAG_LEN];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            tag[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        self.verify(text, &tag).then_some(text)
    }
}

/// `Hmac::new_from_slice` fails only for a fixed-length key type, which HMAC is not.
#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    // An all-zero key rather than a panic: never reached (see above).
    <Hmac<Sha256> as Mac>::new(&Default::default())
}

/// With a key, `text` sealed; without, as it is.
pub(crate) fn seal(signer: Option<&Signer>, text: Vec<u8>) -> Vec<u8> {
    match signer {
        Some(signer) => signer.seal_text(&text),
        None => text,
    }
}

/// With a key, the text of a value sealed with it (else `None`); without, as it is.
pub(crate) fn open<'a>(signer: Option<&Signer>, value: &'a [u8]) -> Option<&'a [u8]> {
    match signer {
        Some(signer) => signer.open_text(value),
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_opens_what_it_sealed() {
        let signer = Signer::new(b"a-signing-key-of-at-least-32-bytes!!");
        let sealed = signer.seal_text(br#"{"change":"recovered"}"#);
        assert_eq!(
            signer.open_text(&sealed),
            Some(br#"{"change":"recovered"}"#.as_slice())
        );
        let other = Signer::new(b"another-signing-key-of-32-bytes-or-more");
        assert_eq!(other.open_text(&sealed), None, "another key");
        assert_eq!(
            signer.open_text(br#"{"change":"recovered"}"#),
            None,
            "unsigned"
        );
        let mut altered = sealed.clone();
        altered[2] ^= 1;
        assert_eq!(signer.open_text(&altered), None, "altered text");
        let mut bad_hex = sealed;
        let last = bad_hex.len() - 1;
        bad_hex[last] = b'z';
        assert_eq!(signer.open_text(&bad_hex), None, "not hex");
        assert_eq!(format!("{signer:?}"), "Signer(<redacted>)");
    }
}
