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

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Every report header's name starts with this. Each report gets a name of its own
/// (`x-scoped-cache-report-7`): async-graphql merges a batch's headers by name, keeping
/// only the last of each, and every item of a batch must be seen.
pub(crate) const REPORT_HEADER_PREFIX: &str = "x-scoped-cache-report";

/// A report header name no other report of the same response uses.
pub(crate) fn report_header_name() -> HeaderName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderName::from_bytes(format!("{REPORT_HEADER_PREFIX}-{n}").as_bytes())
        .unwrap_or(HeaderName::from_static(REPORT_HEADER_PREFIX))
}

fn is_report_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(REPORT_HEADER_PREFIX)
}

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
    /// What the extension saw cannot be relied on (an id field it added failed, or it
    /// never saw the document): the response must not be stored.
    #[serde(default, rename = "x", skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unreliable: bool,
    /// Seconds an inner layer will still serve this answer fresh: an outer layer that
    /// stores it keeps it fresh no longer.
    #[serde(default, rename = "f", skip_serializing_if = "Option::is_none")]
    pub(crate) fresh_for: Option<u64>,
}

impl ExecutionReport {
    /// The header value for this report (URL-safe base64 of compact JSON, so any id
    /// survives as visible ASCII).
    pub(crate) fn encode(&self) -> Option<HeaderValue> {
        let json = serde_json::to_vec(self).ok()?;
        HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(json)).ok()
    }

    /// Adds this report to `headers` under a name of its own.
    pub(crate) fn attach(&self, headers: &mut HeaderMap) -> bool {
        match self.encode() {
            Some(value) => {
                headers.insert(report_header_name(), value);
                true
            }
            None => false,
        }
    }

    /// Removes every report header from `headers` and returns the reports, one per
    /// executed request (a batch carries several). A header that does not decode yields
    /// an unreliable report, never a silently missing one.
    pub(crate) fn take_all(headers: &mut HeaderMap) -> Vec<Self> {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_report_header(name))
            .cloned()
            .collect();
        let mut reports = Vec::with_capacity(names.len());
        for name in names {
            for value in headers.get_all(&name) {
                reports.push(Self::decode(value).unwrap_or_else(|| Self {
                    unreliable: true,
                    ..Self::default()
                }));
            }
            headers.remove(&name);
        }
        reports
    }

    /// Removes every report header from `headers` and merges what they say. `None` when
    /// there was none.
    pub(crate) fn take(headers: &mut HeaderMap) -> Option<Self> {
        let reports = Self::take_all(headers);
        if reports.is_empty() {
            return None;
        }
        Some(Self::merge_all(reports))
    }

    /// One report holding what all of `reports` saw, each item once.
    pub(crate) fn merge_all(reports: Vec<Self>) -> Self {
        let mut merged = Self::default();
        for report in reports {
            merged.merge(report);
        }
        fn dedup<T: Eq + Hash + Clone>(items: &mut Vec<T>) {
            let mut seen = HashSet::with_capacity(items.len());
            items.retain(|item| seen.insert(item.clone()));
        }
        dedup(&mut merged.types);
        dedup(&mut merged.entities);
        dedup(&mut merged.overflowed);
        dedup(&mut merged.mutations);
        merged
    }

    fn decode(value: &HeaderValue) -> Option<Self> {
        let json = URL_SAFE_NO_PAD.decode(value.as_bytes()).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Adds what `other` saw (duplicates are left for [`merge_all`](Self::merge_all)).
    fn merge(&mut self, other: Self) {
        self.types.extend(other.types);
        self.entities.extend(other.entities);
        self.overflowed.extend(other.overflowed);
        self.mutations.extend(other.mutations);
        self.unreliable |= other.unreliable;
        self.fresh_for = match (self.fresh_for, other.fresh_for) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
            fresh_for: Some(12),
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(report.attach(&mut headers));
        // A batch's second report, under a name of its own.
        assert!(
            ExecutionReport {
                types: vec!["Post".into()],
                overflowed: vec!["Post".into()],
                ..Default::default()
            }
            .attach(&mut headers)
        );
        assert_eq!(headers.len(), 3);
        let taken = ExecutionReport::take(&mut headers).unwrap();
        headers.remove("content-type");
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
        headers.insert(
            report_header_name(),
            HeaderValue::from_static("!!not base64"),
        );
        assert!(ExecutionReport::take(&mut headers).unwrap().unreliable);
        assert!(ExecutionReport::take(&mut headers).is_none());
    }
}
