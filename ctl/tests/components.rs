//! `topic create` component options (`--validator`, `--validator.<key>`, `--validator-config`
//! and the same for `--serializer`, `--partition-selector`), `topic list --verbose`, and the
//! files-driver layout the tool creates (`partitions/00000000`, component files).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{}\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    fn fails_with(self, needle: &str) -> Self {
        assert_eq!(self.code, Some(1), "{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(needle),
            "lacks {needle:?}: {}",
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

fn ctl(root: &Path, args: &[&str]) -> Run {
    let o = Command::new(BIN)
        .args(args)
        .args(["--driver", "files", "--driver.root_path"])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .expect("run diaspora-ctl");
    Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn options(root: &Path, name: &str) -> Value {
    let out = ctl(root, &["topic", "describe", "--name", name]).ok();
    let d: Value = serde_json::from_str(&out.stdout).expect("describe JSON");
    d["options"].clone()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn component_names_options_and_files_merge_with_the_command_line_winning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let topic_cfg = write(
        &dir.path().join("topic.json"),
        r#"{"num_partitions": 2, "validator": "json",
            "partition_selector": {"type": "round_robin"}}"#,
    );
    let sel_cfg = write(
        &dir.path().join("sel.json"),
        r#"{"type": "key_hash", "field": "from_file"}"#,
    );
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic-config",
            &topic_cfg,
            "--validator",
            "required_fields",
            "--validator.fields",
            r#"["run","step"]"#,
            "--partition-selector-config",
            &sel_cfg,
            "--partition-selector.field",
            "2024",
            "--serializer",
            "default",
        ],
    )
    .ok();
    assert_eq!(
        options(&root, "t"),
        json!({
            "num_partitions": 2,
            "sync": false,
            "validator": {"type": "required_fields", "fields": ["run", "step"]},
            "partition_selector": {"type": "key_hash", "field": "2024"},
            "serializer": {"type": "default"},
        })
    );
    let topic = root.join("t");
    let component = |file: &str| -> Value {
        serde_json::from_slice(&std::fs::read(topic.join(file)).expect("read")).expect("JSON")
    };
    assert_eq!(
        component("validator.json"),
        json!({"type": "required_fields", "fields": ["run", "step"]})
    );
    assert_eq!(
        component("partition-selector.json"),
        json!({"type": "key_hash", "field": "2024"})
    );
    assert_eq!(component("serializer.json"), json!({"type": "default"}));
    assert!(topic.join("partitions/00000000").is_dir());
    assert!(topic.join("partitions/00000001").is_dir());

    // The validator is in force: produce refuses an event lacking a required field.
    ctl(
        &root,
        &["produce", "--name", "t", "--metadata", r#"{"run": 1}"#],
    )
    .fails_with("step");
    ctl(
        &root,
        &[
            "produce",
            "--name",
            "t",
            "--metadata",
            r#"{"run": 1, "step": 2, "2024": "k"}"#,
        ],
    )
    .ok();
}

#[test]
fn bad_component_options_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "a",
            "--validator",
            "no_such_validator",
        ],
    )
    .fails_with("no_such_validator");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "b",
            "--partition-selector",
            "key_hash",
            "--partition-selector.bogus",
            "1",
        ],
    )
    .fails_with("bogus");
    let bad = write(&dir.path().join("bad.json"), "{\"type\": ");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "c",
            "--serializer-config",
            &bad,
        ],
    )
    .fails_with("bad.json");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "d",
            "--topic.validator",
            "[3]",
            "--validator.fields",
            "[\"x\"]",
        ],
    )
    .fails_with("topic option validator must be a name or an object");
    // Component options belong to topic create only.
    ctl(&root, &["topic", "list", "--validator.type", "json"])
        .fails_with("--validator.type is not accepted");
    for name in ["a", "b", "c", "d"] {
        assert!(!root.join(name).exists(), "{name} was created");
    }
}

#[test]
fn list_verbose_prints_each_topic_with_its_description_on_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "a",
            "--topic.num_partitions",
            "3",
        ],
    )
    .ok();
    ctl(
        &root,
        &["topic", "create", "--name", "b", "--validator", "json"],
    )
    .ok();
    let plain = ctl(&root, &["topic", "list"]).ok();
    assert_eq!(plain.stdout, "a\nb\n");
    for flag in ["--verbose", "-v"] {
        let out = ctl(&root, &["topic", "list", flag]).ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{}", out.stdout);
        for (line, (name, partitions, validator)) in
            lines.iter().zip([("a", 3, "default"), ("b", 1, "json")])
        {
            let (got, description) = line.split_once(' ').expect("name and JSON");
            assert_eq!(got, name);
            let d: Value = serde_json::from_str(description).expect("one line of JSON");
            assert_eq!(d["name"], name);
            assert_eq!(d["num_partitions"], partitions);
            assert_eq!(d["options"]["num_partitions"], partitions);
            assert_eq!(d["validator"]["type"], validator);
            assert_eq!(d["complete"], false);
        }
    }
    let empty = dir.path().join("empty");
    assert_eq!(ctl(&empty, &["topic", "list", "--verbose"]).ok().stdout, "");
}

#[test]
fn nested_topic_options_are_kept_as_user_metadata_and_misspelt_scalars_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "n",
            "--topic.config.option1",
            "value1",
            "--topic.config.option2",
            "2",
        ],
    )
    .ok();
    assert_eq!(
        options(&root, "n")["config"],
        json!({"option1": "value1", "option2": 2})
    );
    ctl(
        &root,
        &[
            "topic",
            "create",
            "--name",
            "m",
            "--topic.num_partition",
            "4",
        ],
    )
    .fails_with("topic.num_partition");
    assert!(!root.join("m").exists());
}
