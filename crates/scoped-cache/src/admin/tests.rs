use super::*;
use crate::BuildError;

#[test]
fn short_tokens_are_refused_and_name_the_problem() {
    let err = AdminToken::new("short").unwrap_err();
    assert!(matches!(
        err,
        BuildError::WeakAdminToken { len: 5, min: 16 }
    ));
    assert_eq!(
        err.to_string(),
        "admin token is 5 bytes; at least 16 are required"
    );
    assert!(AdminToken::new("x".repeat(15)).is_err());
    assert!(AdminToken::new("x".repeat(16)).is_ok());
}

#[test]
fn tokens_that_cannot_be_sent_are_refused() {
    for bad in [
        "0123456789abcdef\n",
        "0123456789 abcdef",
        "0123456789abcdéf",
    ] {
        assert!(
            matches!(
                AdminToken::new(bad),
                Err(BuildError::InvalidAdminToken { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn debug_hides_the_secret() {
    let token = AdminToken::new("super-secret-admin-token").unwrap();
    let debug = format!("{token:?}");
    assert_eq!(debug, "AdminToken { .. }");
}

#[test]
fn verify_compares_the_whole_token() {
    let token = AdminToken::new("super-secret-admin-token").unwrap();
    assert!(token.verify(b"super-secret-admin-token"));
    assert!(!token.verify(b"super-secret-admin-toke"));
    assert!(!token.verify(b"super-secret-admin-tokenX"));
    assert!(!token.verify(b""));
}

fn kind(body: &str) -> Result<&'static str, String> {
    parse_purge(body.as_bytes()).map(|p| p.kind)
}

#[test]
fn each_selector_parses_to_its_purge() {
    let parsed = |body: &str| parse_purge(body.as_bytes()).unwrap().purge;
    assert_eq!(
        parsed(r#"{"tags":["Post:1","User"]}"#),
        Purge::tags(["Post:1", "User"])
    );
    assert_eq!(parsed(r#"{"types":["Post"]}"#), Purge::types(["Post"]));
    assert_eq!(parsed(r#"{"operation":"Feed"}"#), Purge::operation("Feed"));
    assert_eq!(
        parsed(r#"{"scope":{"sub":"alice","org.id":7}}"#),
        Purge::scope([("sub", Value::from("alice")), ("org.id", Value::from(7))]).unwrap()
    );
    assert_eq!(parsed(r#"{"all":true}"#), Purge::all());
    assert_eq!(kind(r#"{"scope":{"sub":"alice"}}"#), Ok("scope"));
}

#[test]
fn malformed_bodies_have_clear_messages() {
    let cases = [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("tags", "not valid JSON"),
        (r#"{"all":true} x"#, "not valid JSON"),
        ("[]", "the body must be a JSON object with one of"),
        (r#"[["Post"]]"#, "the body must be a JSON object"),
        (r#""all""#, "the body must be a JSON object"),
        (" [1", "not valid JSON"),
        ("{}", "no selector"),
        (r#"{"tag":["Post"]}"#, "unknown field `tag`"),
        (
            r#"{"tags":["Post"],"all":true}"#,
            "exactly one selector; got `tags`, `all`",
        ),
        (r#"{"tags":null}"#, "invalid type: null"),
        (r#"{"tags":[]}"#, "`tags` is empty"),
        (r#"{"types":[]}"#, "`types` is empty"),
        (
            r#"{"tags":[1]}"#,
            "invalid type: integer `1`, expected a string",
        ),
        (r#"{"tags":"Post"}"#, "expected a sequence"),
        (r#"{"tags":[""]}"#, "neither a type name"),
        (r#"{"tags":["Post:"]}"#, "neither a type name"),
        (r#"{"tags":[":1"]}"#, "neither a type name"),
        (
            r#"{"types":["Post:1"]}"#,
            "entities (`Post:42`) go in `tags`",
        ),
        (r#"{"operation":""}"#, "not a GraphQL operation name"),
        (r#"{"operation":"Feed "}"#, "not a GraphQL operation name"),
        (r#"{"all":false}"#, "`all` must be true"),
        (r#"{"all":"yes"}"#, "expected a boolean"),
        (r#"{"scope":{}}"#, "`scope` names no claim"),
        (r#"{"scope":["sub"]}"#, "an object of claim paths"),
        (r#"{"scope":{"org..id":"x"}}"#, "invalid claim path"),
        (r#"{"scope":{"sub":"a","sub":"b"}}"#, "appears twice"),
    ];
    for (body, expected) in cases {
        let message = kind(body).expect_err(body);
        assert!(
            message.contains(expected),
            "{body}: {message:?} should contain {expected:?}"
        );
    }
}

fn revoke(body: &str) -> Result<Revoke, String> {
    parse_revoke(body.as_bytes()).map(|p| p.revoke)
}

#[test]
fn each_revoke_form_parses_to_its_revocation() {
    assert_eq!(
        revoke(r#"{"jti":"3f2a","exp":1800003600}"#),
        Ok(Revoke::token_unix("3f2a", 1_800_003_600))
    );
    assert_eq!(
        revoke(r#"{"sub":"alice","issued_before":1800000000}"#),
        Ok(Revoke::subject_unix("alice", 1_800_000_000))
    );
    assert_eq!(
        revoke(r#"{"issued_before":1800000000,"iss":"idp","sub":"alice"}"#),
        Ok(Revoke::subject_unix("alice", 1_800_000_000).of_issuer("idp"))
    );
    assert_eq!(
        revoke(r#"{"iss":"idp","issued_before":0}"#),
        Ok(Revoke::issuer_unix("idp", 0))
    );
    assert_eq!(
        revoke(r#"{"iss":"idp","issued_before":1800000000,"kid":"k1"}"#),
        Ok(Revoke::issuer_unix("idp", 1_800_000_000).key_id("k1"))
    );
    // The largest time JSON can say exactly.
    assert_eq!(
        revoke(&format!(r#"{{"jti":"j","exp":{}}}"#, u64::MAX)),
        Ok(Revoke::token_unix("j", u64::MAX))
    );
    let kinds = |body: &str| {
        let parsed = parse_revoke(body.as_bytes()).unwrap();
        (parsed.kind, parsed.narrowed)
    };
    assert_eq!(kinds(r#"{"jti":"j","exp":1}"#), ("jti", false));
    assert_eq!(kinds(r#"{"sub":"a","issued_before":1}"#), ("sub", false));
    assert_eq!(
        kinds(r#"{"sub":"a","issued_before":1,"iss":"i"}"#),
        ("sub", true)
    );
    assert_eq!(kinds(r#"{"iss":"i","issued_before":1}"#), ("iss", false));
    assert_eq!(
        kinds(r#"{"iss":"i","issued_before":1,"kid":"k"}"#),
        ("iss", true)
    );
}

#[test]
fn malformed_revocations_name_the_field() {
    let cases = [
        ("", "not valid JSON"),
        (r#"{"jti":"j","exp":1"#, "not valid JSON"),
        ("[]", "the body must be a JSON object in one of three forms"),
        (r#"["j",1]"#, "the body must be a JSON object"),
        ("{}", "nothing to revoke"),
        (
            r#"{"jti":"j","exp":1,"reason":"x"}"#,
            "unknown field `reason`",
        ),
        (r#"{"jti":"j","jti":"k","exp":1}"#, "duplicate field `jti`"),
        // Wrong types, negative and fractional numbers.
        (r#"{"jti":"j","exp":"soon"}"#, "`exp` must be a number"),
        (r#"{"jti":"j","exp":-1}"#, "`exp` must be a whole number"),
        (r#"{"jti":"j","exp":1.5}"#, "`exp` must be a whole number"),
        (r#"{"jti":"j","exp":1e3}"#, "`exp` must be a whole number"),
        (
            r#"{"jti":"j","exp":18446744073709551616}"#,
            "`exp` must be a whole number",
        ),
        (
            r#"{"jti":"j","exp":null}"#,
            "`exp` must be a number of Unix seconds, not null",
        ),
        (
            r#"{"jti":7,"exp":1}"#,
            "`jti` must be a string, not a number",
        ),
        (
            r#"{"jti":null,"exp":1}"#,
            "`jti` must be a string, not null",
        ),
        (
            r#"{"sub":["alice"],"issued_before":1}"#,
            "`sub` must be a string, not an array",
        ),
        (
            r#"{"sub":"a","issued_before":"1800000000"}"#,
            "`issued_before` must be a number",
        ),
        (
            r#"{"sub":"a","issued_before":-5}"#,
            "`issued_before` must be a whole number",
        ),
        (
            r#"{"sub":"a","issued_before":1,"iss":{}}"#,
            "`iss` must be a string, not an object",
        ),
        (
            r#"{"iss":"i","issued_before":1,"kid":true}"#,
            "`kid` must be a string, not a boolean",
        ),
        // Missing parts.
        (r#"{"jti":"j"}"#, "missing `exp`"),
        (r#"{"sub":"a"}"#, "missing `issued_before`"),
        (r#"{"sub":"a","iss":"i"}"#, "missing `issued_before`"),
        (r#"{"iss":"i","kid":"k"}"#, "missing `issued_before`"),
        (r#"{"exp":1}"#, "missing `jti`"),
        (
            r#"{"issued_before":1}"#,
            "`issued_before` needs `sub` or `iss`",
        ),
        // Two forms at once.
        (
            r#"{"jti":"j","exp":1,"sub":"a"}"#,
            "`jti` and `sub` cannot be combined",
        ),
        (
            r#"{"jti":"j","exp":1,"iss":"i"}"#,
            "`jti` and `iss` cannot be combined",
        ),
        (
            r#"{"jti":"j","issued_before":1}"#,
            "`jti` and `issued_before` cannot be combined",
        ),
        (
            r#"{"exp":1,"issued_before":1}"#,
            "`exp` and `issued_before` cannot be combined",
        ),
        (
            r#"{"sub":"a","exp":1}"#,
            "`exp` and `sub` cannot be combined",
        ),
        (
            r#"{"sub":"a","issued_before":1,"kid":"k"}"#,
            "`sub` and `kid` cannot be combined",
        ),
        (r#"{"kid":"k","issued_before":1}"#, "`kid` needs `iss`"),
        (r#"{"kid":"k"}"#, "`kid` needs `iss`"),
        // Empty strings.
        (r#"{"jti":"","exp":1}"#, "`jti` is empty"),
        (r#"{"sub":"","issued_before":1}"#, "`sub` is empty"),
        (
            r#"{"sub":"a","issued_before":1,"iss":""}"#,
            "`iss` is empty",
        ),
        (r#"{"iss":"","issued_before":1}"#, "`iss` is empty"),
        (
            r#"{"iss":"i","issued_before":1,"kid":""}"#,
            "`kid` is empty",
        ),
    ];
    for (body, expected) in cases {
        let message = revoke(body).expect_err(body);
        assert!(
            message.contains(expected),
            "{body}: {message:?} should contain {expected:?}"
        );
    }
}

#[test]
fn revocation_messages_never_repeat_values() {
    for body in [
        r#"{"jti":"secret-jti","exp":"secret-exp"}"#,
        r#"{"sub":"secret-sub","issued_before":"secret-time"}"#,
        r#"{"sub":"secret-sub","issued_before":1,"kid":"secret-kid"}"#,
        r#"{"iss":"secret-iss","issued_before":1.5}"#,
        r#"{"iss":["secret-iss"],"issued_before":1}"#,
    ] {
        let message = revoke(body).unwrap_err();
        assert!(!message.contains("secret"), "{body}: {message}");
    }
}

#[test]
fn claim_values_never_appear_in_messages() {
    let message = kind(r#"{"scope":{"org..id":"secret-value"}}"#).unwrap_err();
    assert!(!message.contains("secret-value"), "{message}");
}

#[test]
fn messages_are_bounded() {
    let long = "a".repeat(10_000);
    let message = kind(&format!(r#"{{"{long}":1}}"#)).unwrap_err();
    assert!(message.len() < 2 * MAX_MESSAGE_CHARS, "{}", message.len());
}
