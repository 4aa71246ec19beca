use super::*;
use crate::BuildError;

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn env(name: &str) -> Option<String> {
    match name {
        "JWT_SECRET" => Some(SECRET.to_owned()),
        "ADMIN_TOKEN" => Some("an-admin-token-of-16-bytes+".to_owned()),
        _ => None,
    }
}

const GOOD: &str = r#"
[[verifier]]
algorithm = "HS256"
secret_env = "JWT_SECRET"
issuers = ["forum-demo"]
audiences = ["forum-api"]
leeway_secs = 30

[default_rule]
max_age_secs = 60

[[rule]]
root_field = "Query.me"
scope = ["sub", "name", "role"]

[[rule]]
operation = "Debug"
bypass = true

[routes."/graphql"]
policy = "cached"
negotiated_accept = true

[routes."/graphql/nocache"]
policy = "verify_only"

[default_route]
policy = "passthrough"

[invalidate]
"Mutation.createPost" = ["Post"]

[limits]
max_bytes = 1048576
token_cache_bytes = 0

[admin]
token_env = "ADMIN_TOKEN"
explain = "operators"
"#;

#[test]
fn a_file_makes_the_same_builder_as_the_code() {
    let from_file = Config::from_toml(GOOD).unwrap().builder_with(env).unwrap();
    let from_code = ScopedCacheLayer::builder()
        .verifier(
            Verifier::hmac(Algorithm::HS256, SECRET)
                .issuer(["forum-demo"])
                .audience(["forum-api"])
                .leeway(Duration::from_secs(30)),
        )
        .default_rule(Rule::new().max_age(Duration::from_secs(60)))
        .rule(Rule::root_field("Query.me").scope(Scope::claims(["sub", "name", "role"])))
        .rule(Rule::operation("Debug").bypass())
        .route("/graphql", RoutePolicy::cached().negotiated_accept())
        .route("/graphql/nocache", RoutePolicy::verify_only())
        .default_route(RoutePolicy::passthrough())
        .invalidate("Mutation.createPost", ["Post"])
        .max_bytes(1_048_576)
        .token_cache(false)
        .explain(Explain::ToOperators(
            AdminToken::new("an-admin-token-of-16-bytes+").unwrap(),
        ));
    assert_eq!(format!("{from_file:?}"), format!("{from_code:?}"));
    from_file.build().unwrap();
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = Config::from_toml("[limits]\nmax_bytes = 1\nmax_byte = 2\n").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("max_byte"), "{message}");
}

#[test]
fn a_value_of_the_wrong_type_is_refused_with_its_line() {
    let err = Config::from_toml("[default_rule]\nmax_age_secs = \"sixty\"\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    let err = Config::from_toml("[[verifier]]\nalgorithm = \"HS999\"\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn a_missing_secret_names_the_field_and_the_variable_never_a_value() {
    let config = Config::from_toml(GOOD).unwrap();
    let err = config.builder_with(|_| None).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MissingEnv { field, var } if field == "verifier[0].secret_env" && var == "JWT_SECRET"),
        "{err}"
    );
}

#[test]
fn a_rule_must_say_what_it_matches_and_a_scope_is_claims_or_auto() {
    let both = "[[rule]]\nroot_field = \"Query.me\"\noperation = \"Me\"\n";
    let err = Config::from_toml(both)
        .unwrap()
        .builder_with(env)
        .unwrap_err();
    assert!(err.to_string().contains("rule[0]"), "{err}");
    let word = "[[rule]]\nroot_field = \"Query.me\"\nscope = \"sometimes\"\n";
    let err = Config::from_toml(word)
        .unwrap()
        .builder_with(env)
        .unwrap_err();
    assert!(err.to_string().contains("rule[0].scope"), "{err}");
    let auto = "[[rule]]\nroot_field = \"Query.me\"\nscope = \"auto\"\n";
    let _builder = Config::from_toml(auto).unwrap().builder_with(env).unwrap();
}

#[test]
fn build_validates_a_file_as_it_validates_code() {
    let weak = "[[verifier]]\nalgorithm = \"HS256\"\nsecret_env = \"SHORT\"\naudiences = [\"a\"]\n";
    let builder = Config::from_toml(weak)
        .unwrap()
        .builder_with(|_| Some("short".to_owned()))
        .unwrap();
    assert!(matches!(
        builder.build(),
        Err(BuildError::WeakSecret { .. })
    ));
}

#[test]
fn a_secret_written_into_the_file_is_never_repeated_in_an_error() {
    const LEAKED: &str = "p4ssw0rd-that-must-not-be-printed";
    // A key that does not exist (toml's own message would quote the whole line), a value
    // of the wrong type (serde's would quote the value), and a secret written where its
    // variable's name belongs.
    let unknown = format!("[redis]\nurl = \"redis://:{LEAKED}@host\"\nurl_env = \"R\"\n");
    let mistyped = format!("[limits]\nmax_bytes = \"{LEAKED}\"\n");
    let variant = format!("[admin]\nexplain = \"{LEAKED}\"\n");
    for text in [unknown, mistyped, variant] {
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(!err.contains(LEAKED), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
    let unknown = Config::from_toml("[redis]\nurl = \"x\"\nurl_env = \"R\"\n").unwrap_err();
    assert!(
        unknown.to_string().contains("`url`"),
        "the key is named: {unknown}"
    );
    let in_place = format!(
        "[[verifier]]\nalgorithm = \"HS256\"\nsecret_env = \"{LEAKED}\"\naudiences = [\"a\"]\n"
    );
    let err = Config::from_toml(&in_place)
        .unwrap()
        .builder_with(env)
        .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { field, .. } if field == "verifier[0].secret_env"),
        "{err}"
    );
    assert!(!err.to_string().contains(LEAKED), "{err}");
}

#[test]
fn keys_that_would_be_ignored_are_refused() {
    let jwks_with_algorithm = "[[verifier]]\nalgorithm = \"RS256\"\njwks_url = \"https://idp.example/jwks.json\"\naudiences = [\"a\"]\n";
    let both_audiences = "[[verifier]]\nalgorithm = \"HS256\"\nsecret_env = \"JWT_SECRET\"\naudiences = [\"a\"]\nany_audience = true\n";
    for (text, field) in [
        (jwks_with_algorithm, "verifier[0].algorithm"),
        (both_audiences, "verifier[0].audiences"),
    ] {
        let err = Config::from_toml(text)
            .unwrap()
            .builder_with(env)
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if f == field),
            "{err}"
        );
    }
}

#[test]
fn the_explain_credential_can_differ_from_the_admin_token() {
    let text = format!(
        "{}\n[admin]\ntoken_env = \"ADMIN_TOKEN\"\nexplain = \"operators\"\nexplain_token_env = \"EXPLAIN_TOKEN\"\n",
        GOOD.split("[admin]").next().unwrap()
    );
    let env = |name: &str| match name {
        "EXPLAIN_TOKEN" => Some("an-explain-token-of-16-bytes".to_owned()),
        other => env(other),
    };
    let config = Config::from_toml(&text).unwrap();
    let builder = config.builder_with(env).unwrap();
    let Explain::ToOperators(explain) = builder.explained_to() else {
        panic!("explained to operators");
    };
    assert!(explain.verify(b"an-explain-token-of-16-bytes"));
    assert!(!explain.verify(b"an-admin-token-of-16-bytes+"));
    let admin = config.admin_token_with(env).unwrap().unwrap();
    assert!(admin.verify(b"an-admin-token-of-16-bytes+"));
}

#[test]
fn explaining_to_everyone_needs_no_token_and_to_operators_needs_one() {
    let everyone = Config::from_toml("[admin]\nexplain = \"everyone\"\n").unwrap();
    let builder = everyone.builder_with(env).unwrap();
    assert!(matches!(builder.explained_to(), Explain::Everyone));
    assert!(everyone.admin_token_with(env).unwrap().is_none());
    let operators = Config::from_toml("[admin]\nexplain = \"operators\"\n").unwrap();
    let err = operators.builder_with(env).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { field, .. } if field == "admin.explain"),
        "{err}"
    );
}
