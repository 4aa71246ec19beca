//! Response media types: which of the two GraphQL-over-HTTP JSON media types a request
//! accepts, read from its `Accept` header(s).
//!
//! The rules of the GraphQL-over-HTTP specification ("Accept", "Body"):
//! - no `Accept` header (or only empty ones): `application/json`, for legacy clients;
//! - quality values (`q=`) and the wildcards `*/*` and `application/*` count, and the most
//!   specific range that matches a media type gives its quality (RFC 9110 §12.5.1);
//! - every `Accept` line counts, not just the first;
//! - between two media types of equal quality, one the client names beats one it reaches
//!   only by a wildcard; named alike, `application/graphql-response+json` wins; reached
//!   only through wildcards (`*/*`, as curl sends), `application/json` wins, as the
//!   graphql-http audits expect;
//! - nothing acceptable: `None`, and the caller answers 406.
//!
//! The header is attacker input: at most [`MAX_MEDIA_RANGES`] ranges are read, nothing is
//! allocated, and every step is a bounded scan of the header's bytes.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

/// The most media ranges read from a request's `Accept` headers; later ones are ignored.
/// Real clients send a handful.
const MAX_MEDIA_RANGES: usize = 32;

/// A JSON media type a GraphQL response can be sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseMedia {
    /// `application/graphql-response+json`: status codes tell request errors apart.
    GraphqlResponseJson,
    /// `application/json`: what legacy clients understand; request errors are `200`.
    Json,
}

impl ResponseMedia {
    /// The `Content-Type` of a response in this media type, with `charset=utf-8`.
    pub(crate) fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            ResponseMedia::GraphqlResponseJson => {
                "application/graphql-response+json; charset=utf-8"
            }
            ResponseMedia::Json => "application/json; charset=utf-8",
        })
    }
}

/// How well one media type is accepted: its quality (in thousandths) and how specific the
/// range that gave it was (0: none matched, 1: `*/*`, 2: `application/*`, 3: the type itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Acceptance {
    specificity: u8,
    quality: u16,
}

impl Acceptance {
    /// Takes `range` into account: a more specific range overrides a less specific one;
    /// among equally specific ones the best quality counts.
    fn consider(&mut self, specificity: u8, quality: u16) {
        if specificity > self.specificity
            || (specificity == self.specificity && quality > self.quality)
        {
            *self = Acceptance {
                specificity,
                quality,
            };
        }
    }
}

/// The media type to answer `headers`' request in. `None` when the request accepts
/// neither (then the caller answers 406).
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<ResponseMedia> {
    let mut graphql = Acceptance::default();
    let mut json = Acceptance::default();
    let mut ranges = 0;
    'lines: for line in headers.get_all(ACCEPT) {
        for range in line.as_bytes().split(|b| *b == b',') {
            let range = range.trim_ascii();
            if range.is_empty() {
                continue;
            }
            if ranges == MAX_MEDIA_RANGES {
                break 'lines;
            }
            ranges += 1;
            let Some(range) = MediaRange::parse(range) else {
                continue;
            };
            if let Some(specificity) = range.matches(b"graphql-response+json") {
                graphql.consider(specificity, range.quality);
            }
            if let Some(specificity) = range.matches(b"json") {
                json.consider(specificity, range.quality);
            }
        }
    }
    if ranges == 0 {
        // No `Accept` header, or only empty ones: a legacy client.
        return Some(ResponseMedia::Json);
    }
    let rank = |a: Acceptance| (a.quality, a.specificity);
    match (graphql.quality, json.quality) {
        (0, 0) => None,
        _ if rank(graphql) > rank(json) => Some(ResponseMedia::GraphqlResponseJson),
        _ if rank(json) > rank(graphql) => Some(ResponseMedia::Json),
        // Both named explicitly, equally: the spec's own media type.
        _ if graphql.specificity == 3 => Some(ResponseMedia::GraphqlResponseJson),
        // Both only through the same wildcard (`*/*`, `application/*`).
        _ => Some(ResponseMedia::Json),
    }
}

/// One parsed media range of an `Accept` header.
#[derive(Debug, Clone, Copy)]
struct MediaRange<'a> {
    ty: &'a [u8],
    subtype: &'a [u8],
    /// Thousandths: `q=0.5` is 500; no `q` is 1000.
    quality: u16,
    /// A `charset` other than UTF-8 was asked for; we answer in nothing else.
    foreign_charset: bool,
}

impl<'a> MediaRange<'a> {
    /// `type/subtype *( ; name=value )`. `None` for a range that is not well-formed (it
    /// then counts for nothing).
    fn parse(range: &'a [u8]) -> Option<Self> {
        let mut parts = range.split(|b| *b == b';');
        let essence = parts.next()?.trim_ascii();
        let slash = essence.iter().position(|b| *b == b'/')?;
        let (ty, subtype) = (
            essence[..slash].trim_ascii(),
            essence[slash + 1..].trim_ascii(),
        );
        if ty.is_empty() || subtype.is_empty() || (ty == b"*" && subtype != b"*") {
            return None;
        }
        let mut quality = 1000;
        let mut foreign_charset = false;
        for param in parts {
            let Some(eq) = param.iter().position(|b| *b == b'=') else {
                continue;
            };
            let name = param[..eq].trim_ascii();
            let value = param[eq + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"q") {
                quality = parse_quality(value)?;
                // RFC 9110: parameters after the weight are accept extensions, not media
                // type parameters.
                break;
            }
            if name.eq_ignore_ascii_case(b"charset") {
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                foreign_charset = !value.eq_ignore_ascii_case(b"utf-8");
            }
        }
        Some(Self {
            ty,
            subtype,
            quality,
            foreign_charset,
        })
    }

    /// How specifically this range matches `application/<subtype>`, if it does.
    fn matches(&self, subtype: &[u8]) -> Option<u8> {
        if self.foreign_charset {
            return None;
        }
        if self.ty == b"*" {
            return Some(1);
        }
        if !self.ty.eq_ignore_ascii_case(b"application") {
            return None;
        }
        if self.subtype == b"*" {
            Some(2)
        } else if self.subtype.eq_ignore_ascii_case(subtype) {
            Some(3)
        } else {
            None
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_quality(value: &[u8]) -> Option<u16> {
    let (whole, fraction) = match value.iter().position(|b| *b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.iter().enumerate() {
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `application/json` or `application/*+json`.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence
                    .get(..12)
                    .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
                    && essence
                        .get(essence.len().saturating_sub(5)..)
                        .is_some_and(|s| s.eq_ignore_ascii_case("+json"))
        })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::ResponseMedia::{GraphqlResponseJson, Json};
    use super::*;

    fn accept(lines: &[&str]) -> Option<ResponseMedia> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(ACCEPT, HeaderValue::from_str(line).unwrap());
        }
        negotiate(&headers)
    }

    #[test]
    fn no_or_empty_accept_is_json_for_legacy_clients() {
        assert_eq!(accept(&[]), Some(Json));
        assert_eq!(accept(&[""]), Some(Json));
        assert_eq!(accept(&[" , ,"]), Some(Json));
    }

    #[test]
    fn named_types_are_honoured() {
        assert_eq!(accept(&["application/json"]), Some(Json));
        assert_eq!(
            accept(&["application/graphql-response+json"]),
            Some(GraphqlResponseJson)
        );
        assert_eq!(accept(&["Application/JSON; charset=UTF-8"]), Some(Json));
        assert_eq!(
            accept(&["application/graphql-response+json; charset=\"utf-8\""]),
            Some(GraphqlResponseJson)
        );
    }

    #[test]
    fn quality_values_decide() {
        // What the spec tells clients to send when unsure of the server.
        assert_eq!(
            accept(&["application/graphql-response+json, application/json;q=0.9"]),
            Some(GraphqlResponseJson)
        );
        assert_eq!(
            accept(&["application/graphql-response+json;q=0.8, application/json"]),
            Some(Json)
        );
        assert_eq!(
            accept(&["application/json;q=0.1, application/graphql-response+json;q=0.100"]),
            Some(GraphqlResponseJson),
            "equal qualities tie"
        );
        assert_eq!(accept(&["application/json;q=0"]), None);
        assert_eq!(
            accept(&["application/json;q=0, */*"]),
            Some(GraphqlResponseJson),
            "json is refused outright; the wildcard still admits the other"
        );
    }

    #[test]
    fn ties_prefer_graphql_response_json_when_named() {
        assert_eq!(
            accept(&["application/json, application/graphql-response+json"]),
            Some(GraphqlResponseJson)
        );
    }

    #[test]
    fn wildcards_match_and_prefer_json() {
        assert_eq!(accept(&["*/*"]), Some(Json));
        assert_eq!(accept(&["application/*"]), Some(Json));
        assert_eq!(accept(&["text/html, */*;q=0.8"]), Some(Json));
        assert_eq!(
            accept(&["application/graphql-response+json, */*"]),
            Some(GraphqlResponseJson),
            "a named type beats one reached by a wildcard"
        );
        assert_eq!(
            accept(&["application/graphql-response+json;q=0.5, */*"]),
            Some(Json),
            "a better quality beats a named type"
        );
        assert_eq!(
            accept(&["application/*;q=0.2, application/json;q=0.1, */*"]),
            Some(GraphqlResponseJson),
            "the most specific range gives the quality"
        );
    }

    #[test]
    fn every_accept_line_counts() {
        assert_eq!(
            accept(&["text/html", "application/graphql-response+json"]),
            Some(GraphqlResponseJson)
        );
        assert_eq!(accept(&["text/html", "", "application/json"]), Some(Json));
    }

    #[test]
    fn nothing_acceptable_is_none() {
        assert_eq!(accept(&["text/html"]), None);
        assert_eq!(accept(&["application/xml, text/*"]), None);
        assert_eq!(accept(&["application/json; charset=latin1"]), None);
        assert_eq!(accept(&["garbage"]), None);
    }

    #[test]
    fn malformed_ranges_count_for_nothing() {
        assert_eq!(accept(&["application/json;q=2"]), None);
        assert_eq!(accept(&["application/json;q=0.1234"]), None);
        assert_eq!(accept(&["application/json;q=x, */json"]), None);
        assert_eq!(accept(&["/json, application/"]), None);
        assert_eq!(accept(&["application/json;q=1.0"]), Some(Json));
        assert_eq!(
            accept(&["application/json;q=0.5;ext=1, application/graphql-response+json;q=0.4"]),
            Some(Json),
            "parameters after q are accept extensions"
        );
    }

    #[test]
    fn hostile_headers_are_bounded_and_never_panic() {
        // Past the cap, ranges are not read: the acceptable type comes too late.
        let mut long = "text/html, ".repeat(MAX_MEDIA_RANGES);
        long.push_str("application/json");
        assert_eq!(accept(&[&long]), None);
        let many: Vec<&str> = std::iter::repeat_n("text/plain", MAX_MEDIA_RANGES)
            .chain(["application/json"])
            .collect();
        assert_eq!(accept(&many), None);
        // Empty elements do not count against the cap.
        let commas = format!("{}application/json", ",".repeat(10_000));
        assert_eq!(accept(&[&commas]), Some(Json));

        for odd in [
            "/",
            "*/",
            ";",
            "=",
            ";q=",
            "a/b;q=.",
            "a/b;q=1.",
            "a/b;=;=",
            "*/*;q=0.",
            "*/*;q=-1",
            "*/*;q=1.001",
            "*/*;Q=0.7",
            "\"",
            "a/b;charset=",
        ] {
            let _ = accept(&[odd]);
        }
        assert_eq!(accept(&["*/*;Q=0.7"]), Some(Json));
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_bytes(b"application/json\xff\xfe").unwrap(),
        );
        assert_eq!(negotiate(&headers), None);
    }

    #[test]
    fn content_types_carry_utf8() {
        assert_eq!(
            GraphqlResponseJson.content_type(),
            "application/graphql-response+json; charset=utf-8"
        );
        assert_eq!(Json.content_type(), "application/json; charset=utf-8");
    }
}
