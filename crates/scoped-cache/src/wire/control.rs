//! Reading and rewriting the application's `Cache-Control`.
//!
//! `headers::CacheControl` drops the whole header when one directive has a bad value and
//! matches names case-sensitively, so `No-Store, max-age=x` would read as "no header": a
//! cache must fail closed instead. This parser is case-insensitive, respects quoted
//! strings, and reports any malformed directive so the response is not stored.

use std::time::Duration;

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderValue};

/// The directives that matter for storing a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) max_age: Option<Duration>,
    /// RFC 5861: how long past `max-age` the response may be served while it is
    /// revalidated in the background.
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// RFC 5861: how long past `max-age` the response may be served when revalidating fails.
    pub(crate) stale_if_error: Option<Duration>,
}

/// The header could not be read with certainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// All `Cache-Control` headers of `headers`, merged.
pub(crate) fn parse(headers: &HeaderMap) -> Result<Directives, Malformed> {
    let mut out = Directives::default();
    for value in headers.get_all(CACHE_CONTROL) {
        let text = value.to_str().map_err(|_| Malformed)?;
        for directive in split(text)? {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim())),
                None => (directive, None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => out.no_store = true,
                "no-cache" => out.no_cache = true,
                "private" => out.private = true,
                "max-age" => strictest(&mut out.max_age, seconds(argument)?),
                "stale-while-revalidate" => {
                    strictest(&mut out.stale_while_revalidate, seconds(argument)?);
                }
                "stale-if-error" => strictest(&mut out.stale_if_error, seconds(argument)?),
                "s-maxage" => {
                    seconds(argument)?;
                }
                "" => return Err(Malformed),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// A delta-seconds argument (quotes tolerated).
fn seconds(argument: Option<&str>) -> Result<Duration, Malformed> {
    argument
        .map(|a| a.trim_matches('"'))
        .and_then(|a| a.parse::<u64>().ok())
        .map(Duration::from_secs)
        .ok_or(Malformed)
}

/// Several values of one directive: the shortest wins.
fn strictest(slot: &mut Option<Duration>, value: Duration) {
    *slot = Some(slot.map_or(value, |current| current.min(value)));
}

/// Splits on commas outside quoted strings; trims; drops empty elements (RFC 9110 lists).
fn split(text: &str) -> Result<Vec<&str>, Malformed> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(Malformed);
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    Ok(parts)
}

/// Whether `headers` hold what [`make_private`] writes, so there is nothing to rewrite:
/// one `Cache-Control` whose first directive is `private` and that names no other
/// `private`, `public` or `s-maxage` (looked for anywhere, case-insensitively: a false
/// alarm only takes the rewriting path). Entries of scoped operations are stored that
/// way, so their hits pass here.
fn is_private(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CACHE_CONTROL).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some(rest) = value.as_bytes().strip_prefix(b"private") else {
        return false;
    };
    let names = |needle: &[u8]| {
        rest.windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
    };
    (rest.is_empty() || rest.starts_with(b", "))
        && !names(b"private")
        && !names(b"public")
        && !names(b"s-maxage")
}

/// Marks the response private for downstream caches while keeping every other directive
/// the application sent (`no-store`, `no-cache`, `max-age`, ...). `public` and `s-maxage`
/// address shared caches and are dropped.
pub(crate) fn make_private(headers: &mut HeaderMap) {
    if is_private(headers) {
        return;
    }
    let mut kept = vec!["private".to_owned()];
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in split(text).unwrap_or_default() {
            let name = directive
                .split('=')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !matches!(name.as_str(), "public" | "s-maxage" | "private") {
                kept.push(directive.to_owned());
            }
        }
    }
    let value = HeaderValue::from_str(&kept.join(", "))
        .unwrap_or(HeaderValue::from_static("private, no-store"));
    headers.insert(CACHE_CONTROL, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn reads_directives_case_insensitively() {
        let d = parse(&headers("Max-Age=30, PRIVATE")).unwrap();
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        assert!(d.private);
        assert!(parse(&headers("No-Store")).unwrap().no_store);
        assert!(
            parse(&headers("no-cache=\"set-cookie, x\""))
                .unwrap()
                .no_cache
        );
        assert_eq!(parse(&HeaderMap::new()).unwrap(), Directives::default());
    }

    #[test]
    fn malformed_values_fail_closed() {
        for bad in [
            "no-store, max-age=abc",
            "private, s-maxage=x",
            "max-age",
            "private=\"unterminated",
            "=5",
        ] {
            assert_eq!(parse(&headers(bad)), Err(Malformed), "{bad}");
        }
    }

    #[test]
    fn several_headers_and_max_ages_take_the_strictest() {
        let mut h = headers("max-age=60");
        h.append(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=10, no-cache"),
        );
        let d = parse(&h).unwrap();
        assert_eq!(d.max_age, Some(Duration::from_secs(10)));
        assert!(d.no_cache);
    }

    #[test]
    fn reads_rfc_5861_directives() {
        let d = parse(&headers(
            "max-age=2, stale-while-revalidate=30, Stale-If-Error=600",
        ))
        .unwrap();
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(600)));
        assert_eq!(
            parse(&headers("stale-while-revalidate=soon")),
            Err(Malformed)
        );
    }

    #[test]
    fn privatising_keeps_other_directives() {
        let mut h = headers("public, max-age=30, s-maxage=60, no-cache");
        make_private(&mut h);
        assert_eq!(h[CACHE_CONTROL], "private, max-age=30, no-cache");
        let mut empty = HeaderMap::new();
        make_private(&mut empty);
        assert_eq!(empty[CACHE_CONTROL], "private");
    }

    #[test]
    fn what_make_private_writes_reads_as_private() {
        for value in [
            "public, max-age=30",
            "no-cache",
            "private",
            "Private, max-age=5",
        ] {
            let mut h = headers(value);
            assert!(!is_private(&h) || value == "private", "{value}");
            make_private(&mut h);
            assert!(is_private(&h), "{value}");
        }
        let mut empty = HeaderMap::new();
        assert!(!is_private(&empty));
        make_private(&mut empty);
        assert!(is_private(&empty));
        // Two headers are rewritten into one: a second one could say anything.
        let mut two = headers("private");
        two.append(CACHE_CONTROL, HeaderValue::from_static("public"));
        assert!(!is_private(&two));
        make_private(&mut two);
        assert_eq!(two[CACHE_CONTROL], "private");
        assert_eq!(two.get_all(CACHE_CONTROL).iter().count(), 1);
        // Private first, but still addressing shared caches: rewritten.
        for value in [
            "privately",
            "private, public",
            "private, max-age=5, S-MaxAge=60",
            "private, private",
        ] {
            assert!(!is_private(&headers(value)), "{value}");
        }
        let mut mixed = headers("private, max-age=5, S-MaxAge=60");
        make_private(&mut mixed);
        assert_eq!(mixed[CACHE_CONTROL], "private, max-age=5");
    }
}
