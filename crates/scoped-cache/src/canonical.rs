//! Unambiguous byte encodings for cache keys: length-prefixed fields and canonical JSON.
//!
//! Every variable-length field is written with its length first, so `a|b` + `c` can never
//! encode the same as `a` + `b|c`, and JSON objects are written with sorted keys, so key
//! order never changes a key (whatever serde_json's `preserve_order` feature says).

use serde_json::Value;

/// Appends `bytes` preceded by its length.
pub(crate) fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the canonical JSON text of `value` (sorted object keys, no whitespace).
pub(crate) fn put_json(out: &mut Vec<u8>, value: &Value) {
    // Written in place behind a length filled in afterwards: no buffer of its own.
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    write_json(out, value);
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
}

fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serializing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                write_json(out, value);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        scalar => write_scalar(out, scalar),
    }
}

fn write_scalar(out: &mut Vec<u8>, value: &Value) {
    // Serializing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            put_field(&mut out, part.as_bytes());
        }
        out
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        assert_ne!(fields(&["a|b", "c"]), fields(&["a", "b|c"]));
        assert_ne!(fields(&["ab", ""]), fields(&["a", "b"]));
    }

    #[test]
    fn json_object_key_order_is_irrelevant() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        put_json(
            &mut a,
            &json!({"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": null}}),
        );
        put_json(
            &mut b,
            &json!({"a": {"x": null, "y": [1, {"p": 2, "q": 1}]}, "b": 1}),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn put_json_is_the_length_prefixed_canonical_text() {
        let mut out = b"before".to_vec();
        put_json(&mut out, &json!({"b": [1, "x\"y"], "a": null}));
        let mut expected = b"before".to_vec();
        put_field(&mut expected, br#"{"a":null,"b":[1,"x\"y"]}"#);
        assert_eq!(out, expected);
    }

    #[test]
    fn json_types_stay_distinct() {
        let encode = |v: Value| {
            let mut out = Vec::new();
            put_json(&mut out, &v);
            out
        };
        assert_ne!(encode(json!("1")), encode(json!(1)));
        assert_ne!(encode(json!(null)), encode(json!("null")));
        assert_ne!(encode(json!(["a,b"])), encode(json!(["a", "b"])));
    }
}
