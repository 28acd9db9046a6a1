//! The `"eventbridge"` validator: metadata must match an Amazon EventBridge-style event
//! pattern (as upstream's `EventbridgeValidator`).
//!
//! ```json
//! {"validator": {"type": "eventbridge", "schema": {
//!     "source": ["detector"],
//!     "energy": [{"numeric": [">=", 0, "<", 100]}],
//!     "detail": {"kind": [{"prefix": "hit"}, "calibration"]},
//!     "$or": [{"run": [{"exists": true}]}, {"test": [true]}]}}}
//! ```
//!
//! The pattern (key `schema`, as upstream; `pattern` is accepted too) is a JSON object. Each key
//! names a field of the metadata and maps to either a nested pattern (for an object field) or an
//! array of rules, of which the field's value must match at least one (an array value matches if
//! any element does). Every key must match. Rules:
//!
//! | rule | matches |
//! |---|---|
//! | `"x"`, `12`, `true`, `null` | that exact value (numbers compare numerically) |
//! | `{"prefix": "x"}`, `{"suffix": "x"}` | strings starting / ending with `x`; `{"prefix": {"equals-ignore-case": "x"}}` ignores case |
//! | `{"equals-ignore-case": "x"}` | strings equal to `x` ignoring ASCII case |
//! | `{"wildcard": "a*b"}` | strings matching the glob (`*` any run, `\*` a star) |
//! | `{"numeric": [">", 0, "<=", 5]}` | numbers within every bound (`=`, `<`, `<=`, `>`, `>=`) |
//! | `{"exists": true}` / `{"exists": false}` | the field is present / absent |
//! | `{"anything-but": v}` | present values other than `v` (a value, an array of values, or `{"prefix"\|"suffix"\|"equals-ignore-case"\|"wildcard": ..}`) |
//!
//! `"$or": [pattern, ...]` at any level matches if any of the patterns does. A bad pattern fails
//! `create_topic`; a non-matching event fails `push` with the dotted path of the first failing
//! field, e.g. `field "detail.kind": "miss" matches none of [{"prefix":"hit"},"calibration"]`.

use serde_json::{Map, Value};

use crate::data::DataView;
use crate::error::{Error, Result};
use crate::metadata::Metadata;
use crate::policy::Validator;

/// Patterns nest at most this deep (a pattern is user input).
const MAX_DEPTH: usize = 64;

/// Validates metadata against an EventBridge pattern.
#[derive(Debug, Clone)]
pub struct EventBridgeValidator {
    source: Value,
    pattern: ObjectPattern,
}

#[derive(Debug, Clone)]
struct ObjectPattern {
    fields: Vec<(String, FieldPattern)>,
    ors: Vec<Vec<ObjectPattern>>,
}

#[derive(Debug, Clone)]
enum FieldPattern {
    Nested(ObjectPattern),
    AnyOf { rules: Vec<Rule>, text: String },
}

#[derive(Debug, Clone)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum StrRule {
    Prefix(String, bool),
    Suffix(String, bool),
    EqualsIgnoreCase(String),
    Wildcard(String),
}

#[derive(Debug, Clone)]
enum Rule {
    Exact(Value),
    Str(StrRule),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
    AnythingBut(AnythingBut),
}

#[derive(Debug, Clone)]
enum AnythingBut {
    Values(Vec<Value>),
    Str(StrRule),
}

fn bad(path: &str, reason: impl std::fmt::Display) -> Error {
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" at \"{path}\"")
    };
    Error::option(
        "validator.schema",
        format!("bad eventbridge pattern{at}: {reason}"),
    )
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn compile_object(o: &Map<String, Value>, path: &str, depth: usize) -> Result<ObjectPattern> {
    if depth > MAX_DEPTH {
        return Err(bad(path, format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let mut p = ObjectPattern {
        fields: Vec::new(),
        ors: Vec::new(),
    };
    for (k, v) in o {
        if k == "$or" {
            let alts = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| bad(path, "\"$or\" must be a non-empty array of patterns"))?;
            let alts = alts
                .iter()
                .map(|a| match a {
                    Value::Object(o) => compile_object(o, path, depth + 1),
                    _ => Err(bad(path, "\"$or\" alternatives must be objects")),
                })
                .collect::<Result<Vec<_>>>()?;
            p.ors.push(alts);
            continue;
        }
        let here = join(path, k);
        let field = match v {
            Value::Object(o) => FieldPattern::Nested(compile_object(o, &here, depth + 1)?),
            Value::Array(rules) => FieldPattern::AnyOf {
                rules: rules
                    .iter()
                    .map(|r| compile_rule(r, &here))
                    .collect::<Result<_>>()?,
                text: v.to_string(),
            },
            _ => {
                return Err(bad(
                    &here,
                    "a field maps to an array of rules or to a nested pattern",
                ))
            }
        };
        p.fields.push((k.clone(), field));
    }
    Ok(p)
}

fn string_arg<'a>(v: &'a Value, path: &str, op: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| bad(path, format!("\"{op}\" takes a string")))
}

fn compile_str_rule(op: &str, arg: &Value, path: &str) -> Result<Option<StrRule>> {
    Ok(Some(match op {
        "prefix" | "suffix" => {
            let (text, ci) = match arg {
                Value::String(s) => (s.clone(), false),
                Value::Object(o) if o.len() == 1 && o.contains_key("equals-ignore-case") => {
                    let s = string_arg(&o["equals-ignore-case"], path, "equals-ignore-case")?;
                    (s.to_ascii_lowercase(), true)
                }
                _ => {
                    return Err(bad(
                        path,
                        format!("\"{op}\" takes a string or {{\"equals-ignore-case\": string}}"),
                    ))
                }
            };
            if op == "prefix" {
                StrRule::Prefix(text, ci)
            } else {
                StrRule::Suffix(text, ci)
            }
        }
        "equals-ignore-case" => {
            StrRule::EqualsIgnoreCase(string_arg(arg, path, op)?.to_ascii_lowercase())
        }
        "wildcard" => StrRule::Wildcard(string_arg(arg, path, op)?.to_owned()),
        _ => return Ok(None),
    }))
}

fn compile_rule(r: &Value, path: &str) -> Result<Rule> {
    let o = match r {
        Value::Object(o) => o,
        Value::Array(_) => return Err(bad(path, "a rule cannot be an array")),
        exact => return Ok(Rule::Exact(exact.clone())),
    };
    if o.len() != 1 {
        return Err(bad(path, "a rule object has exactly one operator"));
    }
    let (op, arg) = o.iter().next().ok_or_else(|| bad(path, "empty rule"))?;
    if let Some(s) = compile_str_rule(op, arg, path)? {
        return Ok(Rule::Str(s));
    }
    match op.as_str() {
        "exists" => arg
            .as_bool()
            .map(Rule::Exists)
            .ok_or_else(|| bad(path, "\"exists\" takes true or false")),
        "numeric" => {
            let items = arg
                .as_array()
                .filter(|a| !a.is_empty() && a.len() % 2 == 0)
                .ok_or_else(|| bad(path, "\"numeric\" takes [operator, number, ...] pairs"))?;
            let mut bounds = Vec::new();
            for pair in items.chunks(2) {
                let cmp = match pair[0].as_str() {
                    Some("=") => Cmp::Eq,
                    Some("<") => Cmp::Lt,
                    Some("<=") => Cmp::Le,
                    Some(">") => Cmp::Gt,
                    Some(">=") => Cmp::Ge,
                    _ => {
                        return Err(bad(
                            path,
                            format!("unknown numeric operator {} (=, <, <=, >, >=)", pair[0]),
                        ))
                    }
                };
                let n = pair[1].as_f64().ok_or_else(|| {
                    bad(path, format!("numeric bound {} is not a number", pair[1]))
                })?;
                bounds.push((cmp, n));
            }
            Ok(Rule::Numeric(bounds))
        }
        "anything-but" => Ok(Rule::AnythingBut(match arg {
            Value::Array(vs) => {
                if vs.iter().any(|v| v.is_object() || v.is_array()) {
                    return Err(bad(path, "\"anything-but\" lists plain values"));
                }
                AnythingBut::Values(vs.clone())
            }
            Value::Object(inner) if inner.len() == 1 => {
                let (iop, iarg) = inner
                    .iter()
                    .next()
                    .ok_or_else(|| bad(path, "empty anything-but"))?;
                match compile_str_rule(iop, iarg, path)? {
                    Some(s) => AnythingBut::Str(s),
                    None => {
                        return Err(bad(
                            path,
                            format!("\"anything-but\" does not take \"{iop}\""),
                        ))
                    }
                }
            }
            Value::Object(_) => return Err(bad(path, "\"anything-but\" takes one operator")),
            v => AnythingBut::Values(vec![v.clone()]),
        })),
        other => Err(bad(path, format!("unknown operator \"{other}\""))),
    }
}

/// Glob match with `*` (any run) and `\*` (a literal star); linear-time greedy backtracking.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    // Tokens: Some(c) a literal, None a star.
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => toks.push(Some(n)),
                None => toks.push(Some('\\')),
            },
            '*' => toks.push(None),
            c => toks.push(Some(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Some(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(None) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(Option::is_none)
}

fn str_match(rule: &StrRule, s: &str) -> bool {
    match rule {
        StrRule::Prefix(p, false) => s.starts_with(p.as_str()),
        StrRule::Prefix(p, true) => s.to_ascii_lowercase().starts_with(p.as_str()),
        StrRule::Suffix(p, false) => s.ends_with(p.as_str()),
        StrRule::Suffix(p, true) => s.to_ascii_lowercase().ends_with(p.as_str()),
        StrRule::EqualsIgnoreCase(p) => s.eq_ignore_ascii_case(p),
        StrRule::Wildcard(p) => wildcard_match(p, s),
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Whether a present leaf value matches `rule`.
fn leaf_match(rule: &Rule, v: &Value) -> bool {
    match rule {
        Rule::Exact(x) => values_equal(x, v),
        Rule::Str(s) => v.as_str().is_some_and(|t| str_match(s, t)),
        Rule::Numeric(bounds) => v.as_f64().is_some_and(|n| {
            bounds.iter().all(|(c, b)| match c {
                Cmp::Eq => n == *b,
                Cmp::Lt => n < *b,
                Cmp::Le => n <= *b,
                Cmp::Gt => n > *b,
                Cmp::Ge => n >= *b,
            })
        }),
        Rule::Exists(e) => *e,
        Rule::AnythingBut(AnythingBut::Values(vs)) => !vs.iter().any(|x| values_equal(x, v)),
        Rule::AnythingBut(AnythingBut::Str(s)) => v.as_str().is_some_and(|t| !str_match(s, t)),
    }
}

fn rules_match(rules: &[Rule], v: Option<&Value>) -> bool {
    rules.iter().any(|r| match (r, v) {
        (Rule::Exists(e), None) => !*e,
        (_, None) => false,
        (Rule::Exists(e), Some(Value::Array(a))) => *e != a.is_empty(),
        (r, Some(Value::Array(a))) => a.iter().any(|x| leaf_match(r, x)),
        (r, Some(x)) => leaf_match(r, x),
    })
}

/// `Err` names the first failing field.
fn object_match(
    p: &ObjectPattern,
    v: Option<&Value>,
    path: &str,
) -> std::result::Result<(), String> {
    if let Some(Value::Array(items)) = v {
        // Arrays of objects match if any element matches.
        let mut first = None;
        for item in items {
            match object_match(p, Some(item), path) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        return Err(first.unwrap_or_else(|| format!("field \"{path}\" is an empty array")));
    }
    let obj = v.and_then(Value::as_object);
    for (k, fp) in &p.fields {
        let here = join(path, k);
        let child = obj.and_then(|o| o.get(k));
        match fp {
            FieldPattern::Nested(inner) => {
                if child.is_none() {
                    return Err(format!("field \"{here}\" is missing"));
                }
                object_match(inner, child, &here)?;
            }
            FieldPattern::AnyOf { rules, text } => {
                if !rules_match(rules, child) {
                    return Err(match child {
                        None => format!("field \"{here}\" is missing (pattern {text})"),
                        Some(c) => format!("field \"{here}\": {c} matches none of {text}"),
                    });
                }
            }
        }
    }
    for alts in &p.ors {
        let mut reasons = Vec::new();
        if !alts.iter().any(|a| match object_match(a, v, path) {
            Ok(()) => true,
            Err(e) => {
                reasons.push(e);
                false
            }
        }) {
            return Err(format!(
                "no \"$or\" alternative matches ({})",
                reasons.join("; ")
            ));
        }
    }
    Ok(())
}

impl EventBridgeValidator {
    /// Compiles `pattern` (a JSON object); a bad pattern is an [`Error::InvalidOption`] on
    /// `validator.schema` naming the offending field.
    pub fn new(pattern: &Value) -> Result<Self> {
        let Value::Object(o) = pattern else {
            return Err(bad("", "the pattern must be a JSON object"));
        };
        Ok(EventBridgeValidator {
            source: pattern.clone(),
            pattern: compile_object(o, "", 0)?,
        })
    }

    /// From a spec `{"type": "eventbridge", "schema": {...}}` (or `"pattern"`).
    pub fn from_spec(spec: &Value) -> Result<Self> {
        let pattern = spec
            .get("schema")
            .or_else(|| spec.get("pattern"))
            .ok_or_else(|| {
                Error::option(
                    "validator.schema",
                    "is required by the \"eventbridge\" validator (the event pattern)",
                )
            })?;
        Self::new(pattern)
    }

    /// The pattern.
    pub fn pattern(&self) -> &Value {
        &self.source
    }

    /// Whether `value` matches; `Err` names the first failing field.
    pub fn check(&self, value: &Value) -> std::result::Result<(), String> {
        if !value.is_object() {
            return Err("metadata must be a JSON object".to_owned());
        }
        object_match(&self.pattern, Some(value), "")
    }
}

impl Validator for EventBridgeValidator {
    fn validate(&self, metadata: &Metadata, _data: &DataView) -> Result<()> {
        self.check(metadata.json()?).map_err(|why| {
            Error::ValidationFailed(format!(
                "metadata does not match the eventbridge pattern: {why}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(p: Value) -> EventBridgeValidator {
        EventBridgeValidator::new(&p).expect("valid pattern")
    }

    #[test]
    fn eventbridge_exact_values_and_nesting() {
        let p = v(json!({"source": ["detector", "sim"], "detail": {"id": [1, 2]}}));
        assert!(p
            .check(&json!({"source": "sim", "detail": {"id": 2.0}}))
            .is_ok());
        assert!(p
            .check(&json!({"source": ["x", "detector"], "detail": {"id": 1}}))
            .is_ok());
        let e = p
            .check(&json!({"source": "sim", "detail": {"id": 3}}))
            .expect_err("id");
        assert!(e.contains("\"detail.id\""), "{e}");
        let e = p.check(&json!({"source": "sim"})).expect_err("missing");
        assert!(e.contains("\"detail\" is missing"), "{e}");
        assert!(p.check(&json!([1])).is_err());
    }

    #[test]
    fn eventbridge_string_rules() {
        let p = v(json!({
            "a": [{"prefix": "run-"}],
            "b": [{"suffix": ".h5"}],
            "c": [{"equals-ignore-case": "OK"}],
            "d": [{"prefix": {"equals-ignore-case": "AB"}}],
            "e": [{"wildcard": "x*y\\*"}]
        }));
        let good = json!({"a": "run-7", "b": "f.h5", "c": "ok", "d": "abc", "e": "x--y*"});
        p.check(&good).expect("matches");
        for (k, bad) in [
            ("a", "walk"),
            ("b", "f.txt"),
            ("c", "no"),
            ("d", "xab"),
            ("e", "x--y"),
        ] {
            let mut m = good.clone();
            m[k] = json!(bad);
            let e = p.check(&m).expect_err(k);
            assert!(e.contains(&format!("\"{k}\"")), "{e}");
        }
    }

    #[test]
    fn eventbridge_numeric_exists_anything_but() {
        let p = v(json!({
            "energy": [{"numeric": [">=", 0, "<", 100]}],
            "tag": [{"exists": false}],
            "state": [{"anything-but": ["bad", "worse"]}],
            "name": [{"anything-but": {"prefix": "tmp"}}]
        }));
        p.check(&json!({"energy": 0, "state": "fine", "name": "x"}))
            .expect("ok");
        assert!(p
            .check(&json!({"energy": 100, "state": "fine", "name": "x"}))
            .is_err());
        assert!(p
            .check(&json!({"energy": 5, "tag": 1, "state": "fine", "name": "x"}))
            .is_err());
        assert!(p
            .check(&json!({"energy": 5, "state": "bad", "name": "x"}))
            .is_err());
        assert!(p
            .check(&json!({"energy": 5, "state": "ok", "name": "tmp1"}))
            .is_err());
        assert!(
            p.check(&json!({"energy": 5, "name": "x"})).is_err(),
            "anything-but needs the field"
        );
        let q = v(json!({"run": [{"exists": true}]}));
        assert!(q.check(&json!({"run": null})).is_ok());
        assert!(q.check(&json!({})).is_err());
    }

    #[test]
    fn eventbridge_or_and_null() {
        let p = v(json!({"$or": [{"a": [1]}, {"b": [null]}]}));
        assert!(p.check(&json!({"a": 1})).is_ok());
        assert!(p.check(&json!({"b": null})).is_ok());
        let e = p.check(&json!({"a": 2, "b": 3})).expect_err("neither");
        assert!(
            e.contains("$or") && e.contains("\"a\"") && e.contains("\"b\""),
            "{e}"
        );
    }

    #[test]
    fn eventbridge_bad_patterns_are_refused() {
        for bad in [
            json!([1]),
            json!({"a": 1}),
            json!({"a": [{"numeric": [">", "x"]}]}),
            json!({"a": [{"numeric": ["~", 1]}]}),
            json!({"a": [{"prefix": 3}]}),
            json!({"a": [{"nope": 3}]}),
            json!({"a": [{"exists": 1}]}),
            json!({"a": [[1]]}),
            json!({"$or": []}),
            json!({"a": [{"prefix": "x", "suffix": "y"}]}),
        ] {
            let e = EventBridgeValidator::new(&bad).expect_err("bad pattern");
            assert!(e.to_string().contains("validator.schema"), "{e}");
        }
        let mut deep = json!({"x": [1]});
        for _ in 0..100 {
            deep = json!({ "n": deep });
        }
        assert!(EventBridgeValidator::new(&deep).is_err());
    }

    #[test]
    fn wildcard_globs() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*", "abc"));
        assert!(wildcard_match("*c", "abc"));
        assert!(wildcard_match("a*b*c", "aXbYc"));
        assert!(!wildcard_match("a*b*c", "aXbY"));
        assert!(wildcard_match("a\\*", "a*"));
        assert!(!wildcard_match("a\\*", "ab"));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-100i64..100).prop_map(Value::from),
            prop::sample::select(vec![
                "prefix",
                "suffix",
                "numeric",
                "exists",
                "anything-but",
                "wildcard",
                "equals-ignore-case",
                "$or",
                "<",
                ">=",
                "=",
                "a*b",
                "x",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "a",
                        "prefix",
                        "suffix",
                        "numeric",
                        "exists",
                        "anything-but",
                        "wildcard",
                        "equals-ignore-case",
                        "$or",
                    ])
                    .prop_map(str::to_owned),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn eventbridge_never_panics_on_hostile_patterns_or_events(p in arb_json(), e in arb_json()) {
            if let Ok(v) = EventBridgeValidator::new(&p) {
                let _ = v.check(&e);
                let _ = v.check(&json!({"a": e}));
            }
        }
    }
}
