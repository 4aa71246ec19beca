//! The one bounded body reader: request bodies (the guard's, the operator routes'),
//! responses a layer stores, and the length check every caller shares.

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than the limit, as declared or as read.
    TooLarge,
    /// The body failed while it was read.
    Unreadable,
}

/// The length `headers` declare (`Content-Length`, surrounding whitespace allowed), if
/// they declare one that parses.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads a body of at most `limit` bytes. With the message's `headers`, a declared
/// length beyond the limit is refused before anything is read; without them (a response
/// whose size hint was already checked), a body that breaks its promise is cut off at
/// the limit rather than buffered without bound.
pub(crate) async fn read_bounded(
    headers: Option<&HeaderMap>,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    if headers
        .and_then(declared_length)
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if is_length_limit(&*err) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// Whether `error` is, or was caused by, a body length limit: this reader's, or one an
/// outer layer (axum's `DefaultBodyLimit`, tower-http's) put on the body.
pub(crate) fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<LengthLimitError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, value.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_no_further() {
        let read = |text: &'static str, limit| read_bounded(None, Body::from(text), limit);
        assert_eq!(read("12345", 5).await, Ok(Bytes::from_static(b"12345")));
        assert_eq!(read("123456", 5).await, Err(BodyError::TooLarge));
        assert_eq!(read("", 0).await, Ok(Bytes::new()));
    }

    #[tokio::test]
    async fn a_declared_length_beyond_the_limit_is_refused_before_reading() {
        for declared in ["6", " 6 ", "99999999999999"] {
            let headers = length(declared);
            let read = read_bounded(Some(&headers), Body::from("1"), 5).await;
            assert_eq!(read, Err(BodyError::TooLarge), "{declared:?}");
        }
        assert_eq!(declared_length(&length(" 12 ")), Some(12));
        assert_eq!(declared_length(&length("x")), None);
    }

    #[test]
    fn a_limit_is_found_anywhere_in_the_chain_of_causes() {
        #[derive(Debug)]
        struct Wrapped(LengthLimitError);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        // `LengthLimitError` has no public constructor: take one from a real overflow.
        let overflow =
            futures_util::FutureExt::now_or_never(Limited::new(Body::from("xx"), 1).collect())
                .unwrap()
                .unwrap_err();
        let limit = overflow.downcast::<LengthLimitError>().unwrap();
        assert!(is_length_limit(&Wrapped(*limit)));
        assert!(!is_length_limit(&std::io::Error::other("boom")));
    }
}
