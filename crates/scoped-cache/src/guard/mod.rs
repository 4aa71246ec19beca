//! Checks on every request of a verifying route, before anything parses it.
//!
//! The layer stands in front of the application's GraphQL parser, so it keeps from it what
//! would crash it or run where it must not:
//! - bodies beyond `max_request_bytes`, whatever their content type (413);
//! - documents nested deeper than `max_nesting`, or expanding (fragments spread where they
//!   are spread) to more than `max_selections` fields, in a GET query string, a JSON body
//!   (one request or a batch) or the `operations` of a multipart upload (400);
//! - operations other than queries sent with GET or HEAD (405), and bodies on HEAD (dropped);
//! - requests that ride a cookie token across sites: such a request must not be a
//!   CORS-"simple" form post, and must not come from another origin (415 / 403).
//!
//! Every check is one linear pass over bounded input.

use std::borrow::Cow;

use async_graphql::parser::parse_query;
use async_graphql::parser::types::OperationType;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Method, request};
use serde::Deserialize;

use crate::graphql::document::{expanded_selections, select_operation_type};
pub(crate) use crate::graphql::nesting::{
    self, DEFAULT_MAX_NESTING, DEFAULT_MAX_SELECTIONS, MAX_MAX_NESTING,
};
use crate::wire::body::BodyError;
use crate::wire::get::GetParams;
use crate::wire::media::is_json;

/// What a GraphQL document may cost before anything parses or runs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocumentLimits {
    /// Deepest nesting of `{`, `[`, `(`.
    pub(crate) nesting: usize,
    /// Most field selections once every fragment spread is expanded.
    pub(crate) selections: u64,
}

/// Checks one GraphQL document: its nesting by a linear scan, then, only if it has
/// fragments (the one way a document's executed size can exceed its text), its expanded
/// size by a linear count over the parsed document.
pub(crate) fn check_document(query: &str, limits: &DocumentLimits) -> Result<(), Refusal> {
    let shape = nesting::check(query.as_bytes(), limits.nesting).map_err(|_| Refusal::TooDeep)?;
    if shape.spreads
        && let Ok(doc) = parse_query(query)
        && expanded_selections(&doc) > limits.selections
    {
        return Err(Refusal::TooManySelections);
    }
    Ok(())
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Why the layer answers a request itself instead of passing it on: the crate's one
/// vocabulary ([`RefusalKind`]), answered by [`RefusalKind::into_response`].
pub(crate) use crate::rejection::RefusalKind as Refusal;

/// A body the bounded reader did not read, refused.
impl From<BodyError> for Refusal {
    fn from(err: BodyError) -> Self {
        match err {
            BodyError::TooLarge => Refusal::BodyTooLarge,
            BodyError::Unreadable => Refusal::BodyUnreadable,
        }
    }
}

/// What a JSON body turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonBody {
    /// One GraphQL request or a batch, every document within the nesting limit.
    GraphQl,
    /// Not JSON of that shape: async-graphql will refuse it without parsing a document.
    NotGraphQl,
}

/// The one field of a GraphQL request whose text reaches the GraphQL parser. Other fields
/// are skipped (serde_json bounds their nesting itself, at 128 levels).
#[derive(Deserialize)]
struct QueryOnly<'a> {
    #[serde(borrow, default)]
    query: Option<Cow<'a, str>>,
}

/// Checks a JSON body (one request or a batch) the way async-graphql will read it.
///
/// The usual shapes (an object with `query`, or an array of them) are read without
/// building a tree. Any other JSON is read in full and **every** string in it is checked
/// as a document: serde builds a request from an array too (`["{ doc }"]` is a request
/// whose `query` is its first element), and a shape the layer cannot classify must never
/// reach the parser unchecked.
pub(crate) fn check_json(body: &[u8], limits: &DocumentLimits) -> Result<JsonBody, Refusal> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let usual: Option<Vec<QueryOnly<'_>>> = if first == Some(&b'[') {
        serde_json::from_slice(body).ok()
    } else {
        serde_json::from_slice(body).ok().map(|one| vec![one])
    };
    if let Some(queries) = usual {
        for query in queries.iter().filter_map(|q| q.query.as_deref()) {
            check_document(query, limits)?;
        }
        return Ok(JsonBody::GraphQl);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        // Not JSON at all: async-graphql reads it with serde_json too and refuses it.
        return Ok(JsonBody::NotGraphQl);
    };
    // serde_json bounds the tree at 128 levels; walk it without recursion anyway.
    let mut pending = vec![&value];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::String(text) => check_document(text, limits)?,
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(map) => pending.extend(map.values()),
            _ => {}
        }
    }
    Ok(JsonBody::NotGraphQl)
}

/// Checks the `operations` of a GraphQL multipart request (the part async-graphql parses).
pub(crate) async fn check_multipart(
    content_type: &str,
    body: Bytes,
    limits: &DocumentLimits,
) -> Result<(), Refusal> {
    // Read the boundary as async-graphql does (any `multipart/*` type, `mime`'s parser):
    // `multer::parse_boundary` accepts `multipart/form-data` only, and a request it cannot
    // read must not be one async-graphql reads unchecked.
    let boundary = content_type
        .parse::<mime::Mime>()
        .ok()
        .and_then(|mime| mime.get_param(mime::BOUNDARY).map(|b| b.to_string()));
    let Some(boundary) = boundary else {
        // async-graphql refuses a multipart request without a boundary.
        return Ok(());
    };
    let stream = futures_util::stream::iter([Ok::<Bytes, std::convert::Infallible>(body)]);
    let mut multipart = multer::Multipart::new(stream, boundary);
    // A malformed multipart body is refused by async-graphql as well.
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("operations") {
            // async-graphql asserts (panics) on an `operations` part that is itself
            // multipart; nothing legitimate sends one.
            if field
                .content_type()
                .is_some_and(|mime| mime.type_() == "multipart")
            {
                return Err(Refusal::MalformedJson);
            }
            let Ok(text) = field.bytes().await else {
                return Ok(());
            };
            check_json(&text, limits)?;
        }
    }
    Ok(())
}

/// The parts of a GET (or HEAD) query string that name the operation to run.
#[derive(Debug, Default)]
pub(crate) struct GetRequest {
    queries: Vec<String>,
    operation_names: Vec<String>,
    persisted_hash: Option<String>,
}

impl GetRequest {
    /// Reads the query string (one linear pass, a repeated GraphQL parameter refused, as
    /// async-graphql refuses it; that also keeps the checks below linear: one document
    /// against one operation name) and checks its `query` for nesting.
    pub(crate) fn read(query_string: &str, limits: &DocumentLimits) -> Result<Self, Refusal> {
        let params =
            GetParams::read(query_string.as_bytes()).map_err(|_| Refusal::RepeatedParameter)?;
        let mut out = Self::default();
        // async-graphql takes an empty `query` as none (then a persisted query's hash
        // supplies the document).
        if let Some(query) = params.query.filter(|query| !query.is_empty()) {
            check_document(&query, limits)?;
            out.queries.push(query);
        }
        out.operation_names.extend(params.operation_name);
        out.persisted_hash = params.extensions.as_deref().and_then(persisted_hash);
        Ok(out)
    }

    /// The hash of an automatic persisted query sent without its document.
    pub(crate) fn hash_only(&self) -> Option<&str> {
        self.queries
            .is_empty()
            .then_some(self.persisted_hash.as_deref())
            .flatten()
    }

    /// Refuses the request if any document it carries would run something other than a
    /// query. Documents that do not parse, or name no operation the server could pick,
    /// are left to the server, which refuses them without executing anything.
    pub(crate) fn check_only_queries(&self, persisted: Option<&str>) -> Result<(), Refusal> {
        let documents = self.queries.iter().map(String::as_str).chain(persisted);
        for document in documents {
            let Ok(doc) = parse_query(document) else {
                continue;
            };
            let names: Vec<Option<&str>> = if self.operation_names.is_empty() {
                vec![None]
            } else {
                self.operation_names
                    .iter()
                    .map(|n| Some(n.as_str()))
                    .collect()
            };
            for name in names {
                if select_operation_type(&doc, name).is_some_and(|ty| ty != OperationType::Query) {
                    return Err(Refusal::NotAQueryOverGet);
                }
            }
        }
        Ok(())
    }
}

/// The persisted query's hash, read as async-graphql reads `extensions`: a map, where a
/// repeated key's last value wins. Any `persistedQuery` entry counts, hash or not, so a
/// request the layer cannot read fully is treated as naming a document it has not seen.
fn persisted_hash(extensions: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(extensions).ok()?;
    let persisted = value.get("persistedQuery")?;
    Some(
        persisted
            .get("sha256Hash")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Refuses a state-changing request authenticated by a cookie when a browser could have
/// sent it from another site: it must be JSON (a cross-site form cannot send that without
/// a CORS preflight), and `Origin` / `Sec-Fetch-Site`, when present, must say same origin.
pub(crate) fn check_cookie_request(parts: &request::Parts) -> Result<(), Refusal> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = &parts.headers;
    if headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(Refusal::CrossSite);
    }
    if let Some(origin) = headers.get(ORIGIN)
        && !same_origin(origin.as_bytes(), parts)
    {
        return Err(Refusal::CrossSite);
    }
    if !is_json(headers) {
        return Err(Refusal::CookieNeedsJson);
    }
    Ok(())
}

/// Whether `Origin` (`scheme://host[:port]`) names the host the request was sent to: the
/// URI's authority, `Host`, or the first `X-Forwarded-Host` (a proxy in front may rewrite
/// `Host`; a cross-site page cannot add that header without a CORS preflight).
fn same_origin(origin: &[u8], parts: &request::Parts) -> bool {
    let Some(rest) = origin
        .strip_prefix(b"https://")
        .or_else(|| origin.strip_prefix(b"http://"))
    else {
        // `null` and other opaque origins are never the same origin.
        return false;
    };
    let forwarded = parts.headers.get(X_FORWARDED_HOST).and_then(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .next()
            .map(<[u8]>::trim_ascii)
    });
    [
        parts.uri.authority().map(|a| a.as_str().as_bytes()),
        parts.headers.get(HOST).map(HeaderValue::as_bytes),
        forwarded,
    ]
    .into_iter()
    .flatten()
    .any(|host| rest.eq_ignore_ascii_case(host))
}

/// The `multipart/*` content type of a request, if it is one.
pub(crate) fn multipart_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DocumentLimits = DocumentLimits {
        nesting: 64,
        selections: 10_000,
    };

    fn deep(n: usize) -> String {
        format!("{{ f(x: {}1{}) }}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn json_bodies_are_checked_one_or_batched() {
        let one = serde_json::json!({"query": deep(100)}).to_string();
        assert_eq!(check_json(one.as_bytes(), &LIMITS), Err(Refusal::TooDeep));
        let batch = serde_json::json!([{"query": "{ a }"}, {"query": deep(100)}]).to_string();
        assert_eq!(check_json(batch.as_bytes(), &LIMITS), Err(Refusal::TooDeep));
        let fine = serde_json::json!({"query": deep(10), "variables": {"a": [[1]]}}).to_string();
        assert_eq!(check_json(fine.as_bytes(), &LIMITS), Ok(JsonBody::GraphQl));
        assert_eq!(check_json(b"{nope", &LIMITS), Ok(JsonBody::NotGraphQl));
        assert_eq!(
            check_json(br#"{"query": 1}"#, &LIMITS),
            Ok(JsonBody::NotGraphQl)
        );
    }

    #[test]
    fn deep_variables_are_skipped_without_recursion() {
        // serde_json skips ignored values with a loop, not recursion; async-graphql's own
        // parse of `variables` stops at serde_json's 128-level limit.
        let vars = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!(r#"{{"query":"{{ a }}","variables":{vars}}}"#);
        assert_eq!(check_json(body.as_bytes(), &LIMITS), Ok(JsonBody::GraphQl));
    }

    #[tokio::test]
    async fn any_multipart_type_is_checked() {
        let ops = serde_json::json!({"query": deep(100)}).to_string();
        let body = format!(
            "--X\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{ops}\r\n--X--\r\n"
        );
        let result = check_multipart("multipart/mixed; boundary=X", body.into(), &LIMITS).await;
        assert_eq!(result, Err(Refusal::TooDeep));
    }

    #[tokio::test]
    async fn a_multipart_operations_part_is_refused() {
        let body = "--B\r\nContent-Disposition: form-data; name=\"operations\"\r\n\
                    Content-Type: multipart/mixed\r\n\r\n{\"query\":\"\"}\r\n--B--\r\n";
        let result = check_multipart("multipart/form-data; boundary=B", body.into(), &LIMITS).await;
        assert_eq!(result, Err(Refusal::MalformedJson));
    }

    #[tokio::test]
    async fn multipart_operations_are_checked() {
        let ops = serde_json::json!({"query": deep(100)}).to_string();
        let body = format!(
            "--X\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{ops}\r\n--X--\r\n"
        );
        let result = check_multipart("multipart/form-data; boundary=X", body.into(), &LIMITS).await;
        assert_eq!(result, Err(Refusal::TooDeep));
    }

    fn get(query: &[(&str, &str)]) -> GetRequest {
        let text = serde_urlencoded::to_string(query).unwrap();
        GetRequest::read(&text, &LIMITS).unwrap()
    }

    #[test]
    fn get_refuses_every_operation_but_a_query() {
        let mutation = get(&[("query", "mutation { a }")]);
        assert_eq!(
            mutation.check_only_queries(None),
            Err(Refusal::NotAQueryOverGet)
        );
        let named = get(&[
            ("query", "query A { a } mutation B { b }"),
            ("operationName", "B"),
        ]);
        assert_eq!(
            named.check_only_queries(None),
            Err(Refusal::NotAQueryOverGet)
        );
        let extra = get(&[("query", "subscription { a }"), ("x", "1")]);
        assert_eq!(
            extra.check_only_queries(None),
            Err(Refusal::NotAQueryOverGet)
        );
        let query = get(&[
            ("query", "query A { a } mutation B { b }"),
            ("operationName", "A"),
        ]);
        assert_eq!(query.check_only_queries(None), Ok(()));
        let persisted = get(&[]);
        assert_eq!(
            persisted.check_only_queries(Some("mutation { a }")),
            Err(Refusal::NotAQueryOverGet)
        );
    }

    #[test]
    fn fragment_bombs_are_refused_and_ordinary_fragments_pass() {
        let mut bomb = String::from("{ ...F0 }");
        for i in 0..20 {
            bomb.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        bomb.push_str(" fragment F20 on Query { renderId }");
        assert_eq!(
            check_document(&bomb, &LIMITS),
            Err(Refusal::TooManySelections)
        );
        let fine = "{ ...F ...F } fragment F on Query { a b c }";
        assert_eq!(check_document(fine, &LIMITS), Ok(()));
        // Without fragments nothing is parsed: a big flat document is linear for everyone.
        let flat = format!("{{{} }}", " a".repeat(20_000));
        assert_eq!(check_document(&flat, &LIMITS), Ok(()));
    }

    #[test]
    fn json_of_any_other_shape_has_every_string_checked() {
        // serde reads `["{ doc }"]` as a request whose `query` is the first element.
        let sequence = serde_json::json!([deep(100)]).to_string();
        assert_eq!(
            check_json(sequence.as_bytes(), &LIMITS),
            Err(Refusal::TooDeep)
        );
        let mixed = serde_json::json!([{"query": "{ a }"}, [deep(100), "Op"]]).to_string();
        assert_eq!(check_json(mixed.as_bytes(), &LIMITS), Err(Refusal::TooDeep));
        let fine = serde_json::json!(["{ a }", "Op"]).to_string();
        assert_eq!(
            check_json(fine.as_bytes(), &LIMITS),
            Ok(JsonBody::NotGraphQl)
        );
    }

    #[test]
    fn persisted_queries_over_get_are_read_like_async_graphql() {
        let ext = r#"{"persistedQuery":{"version":1,"sha256Hash":"abc"}}"#;
        // An empty `query` is no query.
        assert_eq!(
            get(&[("query", ""), ("extensions", ext)]).hash_only(),
            Some("abc")
        );
        // A repeated key: the last one wins, as in a map.
        let twice =
            r#"{"persistedQuery":{"sha256Hash":"x"},"persistedQuery":{"sha256Hash":"abc"}}"#;
        assert_eq!(get(&[("extensions", twice)]).hash_only(), Some("abc"));
        // A persisted query without a readable hash names no document the layer knows.
        let odd = r#"{"persistedQuery":{"sha256Hash":1}}"#;
        assert_eq!(get(&[("extensions", odd)]).hash_only(), Some(""));
    }

    #[test]
    fn repeated_get_parameters_are_refused() {
        for params in [
            &[("query", "{ a }"), ("query", "{ b }")][..],
            &[
                ("query", "{ a }"),
                ("operationName", "A"),
                ("operationName", "B"),
            ],
            &[("extensions", "{}"), ("extensions", "{}")],
        ] {
            let text = serde_urlencoded::to_string(params).unwrap();
            assert_eq!(
                GetRequest::read(&text, &LIMITS).unwrap_err(),
                Refusal::RepeatedParameter
            );
        }
    }

    #[test]
    fn get_queries_are_checked_for_nesting() {
        let text = serde_urlencoded::to_string([("query", deep(100))]).unwrap();
        assert_eq!(
            GetRequest::read(&text, &LIMITS).unwrap_err(),
            Refusal::TooDeep
        );
    }

    #[test]
    fn hash_only_get_is_recognised() {
        let ext = r#"{"persistedQuery":{"version":1,"sha256Hash":"abc"}}"#;
        assert_eq!(get(&[("extensions", ext)]).hash_only(), Some("abc"));
        assert_eq!(
            get(&[("extensions", ext), ("query", "{ a }")]).hash_only(),
            None
        );
    }

    fn parts(method: Method, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder()
            .method(method)
            .uri("http://forum.example/graphql");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn cookie_requests_must_be_same_site_json() {
        let json = ("content-type", "application/json");
        assert_eq!(check_cookie_request(&parts(Method::POST, &[json])), Ok(()));
        assert_eq!(
            check_cookie_request(&parts(Method::POST, &[("content-type", "text/plain")])),
            Err(Refusal::CookieNeedsJson)
        );
        assert_eq!(
            check_cookie_request(&parts(Method::POST, &[])),
            Err(Refusal::CookieNeedsJson)
        );
        assert_eq!(
            check_cookie_request(&parts(
                Method::POST,
                &[json, ("origin", "https://evil.example")]
            )),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            check_cookie_request(&parts(Method::POST, &[json, ("origin", "null")])),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            check_cookie_request(&parts(
                Method::POST,
                &[json, ("origin", "https://forum.example")]
            )),
            Ok(())
        );
        assert_eq!(
            check_cookie_request(&parts(
                Method::POST,
                &[json, ("sec-fetch-site", "cross-site")]
            )),
            Err(Refusal::CrossSite)
        );
        assert_eq!(check_cookie_request(&parts(Method::GET, &[])), Ok(()));
    }

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(is_json(&h("application/json")));
        assert!(is_json(&h("Application/JSON; charset=utf-8")));
        assert!(is_json(&h("application/graphql-response+json")));
        assert!(is_json(&h("application/merge-patch+json")));
        assert!(!is_json(&h("application/jsonx")));
        assert!(!is_json(&h("text/plain")));
        assert!(!is_json(&h("multipart/form-data; boundary=x")));
        assert!(!is_json(&h("application/")));
    }
}
