//! The parameters of a GraphQL GET request: the one reader the guard, the cache and
//! `scoped_cache::graphql`'s handler share, so all three read a query string alike.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A GET query string's GraphQL parameters, as sent: JSON ones (`variables`,
/// `extensions`) as text, an empty value as empty (each reader says what empty means).
/// Any other parameter is kept in `other`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetParams {
    pub(crate) query: Option<String>,
    pub(crate) operation_name: Option<String>,
    pub(crate) variables: Option<String>,
    pub(crate) extensions: Option<String>,
    /// Parameters GraphQL does not define (a handler might read them).
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, String>,
}

/// Why a query string is not one GraphQL GET request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RepeatedParameter;

impl GetParams {
    /// Reads `query_string` in one linear pass. A GraphQL parameter given twice is
    /// refused, as async-graphql refuses it (which of the two would run?).
    pub(crate) fn read(query_string: &[u8]) -> Result<Self, RepeatedParameter> {
        serde_urlencoded::from_bytes(query_string).map_err(|_| RepeatedParameter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_as_sent() {
        let params =
            GetParams::read(b"query=%7B+a+%7D&operationName=&variables=%7B%7D&lang=fr").unwrap();
        assert_eq!(params.query.as_deref(), Some("{ a }"));
        assert_eq!(params.operation_name.as_deref(), Some(""));
        assert_eq!(params.variables.as_deref(), Some("{}"));
        assert_eq!(params.extensions, None);
        assert_eq!(params.other.get("lang").map(String::as_str), Some("fr"));
    }

    #[test]
    fn a_graphql_parameter_given_twice_is_refused() {
        for text in [
            &b"query={a}&query={b}"[..],
            b"query=&query={b}",
            b"operationName=A&operationName=B",
            b"extensions={}&extensions={}",
            b"variables={}&variables={}",
        ] {
            assert_eq!(GetParams::read(text).unwrap_err(), RepeatedParameter);
        }
        // Others are the handler's business.
        assert!(GetParams::read(b"x=1&x=2").is_ok());
    }
}
