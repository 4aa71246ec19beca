//! Reading a GraphQL-over-HTTP request: GET's query string or a JSON POST, one request or
//! a batch, bounded and checked before async-graphql parses it.

use super::*;
use crate::wire::get::GetParams;

/// The fields of a GraphQL-over-HTTP request in a JSON body. Unknown fields are ignored
/// (as the spec demands); a field of the wrong type refuses the request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JsonParams {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Variables>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

/// The GraphQL request(s) of an HTTP request, with the fields each document selects.
pub(super) struct Read {
    pub(super) batch: BatchRequest,
    pub(super) selections: Vec<u64>,
}

pub(super) fn read_get(query_string: &str) -> Result<Read, Refused> {
    let params = GetParams::read(query_string.as_bytes())
        .map_err(|_| Refused::from(RejectionKind::InvalidParameters))?;
    let present = |value: Option<String>| value.filter(|v| !v.is_empty());
    let variables: Option<Variables> = json_param(params.variables)?;
    let extensions: Option<Extensions> = json_param(params.extensions)?;
    let operation_name = present(params.operation_name);
    let Some(query) = present(params.query) else {
        return Err(if is_persisted_query(extensions.as_ref()) {
            // The operation's kind cannot be checked without its document.
            RejectionKind::PersistedQueryNotFound.into()
        } else {
            RejectionKind::MissingQuery.into()
        });
    };
    let document = parse(&query)?;
    match select_operation_type(&document, operation_name.as_deref()) {
        Some(OperationType::Query) => {}
        Some(OperationType::Mutation | OperationType::Subscription) => {
            return Err(RejectionKind::NotAQueryOverGet.into());
        }
        None => {
            let message = match &operation_name {
                Some(_) => "no operation of that name in the document",
                None => "the document has several operations: name one with `operationName`",
            };
            return Err(Refused {
                kind: RejectionKind::UnknownOperation,
                error: Some(Box::new(ServerError::new(message, None))),
            });
        }
    }
    let (request, selections) =
        request(query, Some(document), operation_name, variables, extensions);
    Ok(Read {
        batch: BatchRequest::Single(request),
        selections: vec![selections],
    })
}

/// A JSON-text query parameter; empty means absent, and so does `null`.
pub(super) fn json_param<T: serde::de::DeserializeOwned>(
    text: Option<String>,
) -> Result<Option<T>, Refused> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => serde_json::from_str::<Option<T>>(&text)
            .map_err(|_| Refused::from(RejectionKind::InvalidParameters)),
    }
}

pub(super) async fn read_post(req: http::Request<Body>) -> Result<Read, Refused> {
    if !is_utf8_json(req.headers()) {
        return Err(RejectionKind::UnsupportedMediaType.into());
    }
    let body = req
        .with_limited_body()
        .into_body()
        .collect()
        .await
        .map_err(|err| {
            if crate::wire::body::is_length_limit(&*err.into_inner()) {
                RejectionKind::BodyTooLarge
            } else {
                RejectionKind::BodyUnreadable
            }
        })?
        .to_bytes();
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let batch: Vec<JsonParams> = serde_json::from_slice(&body).map_err(json_refusal)?;
        if batch.is_empty() {
            return Err(RejectionKind::InvalidParameters.into());
        }
        let mut requests = Vec::with_capacity(batch.len());
        let mut selections = Vec::with_capacity(batch.len());
        for params in batch {
            let (request, count) = post_request(params, true)?;
            requests.push(request);
            selections.push(count);
        }
        Ok(Read {
            batch: BatchRequest::Batch(requests),
            selections,
        })
    } else {
        let params: JsonParams = serde_json::from_slice(&body).map_err(json_refusal)?;
        let (request, selections) = post_request(params, false)?;
        Ok(Read {
            batch: BatchRequest::Single(request),
            selections: vec![selections],
        })
    }
}

/// One request of a `POST`, its document parsed here (async-graphql then does not parse
/// it again). In a batch, an entry whose document does not parse is left to the executor,
/// which answers that entry alone with the parse error.
pub(super) fn post_request(
    params: JsonParams,
    in_batch: bool,
) -> Result<(async_graphql::Request, u64), Refused> {
    let JsonParams {
        query,
        operation_name,
        variables,
        extensions,
    } = params;
    let (query, document) = match query {
        Some(query) => match parse(&query) {
            Ok(document) => (query, Some(document)),
            Err(refused) if in_batch && refused.kind == RejectionKind::DocumentParse => {
                (query, None)
            }
            Err(refused) => return Err(refused),
        },
        // An automatic persisted query: the schema's extension supplies the document.
        None if is_persisted_query(extensions.as_ref()) => (String::new(), None),
        None => return Err(RejectionKind::MissingQuery.into()),
    };
    Ok(request(
        query,
        document,
        operation_name,
        variables,
        extensions,
    ))
}

/// The request for async-graphql, with the document already parsed, and the fields the
/// document selects (0 without a document: it comes from a persisted query, or does not
/// parse and is never executed).
pub(super) fn request(
    query: String,
    document: Option<ExecutableDocument>,
    operation_name: Option<String>,
    variables: Option<Variables>,
    extensions: Option<Extensions>,
) -> (async_graphql::Request, u64) {
    let mut request = async_graphql::Request::new(query);
    request.operation_name = operation_name;
    request.variables = variables.unwrap_or_default();
    request.extensions = extensions.unwrap_or_default();
    let mut selections = 0;
    if let Some(document) = document {
        selections = expanded_selections(&document);
        request.set_parsed_query(document);
    }
    (request, selections)
}

/// Parses `query`, after checking that its nesting stays where async-graphql's recursive
/// parser is safe.
pub(super) fn parse(query: &str) -> Result<ExecutableDocument, Refused> {
    nesting::check(query.as_bytes(), MAX_MAX_NESTING)
        .map_err(|_| Refused::from(RejectionKind::TooDeep))?;
    parse_query(query).map_err(|err| {
        let mut error = ServerError::from(err);
        truncate(&mut error.message, MAX_MESSAGE_BYTES);
        Refused {
            kind: RejectionKind::DocumentParse,
            error: Some(Box::new(error)),
        }
    })
}

pub(super) fn truncate(message: &mut String, max: usize) {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
}

pub(super) fn is_persisted_query(extensions: Option<&Extensions>) -> bool {
    extensions.is_some_and(|extensions| extensions.0.contains_key("persistedQuery"))
}

pub(super) fn json_refusal(err: serde_json::Error) -> Refused {
    match err.classify() {
        serde_json::error::Category::Data => RejectionKind::InvalidParameters,
        _ => RejectionKind::MalformedJson,
    }
    .into()
}

/// Exactly one `Content-Type`, `application/json`, and if a charset is named, UTF-8.
pub(super) fn is_utf8_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let mut parts = value.as_bytes().split(|b| *b == b';');
    let essence = parts.next().unwrap_or_default().trim_ascii();
    essence.eq_ignore_ascii_case(b"application/json")
        && parts.all(|param| {
            let Some(eq) = param.iter().position(|b| *b == b'=') else {
                return true;
            };
            if !param[..eq].trim_ascii().eq_ignore_ascii_case(b"charset") {
                return true;
            }
            let charset = param[eq + 1..].trim_ascii();
            let charset = charset
                .strip_prefix(b"\"")
                .and_then(|c| c.strip_suffix(b"\""))
                .unwrap_or(charset);
            charset.eq_ignore_ascii_case(b"utf-8")
        })
}
