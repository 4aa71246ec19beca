//! Reading an `Authorization` header value: shared by the token extractor (verification)
//! and the admin router, so neither imports the other and both read the scheme alike.

/// What an `Authorization` value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authorization<'a> {
    /// `Bearer <credential>` (scheme case-insensitive, RFC 6750 §2.1), the credential
    /// without surrounding spaces. Not checked further.
    Bearer(&'a [u8]),
    /// `Bearer` with nothing after it.
    EmptyBearer,
    /// Another scheme (`Basic ...`), or none (`Bearerabc`).
    Other,
}

/// Reads `value` once, in time linear in its length, without allocating.
pub(crate) fn authorization(value: &[u8]) -> Authorization<'_> {
    const SCHEME: &[u8] = b"bearer";
    let Some((scheme, rest)) = value.split_at_checked(SCHEME.len()) else {
        return Authorization::Other;
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Authorization::Other;
    }
    match rest.first() {
        None => Authorization::EmptyBearer,
        Some(b' ') => match rest.trim_ascii() {
            [] => Authorization::EmptyBearer,
            credential => Authorization::Bearer(credential),
        },
        Some(_) => Authorization::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_needs_a_credential() {
        use Authorization::{Bearer, EmptyBearer, Other};
        assert_eq!(authorization(b"Bearer abc"), Bearer(b"abc"));
        assert_eq!(authorization(b"bEaReR   abc "), Bearer(b"abc"));
        assert_eq!(authorization(b"Bearer"), EmptyBearer);
        assert_eq!(authorization(b"Bearer   "), EmptyBearer);
        assert_eq!(authorization(b"Bearerabc"), Other);
        assert_eq!(authorization(b"Basic abc"), Other);
        assert_eq!(authorization(b"Bear"), Other);
        assert_eq!(authorization(b""), Other);
    }
}
