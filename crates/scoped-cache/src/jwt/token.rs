//! Finding the bearer token in a request: the `Authorization` header first, then an
//! optional cookie.

use headers::{Cookie, HeaderMapExt};
use http::{HeaderMap, header};

use crate::rejection::AuthErrorKind;
use crate::wire::credential::{Authorization, authorization};

/// Whether every byte of `token` is one of RFC 6750's `b64token` (letters, digits and
/// `-._~+/=`), which a JWT is. Written without branches, so the compiler can check many
/// bytes at a time.
pub(crate) fn is_b64token(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| {
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        let other = (b == b'-') | (b == b'.') | (b == b'_') | (b == b'~');
        let base64 = (b == b'+') | (b == b'/') | (b == b'=');
        ok & (letter | digit | other | base64)
    })
}

/// Where tokens are looked for, and how large they may be.
#[derive(Debug, Clone)]
pub(crate) struct TokenSource {
    pub(crate) cookie: Option<String>,
    pub(crate) max_bytes: usize,
    /// Whether an `Authorization` header with another scheme leaves the request anonymous
    /// (a proxy adds `Basic`) instead of being refused.
    pub(crate) ignore_other_schemes: bool,
}

impl TokenSource {
    /// The request's token, `None` when it has none, or why its credentials are unusable.
    ///
    /// The header is checked for duplicates and size before it is parsed, so no work is
    /// spent on a header that is refused anyway.
    pub(crate) fn extract<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<&'h str>, AuthErrorKind> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        if let Some(value) = values.next() {
            if values.next().is_some() {
                return Err(AuthErrorKind::DuplicateHeader);
            }
            if value.len() > self.max_bytes {
                return Err(AuthErrorKind::HeaderTooLarge);
            }
            let token = match authorization(value.as_bytes()) {
                Authorization::Bearer(token) => token,
                Authorization::EmptyBearer => return Err(AuthErrorKind::Malformed),
                // A proxy's `Basic` credentials are not ours to judge.
                Authorization::Other if self.ignore_other_schemes => return Ok(None),
                // A client that sends its JWT under the wrong scheme must be told, not
                // silently served public data.
                Authorization::Other => return Err(AuthErrorKind::UnsupportedScheme),
            };
            // Borrowed from the request without a copy. Whether it is a `b64token` at all is
            // checked by the verifier, and only for a token it has not verified before: a
            // token found in its cache is the same bytes as one that passed.
            return std::str::from_utf8(token)
                .map(Some)
                .map_err(|_| AuthErrorKind::Malformed);
        }
        let Some(name) = &self.cookie else {
            return Ok(None);
        };
        let Some(cookies) = headers.typed_get::<Cookie>() else {
            return Ok(None);
        };
        match cookies.get(name) {
            None | Some("") => Ok(None),
            Some(token) if token.len() > self.max_bytes => Err(AuthErrorKind::HeaderTooLarge),
            Some(token) => {
                // Cookie values are borrowed from a parsed copy; find the same bytes in the
                // original header to hand out a borrow of the request.
                find_in_headers(headers, token)
                    .map(Some)
                    .ok_or(AuthErrorKind::Malformed)
            }
        }
    }
}

fn find_in_headers<'h>(headers: &'h HeaderMap, needle: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().find_map(|value| {
        let text = value.to_str().ok()?;
        let start = text.find(needle)?;
        text.get(start..start + needle.len())
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn source(cookie: Option<&str>) -> TokenSource {
        TokenSource {
            cookie: cookie.map(str::to_owned),
            max_bytes: 64,
            ignore_other_schemes: false,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn every_byte_is_classified_as_rfc_6750_says() {
        for b in 0..=255u8 {
            let b64token = b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            assert_eq!(is_b64token(&[b]), b64token, "{b}");
            assert_eq!(is_b64token(&[b'a', b, b'z']), b64token, "{b}");
        }
        assert!(is_b64token(b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer a.b.c", "bearer a.b.c", "BEARER a.b.c"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(source(None).extract(&h), Ok(Some("a.b.c")), "{value}");
        }
    }

    #[test]
    fn no_header_is_anonymous() {
        assert_eq!(source(None).extract(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn empty_credentials_are_malformed() {
        for value in ["Bearer", "Bearer ", "bearer   "] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(
                source(None).extract(&h),
                Err(AuthErrorKind::Malformed),
                "{value}"
            );
        }
    }

    #[test]
    fn other_schemes_are_refused_unless_ignored() {
        let ignoring = TokenSource {
            ignore_other_schemes: true,
            ..source(None)
        };
        for value in [
            "Basic dXNlcjpwYXNz",
            "Token a.b.c",
            "Bearerx a.b.c",
            "eyJ.a.b",
        ] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(
                source(None).extract(&h),
                Err(AuthErrorKind::UnsupportedScheme),
                "{value}"
            );
            assert_eq!(ignoring.extract(&h), Ok(None), "{value}");
        }
    }

    #[test]
    fn duplicate_and_oversized_headers_are_refused() {
        let twice = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            source(None).extract(&twice),
            Err(AuthErrorKind::DuplicateHeader)
        );
        let long = format!("Bearer {}", "x".repeat(100));
        let big = headers(&[("authorization", &long)]);
        assert_eq!(
            source(None).extract(&big),
            Err(AuthErrorKind::HeaderTooLarge)
        );
    }

    #[test]
    fn cookie_is_used_only_when_configured_and_header_absent() {
        let h = headers(&[("cookie", "theme=dark; session=c.o.k")]);
        assert_eq!(source(None).extract(&h), Ok(None));
        assert_eq!(source(Some("session")).extract(&h), Ok(Some("c.o.k")));
        let both = headers(&[
            ("cookie", "session=c.o.k"),
            ("authorization", "Bearer h.d.r"),
        ]);
        assert_eq!(source(Some("session")).extract(&both), Ok(Some("h.d.r")));
    }
}
