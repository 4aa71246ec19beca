//! How deeply a GraphQL document nests, found by one linear pass over its bytes.
//!
//! async-graphql's parser recurses once per nesting level of selection sets, lists, input
//! objects and argument lists; about 2,000 levels overflow the stack and abort the whole
//! process. Every way GraphQL nests goes through `{`, `[` or `(`, so counting those
//! (outside strings and comments) bounds the parser's recursion before it runs.

/// The default for [`max_nesting`](crate::ScopedCacheLayerBuilder::max_nesting).
pub(crate) const DEFAULT_MAX_NESTING: usize = 64;
/// The most [`max_nesting`](crate::ScopedCacheLayerBuilder::max_nesting) may be set to:
/// async-graphql's parser is known to stay well within a 2 MiB thread stack there.
pub(crate) const MAX_MAX_NESTING: usize = 256;
/// The default for [`max_selections`](crate::ScopedCacheLayerBuilder::max_selections).
pub(crate) const DEFAULT_MAX_SELECTIONS: u64 = 10_000;

/// The document nests deeper than the limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep;

/// What the scan saw besides the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    /// The document has a `...` (a fragment spread or an inline fragment, or three dots in
    /// a string or comment): only with spreads can its executed size exceed its text.
    pub(crate) spreads: bool,
}

/// Checks that `text` never nests `{`, `[` or `(` more than `limit` levels deep.
///
/// Strings (`"…"` with escapes, `"""…"""` block strings) and `#` comments are skipped, so
/// brackets inside them do not count. Unbalanced closing brackets are ignored (the parser
/// will refuse the document anyway). The pass stops at the first level past `limit`.
pub(crate) fn check(text: &[u8], limit: usize) -> Result<Shape, TooDeep> {
    // A second, cruder bound that does not depend on reading strings the way the parser
    // does: every bracket counts, inside strings and comments too. Whatever this lexer and
    // the parser's disagree on, the parser never recurses deeper than this.
    if raw_depth_exceeds(text, RAW_LIMIT) {
        return Err(TooDeep);
    }
    let mut depth = 0usize;
    // Any `...` at all, strings included: a spread hidden from this lexer by a string the
    // parser reads differently must still be counted (a false positive costs one parse).
    let shape = Shape {
        spreads: text.windows(3).any(|w| w == b"..."),
    };
    // Where a search for a closing `"""` failed: no later search can succeed, so none runs.
    let mut unclosed_after = usize::MAX;
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        match byte {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep);
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                // A comment runs to the end of the line.
                while text.get(i).is_some_and(|b| *b != b'\n' && *b != b'\r') {
                    i += 1;
                }
            }
            b'"' if text.get(i..i + 3) == Some(b"\"\"\"") => {
                // Like the parser: a `"""` with no closing `"""` is not a block string but
                // the empty string `""`, and scanning goes on at the third quote.
                let end = if i >= unclosed_after {
                    None
                } else {
                    skip_block_string(text, i + 3)
                };
                if end.is_none() {
                    unclosed_after = unclosed_after.min(i);
                }
                i = end.unwrap_or(i + 2);
                continue;
            }
            b'"' => {
                i = skip_string(text, i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(shape)
}

/// The bound on raw bracket nesting (strings and comments included). Documents never come
/// near it; async-graphql's parser is known to be safe well past it on a 2 MiB stack.
pub(crate) const RAW_LIMIT: usize = 512;

fn raw_depth_exceeds(text: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    for byte in text {
        match byte {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The index just past the string that starts at `i` (after its opening quote).
fn skip_string(text: &[u8], mut i: usize) -> usize {
    while let Some(&byte) = text.get(i) {
        match byte {
            b'\\' => i += 2,
            b'"' => return i + 1,
            // A line break ends an unterminated string: the parser refuses it there.
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    i
}

/// The index just past the block string that starts at `i` (after its opening `"""`), or
/// `None` if it is never closed.
fn skip_block_string(text: &[u8], mut i: usize) -> Option<usize> {
    while let Some(rest) = text.get(i..) {
        if rest.starts_with(b"\\\"\"\"") {
            i += 4;
        } else if rest.starts_with(b"\"\"\"") {
            return Some(i + 3);
        } else if rest.is_empty() {
            return None;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check(text.as_bytes(), limit).is_ok()
    }

    #[test]
    fn counts_every_kind_of_bracket() {
        let q = "{ a(x: [{y: 1}]) { b } }";
        // `{` `(` `[` `{` nest four deep.
        assert!(depth_ok(q, 4));
        assert!(!depth_ok(q, 3));
    }

    #[test]
    fn deep_lists_objects_and_selections_are_refused() {
        for (open, close) in [("[", "]"), ("{a:", "}"), ("{ a ", "}")] {
            let q = format!("{{ f(x: {}1{}) }}", open.repeat(2_000), close.repeat(2_000));
            assert_eq!(check(q.as_bytes(), 64), Err(TooDeep), "{open}");
        }
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let q = r#"{ a(x: "[[[[[[", y: """ {{{{{{ \""" ((((( """) # [[[[[[[
            b }"#;
        assert!(depth_ok(q, 2));
        let escaped = r#"{ a(x: "\"[[[[[[") }"#;
        assert!(depth_ok(escaped, 2));
    }

    #[test]
    fn an_unclosed_block_string_quote_is_read_as_the_parser_reads_it() {
        // `""""` is `""` and `""` to the parser when no `"""` closes it: the brackets after
        // it are real nesting and must be counted.
        let deep = format!(
            r#"{{ echo(b: [""""{}1{}) }}"#,
            "[".repeat(62),
            "]".repeat(63)
        );
        assert_eq!(check(deep.as_bytes(), 64), Err(TooDeep));
        let deep = format!(
            r#"{{ echo(b: ["""x" {}1{}) }}"#,
            "[".repeat(62),
            "]".repeat(63)
        );
        assert_eq!(check(deep.as_bytes(), 64), Err(TooDeep));
        assert!(
            check(br#"query($v: [String] = [""""]) { ...F0 }"#, 8)
                .unwrap()
                .spreads
        );
    }

    #[test]
    fn unterminated_strings_and_stray_closers_stay_linear_and_safe() {
        assert!(depth_ok(r#"{ a(x: "abc"#, 2));
        assert!(depth_ok(r#"{ a(x: """abc"#, 2));
        assert!(depth_ok(")))]]]}}}", 0));
        // A string cut by a line break does not hide the brackets after it.
        assert!(!depth_ok("{ a(x: \"abc\n [[[[ ) }", 3));
    }

    #[test]
    fn spreads_are_noticed_wherever_they_are() {
        assert!(check(b"{ ...F }", 4).unwrap().spreads);
        assert!(check(b"{ ... on Q { a } }", 4).unwrap().spreads);
        // Inside a string too: whether it is one is the parser's call, not this lexer's.
        assert!(check(br#"{ a(x: "...") }"#, 4).unwrap().spreads);
        assert!(!check(br#"{ a(x: "..") }"#, 4).unwrap().spreads);
    }

    #[test]
    fn brackets_hidden_in_strings_still_have_a_hard_bound() {
        let hidden = format!(r#"{{ a(x: "{}") }}"#, "[".repeat(RAW_LIMIT + 1));
        assert_eq!(check(hidden.as_bytes(), 64), Err(TooDeep));
        let many_strings = format!("{{ a(x: [{}]) }}", r#""[[[[","#.repeat(100));
        assert!(depth_ok(&many_strings, 64));
    }

    #[test]
    fn the_parser_is_safe_at_the_raw_limit_on_a_small_stack() {
        // The raw bound is the last line of defence: async-graphql's parser must survive
        // it on a 2 MiB stack (tokio's worker default) in this unoptimised build.
        let n = RAW_LIMIT - 2;
        let documents = [
            format!("{{ a(x: {}1{}) }}", "[".repeat(n), "]".repeat(n)),
            format!("{{ a(x: {}1{}) }}", "{a:".repeat(n), "}".repeat(n)),
            format!("{{{}a{} }}", " a {".repeat(n), "}".repeat(n)),
            format!("query($v: {}Int{}) {{ a }}", "[".repeat(n), "]".repeat(n)),
        ];
        let parsed = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                for document in &documents {
                    assert!(check(document.as_bytes(), RAW_LIMIT).is_ok());
                    // Parsed or refused, either way without overflowing.
                    let _ = async_graphql::parser::parse_query(document);
                }
            })
            .unwrap()
            .join();
        assert!(parsed.is_ok());
    }

    #[test]
    fn empty_and_flat_texts_pass() {
        assert!(depth_ok("", 0));
        assert!(depth_ok("query", 0));
    }
}
