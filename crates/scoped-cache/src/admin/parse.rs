//! Reading the operator routes' JSON bodies: strict, each field checked, every mistake
//! named in a message that quotes at most a little of the input.

use super::*;

/// What a purge request body is, for messages.
const EXPECTING: &str = "a JSON object with one of `tags`, `types`, `operation`, `scope` or `all`";
/// What a revoke request body is, for messages.
const REVOKE_FORMS: &str = r#"a JSON object in one of three forms: {"jti":..,"exp":..}, {"sub":..,"issued_before":..} (optionally with "iss") or {"iss":..,"issued_before":..} (optionally with "kid")"#;
/// Pairs of fields that belong to different forms, in the order they are reported.
const CONFLICTS: [(&str, &str); 9] = [
    ("jti", "sub"),
    ("jti", "iss"),
    ("jti", "kid"),
    ("jti", "issued_before"),
    ("exp", "issued_before"),
    ("exp", "sub"),
    ("exp", "iss"),
    ("exp", "kid"),
    ("sub", "kid"),
];

/// The body of `POST /purge`, before validation. Every field may be absent, but an
/// explicit `null` is refused (it fails to deserialize as the field's type).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PurgeBody {
    #[serde(default, deserialize_with = "present")]
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    operation: Option<String>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<ScopeClaims>,
    #[serde(default, deserialize_with = "present")]
    all: Option<bool>,
}

/// A field that is present must hold a value of its type: `null` is not "absent".
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The claims of a scope purge, in the order written, with no path given twice.
#[derive(Debug)]
pub(super) struct ScopeClaims(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for ScopeClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;

        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = ScopeClaims;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of claim paths to claim values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScopeClaims, A::Error> {
                let mut claims: Vec<(String, Value)> = Vec::new();
                while let Some((path, value)) = map.next_entry::<String, Value>()? {
                    if claims.iter().any(|(p, _)| *p == path) {
                        return Err(serde::de::Error::custom(format_args!(
                            "claim path `{}` appears twice in `scope`",
                            clip(&path)
                        )));
                    }
                    claims.push((path, value));
                }
                Ok(ScopeClaims(claims))
            }
        }

        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// A validated purge and the name of its selector, for logs.
#[derive(Debug)]
pub(super) struct ParsedPurge {
    pub(super) purge: Purge,
    pub(super) kind: &'static str,
}

/// Reads a request body of type `T` from a JSON object; `expecting` says what the body
/// should be. The error is the `400` message.
pub(super) fn from_object<T: DeserializeOwned>(body: &[u8], expecting: &str) -> Result<T, String> {
    let message = |e: serde_json::Error| {
        let message = e.to_string();
        if e.is_data() {
            clip(&message).to_owned()
        } else {
            format!("the body is not valid JSON: {}", clip(&message))
        }
    };
    // serde's derive also reads a struct from an array of its fields in order; only an
    // object is a request.
    if body.trim_ascii_start().first().is_some_and(|b| *b != b'{') {
        serde_json::from_slice::<IgnoredAny>(body).map_err(message)?;
        return Err(format!("the body must be {expecting}"));
    }
    serde_json::from_slice(body).map_err(message)
}

/// Parses and validates a `POST /purge` body; the error is the `400` message.
pub(super) fn parse_purge(body: &[u8]) -> Result<ParsedPurge, String> {
    let body: PurgeBody = from_object(body, EXPECTING)?;
    let PurgeBody {
        tags,
        types,
        operation,
        scope,
        all,
    } = body;
    let given: Vec<&str> = [
        ("tags", tags.is_some()),
        ("types", types.is_some()),
        ("operation", operation.is_some()),
        ("scope", scope.is_some()),
        ("all", all.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match given.as_slice() {
        [] => {
            return Err(
                "no selector: send one of `tags`, `types`, `operation`, `scope` or `all`".into(),
            );
        }
        [_] => {}
        several => {
            return Err(format!(
                "send exactly one selector; got `{}`",
                several.join("`, `")
            ));
        }
    }
    let (purge, kind) = if let Some(tags) = tags {
        non_empty("tags", &tags)?;
        for tag in &tags {
            let ty = tag.split_once(':').map_or(tag.as_str(), |(ty, _)| ty);
            if !is_graphql_name(ty) || tag.ends_with(':') {
                return Err(format!(
                    "tag `{}` is neither a type name (`Post`) nor an entity (`Post:42`)",
                    clip(tag)
                ));
            }
        }
        (Purge::tags(&tags), "tags")
    } else if let Some(types) = types {
        non_empty("types", &types)?;
        if let Some(ty) = types.iter().find(|ty| !is_graphql_name(ty)) {
            return Err(format!(
                "type `{}` is not a GraphQL type name; entities (`Post:42`) go in `tags`",
                clip(ty)
            ));
        }
        (Purge::types(&types), "types")
    } else if let Some(operation) = operation {
        if !is_graphql_name(&operation) {
            return Err(format!(
                "operation `{}` is not a GraphQL operation name",
                clip(&operation)
            ));
        }
        (Purge::operation(&operation), "operation")
    } else if let Some(ScopeClaims(claims)) = scope {
        if claims.is_empty() {
            return Err("`scope` names no claim; send {\"all\":true} to purge everything".into());
        }
        // The error names the path, never a value.
        let purge =
            Purge::scope(claims).map_err(|e| format!("`scope`: {}", clip(&e.to_string())))?;
        (purge, "scope")
    } else if all == Some(true) {
        (Purge::all(), "all")
    } else {
        return Err("`all` must be true".into());
    };
    Ok(ParsedPurge { purge, kind })
}

pub(super) fn non_empty(field: &str, list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(())
}

/// `text`, cut to [`MAX_MESSAGE_CHARS`] characters.
pub(super) fn clip(text: &str) -> &str {
    text.char_indices()
        .nth(MAX_MESSAGE_CHARS)
        .map_or(text, |(end, _)| &text[..end])
}

/// The body of `POST /revoke`, before validation. Each field is read as any JSON value
/// and checked afterwards, so that a refusal names the field whose value is wrong (serde's
/// own type errors name the value, not the field). As in [`PurgeBody`], an explicit
/// `null` is not "absent".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    #[serde(default, deserialize_with = "present")]
    jti: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    sub: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    issued_before: Option<Value>,
}

/// A validated revocation, the name of its kind and whether it is narrowed (by `iss` or
/// `kid`), for logs.
#[derive(Debug)]
pub(super) struct ParsedRevoke {
    pub(super) revoke: Revoke,
    pub(super) kind: &'static str,
    pub(super) narrowed: bool,
}

/// Parses and validates a `POST /revoke` body; the error is the `400` message. Messages
/// name fields and JSON types, never a value from the body.
pub(super) fn parse_revoke(body: &[u8]) -> Result<ParsedRevoke, String> {
    let body: RevokeBody = from_object(body, REVOKE_FORMS)?;
    let given = [
        ("jti", body.jti.is_some()),
        ("exp", body.exp.is_some()),
        ("sub", body.sub.is_some()),
        ("iss", body.iss.is_some()),
        ("kid", body.kid.is_some()),
        ("issued_before", body.issued_before.is_some()),
    ];
    let present = |field: &str| given.contains(&(field, true));
    if let Some((a, b)) = CONFLICTS.iter().find(|(a, b)| present(a) && present(b)) {
        return Err(format!(
            "`{a}` and `{b}` cannot be combined; send {REVOKE_FORMS}"
        ));
    }
    let RevokeBody {
        jti,
        exp,
        sub,
        iss,
        kid,
        issued_before,
    } = body;
    let jti = text("jti", jti)?;
    let exp = seconds("exp", exp)?;
    let sub = text("sub", sub)?;
    let iss = text("iss", iss)?;
    let kid = text("kid", kid)?;
    let issued_before = seconds("issued_before", issued_before)?;
    let missing_before = || {
        "missing `issued_before`: tokens issued before this time (Unix seconds) are revoked"
            .to_owned()
    };
    if let Some(jti) = jti {
        let exp = exp.ok_or("missing `exp`: the token's `exp` claim, in Unix seconds")?;
        return Ok(ParsedRevoke {
            revoke: Revoke::token_unix(jti, exp),
            kind: "jti",
            narrowed: false,
        });
    }
    if let Some(sub) = sub {
        let before = issued_before.ok_or_else(missing_before)?;
        let narrowed = iss.is_some();
        let mut revoke = Revoke::subject_unix(sub, before);
        if let Some(iss) = iss {
            revoke = revoke.of_issuer(iss);
        }
        return Ok(ParsedRevoke {
            revoke,
            kind: "sub",
            narrowed,
        });
    }
    if let Some(iss) = iss {
        let before = issued_before.ok_or_else(missing_before)?;
        let narrowed = kid.is_some();
        let mut revoke = Revoke::issuer_unix(iss, before);
        if let Some(kid) = kid {
            revoke = revoke.key_id(kid);
        }
        return Ok(ParsedRevoke {
            revoke,
            kind: "iss",
            narrowed,
        });
    }
    Err(if kid.is_some() {
        "`kid` needs `iss`: it narrows a revocation of that issuer's tokens to one key".into()
    } else if exp.is_some() {
        "missing `jti`: `exp` goes with the `jti` of the token to revoke".into()
    } else if issued_before.is_some() {
        "`issued_before` needs `sub` or `iss`: whose tokens to revoke".into()
    } else {
        format!("nothing to revoke; send {REVOKE_FORMS}")
    })
}

/// A string field that, when present, is a non-empty string.
pub(super) fn text(field: &str, value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Err(format!("`{field}` is empty")),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!(
            "`{field}` must be a string, not {}",
            json_type(&other)
        )),
    }
}

/// A time field that, when present, is a whole, non-negative number of Unix seconds.
pub(super) fn seconds(field: &str, value: Option<Value>) -> Result<Option<u64>, String> {
    match value {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{field}` must be a whole number of Unix seconds, 0 or more")),
        Some(other) => Err(format!(
            "`{field}` must be a number of Unix seconds, not {}",
            json_type(&other)
        )),
    }
}

/// The JSON type of `value`, for messages that must not repeat the value itself.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
