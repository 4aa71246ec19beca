//! Hostile-input generators: [proptest] strategies for everything a client controls in a
//! GraphQL-over-HTTP request (documents, JSON bodies, multipart bodies, GET query strings,
//! headers), and whole requests for the routes of [`super::app`] built from them:
//! [`wild_request`] (every part hostile), [`plausible_request`] (well-formed but for one
//! [`Change`], so the hostile part gets past token checks and parsing), [`hostile_request`]
//! (either), and [`sibling_requests`] (sequences that often share a cache key).
//!
//! Sizes are bounded so one case builds and runs in milliseconds, except the deep
//! documents, which reach a few thousand levels on purpose: async-graphql's parser recurses
//! once per level and overflows a 2 MiB stack at about 2,000, aborting the process, and
//! that abort is what they exist to find. Reuse these for any property that must hold "for
//! every request".
//!
//! Strategies return [`BoxedStrategy`] so they compose with `prop_oneof!` and each other.

use std::fmt;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Value, json};

use super::{member, token, token_with};

/// The nesting limit the fixture's layer applies (the builder's default `max_nesting`).
pub(crate) const MAX_NESTING: usize = 64;

// --- Text building blocks -------------------------------------------------------------

/// Characters that trouble scanners: brackets, quotes, escapes, comment starts, line
/// breaks, NUL, BOM, a line separator, multi-byte letters and an emoji.
const TRICKY: &[char] = &[
    '[', ']', '{', '}', '(', ')', '"', '"', '\\', '#', '\n', '\r', '\t', ' ', 'a', 'Z', '0', '$',
    '@', '.', ':', ',', '!', '=', '\'', '`', 'é', 'ß', '中', '😀', '\u{0}', '\u{7f}', '\u{feff}',
    '\u{2028}', '\u{fffd}',
];

/// Up to `max` [`TRICKY`] characters.
pub(crate) fn tricky_text(max: usize) -> BoxedStrategy<String> {
    vec(select(TRICKY), 0..=max)
        .prop_map(String::from_iter)
        .boxed()
}

/// `text` as a valid GraphQL string literal (quotes, backslashes and control characters
/// escaped).
pub(crate) fn escape_graphql(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// GraphQL string literals: escaped and raw (often invalid) strings, block strings with
/// escaped and unescaped triple quotes, unterminated strings, and long strings full of
/// brackets and escaped quotes. Brackets inside a string are not nesting.
pub(crate) fn graphql_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => tricky_text(48).prop_map(|t| escape_graphql(&t)),
        1 => tricky_text(48).prop_map(|t| format!("\"{t}\"")),
        2 => tricky_text(48)
            .prop_map(|t| format!("\"\"\"{}\"\"\"", t.replace("\"\"\"", "\\\"\"\""))),
        1 => tricky_text(24).prop_map(|t| format!("\"\"\"{t}")),
        1 => tricky_text(16).prop_map(|t| format!("\"{t}")),
        1 => (0..800usize).prop_map(|n| format!("\"{}\"", "[{(\\\"".repeat(n))),
        1 => (0..800usize).prop_map(|n| format!("\"\"\"{}\"\"\"", "[{(\"\\\"\"\"".repeat(n))),
    ]
    .boxed()
}

/// What GraphQL ignores between tokens: spaces, commas, tabs, line breaks, BOMs and
/// comments (some holding brackets and quotes that must not count as nesting).
pub(crate) fn ignored() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just(" ".to_owned()),
        2 => Just(",".to_owned()),
        1 => Just("\n\t".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\u{feff}".to_owned()),
        2 => comment(),
    ]
    .boxed()
}

/// A `#` comment running to a line break, with brackets and quotes inside.
pub(crate) fn comment() -> BoxedStrategy<String> {
    (tricky_text(32), select(&["\n", "\r", "\r\n"][..]))
        .prop_map(|(text, end)| format!("#{}{end}", text.replace(['\n', '\r'], "")))
        .boxed()
}

/// `items` joined by ignored separators, so every document is formatted differently.
fn join(items: Vec<String>, seps: Vec<String>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(seps.get(i % seps.len().max(1)).map_or(" ", String::as_str));
        }
        out.push_str(&item);
    }
    out
}

fn joined(items: BoxedStrategy<Vec<String>>) -> BoxedStrategy<String> {
    (items, vec(ignored(), 1..4))
        .prop_map(|(items, seps)| join(items, seps))
        .boxed()
}

// --- GraphQL documents -------------------------------------------------------------------

/// Root fields of the fixture's `Query` that answer at once (`slow` is left out: it sleeps).
pub(crate) const QUERY_FIELDS: &[&str] = &[
    "renderId",
    "publicPosts",
    "publicPosts(limit: 2)",
    "shortLived",
    "neverCached",
    "privateUnscoped",
    "leaky",
    "org",
    "me { sub name }",
    "memberPosts",
    "echo(a: 1, b: \"x\")",
    "boom",
    "__typename",
];

/// Field names: the schema's, its sub-fields', introspection and unknown ones.
fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(&[
            "renderId", "publicPosts", "shortLived", "neverCached", "privateUnscoped", "leaky",
            "org", "me", "memberPosts", "echo", "boom", "touch", "sub", "name", "__typename",
        ][..])
        .prop_map(str::to_owned),
        1 => "[_a-zA-Z][_0-9a-zA-Z]{0,8}",
        1 => "[\\p{L}][\\p{L}0-9]{0,3}",
    ]
    .boxed()
}

/// GraphQL input values: numbers (huge ones too), strings, enums, variables, and lists and
/// objects a few levels deep.
pub(crate) fn graphql_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        3 => any::<i32>().prop_map(|n| n.to_string()),
        1 => select(&[
            "99999999999999999999999999999", "-0", "1e999", "1.5e-400", "0.0", "01", "1.",
            "true", "false", "null", "ENUM_VALUE", "$a", "$b", "$undefined", "[]", "{}",
        ][..])
        .prop_map(str::to_owned),
        3 => graphql_string(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            joined(vec(inner.clone(), 0..4).boxed()).prop_map(|items| format!("[{items}]")),
            joined(
                vec(("[a-z]{1,3}", inner), 0..4)
                    .prop_map(|fields| fields
                        .into_iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect())
                    .boxed()
            )
            .prop_map(|fields| format!("{{{fields}}}")),
        ]
    })
    .boxed()
}

/// An argument list, maybe empty (`()`, itself a syntax error).
fn arguments() -> BoxedStrategy<String> {
    joined(
        vec(
            (
                select(&["a", "b", "limit", "if", "x", "fail"][..]),
                graphql_value(),
            )
                .prop_map(|(k, v)| format!("{k}: {v}")),
            0..3,
        )
        .boxed(),
    )
    .prop_map(|args| format!("({args})"))
    .boxed()
}

/// Zero to two directives, known (`@include`, `@skip`) and not, with odd arguments.
pub(crate) fn directives() -> BoxedStrategy<String> {
    vec(
        (
            select(&["include", "skip", "deprecated", "unknown", "cacheControl"][..]),
            option::of(prop_oneof![
                3 => select(&["(if: true)", "(if: false)", "(if: $a)", "(if: \"yes\")"][..])
                    .prop_map(str::to_owned),
                1 => arguments(),
            ]),
        )
            .prop_map(|(name, args)| format!("@{name}{}", args.unwrap_or_default())),
        0..3,
    )
    .prop_map(|ds| ds.join(" "))
    .boxed()
}

/// Fragment names the document generators define and spread (and one they never define).
const FRAGMENTS: &[&str] = &["F0", "F1", "F2", "F3", "Undefined"];

/// Selection sets a few levels deep: fields with aliases, arguments, directives and
/// sub-selections, inline fragments, and spreads of [`FRAGMENTS`].
pub(crate) fn selection_set() -> BoxedStrategy<String> {
    let field = (
        option::of("[a-z][a-zA-Z0-9]{0,4}"),
        field_name(),
        option::of(arguments()),
        directives(),
    )
        .prop_map(|(alias, name, args, directives)| {
            let alias = alias.map(|a| format!("{a}: ")).unwrap_or_default();
            format!("{alias}{name}{} {directives}", args.unwrap_or_default())
        });
    let selection = prop_oneof![
        6 => field,
        2 => select(QUERY_FIELDS).prop_map(str::to_owned),
        1 => (select(FRAGMENTS), directives()).prop_map(|(f, d)| format!("...{f} {d}")),
    ];
    let set = joined(vec(selection, 1..5).boxed()).prop_map(|s| format!("{{ {s} }}"));
    set.prop_recursive(3, 24, 3, |inner| {
        let nested = prop_oneof![
            (field_name(), inner.clone()).prop_map(|(name, set)| format!("{name} {set}")),
            (
                select(&["", "on Query", "on Me", "on Mutation", "on Nope"][..]),
                directives(),
                inner,
            )
                .prop_map(|(cond, d, set)| format!("... {cond} {d} {set}")),
            select(QUERY_FIELDS).prop_map(str::to_owned),
        ];
        joined(vec(nested, 1..4).boxed()).prop_map(|s| format!("{{ {s} }}"))
    })
    .boxed()
}

/// Variable definitions with plain, list and non-null types and defaults.
fn variable_definitions() -> BoxedStrategy<String> {
    joined(
        vec(
            (
                select(&["$a", "$b", "$limit", "a"][..]),
                select(
                    &[
                        "Int",
                        "String",
                        "[Int]",
                        "Int!",
                        "[[String!]!]",
                        "Boolean",
                        "Nope",
                    ][..],
                ),
                option::of(graphql_value()),
            )
                .prop_map(|(name, ty, default)| match default {
                    Some(v) => format!("{name}: {ty} = {v}"),
                    None => format!("{name}: {ty}"),
                }),
            0..3,
        )
        .boxed(),
    )
    .prop_map(|defs| format!("({defs})"))
    .boxed()
}

/// One operation: shorthand `{ .. }` or `query` / `mutation` / `subscription`, named or not.
fn operation() -> BoxedStrategy<String> {
    (
        select(&["", "query", "query", "mutation", "subscription"][..]),
        option::of(select(&["A", "B", "Q", "M", "Debug"][..])),
        option::of(variable_definitions()),
        directives(),
        selection_set(),
    )
        .prop_map(|(ty, name, vars, directives, set)| {
            if ty.is_empty() {
                set
            } else {
                format!(
                    "{ty} {} {} {directives} {set}",
                    name.unwrap_or_default(),
                    vars.unwrap_or_default()
                )
            }
        })
        .boxed()
}

/// One fragment definition of [`FRAGMENTS`], on a real, a wrong or an unknown type.
fn fragment_definition() -> BoxedStrategy<String> {
    (
        select(FRAGMENTS),
        select(&["Query", "Me", "Mutation", "Nope"][..]),
        directives(),
        selection_set(),
    )
        .prop_map(|(name, on, d, set)| format!("fragment {name} on {on} {d} {set}"))
        .boxed()
}

/// Valid-ish documents over the fixture's schema: zero to three operations and zero to
/// four fragments (which may spread each other, in cycles too), aliases, directives,
/// arguments of every kind, strings with brackets and quotes, comments and unicode, each
/// formatted differently. Most parse; many fail validation; some fail syntax.
pub(crate) fn graphql_document() -> BoxedStrategy<String> {
    (vec(operation(), 0..4), vec(fragment_definition(), 0..4))
        .prop_flat_map(|(mut ops, frags)| {
            ops.extend(frags);
            joined(Just(ops).boxed())
        })
        .boxed()
}

/// A document cut, spliced or sprinkled with a stray character: syntax errors anywhere.
pub(crate) fn damaged_document() -> BoxedStrategy<String> {
    (
        graphql_document(),
        any::<Index>(),
        any::<Index>(),
        select(TRICKY),
    )
        .prop_map(|(doc, a, b, c)| {
            let chars: Vec<char> = doc.chars().collect();
            if chars.is_empty() {
                return c.to_string();
            }
            let (a, b) = (a.index(chars.len()), b.index(chars.len()));
            match (a + b) % 3 {
                0 => chars[..a].iter().collect(),
                1 => chars[..a].iter().chain([&c]).chain(&chars[a..]).collect(),
                _ => chars[..a.max(b)].iter().chain(&chars[a.min(b)..]).collect(),
            }
        })
        .boxed()
}

/// Wide documents: up to 2,000 root fields (distinct names, or aliases of one field), or
/// as many fragments each spread once.
pub(crate) fn wide_document() -> BoxedStrategy<String> {
    (0..2_000usize, 0..3u8)
        .prop_map(|(n, shape)| match shape {
            0 => format!(
                "{{{} }}",
                (0..n).map(|i| format!(" f{i}")).collect::<String>()
            ),
            1 => format!(
                "{{{} }}",
                (0..n)
                    .map(|i| format!(" a{i}: renderId"))
                    .collect::<String>()
            ),
            _ => {
                let spreads: String = (0..n).map(|i| format!(" ...W{i}")).collect();
                let fragments: String = (0..n)
                    .map(|i| format!(" fragment W{i} on Query {{ f{i} }}"))
                    .collect();
                format!("{{ renderId{spreads} }}{fragments}")
            }
        })
        .boxed()
}

/// Random text: arbitrary unicode, or only the troublesome characters.
pub(crate) fn random_text() -> BoxedStrategy<String> {
    prop_oneof![any::<String>(), tricky_text(200)].boxed()
}

/// The ways a document can nest, each `depth` levels deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nesting {
    /// `echo(b: [[["x"]]])`
    ListArgument,
    /// `echo(b: {a: {a: 1}})`
    ObjectArgument,
    /// `echo(b: [{a: [..]}])`, alternating as `pattern` says.
    MixedArgument,
    /// `me { me { sub } }`
    SelectionSets,
    /// `... { ... { renderId } }`
    InlineFragments,
    /// `@include(if: [[[true]]])`
    DirectiveArgument,
    /// `($v: [[[Int]]])`
    VariableType,
    /// `($v: Int = [[[1]]])`
    VariableDefault,
    /// Deep lists in a fragment the operation never spreads.
    UnusedFragment,
    /// Openers only, never closed: the parser still descends before it fails.
    Unclosed,
    /// Deep lists just after `""""`: two empty strings to the parser, which a scanner that
    /// takes every `"""` for an opening block string mistakes for one string to the end.
    AfterQuadrupleQuote,
    /// As above with `"""x"`: the empty string `""`, then the string `"x"`.
    AfterTripleQuoteString,
    /// Many brackets inside a string, a block string and a comment: nesting 2.
    BracketsInStrings,
}

/// A document of a known nesting depth, as GraphQL's grammar counts it (the depth the
/// parser recurses to).
#[derive(Clone)]
pub(crate) struct DeepDocument {
    pub(crate) text: String,
    pub(crate) kind: Nesting,
    pub(crate) depth: usize,
}

impl fmt::Debug for DeepDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeepDocument {{ kind: {:?}, depth: {}, len: {}, text: {:?} }}",
            self.kind,
            self.depth,
            self.text.len(),
            Shown(self.text.as_bytes())
        )
    }
}

impl DeepDocument {
    /// `levels` levels of `kind`, with `pattern` choosing list or object per level where
    /// both are possible.
    pub(crate) fn new(kind: Nesting, levels: usize, pattern: u64) -> Self {
        let n = levels;
        let (text, depth) = match kind {
            Nesting::ListArgument => (
                format!("{{ echo(b: {}\"x\"{}) }}", "[".repeat(n), "]".repeat(n)),
                n + 2,
            ),
            Nesting::ObjectArgument => (
                format!("{{ echo(b: {}1{}) }}", "{a: ".repeat(n), "}".repeat(n)),
                n + 2,
            ),
            Nesting::MixedArgument => {
                let (mut open, mut close) = (String::new(), String::new());
                for level in 0..n {
                    if pattern.rotate_left(level as u32) & 1 == 0 {
                        open.push('[');
                        close.insert(0, ']');
                    } else {
                        open.push_str("{a: ");
                        close.insert(0, '}');
                    }
                }
                (format!("{{ echo(b: {open}1{close}) }}"), n + 2)
            }
            Nesting::SelectionSets => (
                format!("{{{} sub{} }}", " me {".repeat(n), " }".repeat(n)),
                n + 1,
            ),
            Nesting::InlineFragments => (
                format!("{{{} renderId{} }}", " ... {".repeat(n), " }".repeat(n)),
                n + 1,
            ),
            Nesting::DirectiveArgument => (
                format!(
                    "{{ renderId @include(if: {}true{}) }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                n + 2,
            ),
            Nesting::VariableType => (
                format!(
                    "query Q($v: {}Int{}) {{ renderId }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                (n + 1).max(1),
            ),
            Nesting::VariableDefault => (
                format!(
                    "query Q($v: Int = {}1{}) {{ renderId }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                n + 1,
            ),
            Nesting::UnusedFragment => (
                format!(
                    "{{ renderId }} fragment Deep on Query {{ echo(b: {}1{}) }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                n + 2,
            ),
            Nesting::Unclosed => (format!("{{ echo(b: {}", "[".repeat(n)), n + 2),
            Nesting::AfterQuadrupleQuote => (
                format!(
                    "{{ echo(b: [\"\"\"\" {}1{}]) }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                n + 3,
            ),
            Nesting::AfterTripleQuoteString => (
                format!(
                    "{{ echo(b: [\"\"\"x\" {}1{}]) }}",
                    "[".repeat(n),
                    "]".repeat(n)
                ),
                n + 3,
            ),
            Nesting::BracketsInStrings => {
                // At most 9,000 brackets, so a GET of it stays a valid URI.
                let brackets = "[{(".repeat(n.min(1_000));
                (
                    format!(
                        "# {brackets}\n{{ echo(b: \"{brackets}\") other: echo(b: \"\"\"{brackets}\"\"\") }}"
                    ),
                    2,
                )
            }
        };
        Self { text, kind, depth }
    }
}

/// Nesting from shallow to about 3,000 levels: mostly around the limit and far past it
/// (2,000 levels overflow async-graphql's parser on a 2 MiB stack).
pub(crate) fn nesting_levels() -> BoxedStrategy<usize> {
    prop_oneof![
        2 => 0..=MAX_NESTING,
        2 => (MAX_NESTING - 4)..=(MAX_NESTING + 4),
        1 => 65..=1_999usize,
        3 => 2_000..=3_000usize,
    ]
    .boxed()
}

/// Deeply nested documents of every [`Nesting`] kind, shallow to about 3,000 levels.
pub(crate) fn deep_document() -> BoxedStrategy<DeepDocument> {
    (
        select(
            &[
                Nesting::ListArgument,
                Nesting::ObjectArgument,
                Nesting::MixedArgument,
                Nesting::SelectionSets,
                Nesting::InlineFragments,
                Nesting::DirectiveArgument,
                Nesting::VariableType,
                Nesting::VariableDefault,
                Nesting::UnusedFragment,
                Nesting::Unclosed,
                Nesting::AfterQuadrupleQuote,
                Nesting::AfterTripleQuoteString,
                Nesting::BracketsInStrings,
            ][..],
        ),
        nesting_levels(),
        any::<u64>(),
    )
        .prop_map(|(kind, levels, pattern)| DeepDocument::new(kind, levels, pattern))
        .boxed()
}

/// Fragments spreading fragments: a chain `levels` long, each level spreading the next
/// `width` times (an exponential tree: `width ^ levels` leaves from a few hundred bytes),
/// and optionally closing into a cycle. The leaf is `renderId`, whose answer counts
/// executions.
#[derive(Clone)]
pub(crate) struct FragmentWeb {
    pub(crate) text: String,
    pub(crate) levels: usize,
    pub(crate) width: usize,
    pub(crate) cyclic: bool,
    /// Whether [`hidden`](Self::hidden) put `""""` before the spreads.
    pub(crate) hidden: bool,
}

impl fmt::Debug for FragmentWeb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FragmentWeb {{ levels: {}, width: {}, cyclic: {}, hidden: {}, text: {:?} }}",
            self.levels, self.width, self.cyclic, self.hidden, self.text
        )
    }
}

impl FragmentWeb {
    /// `levels` fragments, each spreading the next `width` times (through inline fragments
    /// when `inline`), the last one selecting `renderId` or, when `cyclic`, spreading the
    /// first again.
    pub(crate) fn new(levels: usize, width: usize, cyclic: bool, inline: bool) -> Self {
        let mut text = String::from("query Web { ...F0 }");
        for level in 0..levels {
            let next = if cyclic && level + 1 == levels {
                0
            } else {
                level + 1
            };
            let spread = if inline {
                format!("... on Query {{ ...F{next} }} ")
            } else {
                format!("...F{next} ")
            };
            text.push_str(&format!(
                "\nfragment F{level} on Query {{ {}}}",
                spread.repeat(width)
            ));
        }
        if !cyclic {
            text.push_str(&format!("\nfragment F{levels} on Query {{ renderId }}"));
        }
        Self {
            text,
            levels,
            width,
            cyclic,
            hidden: false,
        }
    }

    /// The same web behind a variable whose default is `[""""]` (two empty strings): a
    /// scanner that reads `"""` as an opening block string sees no spread after it. The
    /// variable is unused, so the document parses but fails validation; async-graphql
    /// still walks every spread path (its recursion-depth check) before validating.
    #[must_use]
    pub(crate) fn hidden(mut self) -> Self {
        self.text = self
            .text
            .replacen("query Web {", "query Web($v: [String] = [\"\"\"\"]) {", 1);
        self.hidden = true;
        self
    }

    /// How many times executing it in full would resolve `renderId`.
    pub(crate) fn leaves(&self) -> u64 {
        if self.cyclic {
            return u64::MAX;
        }
        (self.width as u64).saturating_pow(self.levels as u32)
    }
}

/// [`FragmentWeb`]s: chains up to 40 long (past async-graphql's recursion limit of 32),
/// cycles, and exponential trees of at most 2^12 leaves (so that a server expanding every
/// spread still answers within a second), some [`hidden`](FragmentWeb::hidden).
pub(crate) fn fragment_web() -> BoxedStrategy<FragmentWeb> {
    (1..=3usize)
        .prop_flat_map(|width| {
            let max_levels: usize = match width {
                1 => 40,
                2 => 12,
                _ => 7,
            };
            (
                Just(width),
                1..=max_levels,
                prop::bool::weighted(0.2),
                any::<bool>(),
                prop::bool::weighted(0.25),
            )
        })
        .prop_map(|(width, levels, cyclic, inline, hidden)| {
            let web = FragmentWeb::new(levels, width, cyclic, inline);
            if hidden { web.hidden() } else { web }
        })
        .boxed()
}

/// Documents that run a mutation, unambiguously: `mutation { touch }` alone or named, next
/// to a query with the mutation's name as the operation name, through a fragment, with
/// comments, a BOM and odd spacing.
pub(crate) fn mutation_document() -> BoxedStrategy<(String, Option<String>)> {
    prop_oneof![
        Just(("mutation { touch }".to_owned(), None)),
        Just(("mutation{touch}".to_owned(), None)),
        Just(("\u{feff}mutation\n#{[(\n{ touch }".to_owned(), None)),
        Just(("mutation M { touch }".to_owned(), None)),
        Just(("mutation M { touch }".to_owned(), Some("M".to_owned()))),
        Just((
            "query Q { renderId } mutation M { touch }".to_owned(),
            Some("M".to_owned())
        )),
        Just((
            "mutation M { ...T } fragment T on Mutation { touch }".to_owned(),
            None
        )),
        Just(("mutation { a: touch b: touch }".to_owned(), None)),
        Just(("mutation ($x: Int) { touch }".to_owned(), None)),
        Just((
            "mutation M { touch } query Q { renderId }".to_owned(),
            Some("M".to_owned())
        )),
        (ignored(), ignored()).prop_map(|(a, b)| (format!("{a}mutation{b}{{touch}}"), None)),
    ]
    .boxed()
}

/// Any document: valid-ish, damaged, deep, fragment webs, mutations, random text.
pub(crate) fn any_document() -> BoxedStrategy<String> {
    prop_oneof![
        6 => graphql_document(),
        2 => damaged_document(),
        2 => deep_document().prop_map(|d| d.text),
        1 => fragment_web().prop_map(|w| w.text),
        1 => wide_document(),
        1 => mutation_document().prop_map(|(d, _)| d),
        1 => random_text(),
        1 => select(QUERY_FIELDS).prop_map(|f| format!("{{ {f} }}")),
    ]
    .boxed()
}

// --- Request bodies ----------------------------------------------------------------------

/// JSON variables: absent, null, small objects, and wrong types.
fn variables_json() -> BoxedStrategy<Option<Value>> {
    option::of(prop_oneof![
        3 => Just(json!({})),
        3 => (any::<i32>(), "[a-z]{0,8}").prop_map(|(a, b)| json!({"a": a, "b": b, "n": 2})),
        1 => Just(Value::Null),
        1 => Just(json!([1, 2])),
        1 => Just(json!("a=1")),
        1 => Just(json!({"a": 1e300, "b": -0.0, "c": u64::MAX})),
    ])
    .boxed()
}

/// One GraphQL-over-HTTP request object around `query`, with operation names, variables,
/// extensions (a persisted-query hash too) and unknown fields.
fn request_object(query: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    (
        query,
        option::of(select(
            &["A", "B", "Q", "M", "Debug", "Web", "Nope", ""][..],
        )),
        variables_json(),
        option::of(prop_oneof![
            Just(json!({})),
            Just(json!({"persistedQuery": {"version": 1, "sha256Hash": "0000"}})),
            Just(json!({"persistedQuery": {"version": 1}})),
        ]),
        option::of(Just(json!({"x": [1, {"y": null}]}))),
    )
        .prop_map(|(query, name, variables, extensions, unknown)| {
            let mut object = json!({ "query": query });
            if let Some(name) = name {
                object["operationName"] = json!(name);
            }
            if let Some(variables) = variables {
                object["variables"] = variables;
            }
            if let Some(extensions) = extensions {
                object["extensions"] = extensions;
            }
            if let Some(unknown) = unknown {
                object["unknown"] = unknown;
            }
            object
        })
        .boxed()
}

/// JSON request bodies: one request or a batch of up to four, around any document.
pub(crate) fn json_body() -> BoxedStrategy<Vec<u8>> {
    let one = request_object(any_document());
    prop_oneof![
        4 => one.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(one, 0..4).prop_map(|batch| Value::Array(batch).to_string().into_bytes()),
    ]
    .boxed()
}

/// `open` repeated `levels` times around `leaf`, closed by `close`.
fn nest(open: &str, leaf: &str, close: &str, levels: usize) -> String {
    format!("{}{leaf}{}", open.repeat(levels), close.repeat(levels))
}

/// JSON bodies with odd shapes: wrong types, duplicate keys, huge numbers, variables and
/// other fields nested up to 5,000 levels, unknown fields, a BOM, NULs, escaped keys and
/// lone surrogates.
pub(crate) fn odd_json_body() -> BoxedStrategy<Vec<u8>> {
    let deep = 1..=5_000usize;
    prop_oneof![
        select(
            &[
                r#"{"query": 1}"#,
                r#"{"query": null}"#,
                r#"{"query": ["{ renderId }"]}"#,
                r#"{"query": {"query": "{ renderId }"}}"#,
                r#"{"query": true}"#,
                r#"{"query": "{ renderId }", "variables": "{}"}"#,
                r#"{"query": "{ renderId }", "variables": [1]}"#,
                r#"{"query": "{ renderId }", "operationName": 1}"#,
                r#"{"query": "{ renderId }", "operationName": {}}"#,
                r#"{"query": "{ renderId }", "extensions": []}"#,
                r#"{"query": "{ renderId }", "query": "mutation { touch }"}"#,
                r#"{"query": "mutation { touch }", "query": "{ renderId }"}"#,
                r#"{"query": "{ renderId }", "operationName": "A", "operationName": "B"}"#,
                r#"{"\u0071uery": "{ renderId }"}"#,
                r#"{"query": "{ echo(b: \"\ud800\") }"}"#,
                r#"{"query": "{ renderId }", "variables": {"a": 1e999999}}"#,
                r#"{"query": "{ renderId }", "variables": {"a": 123456789012345678901234567890}}"#,
                r#"{"query": "{ renderId }", "variables": {"a": -1e-400}}"#,
                r#"{"Query": "{ renderId }"}"#,
                r#"{"query ": "{ renderId }"}"#,
                "\u{feff}{\"query\": \"{ renderId }\"}",
                "{\"query\": \"{ renderId }\"}\u{0}",
                "{\"query\": \"{ renderId }\"} {\"query\": \"{ renderId }\"}",
                "\u{c}{\"query\": \"{ renderId }\"}",
                "[]",
                "[[]]",
                "[1, {\"query\": \"{ renderId }\"}]",
                "{}",
                "null",
                "\"{ renderId }\"",
                "",
                " ",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        deep.clone().prop_map(|n| format!(
            r#"{{"query":"query($a: Int) {{ echo(a: $a) }}","variables":{{"a":{}}}}}"#,
            nest("[", "1", "]", n)
        )
        .into_bytes()),
        deep.clone().prop_map(|n| format!(
            r#"{{"query":"{{ renderId }}","variables":{}}}"#,
            nest(r#"{"a":"#, "1", "}", n)
        )
        .into_bytes()),
        deep.clone().prop_map(|n| format!(
            r#"{{"query":"{{ renderId }}","extensions":{}}}"#,
            nest(r#"{"a":["#, "1", "]}", n)
        )
        .into_bytes()),
        deep.clone().prop_map(|n| format!(
            r#"{{"unknown":{},"query":"{{ renderId }}"}}"#,
            nest("[", "1", "]", n)
        )
        .into_bytes()),
        deep.clone()
            .prop_map(|n| nest("[", "", "]", n).into_bytes()),
        // A deep document behind a duplicate or an escaped key.
        deep.clone().prop_map(|n| format!(
            r#"{{"query":"{{ renderId }}","query":"{{ echo(b: {}) }}"}}"#,
            nest("[", "1", "]", n)
        )
        .into_bytes()),
        deep.prop_map(|n| format!(
            r#"{{"\u0071uery":"{{ echo(b: {}) }}"}}"#,
            nest("[", "1", "]", n)
        )
        .into_bytes()),
        // Truncated JSON.
        (json_body(), any::<Index>()).prop_map(|(body, at)| {
            let cut = at.index(body.len().max(1));
            body[..cut.min(body.len())].to_vec()
        }),
        // A byte that is not UTF-8, inside a string or outside.
        (
            json_body(),
            any::<Index>(),
            select(&[0xff_u8, 0xc0, 0x80, 0xed, 0xfe][..])
        )
            .prop_map(|(mut body, at, byte)| {
                let at = at.index(body.len().max(1));
                body.insert(at.min(body.len()), byte);
                body
            }),
    ]
    .boxed()
}

/// Random bytes, sometimes starting like JSON.
pub(crate) fn random_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        vec(any::<u8>(), 0..64).prop_map(|mut b| {
            b.insert(0, b'{');
            b
        }),
    ]
    .boxed()
}

/// A multipart body and the `Content-Type` announcing it: GraphQL multipart requests
/// (`operations`, `map`, a file) whose `operations` may be deep or odd JSON, with part
/// content types (a nested multipart type too), and boundaries missing, quoted or wrong.
pub(crate) fn multipart_body() -> BoxedStrategy<(String, Vec<u8>)> {
    let operations = prop_oneof![
        3 => request_object(any_document()).prop_map(|v| v.to_string().into_bytes()),
        1 => deep_document().prop_map(|d| json!({"query": d.text}).to_string().into_bytes()),
        1 => odd_json_body(),
    ];
    let part_type = option::of(select(
        &[
            "application/json",
            "text/plain",
            "multipart/mixed",
            "multipart/mixed; boundary=C",
            "application/octet-stream",
            "application/graphql",
        ][..],
    ));
    let header = select(
        &[
            "multipart/form-data; boundary=B",
            "multipart/form-data; boundary=\"B\"",
            "Multipart/Form-Data; boundary=B",
            "multipart/mixed; boundary=B",
            "multipart/form-data; boundary=B; boundary=C",
            "multipart/form-data; boundary=C",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/",
        ][..],
    );
    (
        header,
        operations,
        part_type,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(header, operations, part_type, map, file, twice)| {
            let mut body = Vec::new();
            let mut part = |name: &str, content_type: Option<&str>, content: &[u8]| {
                body.extend_from_slice(
                    format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
                );
                if name == "0" {
                    body.extend_from_slice(b"; filename=\"a.txt\"");
                }
                if let Some(content_type) = content_type {
                    body.extend_from_slice(format!("\r\nContent-Type: {content_type}").as_bytes());
                }
                body.extend_from_slice(b"\r\n\r\n");
                body.extend_from_slice(content);
                body.extend_from_slice(b"\r\n");
            };
            part("operations", part_type, &operations);
            if twice {
                part("operations", None, &operations);
            }
            if map {
                part("map", None, br#"{"0": ["variables.file"]}"#);
            }
            if file {
                part("0", Some("text/plain"), b"hello");
            }
            body.extend_from_slice(b"--B--\r\n");
            (header.to_owned(), body)
        })
        .boxed()
}

/// Any request body, with the `Content-Type` it comes with (if any).
pub(crate) fn request_body() -> BoxedStrategy<(Option<String>, Vec<u8>)> {
    let json_type = option::of(select(
        &[
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON; Charset=\"UTF-8\"",
            "application/json; charset=latin1",
            "application/graphql-response+json",
            "application/graphql",
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "multipart/form-data",
            "multipart/form-data; boundary=B",
            "application/json, text/plain",
            "",
            ";;",
            "application/jsonx",
        ][..],
    ))
    .prop_map(|t| t.map(str::to_owned));
    prop_oneof![
        6 => (json_type.clone(), json_body()),
        3 => (json_type.clone(), odd_json_body()),
        2 => multipart_body().prop_map(|(t, b)| (Some(t), b)),
        1 => (json_type, random_bytes()),
        1 => Just((None, Vec::new())),
    ]
    .boxed()
}

// --- GET query strings -------------------------------------------------------------------

/// Every byte but unreserved characters as `%XX`, in upper or lower case.
fn percent_encode_all(text: &str, lower: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() && !lower {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Only what a URI cannot carry, and `&`, `=`, `+`, `%`, `#`, as `%XX`.
fn percent_encode_minimal(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'&' | b'=' | b'+' | b'%' | b'#' => format!("%{b:02X}"),
            b if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// How one query-string parameter is encoded.
fn encode_param(key: &str, value: &str, how: u8) -> String {
    match how % 4 {
        0 => form_urlencoded::Serializer::new(String::new())
            .append_pair(key, value)
            .finish(),
        1 => format!(
            "{}={}",
            percent_encode_all(key, false),
            percent_encode_all(value, true)
        ),
        2 => format!(
            "{}={}",
            percent_encode_minimal(key),
            percent_encode_minimal(value)
        ),
        _ => format!(
            "{key}={}",
            percent_encode_minimal(value).replace("%20", "+")
        ),
    }
}

/// The longest query string generated: `http` refuses URIs of 64 KiB and more.
pub(crate) const MAX_QUERY_STRING: usize = 60_000;

/// Makes `query` a valid URI query, percent-encoding what the URI grammar refuses, and cuts
/// it to [`MAX_QUERY_STRING`] bytes.
pub(crate) fn uri_safe(query: String) -> String {
    let mut query = if format!("/graphql?{query}").parse::<Uri>().is_ok() {
        query
    } else {
        query
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && !b"\"<>\\^`{|}#".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    // Only ASCII is left, so any length is a character boundary.
    query.truncate(MAX_QUERY_STRING);
    query
}

/// Query-string parameter names: the four GraphQL ones, look-alikes, and unknown ones.
fn param_name() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(&["query", "operationName", "variables", "extensions"][..])
            .prop_map(str::to_owned),
        1 => select(&["Query", "query[]", "operation_name", "x", "", "query ", "q"][..])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

/// GET query strings: any documents, variables and extensions, duplicate and unknown
/// parameters, four encodings (form, all-percent, minimal, `+` for spaces), junk separators
/// and invalid or non-UTF-8 percent escapes.
pub(crate) fn get_query_string() -> BoxedStrategy<String> {
    let value = prop_oneof![
        4 => any_document(),
        1 => variables_json().prop_map(|v| v.unwrap_or(Value::Null).to_string()),
        1 => Just(r#"{"persistedQuery":{"version":1,"sha256Hash":"0000"}}"#.to_owned()),
        1 => (1..=3_000usize).prop_map(|n| format!(r#"{{"a":{}}}"#, nest("[", "1", "]", n))),
        1 => random_text(),
    ];
    let junk = select(
        &[
            "", "&", "&&", "=", "&=&", "%", "%G1", "%FF%FE", "+", ";", "#frag",
        ][..],
    );
    (
        vec((param_name(), value, any::<u8>()), 0..5),
        junk,
        any::<bool>(),
    )
        .prop_map(|(params, junk, junk_first)| {
            let mut parts: Vec<String> = params
                .iter()
                .map(|(k, v, how)| encode_param(k, v, *how))
                .collect();
            if junk_first {
                parts.insert(0, junk.to_owned());
            } else {
                parts.push(junk.to_owned());
            }
            uri_safe(parts.join("&"))
        })
        .boxed()
}

/// A GET query string whose operation is unambiguously a mutation, under each encoding,
/// with unknown and repeated parameters.
pub(crate) fn mutation_query_string() -> BoxedStrategy<String> {
    (
        mutation_document(),
        any::<u8>(),
        any::<bool>(),
        any::<bool>(),
        option::of(variables_json()),
    )
        .prop_map(|((doc, name), how, unknown, repeat, variables)| {
            let mut parts = vec![encode_param("query", &doc, how)];
            if repeat {
                parts.push(encode_param("query", &doc, how.wrapping_add(1)));
            }
            if let Some(name) = name {
                parts.push(encode_param("operationName", &name, how));
            }
            if let Some(Some(variables)) = variables {
                parts.push(encode_param("variables", &variables.to_string(), how));
            }
            if unknown {
                parts.push("x=1".to_owned());
            }
            uri_safe(parts.join("&"))
        })
        .boxed()
}

// --- Headers -----------------------------------------------------------------------------

/// Bytes made valid for a header value: control characters (which `http` refuses) become
/// `?`; bytes above 0x7f stay (obs-text).
fn header_bytes(bytes: &[u8]) -> HeaderValue {
    let cleaned: Vec<u8> = bytes
        .iter()
        .map(|&b| {
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                b'?'
            } else {
                b
            }
        })
        .collect();
    HeaderValue::from_bytes(&cleaned).unwrap_or(HeaderValue::from_static("?"))
}

fn value_of(text: &str) -> HeaderValue {
    header_bytes(text.as_bytes())
}

/// `Accept` lines: the two GraphQL media types, wildcards, quality values (zero, odd,
/// malformed), none acceptable, empty, a charset, many ranges.
pub(crate) fn accept_header() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(&[
            "application/json",
            "application/graphql-response+json",
            "*/*",
            "application/*",
            "text/html",
            "application/json;q=0",
            "application/graphql-response+json;q=0, application/json;q=0",
            "application/json;q=0.5, application/graphql-response+json;q=0.9",
            "application/json;q=1.0001",
            "application/json;q=abc",
            "application/json; charset=latin1",
            "APPLICATION/JSON",
            "",
            ",,,,",
            ";;;",
            "*/*;q=0",
            "application/graphql-response+json; charset=utf-8; q=0.1",
        ][..])
        .prop_map(str::to_owned),
        1 => (1..200usize).prop_map(|n| vec!["text/x-nope;q=0.1"; n].join(", ")),
        1 => tricky_text(40).prop_map(|t| t.replace(['\n', '\r'], "")),
    ]
    .boxed()
}

/// Tokens for the fixture's verifier, minted when the strategy is made (valid for an hour).
#[derive(Debug, Clone)]
struct Tokens {
    member: String,
    admin: String,
    wrong_secret: String,
    wrong_issuer: String,
    expired: String,
}

impl Tokens {
    fn mint() -> Self {
        Self {
            member: member("alice"),
            admin: token(json!({"sub": "root", "role": "admin", "org": {"id": "acme"}})),
            wrong_secret: token_with(
                jsonwebtoken::Algorithm::HS256,
                b"another-secret-of-thirty-two-b!!",
                json!({"sub": "mallory"}),
            ),
            wrong_issuer: token(json!({"sub": "eve", "iss": "elsewhere"})),
            expired: token(json!({"sub": "old", "exp": 1_000_000, "iat": 999_000})),
        }
    }
}

/// `Authorization` values: valid bearer tokens (any scheme case, extra spaces), tokens
/// with a wrong signature, issuer or expiry, `alg: none`, other schemes, garbage, huge.
pub(crate) fn authorization_header() -> BoxedStrategy<Vec<u8>> {
    let t = Tokens::mint();
    let none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9.";
    prop_oneof![
        4 => select(vec![
            format!("Bearer {}", t.member),
            format!("Bearer {}", t.admin),
            format!("bearer {}", t.member),
            format!("BEARER  {}", t.member),
            format!("Bearer {} ", t.member),
            format!("Bearer {}", t.wrong_secret),
            format!("Bearer {}", t.wrong_issuer),
            format!("Bearer {}", t.expired),
            format!("Bearer {none_alg}"),
            format!("Bearer {}x", t.member),
            format!("Basic {}", t.member),
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            "Digest username=\"a\"".to_owned(),
            "Token abc".to_owned(),
            "Bearer a.b.c".to_owned(),
            "Bearer ....".to_owned(),
            "Bearer e30.e30.".to_owned(),
            String::new(),
        ])
        .prop_map(String::into_bytes),
        1 => (1_000..20_000usize).prop_map(|n| format!("Bearer {}", "a".repeat(n)).into_bytes()),
        1 => vec(any::<u8>(), 0..64).prop_map(|mut b| {
            b.splice(0..0, b"Bearer ".iter().copied());
            b
        }),
        1 => tricky_text(64).prop_map(|t| format!("Bearer {t}").into_bytes()),
    ]
    .boxed()
}

/// `Cookie` values for a layer configured with `token_cookie("session")`.
pub(crate) fn cookie_header() -> BoxedStrategy<Vec<u8>> {
    let t = Tokens::mint();
    prop_oneof![
        select(vec![
            format!("session={}", t.member),
            format!("a=b; session={}; c=d", t.admin),
            format!("session={}; session={}", t.member, t.admin),
            format!("session={}", t.wrong_secret),
            "session=garbage".to_owned(),
            "session=".to_owned(),
            "session".to_owned(),
            "a=b".to_owned(),
            ";;;=;".to_owned(),
        ])
        .prop_map(String::into_bytes),
        (1_000..20_000usize).prop_map(|n| format!("session={}", "a".repeat(n)).into_bytes()),
        vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

/// Odd request headers: several `Accept` lines, `Content-Type` variants (also twice),
/// `Authorization` (also twice), `Content-Length` lies, `Origin`, `Sec-Fetch-Site`,
/// `Cookie`, `Host`, forwarding, encoding and expectation headers.
pub(crate) fn hostile_headers() -> BoxedStrategy<Vec<(HeaderName, HeaderValue)>> {
    let name = |n: &'static str| HeaderName::from_static(n);
    let content_length = prop_oneof![
        (0..100_000u64).prop_map(|n| n.to_string()),
        select(
            &[
                "0",
                "-1",
                "abc",
                " 5 ",
                "18446744073709551616",
                "99999999999999999999999",
                "1073741824",
                "1, 2",
                "",
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    let single = prop_oneof![
        4 => accept_header().prop_map(move |v| (name("accept"), value_of(&v))),
        4 => authorization_header().prop_map(move |v| (name("authorization"), header_bytes(&v))),
        2 => cookie_header().prop_map(move |v| (name("cookie"), header_bytes(&v))),
        2 => content_length.prop_map(move |v| (name("content-length"), value_of(&v))),
        1 => select(&[
            "application/json",
            "text/plain",
            "multipart/form-data; boundary=B",
            "application/jsön",
        ][..])
        .prop_map(move |v| (name("content-type"), value_of(v))),
        2 => select(&[
            "null",
            "https://evil.example",
            "http://forum.example",
            "http://localhost",
            "file://",
            "https://forum.example:443",
        ][..])
        .prop_map(move |v| (name("origin"), value_of(v))),
        1 => select(&["cross-site", "same-origin", "none", "CROSS-SITE"][..])
            .prop_map(move |v| (name("sec-fetch-site"), value_of(v))),
        1 => select(&["forum.example", "evil.example:99999", "", "[::1]:80"][..])
            .prop_map(move |v| (name("host"), value_of(v))),
        1 => select(&["a.example", "b.example, c.example"][..])
            .prop_map(move |v| (name("x-forwarded-host"), value_of(v))),
        1 => select(&[
            ("transfer-encoding", "chunked"),
            ("content-encoding", "gzip"),
            ("expect", "100-continue"),
            ("accept-encoding", "br"),
        ][..])
        .prop_map(|(n, v)| (HeaderName::from_static(n), value_of(v))),
    ];
    vec(single, 0..6).boxed()
}

// --- Whole requests ----------------------------------------------------------------------

/// The fixture's routes, and paths next to them.
pub(crate) fn path() -> BoxedStrategy<&'static str> {
    prop_oneof![
        4 => Just("/graphql"),
        3 => Just("/graphql/nocache"),
        2 => Just("/members"),
        1 => select(&["/graphql/", "/GRAPHQL", "/nope", "/t/acme/graphql", "/whoami"][..]),
    ]
    .boxed()
}

/// Methods: mostly `GET` and `POST`, then `HEAD`, the other standard ones and an invented one.
pub(crate) fn method() -> BoxedStrategy<Method> {
    prop_oneof![
        5 => Just(Method::POST),
        4 => Just(Method::GET),
        2 => Just(Method::HEAD),
        1 => select(vec![
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::from_bytes(b"FOO").unwrap_or(Method::TRACE),
        ]),
    ]
    .boxed()
}

/// One request, as data, so it can be sent twice and printed when a property fails.
#[derive(Clone)]
pub(crate) struct HostileRequest {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    /// Already a valid URI query (see [`uri_safe`]).
    pub(crate) query: Option<String>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Vec<u8>,
}

impl HostileRequest {
    /// The request to send.
    pub(crate) fn to_request(&self) -> Request<Body> {
        let uri = match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.to_owned(),
        };
        let mut builder = Request::builder().method(self.method.clone()).uri(uri);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Body::from(self.body.clone()))
            .expect("generated requests are valid")
    }
}

/// Bytes shown in failure reports: printable ASCII as is, the rest escaped, runs of more
/// than eight equal bytes as `⟨[×2000⟩`, and at most 2,000 characters shown.
pub(crate) fn abbreviate(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() && out.len() < 2_000 {
        let run = bytes[i..].iter().take_while(|b| **b == bytes[i]).count();
        if run > 8 {
            out.push_str(&format!("⟨{}×{run}⟩", [bytes[i]].escape_ascii()));
            i += run;
        } else {
            out.push_str(&[bytes[i]].escape_ascii().to_string());
            i += 1;
        }
    }
    if i < bytes.len() {
        out.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    out
}

/// Shows bytes [`abbreviate`]d, in quotes.
pub(crate) struct Shown<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", abbreviate(self.0))
    }
}

impl fmt::Debug for HostileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostileRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query.as_deref().map(|q| Shown(q.as_bytes())))
            .field("headers", &self.headers)
            .field("body", &Shown(&self.body))
            .finish()
    }
}

/// Every part of a request hostile at once: any method, path, query string, headers and
/// body, with the body's `Content-Type` first (so headers may add a second one).
pub(crate) fn wild_request() -> BoxedStrategy<HostileRequest> {
    (
        method(),
        path(),
        option::weighted(0.5, get_query_string()),
        request_body(),
        hostile_headers(),
    )
        .prop_map(|(method, path, query, (content_type, body), extra)| {
            let mut headers = Vec::new();
            if let Some(content_type) = content_type {
                headers.push((
                    HeaderName::from_static("content-type"),
                    value_of(&content_type),
                ));
            }
            headers.extend(extra);
            HostileRequest {
                method,
                path,
                query,
                headers,
                body,
            }
        })
        .boxed()
}

/// Queries the fixture answers without errors (mostly): one to three root fields, maybe
/// named (`Debug` is a bypassed operation), so repeated ones are stored and hit.
pub(crate) fn plain_query() -> BoxedStrategy<String> {
    (
        vec(select(QUERY_FIELDS), 1..4),
        option::weighted(0.3, select(&["A", "Debug"][..])),
    )
        .prop_map(|(fields, name)| match name {
            Some(name) => format!("query {name} {{ {} }}", fields.join(" ")),
            None => format!("{{ {} }}", fields.join(" ")),
        })
        .boxed()
}

/// One hostile change to an otherwise well-formed request.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// None: the request stays well-formed.
    Nothing,
    /// Any document in place of the plain query.
    Document(String),
    /// Any body (and its `Content-Type`) in place of the JSON one.
    Body(Option<String>, Vec<u8>),
    /// Odd headers added.
    Headers(Vec<(HeaderName, HeaderValue)>),
    /// Another method.
    Method(Method),
    /// Another query string.
    Query(String),
}

/// The changes [`plausible_request`] applies, one at a time.
pub(crate) fn change() -> BoxedStrategy<Change> {
    prop_oneof![
        2 => Just(Change::Nothing),
        3 => any_document().prop_map(Change::Document),
        2 => request_body().prop_map(|(t, b)| Change::Body(t, b)),
        2 => hostile_headers().prop_map(Change::Headers),
        1 => method().prop_map(Change::Method),
        1 => get_query_string().prop_map(Change::Query),
    ]
    .boxed()
}

/// A well-formed request (a JSON POST or a GET of a [`plain_query`], anonymous or with a
/// valid member's or admin's token) with one [`Change`]: the hostile part reaches the code
/// behind token checks and parsing, and the cache stores and hits.
pub(crate) fn plausible_request() -> BoxedStrategy<HostileRequest> {
    let tokens = Tokens::mint();
    let auth = option::of(select(vec![tokens.member, tokens.admin]));
    let route = select(&["/graphql", "/graphql", "/graphql/nocache", "/members"][..]);
    (any::<bool>(), route, plain_query(), auth, change())
        .prop_map(|(use_get, path, query, auth, change)| {
            let document = match &change {
                Change::Document(document) => document.clone(),
                _ => query,
            };
            let mut request = HostileRequest {
                method: Method::POST,
                path,
                query: None,
                headers: Vec::new(),
                body: Vec::new(),
            };
            if use_get {
                request.method = Method::GET;
                request.query = Some(uri_safe(
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("query", &document)
                        .finish(),
                ));
            } else {
                request.headers.push((
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("application/json"),
                ));
                request.body = json!({ "query": document }).to_string().into_bytes();
            }
            if let Some(token) = auth {
                request.headers.push((
                    HeaderName::from_static("authorization"),
                    value_of(&format!("Bearer {token}")),
                ));
            }
            match change {
                Change::Nothing | Change::Document(_) => {}
                Change::Body(content_type, body) => {
                    request.headers.retain(|(n, _)| n != "content-type");
                    if let Some(content_type) = content_type {
                        request.headers.push((
                            HeaderName::from_static("content-type"),
                            value_of(&content_type),
                        ));
                    }
                    request.body = body;
                }
                Change::Headers(headers) => request.headers.extend(headers),
                Change::Method(method) => request.method = method,
                Change::Query(query) => request.query = Some(query),
            }
            request
        })
        .boxed()
}

/// Fields whose answer depends only on the request and its claims (no counters, no sleeps),
/// each in a few spellings of the same or nearly the same arguments.
const SIBLING_FIELDS: &[&str] = &[
    "echo(a: 1, b: \"x\")",
    "echo(b: \"x\", a: 1)",
    "echo(a: 1, b: \"\"\"x\"\"\")",
    "echo(a: 1, b: \"\\u0078\")",
    "echo(a: 1, b: \"X\")",
    "echo(a: 2, b: \"x\")",
    "echo(a: null)",
    "echo",
    "echo(a: $a, b: $b)",
    "e: echo(a: 1)",
    "echo: echo(a: 2)",
    "publicPosts",
    "publicPosts(limit: 1)",
    "publicPosts(limit: 2)",
    "publicPosts(limit: $n)",
    "me { sub name }",
    "me { sub }",
    "sub: me { name: sub }",
    "memberPosts",
    "org",
    "leaky",
    "privateUnscoped",
    "shortLived",
    "neverCached",
];

/// The parts of a [`sibling_requests`] request, each drawn from a small set.
#[derive(Debug, Clone)]
struct Sibling {
    fields: Vec<&'static str>,
    name: Option<&'static str>,
    variables: &'static str,
    caller: Option<String>,
    accept: Option<&'static str>,
    use_get: bool,
    separator: String,
}

impl Sibling {
    /// Takes the parts whose bit is set in `mask` from `other`.
    fn mix(&self, other: &Self, mask: u8) -> Self {
        let pick = |bit: u8| mask & (1 << bit) != 0;
        Self {
            fields: if pick(0) {
                other.fields.clone()
            } else {
                self.fields.clone()
            },
            name: if pick(1) { other.name } else { self.name },
            variables: if pick(2) {
                other.variables
            } else {
                self.variables
            },
            caller: if pick(3) {
                other.caller.clone()
            } else {
                self.caller.clone()
            },
            accept: if pick(4) { other.accept } else { self.accept },
            use_get: if pick(5) { other.use_get } else { self.use_get },
            separator: if pick(6) {
                other.separator.clone()
            } else {
                self.separator.clone()
            },
        }
    }

    fn request(&self) -> HostileRequest {
        let body = self.fields.join(&self.separator);
        // Only variables the fields use: an unused one fails validation.
        let definitions: Vec<&str> = [("$a", "$a: Int"), ("$b", "$b: String"), ("$n", "$n: Int")]
            .into_iter()
            .filter(|(used, _)| body.contains(used))
            .map(|(_, definition)| definition)
            .collect();
        let definitions = if definitions.is_empty() {
            String::new()
        } else {
            format!("({})", definitions.join(", "))
        };
        let document = format!(
            "query {}{definitions} {{ {body} }}",
            self.name.unwrap_or("")
        );
        let mut request = HostileRequest {
            method: Method::POST,
            path: "/graphql",
            query: None,
            headers: Vec::new(),
            body: Vec::new(),
        };
        if self.use_get {
            request.method = Method::GET;
            request.query = Some(uri_safe(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("query", &document)
                    .append_pair("variables", self.variables)
                    .finish(),
            ));
        } else {
            // Spliced in as text, so the key order of the variables is kept.
            request.headers.push((
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ));
            request.body = format!(
                r#"{{"query":{},"variables":{}}}"#,
                Value::String(document),
                self.variables
            )
            .into_bytes();
        }
        if let Some(token) = &self.caller {
            request.headers.push((
                HeaderName::from_static("authorization"),
                value_of(&format!("Bearer {token}")),
            ));
        }
        if let Some(accept) = self.accept {
            request
                .headers
                .push((HeaderName::from_static("accept"), value_of(accept)));
        }
        request
    }
}

fn sibling() -> BoxedStrategy<Sibling> {
    let tokens = Tokens::mint();
    let callers = vec![
        None,
        Some(tokens.member),
        Some(member("bob")),
        Some(tokens.admin),
        Some(token(json!({"sub": "gina", "role": "guest"}))),
        Some(token(
            json!({"sub": "alice", "role": "member", "org": {"id": "acme"}}),
        )),
        Some(token(
            json!({"sub": "alice", "role": "member", "org": {"id": "globex"}}),
        )),
    ];
    (
        vec(select(SIBLING_FIELDS), 1..3),
        select(&[None, Some("A"), Some("B")][..]),
        select(
            &[
                "{}",
                r#"{"a": 1, "b": "x", "n": 2}"#,
                r#"{"b": "x", "n": 2, "a": 1}"#,
                r#"{"a": 2, "b": "x", "n": 1}"#,
                r#"{"a": 1.0, "b": "x", "n": 2}"#,
            ][..],
        ),
        select(callers),
        select(
            &[
                None,
                Some("application/json"),
                Some("application/graphql-response+json"),
            ][..],
        ),
        any::<bool>(),
        ignored(),
    )
        .prop_map(
            |(fields, name, variables, caller, accept, use_get, separator)| Sibling {
                fields,
                name,
                variables,
                caller,
                accept,
                use_get,
                separator,
            },
        )
        .boxed()
}

/// Sequences of requests from a small space (a few fields in a few spellings, variables
/// in any order, seven callers, two media types, GET or POST), each a copy of an earlier
/// one with at most a part or two changed: many share a cache key, rightly or not, and a
/// HIT must answer exactly what executing the request would.
pub(crate) fn sibling_requests() -> BoxedStrategy<Vec<HostileRequest>> {
    let masks = select(&[0u8, 0, 1, 2, 4, 8, 8, 8, 16, 16, 32, 32, 64, 64, 40, 24][..]);
    (sibling(), vec((sibling(), any::<Index>(), masks), 1..5))
        .prop_map(|(first, steps)| {
            let mut sent = vec![first];
            for (other, earlier, mask) in steps {
                let base = sent[earlier.index(sent.len())].clone();
                sent.push(base.mix(&other, mask));
            }
            sent.iter().map(Sibling::request).collect()
        })
        .boxed()
}

/// Whole requests to the fixture's routes: well-formed ones, well-formed ones with one
/// hostile change, and wholly hostile ones.
pub(crate) fn hostile_request() -> BoxedStrategy<HostileRequest> {
    prop_oneof![
        1 => plausible_request(),
        1 => wild_request(),
    ]
    .boxed()
}
