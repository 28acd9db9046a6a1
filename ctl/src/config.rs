//! JSON option files (`--driver-config`, `--topic-config`) and how they merge with the
//! command line: a deep merge where the command line wins.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Errors in options given on the command line or in option files.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A `--<scope>.<key>` flag without a value.
    #[error("option {flag} requires a value (use {flag}=<value> for values starting with \"--\")")]
    MissingValue {
        /// The flag.
        flag: String,
    },
    /// A value that is not valid UTF-8.
    #[error("the value of option {flag} is not valid UTF-8")]
    NotUtf8 {
        /// The flag.
        flag: String,
    },
    /// An empty key or key segment (`--driver.`, `--topic.a..b`).
    #[error("invalid option {flag}: keys must be non-empty, dot-separated names")]
    BadKey {
        /// The flag.
        flag: String,
    },
    /// A key used both as a value and as an object of nested keys.
    #[error("option {flag} conflicts with an earlier option (a key cannot be both a value and a group of nested keys)")]
    Conflict {
        /// The flag.
        flag: String,
    },
    /// Options of a scope the command does not use.
    #[error("option {flag} is not accepted by `diaspora-ctl {command}`")]
    NotAccepted {
        /// The first offending flag.
        flag: String,
        /// The command.
        command: String,
    },
    /// An option file could not be read.
    #[error("cannot read option file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An option file is not valid JSON.
    #[error("option file {} is not valid JSON: {source}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A component in the topic options that is neither a name nor an object, while component
    /// flags (`--validator`, ...) need to merge into it.
    #[error("topic option {key} must be a name or an object with \"type\" to combine it with {flag}, found {found}")]
    ComponentNotSpec {
        /// The topic option (`validator`, `serializer`, `partition_selector`).
        key: &'static str,
        /// The component flag that needs to merge into it.
        flag: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// An option file holds JSON that is not an object.
    #[error("option file {} must contain a JSON object, found {found}", path.display())]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// The JSON type found.
        found: &'static str,
    },
}

/// Merges one component's options into the topic options: the topic's `key` (a name is
/// `{"type": name}`), then `file`, then `command_line`, then `name` as its `type`, each
/// winning over the previous. Nothing is touched when no component option was given.
pub fn merge_component(
    topic: &mut Map<String, Value>,
    key: &'static str,
    flag: &str,
    name: Option<&str>,
    file: Option<&Path>,
    command_line: Map<String, Value>,
) -> Result<(), OptionsError> {
    if name.is_none() && file.is_none() && command_line.is_empty() {
        return Ok(());
    }
    let mut spec = match topic.remove(key) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::String(kind)) => Map::from_iter([("type".to_owned(), Value::String(kind))]),
        Some(Value::Object(spec)) => spec,
        Some(other) => {
            return Err(OptionsError::ComponentNotSpec {
                key,
                flag: flag.to_owned(),
                found: json_type(&other),
            })
        }
    };
    if let Some(path) = file {
        merge_maps(&mut spec, load_config(path)?);
    }
    merge_maps(&mut spec, command_line);
    if let Some(name) = name {
        spec.insert("type".to_owned(), Value::String(name.to_owned()));
    }
    topic.insert(key.to_owned(), Value::Object(spec));
    Ok(())
}

/// Merges `overlay` into `base`: objects merge key by key, recursively; anything else in
/// `overlay` replaces what `base` had.
pub fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => merge_maps(base, overlay),
        (base, overlay) => *base = overlay,
    }
}

/// [`deep_merge`] on objects.
pub fn merge_maps(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
    for (key, value) in overlay {
        match base.get_mut(&key) {
            Some(existing) => deep_merge(existing, value),
            None => {
                base.insert(key, value);
            }
        }
    }
}

/// Loads an option file, which must hold a JSON object.
pub fn load_config(path: &Path) -> Result<Map<String, Value>, OptionsError> {
    let text = std::fs::read(path).map_err(|source| OptionsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|source| OptionsError::BadJson {
        path: path.to_owned(),
        source,
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(OptionsError::NotAnObject {
            path: path.to_owned(),
            found: json_type(&other),
        }),
    }
}

/// The options of one scope: the file's (if any) overlaid with the command line's.
pub fn resolve(
    file: Option<&Path>,
    command_line: Map<String, Value>,
) -> Result<Value, OptionsError> {
    let mut options = match file {
        Some(path) => load_config(path)?,
        None => Map::new(),
    };
    merge_maps(&mut options, command_line);
    Ok(Value::Object(options))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn command_line_wins_and_objects_merge_deeply() {
        let mut base = json!({
            "root_path": "/from/file",
            "keep": 1,
            "nested": {"a": 1, "b": {"c": 1, "d": 1}},
            "replaced_by_scalar": {"x": 1},
            "replaced_by_object": 3
        });
        deep_merge(
            &mut base,
            json!({
                "root_path": "/from/cli",
                "nested": {"b": {"c": 2}, "e": 5},
                "replaced_by_scalar": "s",
                "replaced_by_object": {"y": 2}
            }),
        );
        assert_eq!(
            base,
            json!({
                "root_path": "/from/cli",
                "keep": 1,
                "nested": {"a": 1, "b": {"c": 2, "d": 1}, "e": 5},
                "replaced_by_scalar": "s",
                "replaced_by_object": {"y": 2}
            })
        );
    }

    #[test]
    fn component_options_merge_in_order() {
        let f = file_with(r#"{"type": "from_file", "fields": ["f"], "keep": 1}"#);
        let mut topic = obj(json!({"validator": "from_topic", "num_partitions": 2}));
        merge_component(
            &mut topic,
            "validator",
            "--validator",
            Some("required_fields"),
            Some(f.path()),
            obj(json!({"fields": ["cli"]})),
        )
        .expect("merge");
        assert_eq!(
            Value::Object(topic.clone()),
            json!({"num_partitions": 2, "validator":
                {"type": "required_fields", "fields": ["cli"], "keep": 1}})
        );
        // Nothing given: the topic options are left as they are (no empty object added).
        merge_component(
            &mut topic,
            "serializer",
            "--serializer",
            None,
            None,
            Map::new(),
        )
        .expect("merge");
        assert!(!topic.contains_key("serializer"));
        // Only the file: its type is kept, over the topic's object.
        let mut topic = obj(json!({"partition_selector": {"type": "round_robin", "x": 1}}));
        let f = file_with(r#"{"type": "key_hash", "field": "k"}"#);
        merge_component(
            &mut topic,
            "partition_selector",
            "--partition-selector-config",
            None,
            Some(f.path()),
            Map::new(),
        )
        .expect("merge");
        assert_eq!(
            Value::Object(topic),
            json!({"partition_selector": {"type": "key_hash", "field": "k", "x": 1}})
        );
        let mut topic = obj(json!({"validator": 3}));
        let e = merge_component(
            &mut topic,
            "validator",
            "--validator",
            Some("x"),
            None,
            Map::new(),
        )
        .expect_err("a number is no spec");
        assert!(e.to_string().contains("a number"), "{e}");
        let f = file_with("[]");
        let e = merge_component(
            &mut Map::new(),
            "serializer",
            "--serializer-config",
            None,
            Some(f.path()),
            Map::new(),
        )
        .expect_err("not an object");
        assert!(e.to_string().contains("an array"), "{e}");
    }

    #[test]
    fn arrays_are_replaced_not_concatenated() {
        let mut base = json!({"fields": ["a", "b"]});
        deep_merge(&mut base, json!({"fields": ["c"]}));
        assert_eq!(base, json!({"fields": ["c"]}));
    }

    #[test]
    fn resolve_merges_file_under_command_line() {
        let f = file_with(r#"{"root_path": "/file", "num_partitions": 2, "v": {"type": "json"}}"#);
        let cli = obj(json!({"root_path": "/cli", "v": {"fields": ["x"]}}));
        let v = resolve(Some(f.path()), cli).expect("resolve");
        assert_eq!(
            v,
            json!({"root_path": "/cli", "num_partitions": 2, "v": {"type": "json", "fields": ["x"]}})
        );
        assert_eq!(
            resolve(None, obj(json!({"a": 1}))).expect("resolve"),
            json!({"a": 1})
        );
        assert_eq!(resolve(None, Map::new()).expect("resolve"), json!({}));
    }

    #[test]
    fn bad_files_name_the_file() {
        let f = file_with("{\"root_path\": ");
        let e = load_config(f.path()).expect_err("bad json");
        let msg = e.to_string();
        assert!(matches!(e, OptionsError::BadJson { .. }), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");

        let f = file_with("[1, 2]");
        let e = load_config(f.path()).expect_err("not an object");
        assert!(e.to_string().contains("an array"), "{e}");

        let missing = Path::new("/nonexistent/dir/opts.json");
        let e = load_config(missing).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/dir/opts.json"), "{e}");

        let f = file_with("");
        assert!(matches!(
            load_config(f.path()),
            Err(OptionsError::BadJson { .. })
        ));
    }
}
