//! Turning an HTTP request into what the cache needs, once per distinct request text.
//!
//! Parsing the JSON body, the GraphQL document and canonicalising variables cost far more
//! than a cache hit should. The outcome depends only on the request text (the POST body
//! or the GET query string), so it is remembered under that exact text: a repeated
//! request is recognised by one hash-map lookup.
//!
//! Memory: each entry holds its own copy of the text (never a slice of the connection's
//! read buffer, which would pin kilobytes per entry) and is weighed at that length plus a
//! fixed overhead; prepared texts and persisted documents are bounded in bytes.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::key::RequestDigest;
use crate::graphql::document::analyze;
use crate::graphql::nesting;
use crate::health::Usage;
use crate::scope::{Decision, RuleSet};
use crate::wire::get::GetParams;

/// How a request is transported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    /// `GET ?query=..`: the query string is the request text.
    Get,
    /// `POST` with a JSON body: the body is the request text.
    PostJson,
}

/// What the cache knows about a request text.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// The operation is known: its kind, how to cache it and its caller-independent digest.
    Operation {
        ty: OperationType,
        decision: Decision,
        digest: RequestDigest,
        /// The operation's own name, if it has one (sent as `operationName` or not).
        name: Option<Arc<str>>,
        /// Root fields as rules name them: `Query.me`, `Mutation.createPost`.
        root_fields: Arc<[Arc<str>]>,
    },
    /// Not something the cache reads (batch, syntax error, unknown persisted query, ...):
    /// the server answers it, uncached.
    Opaque,
}

/// The GraphQL-over-HTTP request fields, from JSON or from a query string. Any other field
/// might be read by the handler and is not in the key, so it makes the request opaque.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    #[serde(default)]
    variables: Value,
    #[serde(default)]
    extensions: Value,
}

/// Remembers prepared request texts and the documents of automatic persisted queries.
pub(crate) struct Preparer {
    /// GET query strings and POST bodies are different texts: one cache each, so a lookup
    /// borrows the request's bytes without building a key.
    get: moka::sync::Cache<Bytes, Arc<Prepared>>,
    post: moka::sync::Cache<Bytes, Arc<Prepared>>,
    persisted: moka::sync::Cache<String, Arc<str>>,
    nesting: usize,
    max_bytes: u64,
}

/// Request texts carry callers' variables: show counts only (moka's `Debug` prints entries).
impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparer")
            .field("get", &self.get.entry_count())
            .field("post", &self.post.entry_count())
            .field("persisted", &self.persisted.entry_count())
            .finish()
    }
}

impl Preparer {
    /// A preparer holding at most `max_bytes` of prepared texts (GET and POST each) and of
    /// persisted documents, refusing documents nested deeper than `nesting`.
    pub(crate) fn new(max_bytes: u64, nesting: usize) -> Self {
        let texts = || {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|text: &Bytes, prepared: &Arc<Prepared>| {
                    u32::try_from(text.len() + prepared.weight()).unwrap_or(u32::MAX)
                })
                .build()
        };
        Self {
            get: texts(),
            post: texts(),
            persisted: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|hash: &String, query: &Arc<str>| {
                    u32::try_from(hash.len() + query.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .build(),
            nesting,
            max_bytes,
        }
    }

    /// What the prepared texts and persisted documents hold, against their bound (each of
    /// the three caches is bounded by `max_bytes`).
    pub(crate) fn usage(&self) -> Usage {
        // moka counts lazily: settle first (every few seconds, not per request).
        self.get.run_pending_tasks();
        self.post.run_pending_tasks();
        self.persisted.run_pending_tasks();
        Usage {
            entries: self.get.entry_count()
                + self.post.entry_count()
                + self.persisted.entry_count(),
            bytes: self.get.weighted_size()
                + self.post.weighted_size()
                + self.persisted.weighted_size(),
            bound: self.max_bytes.saturating_mul(3),
        }
    }

    fn texts(&self, transport: Transport) -> &moka::sync::Cache<Bytes, Arc<Prepared>> {
        match transport {
            Transport::Get => &self.get,
            Transport::PostJson => &self.post,
        }
    }

    /// What the cache knows about `text`, if it was prepared before.
    pub(crate) fn lookup(&self, transport: Transport, text: &[u8]) -> Option<Arc<Prepared>> {
        self.texts(transport).get(text)
    }

    /// Prepares `text` (not found by [`lookup`](Self::lookup)) and remembers the outcome.
    pub(crate) fn prepare(
        &self,
        transport: Transport,
        text: &[u8],
        rules: &RuleSet,
    ) -> Arc<Prepared> {
        let prepared = Arc::new(self.prepare_uncached(transport, text, rules));
        // A persisted-query hash without its document is not remembered: once the document
        // arrives, the same text must be prepared again to become cacheable.
        if matches!(*prepared, Prepared::Operation { .. }) {
            self.texts(transport)
                .insert(Bytes::copy_from_slice(text), Arc::clone(&prepared));
        }
        prepared
    }

    /// The document of a persisted query the preparer has seen with its document.
    pub(crate) fn persisted(&self, hash: &str) -> Option<Arc<str>> {
        self.persisted.get(hash)
    }

    fn prepare_uncached(&self, transport: Transport, text: &[u8], rules: &RuleSet) -> Prepared {
        let Some(params) = parse_params(transport, text) else {
            return Prepared::Opaque;
        };
        // The guard checked this already; checking here too keeps the parser below safe
        // whoever calls it. Documents past `MAX_ANALYSED_BYTES` are not parsed here at all:
        // async-graphql's parser reads about 3 MiB/s, and the application parses them anyway.
        if let Some(query) = &params.query
            && (query.len() > MAX_ANALYSED_BYTES
                || nesting::check(query.as_bytes(), self.nesting).is_err())
        {
            return Prepared::Opaque;
        }
        let hash = persisted_query_hash(&params.extensions);
        let query: Arc<str> = match (params.query, hash) {
            (Some(query), Some(hash)) => {
                // Remember the document only under its true hash; async-graphql refuses a
                // mismatch, and so must a later hash-only request.
                if sha256_hex(&query) != hash {
                    return Prepared::Opaque;
                }
                let query: Arc<str> = query.into();
                self.persisted.insert(hash.to_owned(), Arc::clone(&query));
                query
            }
            (Some(query), None) => query.into(),
            (None, Some(hash)) => match self.persisted.get(hash) {
                Some(query) => query,
                None => return Prepared::Opaque,
            },
            (None, None) => return Prepared::Opaque,
        };
        let Ok(operation) = analyze(&query, params.operation_name.as_deref()) else {
            return Prepared::Opaque;
        };
        let variables = match params.variables {
            Value::Null => Value::Object(Default::default()),
            vars @ Value::Object(_) => vars,
            _ => return Prepared::Opaque,
        };
        // Rules match the operation that will run, named in the request or not.
        let decision = rules.decide(
            operation.ty,
            operation.name.as_deref(),
            operation.root_fields.iter().map(String::as_str),
        );
        let kind = match operation.ty {
            OperationType::Query => "Query",
            OperationType::Mutation => "Mutation",
            OperationType::Subscription => "Subscription",
        };
        Prepared::Operation {
            ty: operation.ty,
            name: operation.name.as_deref().map(Arc::from),
            root_fields: operation
                .root_fields
                .iter()
                .map(|field| Arc::from(format!("{kind}.{field}")))
                .collect(),
            decision,
            digest: RequestDigest::new(
                &operation.canonical,
                params.operation_name.as_deref(),
                &variables,
                &params.extensions,
            ),
        }
    }
}

/// Longest document the cache analyses; longer ones are passed on uncached. Real operations,
/// even large generated ones, stay well below it.
pub(crate) const MAX_ANALYSED_BYTES: usize = 128 * 1024;

/// What an entry costs besides its text: the `Arc`, the decision, moka's bookkeeping
/// (measured with `cargo bench --bench tag_memory`: about 500 bytes for a short text).
const ENTRY_OVERHEAD: usize = 448;

impl Prepared {
    fn weight(&self) -> usize {
        match self {
            Prepared::Operation {
                decision,
                name,
                root_fields,
                ..
            } => {
                ENTRY_OVERHEAD
                    + decision
                        .scope
                        .iter()
                        .map(|p| 64 + p.to_string().len())
                        .sum::<usize>()
                    + name.as_ref().map_or(0, |n| n.len() + 16)
                    // Each root field twice: here and in the decision's learned list.
                    + root_fields.iter().map(|f| 2 * (f.len() + 32)).sum::<usize>()
            }
            Prepared::Opaque => ENTRY_OVERHEAD,
        }
    }
}

fn parse_params(transport: Transport, text: &[u8]) -> Option<Params> {
    match transport {
        // A JSON array is a batch: not cached as a whole (and `Params` refuses it).
        Transport::PostJson => serde_json::from_slice(text).ok(),
        Transport::Get => {
            let get = GetParams::read(text).ok()?;
            // A parameter GraphQL does not define: a handler may read it, and it is not
            // in the key.
            if !get.other.is_empty() {
                return None;
            }
            let json = |text: Option<String>| match text {
                None => Some(Value::Null),
                Some(text) => serde_json::from_str(&text).ok(),
            };
            Some(Params {
                query: get.query,
                operation_name: get.operation_name,
                variables: json(get.variables)?,
                extensions: json(get.extensions)?,
            })
        }
    }
}

fn persisted_query_hash(extensions: &Value) -> Option<&str> {
    extensions
        .get("persistedQuery")?
        .get("sha256Hash")?
        .as_str()
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> RuleSet {
        RuleSet::compile(None, vec![], None).unwrap()
    }

    fn digest_of(p: &Prepared) -> RequestDigest {
        match p {
            Prepared::Operation { digest, .. } => *digest,
            Prepared::Opaque => panic!("expected an operation"),
        }
    }

    fn post(preparer: &Preparer, body: Value) -> Arc<Prepared> {
        preparer.prepare(Transport::PostJson, body.to_string().as_bytes(), &rules())
    }

    fn preparer() -> Preparer {
        Preparer::new(1 << 20, 64)
    }

    #[test]
    fn get_and_post_share_a_digest() {
        let preparer = preparer();
        let posted = post(
            &preparer,
            json!({"query": "query P($id: ID!) { post(id: $id) { id } }", "variables": {"id": "1"}}),
        );
        let query = serde_urlencoded::to_string([
            ("query", "query P($id:ID!){post(id:$id){id}}"),
            ("variables", r#"{"id":"1"}"#),
        ])
        .unwrap();
        let got = preparer.prepare(Transport::Get, query.as_bytes(), &rules());
        assert_eq!(digest_of(&posted), digest_of(&got));
    }

    #[test]
    fn null_and_missing_variables_are_the_same() {
        let preparer = preparer();
        let a = post(&preparer, json!({"query": "{ me { id } }"}));
        let b = post(
            &preparer,
            json!({"query": "{ me { id } }", "variables": null, "operationName": null}),
        );
        assert_eq!(digest_of(&a), digest_of(&b));
    }

    #[test]
    fn batches_and_garbage_are_opaque() {
        let preparer = preparer();
        for body in [
            json!([{"query": "{ me { id } }"}]),
            json!({"query": "{ me "}),
            json!({"nothing": 1}),
            json!({"query": "{ me { id } }", "variables": [1]}),
        ] {
            assert!(matches!(*post(&preparer, body), Prepared::Opaque));
        }
    }

    #[test]
    fn prepared_texts_are_looked_up_by_transport() {
        let preparer = preparer();
        let body = json!({"query": "{ me { id } }"}).to_string();
        post(&preparer, json!({"query": "{ me { id } }"}));
        assert!(
            preparer
                .lookup(Transport::PostJson, body.as_bytes())
                .is_some()
        );
        assert!(preparer.lookup(Transport::Get, body.as_bytes()).is_none());
    }

    #[test]
    fn entries_own_their_text_and_never_pin_the_read_buffer() {
        let preparer = preparer();
        // A request body is often a slice of a much larger connection buffer.
        let mut buffer = vec![b' '; 64 * 1024];
        let body = json!({"query": "{ me { id } }"}).to_string();
        buffer[..body.len()].copy_from_slice(body.as_bytes());
        let buffer = Bytes::from(buffer);
        let text = buffer.slice(..body.len());
        preparer.prepare(Transport::PostJson, &text, &rules());
        drop(text);
        assert!(
            buffer.is_unique(),
            "the cache kept a reference to the read buffer"
        );
    }

    #[test]
    fn a_flood_of_distinct_texts_stays_within_the_byte_bound() {
        let bound = 64 * 1024;
        let preparer = Preparer::new(bound, 64);
        for n in 0..5_000 {
            post(
                &preparer,
                json!({"query": format!("{{ me {{ id }} }} # {n}")}),
            );
        }
        preparer.post.run_pending_tasks();
        assert!(
            preparer.post.weighted_size() <= bound,
            "{}",
            preparer.post.weighted_size()
        );
        assert!(preparer.post.entry_count() > 10);
    }

    #[test]
    fn very_long_documents_are_not_analysed() {
        let long = format!("{{ me {{ id }} }} #{}", "x".repeat(MAX_ANALYSED_BYTES));
        assert!(matches!(
            *post(&preparer(), json!({"query": long})),
            Prepared::Opaque
        ));
    }

    #[test]
    fn too_deep_documents_are_never_parsed() {
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(matches!(
            *post(&preparer(), json!({"query": deep})),
            Prepared::Opaque
        ));
    }

    #[test]
    fn persisted_query_hash_is_learned_only_when_it_matches() {
        let preparer = preparer();
        let query = "{ publicPosts { id } }";
        let hash = sha256_hex(query);
        let hash_only =
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        assert!(matches!(
            *post(&preparer, hash_only.clone()),
            Prepared::Opaque
        ));

        let wrong = json!({"query": "{ me { id } }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        assert!(matches!(*post(&preparer, wrong), Prepared::Opaque));

        let full = json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        let full = post(&preparer, full);
        assert_eq!(digest_of(&post(&preparer, hash_only)), digest_of(&full));
    }
}
