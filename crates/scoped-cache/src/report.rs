//! The execution report: what the entity-tagging extension saw while a request executed,
//! carried from the handler back to the layer in a response header.
//!
//! The extension ([`EntityTags`](crate::graphql::EntityTags)) runs inside async-graphql,
//! which hands resolvers neither the HTTP request nor its extensions; a response header is
//! the one channel every async-graphql handler passes through (async-graphql-axum's
//! `GraphQLResponse` copies `http_headers`, and so does ours). The layer removes the
//! header from every response it sees, so it never reaches a client.
//!
//! This module is neutral: the extension writes reports and the layer reads them, and
//! neither imports the other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// The response header that carries an [`ExecutionReport`] from the handler to the layer.
pub(crate) const REPORT_HEADER: HeaderName = HeaderName::from_static("x-scoped-cache-report");

/// What one execution touched.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExecutionReport {
    /// Types of the objects in the response (`Post`), each once.
    #[serde(default, rename = "t", skip_serializing_if = "Vec::is_empty")]
    pub(crate) types: Vec<String>,
    /// Entities in the response as `(type, id)`, each once, at most the configured number.
    #[serde(default, rename = "e", skip_serializing_if = "Vec::is_empty")]
    pub(crate) entities: Vec<(String, String)>,
    /// Types with more entities in the response than were listed: any entity of such a
    /// type must be treated as present.
    #[serde(default, rename = "o", skip_serializing_if = "Vec::is_empty")]
    pub(crate) overflowed: Vec<String>,
    /// Mutation root fields that ran (`createPost`), each once.
    #[serde(default, rename = "m", skip_serializing_if = "Vec::is_empty")]
    pub(crate) mutations: Vec<String>,
    /// The document used names the extension reserves for itself, so what it reports
    /// cannot be relied on: the response must not be stored.
    #[serde(default, rename = "x", skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unreliable: bool,
}

impl ExecutionReport {
    /// The header value for this report (URL-safe base64 of compact JSON, so any id
    /// survives as visible ASCII).
    pub(crate) fn encode(&self) -> Option<HeaderValue> {
        let json = serde_json::to_vec(self).ok()?;
        HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(json)).ok()
    }

    /// Removes every report header from `headers` and merges what they say (a batch
    /// carries one per request). `None` when there was none; a header that does not decode
    /// yields an unreliable report, never a silently empty one.
    pub(crate) fn take(headers: &mut HeaderMap) -> Option<Self> {
        if !headers.contains_key(&REPORT_HEADER) {
            return None;
        }
        let mut merged = Self::default();
        for value in headers.get_all(&REPORT_HEADER) {
            match Self::decode(value) {
                Some(report) => merged.merge(report),
                None => merged.unreliable = true,
            }
        }
        headers.remove(&REPORT_HEADER);
        Some(merged)
    }

    fn decode(value: &HeaderValue) -> Option<Self> {
        let json = URL_SAFE_NO_PAD.decode(value.as_bytes()).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Adds what `other` saw.
    pub(crate) fn merge(&mut self, other: Self) {
        fn union<T: PartialEq>(into: &mut Vec<T>, from: Vec<T>) {
            for item in from {
                if !into.contains(&item) {
                    into.push(item);
                }
            }
        }
        union(&mut self.types, other.types);
        union(&mut self.entities, other.entities);
        union(&mut self.overflowed, other.overflowed);
        union(&mut self.mutations, other.mutations);
        self.unreliable |= other.unreliable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_header_and_are_removed_from_it() {
        let report = ExecutionReport {
            types: vec!["Post".into(), "User".into()],
            entities: vec![
                ("Post".into(), "42".into()),
                ("User".into(), "ålice\n".into()),
            ],
            overflowed: vec![],
            mutations: vec!["createPost".into()],
            unreliable: false,
        };
        let mut headers = HeaderMap::new();
        headers.append(REPORT_HEADER, report.encode().unwrap());
        headers.append(
            REPORT_HEADER,
            ExecutionReport {
                types: vec!["Post".into()],
                overflowed: vec!["Post".into()],
                ..Default::default()
            }
            .encode()
            .unwrap(),
        );
        let taken = ExecutionReport::take(&mut headers).unwrap();
        assert!(headers.is_empty());
        assert_eq!(taken.types, ["Post", "User"]);
        assert_eq!(taken.entities, report.entities);
        assert_eq!(taken.overflowed, ["Post"]);
        assert_eq!(taken.mutations, ["createPost"]);
        assert!(!taken.unreliable);
    }

    #[test]
    fn a_garbled_report_is_unreliable_not_empty() {
        let mut headers = HeaderMap::new();
        headers.insert(REPORT_HEADER, HeaderValue::from_static("!!not base64"));
        assert!(ExecutionReport::take(&mut headers).unwrap().unreliable);
        assert!(ExecutionReport::take(&mut headers).is_none());
    }
}
