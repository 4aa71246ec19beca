//! Registered-claim checks (RFC 7519 §4.1): `exp`, `nbf`, `iss`, `aud` and required claims.
//!
//! jsonwebtoken's own `validate` is private and runs behind its header parser, which does
//! not know the RFC 9864 name `Ed25519`; so signatures are checked with
//! `jsonwebtoken::crypto::verify` and the claims here, once, on the map the resolvers get.
//! The rules follow jsonwebtoken ≥ 10.3: `exp` and `nbf` must be JSON numbers.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::rejection::AuthErrorKind;

/// What a token's claims must satisfy.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) issuers: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: Duration,
    pub(crate) require_exp: bool,
    pub(crate) required: Vec<String>,
}

/// When claims that passed [`ClaimRules::check`] stay valid by the clock:
/// `nbf - leeway ..= exp + leeway`, an end open when its claim is absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    from: f64,
    until: f64,
}

impl Window {
    /// Whether the claims are valid at `now` (seconds since the epoch).
    pub(crate) fn contains(&self, now: f64) -> bool {
        self.from <= now && now <= self.until
    }
}

impl ClaimRules {
    /// The time window of `claims`, which passed [`check`](Self::check). Everything
    /// else `check` looks at (issuer, audience, required claims, the types of `exp` and
    /// `nbf`) cannot change, so a verified token that is seen again needs only this.
    pub(crate) fn window(&self, claims: &Map<String, Value>) -> Window {
        let leeway = self.leeway.as_secs_f64();
        let date = |name| claims.get(name).and_then(numeric_date);
        Window {
            from: date("nbf").map_or(f64::NEG_INFINITY, |nbf| nbf - leeway),
            until: date("exp").map_or(f64::INFINITY, |exp| exp + leeway),
        }
    }

    pub(crate) fn check_at(
        &self,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<(), AuthErrorKind> {
        let leeway = self.leeway.as_secs_f64();
        match claims.get("exp").map(numeric_date) {
            Some(Some(exp)) if now > exp + leeway => return Err(AuthErrorKind::Expired),
            Some(Some(_)) => {}
            Some(None) => return Err(AuthErrorKind::InvalidClaims),
            None if self.require_exp => return Err(AuthErrorKind::InvalidClaims),
            None => {}
        }
        match claims.get("nbf").map(numeric_date) {
            Some(Some(nbf)) if now + leeway < nbf => return Err(AuthErrorKind::NotYetValid),
            Some(None) => return Err(AuthErrorKind::InvalidClaims),
            _ => {}
        }
        if !self.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|iss| self.issuers.iter().any(|ok| ok == iss)) {
                return Err(AuthErrorKind::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |aud: &str| self.audiences.iter().any(|ok| ok == aud);
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => accepted(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !ok {
                return Err(AuthErrorKind::WrongAudience);
            }
        }
        if self.required.iter().any(|name| !claims.contains_key(name)) {
            return Err(AuthErrorKind::InvalidClaims);
        }
        Ok(())
    }
}

/// A NumericDate: a JSON number of seconds. Strings are refused, as jsonwebtoken ≥ 10.3 does.
fn numeric_date(value: &Value) -> Option<f64> {
    value.as_f64().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: f64 = 1_000_000.0;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuers: vec!["forum-demo".into()],
            audiences: vec!["forum-api".into()],
            leeway: Duration::from_secs(30),
            require_exp: true,
            required: vec![],
        }
    }

    fn check(rules: &ClaimRules, claims: Value) -> Result<(), AuthErrorKind> {
        rules.check_at(claims.as_object().unwrap(), NOW)
    }

    fn ok_claims() -> Value {
        json!({"iss": "forum-demo", "aud": "forum-api", "exp": NOW + 60.0})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = ok_claims();
        claims[key] = value;
        claims
    }

    #[test]
    fn the_window_agrees_with_the_check() {
        let rules = rules();
        let claims =
            json!({"iss": "forum-demo", "aud": "forum-api", "exp": NOW + 60.0, "nbf": NOW - 10.0});
        let map = claims.as_object().unwrap();
        let window = rules.window(map);
        for offset in [-100.0, -41.0, -40.0, -39.0, 0.0, 89.0, 90.0, 91.0, 1000.0] {
            let now = NOW + offset;
            assert_eq!(
                window.contains(now),
                rules.check_at(map, now).is_ok(),
                "{offset}"
            );
        }
        let open = rules.window(json!({"sub": "u1"}).as_object().unwrap());
        assert!(open.contains(0.0) && open.contains(f64::MAX));
    }

    #[test]
    fn valid_claims_pass() {
        assert_eq!(check(&rules(), ok_claims()), Ok(()));
        assert_eq!(
            check(&rules(), with("aud", json!(["other", "forum-api"]))),
            Ok(())
        );
    }

    #[test]
    fn exp_is_required_numeric_and_honours_leeway() {
        let mut no_exp = ok_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&rules(), no_exp), Err(AuthErrorKind::InvalidClaims));
        assert_eq!(
            check(&rules(), with("exp", json!("9999999999"))),
            Err(AuthErrorKind::InvalidClaims)
        );
        assert_eq!(check(&rules(), with("exp", json!(NOW - 10.0))), Ok(()));
        assert_eq!(
            check(&rules(), with("exp", json!(NOW - 31.0))),
            Err(AuthErrorKind::Expired)
        );
    }

    #[test]
    fn nbf_is_checked_when_present() {
        assert_eq!(check(&rules(), with("nbf", json!(NOW + 10.0))), Ok(()));
        assert_eq!(
            check(&rules(), with("nbf", json!(NOW + 31.0))),
            Err(AuthErrorKind::NotYetValid)
        );
        assert_eq!(
            check(&rules(), with("nbf", json!("0"))),
            Err(AuthErrorKind::InvalidClaims)
        );
    }

    #[test]
    fn issuer_and_audience_must_match_and_be_present() {
        assert_eq!(
            check(&rules(), with("iss", json!("evil"))),
            Err(AuthErrorKind::WrongIssuer)
        );
        assert_eq!(
            check(&rules(), with("iss", json!(["forum-demo"]))),
            Err(AuthErrorKind::WrongIssuer)
        );
        assert_eq!(
            check(&rules(), with("aud", json!("other"))),
            Err(AuthErrorKind::WrongAudience)
        );
        assert_eq!(
            check(&rules(), with("aud", json!([]))),
            Err(AuthErrorKind::WrongAudience)
        );
        let mut no_aud = ok_claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(&rules(), no_aud), Err(AuthErrorKind::WrongAudience));
    }

    #[test]
    fn required_claims_must_be_present() {
        let rules = ClaimRules {
            required: vec!["sub".into()],
            ..rules()
        };
        assert_eq!(
            check(&rules, ok_claims()),
            Err(AuthErrorKind::InvalidClaims)
        );
        assert_eq!(check(&rules, with("sub", json!("u1"))), Ok(()));
    }
}
