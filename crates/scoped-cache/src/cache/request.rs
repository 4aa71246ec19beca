//! Turning an HTTP request into what the cache needs, once per distinct request text.
//!
//! Parsing the JSON body, the GraphQL document and canonicalising variables cost far more
//! than a cache hit should. The outcome depends only on the request text (the POST body
//! or the GET query string), so it is remembered under that exact text: a repeated
//! request is recognised by one hash-map lookup.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::key::RequestDigest;
use crate::graphql::document::analyze;
use crate::scope::{Decision, RuleSet};

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

/// GET parameters carry JSON as strings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// Remembers prepared request texts and the documents of automatic persisted queries.
pub(crate) struct Preparer {
    prepared: moka::sync::Cache<(Transport, Bytes), Arc<Prepared>>,
    persisted: moka::sync::Cache<String, Arc<str>>,
}

/// Request texts carry callers' variables: show counts only (moka's `Debug` prints entries).
impl std::fmt::Debug for Preparer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preparer")
            .field("prepared", &self.prepared.entry_count())
            .field("persisted", &self.persisted.entry_count())
            .finish()
    }
}

impl Preparer {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            prepared: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &(Transport, Bytes), _| {
                    u32::try_from(key.1.len() + 256).unwrap_or(u32::MAX)
                })
                .build(),
            persisted: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|hash: &String, query: &Arc<str>| {
                    u32::try_from(hash.len() + query.len() + 64).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    pub(crate) fn prepare(
        &self,
        transport: Transport,
        text: Bytes,
        rules: &RuleSet,
    ) -> Arc<Prepared> {
        let key = (transport, text);
        if let Some(hit) = self.prepared.get(&key) {
            return hit;
        }
        let prepared = Arc::new(self.prepare_uncached(transport, &key.1, rules));
        // A persisted-query hash without its document is not remembered: once the document
        // arrives, the same text must be prepared again to become cacheable.
        if matches!(*prepared, Prepared::Operation { .. }) {
            self.prepared.insert(key, Arc::clone(&prepared));
        }
        prepared
    }

    fn prepare_uncached(&self, transport: Transport, text: &[u8], rules: &RuleSet) -> Prepared {
        let Some(params) = parse_params(transport, text) else {
            return Prepared::Opaque;
        };
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
        Prepared::Operation {
            ty: operation.ty,
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

fn parse_params(transport: Transport, text: &[u8]) -> Option<Params> {
    match transport {
        // A JSON array is a batch: not cached as a whole (and `Params` refuses it).
        Transport::PostJson => serde_json::from_slice(text).ok(),
        Transport::Get => {
            let get: GetParams = serde_urlencoded::from_bytes(text).ok()?;
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
        RuleSet::compile(None, vec![]).unwrap()
    }

    fn digest_of(p: &Prepared) -> RequestDigest {
        match p {
            Prepared::Operation { digest, .. } => *digest,
            Prepared::Opaque => panic!("expected an operation"),
        }
    }

    fn post(preparer: &Preparer, body: Value) -> Arc<Prepared> {
        preparer.prepare(Transport::PostJson, Bytes::from(body.to_string()), &rules())
    }

    #[test]
    fn get_and_post_share_a_digest() {
        let preparer = Preparer::new(1 << 20);
        let posted = post(
            &preparer,
            json!({"query": "query P($id: ID!) { post(id: $id) { id } }", "variables": {"id": "1"}}),
        );
        let query = serde_urlencoded::to_string([
            ("query", "query P($id:ID!){post(id:$id){id}}"),
            ("variables", r#"{"id":"1"}"#),
        ])
        .unwrap();
        let got = preparer.prepare(Transport::Get, Bytes::from(query), &rules());
        assert_eq!(digest_of(&posted), digest_of(&got));
    }

    #[test]
    fn null_and_missing_variables_are_the_same() {
        let preparer = Preparer::new(1 << 20);
        let a = post(&preparer, json!({"query": "{ me { id } }"}));
        let b = post(
            &preparer,
            json!({"query": "{ me { id } }", "variables": null, "operationName": null}),
        );
        assert_eq!(digest_of(&a), digest_of(&b));
    }

    #[test]
    fn batches_and_garbage_are_opaque() {
        let preparer = Preparer::new(1 << 20);
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
    fn persisted_query_hash_is_learned_only_when_it_matches() {
        let preparer = Preparer::new(1 << 20);
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
