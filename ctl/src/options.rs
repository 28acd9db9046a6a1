//! Dynamic `--<scope>.<key> <value>` options.
//!
//! clap cannot declare flags whose names are only known at run time, so the command line is
//! pre-scanned: every `--driver.KEY VALUE`, `--driver.KEY=VALUE` (and likewise for `topic`,
//! `producer` and `consumer`) is removed and collected into a JSON object per scope; the
//! remaining arguments go to clap. Dotted keys nest (`--topic.validator.type x` gives
//! `{"validator": {"type": "x"}}`) and values are JSON when they parse as JSON, strings
//! otherwise. Options whose type is string (a path, a field name: listed by the driver or the
//! API, see [`PreScan::take_typed`]) keep their text when it would parse as a number, a boolean
//! or `null`: `--driver.root_path 2024` is the directory `2024`.

use std::ffi::OsString;

use serde_json::{Map, Value};

use crate::config::{deep_merge, OptionsError};

/// The scopes that accept `--<scope>.<key>` options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Options passed to `Driver::new`.
    Driver,
    /// Options passed to `Driver::create_topic`.
    Topic,
    /// Options passed to `ProducerOptions::from_json`.
    Producer,
    /// Options passed to `ConsumerOptions::from_json`.
    Consumer,
    /// Options of the topic's validator (topic create): `--validator.<key>`.
    Validator,
    /// Options of the topic's serializer (topic create): `--serializer.<key>`.
    Serializer,
    /// Options of the topic's partition selector (topic create): `--partition-selector.<key>`.
    PartitionSelector,
}

impl Scope {
    const ALL: [Scope; 7] = [
        Scope::Driver,
        Scope::Topic,
        Scope::Producer,
        Scope::Consumer,
        Scope::Validator,
        Scope::Serializer,
        Scope::PartitionSelector,
    ];

    /// The scope's name, as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Driver => "driver",
            Scope::Topic => "topic",
            Scope::Producer => "producer",
            Scope::Consumer => "consumer",
            Scope::Validator => "validator",
            Scope::Serializer => "serializer",
            Scope::PartitionSelector => "partition-selector",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Options collected for one scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScopeOptions {
    /// The options as a JSON object.
    pub values: Map<String, Value>,
    /// The flags they came from (e.g. `--driver.root_path`), in command-line order.
    pub flags: Vec<String>,
    /// Every option as given: dotted key path and value text, in command-line order.
    entries: Vec<(Vec<String>, String)>,
}

/// The result of the pre-scan: dynamic options per scope and the arguments left for clap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreScan {
    scopes: [ScopeOptions; 7],
    /// Arguments for clap (program name included).
    pub rest: Vec<OsString>,
}

impl PreScan {
    /// Options given for `scope`.
    pub fn scope(&self, scope: Scope) -> &ScopeOptions {
        &self.scopes[scope.index()]
    }

    /// Takes the options given for `scope`, as a JSON object.
    pub fn take(&mut self, scope: Scope) -> Map<String, Value> {
        std::mem::take(&mut self.scopes[scope.index()].values)
    }

    /// Like [`PreScan::take`], but the options whose dotted key is in `string_keys` keep their
    /// text when it would parse as a number, a boolean or `null` (a JSON string, object or
    /// array is still taken as JSON: `'"quoted"'`, `'{"type": ...}'`).
    pub fn take_typed(&mut self, scope: Scope, string_keys: &[&str]) -> Map<String, Value> {
        let slot = std::mem::take(&mut self.scopes[scope.index()]);
        let is_text = |path: &[String], text: &str| {
            string_keys.contains(&path.join(".").as_str())
                && matches!(
                    parse_value(text),
                    Value::Number(_) | Value::Bool(_) | Value::Null
                )
        };
        if !slot.entries.iter().any(|(path, text)| is_text(path, text)) {
            return slot.values;
        }
        // Replay the options in order with the typed values. Only scalars change type, so the
        // replay meets exactly the conflicts the scan already accepted: none.
        let mut values = Map::new();
        for (path, text) in &slot.entries {
            let value = if is_text(path, text) {
                Value::String(text.clone())
            } else {
                parse_value(text)
            };
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            if insert_path(&mut values, &segments, value, "").is_err() {
                return slot.values;
            }
        }
        values
    }

    /// Fails if options were given for a scope the command does not use.
    pub fn reject_unused(&self, allowed: &[Scope], command: &str) -> Result<(), OptionsError> {
        for scope in Scope::ALL {
            if allowed.contains(&scope) {
                continue;
            }
            if let Some(flag) = self.scope(scope).flags.first() {
                return Err(OptionsError::NotAccepted {
                    flag: flag.clone(),
                    command: command.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Parses an option value: JSON if it is valid JSON (`3`, `true`, `[1,2]`, `"quoted"`,
/// `{"a":1}`), otherwise the string itself (`files`, `/tmp/data`).
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Splits the command line into dynamic options and arguments for clap. `args` includes the
/// program name. Scanning stops at `--`.
pub fn prescan<I>(args: I) -> Result<PreScan, OptionsError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut out = PreScan::default();
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let Some((scope, spec)) = arg.to_str().and_then(split_scoped) else {
            let end = arg == "--";
            out.rest.push(arg);
            if end {
                out.rest.extend(args);
                break;
            }
            continue;
        };
        let (key, inline) = match spec.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (spec, None),
        };
        let flag = format!("--{}.{key}", scope.name());
        let path = key_path(key, &flag)?;
        let value = match inline {
            Some(value) => value,
            None => next_value(&mut args, &flag)?,
        };
        let slot = &mut out.scopes[scope.index()];
        insert_path(&mut slot.values, &path, parse_value(&value), &flag)?;
        slot.entries
            .push((path.iter().map(|s| (*s).to_owned()).collect(), value));
        slot.flags.push(flag);
    }
    Ok(out)
}

/// Recognises `--<scope>.<rest>` and returns the scope and `<rest>`.
fn split_scoped(arg: &str) -> Option<(Scope, &str)> {
    let body = arg.strip_prefix("--")?;
    Scope::ALL.into_iter().find_map(|scope| {
        body.strip_prefix(scope.name())
            .and_then(|r| r.strip_prefix('.'))
            .map(|rest| (scope, rest))
    })
}

fn next_value(
    args: &mut impl Iterator<Item = OsString>,
    flag: &str,
) -> Result<String, OptionsError> {
    let missing = || OptionsError::MissingValue {
        flag: flag.to_owned(),
    };
    let value = args.next().ok_or_else(missing)?;
    let value = value.into_string().map_err(|_| OptionsError::NotUtf8 {
        flag: flag.to_owned(),
    })?;
    // `--driver.a --driver.b 1` almost certainly forgot a value; `--x.k=--v` is still possible.
    if value.starts_with("--") {
        return Err(missing());
    }
    Ok(value)
}

fn key_path<'a>(key: &'a str, flag: &str) -> Result<Vec<&'a str>, OptionsError> {
    let path: Vec<&str> = key.split('.').collect();
    if path.iter().any(|segment| segment.is_empty()) {
        return Err(OptionsError::BadKey {
            flag: flag.to_owned(),
        });
    }
    Ok(path)
}

/// Sets `path` (at least one segment) to `value` inside `map`, creating intermediate objects.
/// Setting a key twice keeps the last value; objects merge deeply; a scalar where an object is
/// needed (or the reverse) is a conflict.
pub fn insert_path(
    map: &mut Map<String, Value>,
    path: &[&str],
    value: Value,
    flag: &str,
) -> Result<(), OptionsError> {
    let conflict = || OptionsError::Conflict {
        flag: flag.to_owned(),
    };
    let Some((last, parents)) = path.split_last() else {
        return Err(OptionsError::BadKey {
            flag: flag.to_owned(),
        });
    };
    let mut current = map;
    for segment in parents {
        let entry = current
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        current = match entry {
            Value::Object(inner) => inner,
            _ => return Err(conflict()),
        };
    }
    match current.get_mut(*last) {
        Some(existing @ Value::Object(_)) => {
            if !value.is_object() {
                return Err(conflict());
            }
            deep_merge(existing, value);
        }
        _ => {
            current.insert((*last).to_owned(), value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan(args: &[&str]) -> Result<PreScan, OptionsError> {
        prescan(std::iter::once("diaspora-ctl").chain(args.iter().copied()))
    }

    fn rest(p: &PreScan) -> Vec<String> {
        p.rest
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn values_are_json_or_strings() {
        assert_eq!(parse_value("3"), json!(3));
        assert_eq!(parse_value("-2.5"), json!(-2.5));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("null"), Value::Null);
        assert_eq!(parse_value("[1,\"a\"]"), json!([1, "a"]));
        assert_eq!(parse_value("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_value("\"42\""), json!("42"));
        assert_eq!(parse_value("files"), json!("files"));
        assert_eq!(parse_value("/tmp/data"), json!("/tmp/data"));
        assert_eq!(parse_value("{not json"), json!("{not json"));
        assert_eq!(parse_value(""), json!(""));
        assert_eq!(parse_value("3 4"), json!("3 4"));
    }

    #[test]
    fn scoped_options_are_extracted_and_the_rest_kept() {
        let mut p = scan(&[
            "topic",
            "create",
            "--name",
            "t",
            "--driver",
            "files",
            "--driver.root_path",
            "/tmp/x",
            "--topic.num_partitions=4",
            "--producer.batch_size",
            "adaptive",
            "--consumer.partitions",
            "[0,1]",
            "--driver-config",
            "d.json",
        ])
        .expect("scan");
        assert_eq!(
            rest(&p),
            [
                "diaspora-ctl",
                "topic",
                "create",
                "--name",
                "t",
                "--driver",
                "files",
                "--driver-config",
                "d.json"
            ]
        );
        assert_eq!(p.scope(Scope::Driver).flags, ["--driver.root_path"]);
        assert_eq!(
            Value::Object(p.take(Scope::Driver)),
            json!({"root_path": "/tmp/x"})
        );
        assert_eq!(
            Value::Object(p.take(Scope::Topic)),
            json!({"num_partitions": 4})
        );
        assert_eq!(
            Value::Object(p.take(Scope::Producer)),
            json!({"batch_size": "adaptive"})
        );
        assert_eq!(
            Value::Object(p.take(Scope::Consumer)),
            json!({"partitions": [0, 1]})
        );
    }

    #[test]
    fn string_typed_options_keep_their_text() {
        let mut p = scan(&[
            "--driver.root_path",
            "2024",
            "--driver.thread_count",
            "2",
            "--topic.partition_selector.type",
            "key_hash",
            "--topic.partition_selector.field=true",
            "--topic.validator",
            "{\"type\":\"json\"}",
            "--topic.num_partitions",
            "3",
        ])
        .expect("scan");
        assert_eq!(
            Value::Object(p.take_typed(Scope::Driver, &["root_path"])),
            json!({"root_path": "2024", "thread_count": 2})
        );
        assert_eq!(
            Value::Object(p.take_typed(Scope::Topic, diaspora_api::STRING_OPTION_KEYS)),
            json!({
                "partition_selector": {"type": "key_hash", "field": "true"},
                "validator": {"type": "json"},
                "num_partitions": 3
            })
        );
        for (text, expected) in [
            ("null", json!("null")),
            ("-1.50", json!("-1.50")),
            ("\"quoted\"", json!("quoted")),
            ("/data/2024", json!("/data/2024")),
        ] {
            let mut p = scan(&["--driver.root_path", text]).expect("scan");
            assert_eq!(
                Value::Object(p.take_typed(Scope::Driver, &["root_path"])),
                json!({ "root_path": expected }),
                "{text}"
            );
        }
        // Keys not declared as strings are still JSON.
        let mut p = scan(&["--driver.root_path", "2024"]).expect("scan");
        assert_eq!(
            Value::Object(p.take_typed(Scope::Driver, &[])),
            json!({"root_path": 2024})
        );
    }

    #[test]
    fn dotted_keys_nest() {
        let mut p = scan(&[
            "--topic.validator.type",
            "required_fields",
            "--topic.validator.fields=[\"x\"]",
            "--topic.partition_selector.type",
            "key_hash",
        ])
        .expect("scan");
        assert_eq!(
            Value::Object(p.take(Scope::Topic)),
            json!({
                "validator": {"type": "required_fields", "fields": ["x"]},
                "partition_selector": {"type": "key_hash"}
            })
        );
    }

    #[test]
    fn equals_sign_splits_at_first_occurrence() {
        let mut p = scan(&["--driver.expr=a=b"]).expect("scan");
        assert_eq!(Value::Object(p.take(Scope::Driver)), json!({"expr": "a=b"}));
    }

    #[test]
    fn last_value_wins_and_objects_merge() {
        let mut p = scan(&[
            "--topic.n",
            "1",
            "--topic.n",
            "2",
            "--topic.v",
            "{\"a\":1,\"b\":{\"c\":1}}",
            "--topic.v.b.d",
            "2",
            "--topic.v",
            "{\"b\":{\"c\":3}}",
        ])
        .expect("scan");
        assert_eq!(
            Value::Object(p.take(Scope::Topic)),
            json!({"n": 2, "v": {"a": 1, "b": {"c": 3, "d": 2}}})
        );
    }

    #[test]
    fn scalar_object_conflicts_are_errors() {
        let e = scan(&["--topic.v", "json", "--topic.v.type", "x"]).expect_err("conflict");
        assert!(e.to_string().contains("--topic.v.type"), "{e}");
        let e = scan(&["--topic.v.type", "x", "--topic.v", "json"]).expect_err("conflict");
        assert!(e.to_string().contains("--topic.v"), "{e}");
    }

    #[test]
    fn malformed_flags_are_errors() {
        let e = scan(&["--driver.root_path"]).expect_err("missing value");
        assert!(e.to_string().contains("--driver.root_path"), "{e}");
        let e = scan(&["--driver.a", "--driver.b", "1"]).expect_err("missing value");
        assert!(e.to_string().contains("--driver.a"), "{e}");
        for bad in [
            "--driver.",
            "--driver.=3",
            "--topic.a..b=1",
            "--topic..a=1",
            "--topic.a.=1",
        ] {
            assert!(
                matches!(scan(&[bad]), Err(OptionsError::BadKey { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn lookalike_flags_and_values_after_double_dash_are_left_alone() {
        let p = scan(&[
            "--driver",
            "files",
            "--driver-config=x.json",
            "--drivers.x",
            "--",
            "--driver.root_path",
            "/x",
        ])
        .expect("scan");
        assert_eq!(p.scope(Scope::Driver), &ScopeOptions::default());
        assert_eq!(rest(&p).len(), 8);
    }

    #[test]
    fn unused_scopes_are_rejected() {
        let p = scan(&["--topic.num_partitions", "2", "--driver.root_path", "/x"]).expect("scan");
        assert!(p
            .reject_unused(&[Scope::Driver, Scope::Topic], "topic create")
            .is_ok());
        let e = p
            .reject_unused(&[Scope::Driver], "topic list")
            .expect_err("topic options on list");
        let msg = e.to_string();
        assert!(msg.contains("--topic.num_partitions"), "{msg}");
        assert!(msg.contains("topic list"), "{msg}");
    }

    #[test]
    fn component_scopes_are_extracted_and_their_flags_left_for_clap() {
        let mut p = scan(&[
            "--validator",
            "required_fields",
            "--validator.fields",
            "[\"x\"]",
            "--validator-config",
            "v.json",
            "--serializer.type=json",
            "--partition-selector.field",
            "2024",
            "--partition-selector-config",
            "p.json",
        ])
        .expect("scan");
        assert_eq!(
            rest(&p),
            [
                "diaspora-ctl",
                "--validator",
                "required_fields",
                "--validator-config",
                "v.json",
                "--partition-selector-config",
                "p.json"
            ]
        );
        assert_eq!(
            Value::Object(p.take(Scope::Validator)),
            json!({"fields": ["x"]})
        );
        assert_eq!(
            Value::Object(p.take(Scope::Serializer)),
            json!({"type": "json"})
        );
        assert_eq!(
            Value::Object(p.take_typed(Scope::PartitionSelector, &["field"])),
            json!({"field": "2024"})
        );
        let p = scan(&["--validator.type", "json"]).expect("scan");
        let e = p
            .reject_unused(&[Scope::Driver], "topic list")
            .expect_err("validator options on list");
        assert!(e.to_string().contains("--validator.type"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_errors_not_panics() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0xff, 0xfe]);
        let e =
            prescan([OsString::from("x"), "--driver.p".into(), bad.clone()]).expect_err("not utf8");
        assert!(matches!(e, OptionsError::NotUtf8 { .. }));
        // Non-UTF-8 arguments that are not ours are passed through for clap to judge.
        let p = prescan([OsString::from("x"), bad]).expect("scan");
        assert_eq!(p.rest.len(), 2);
    }
}
