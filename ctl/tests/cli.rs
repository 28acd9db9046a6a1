//! End-to-end tests of the `diaspora-ctl` binary against the files driver in a temporary
//! directory.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_diaspora-ctl");

mod run;
use run::Run;

fn ctl(args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args);
    run::output(c)
}

fn ctl_stdin(args: &[&str], input: &str) -> Run {
    let mut c = Command::new(BIN);
    c.args(args);
    run::output_with_stdin(c, input)
}

/// `args` followed by `--driver files --driver.root_path <root>`.
fn with_root<'a>(args: &[&'a str], root: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--driver", "files", "--driver.root_path", root]);
    v
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn create_list_describe_produce_consume_complete_roundtrip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    let run = |args: &[&str]| ctl(&with_root(args, root));

    run(&[
        "topic",
        "create",
        "--name",
        "events",
        "--topic.num_partitions",
        "2",
    ])
    .ok();
    run(&[
        "topic",
        "create",
        "--name",
        "other",
        "--topic.num_partitions=1",
    ])
    .ok();
    run(&["topic", "create", "--name", "events"]).fails_with("already exists");
    assert_eq!(run(&["topic", "list"]).ok().lines(), ["events", "other"]);

    let described = run(&["topic", "describe", "--name", "events"]).ok();
    let d: Value = serde_json::from_str(&described.stdout).expect("describe prints JSON");
    assert_eq!(d["name"], "events");
    assert_eq!(d["complete"], false);
    assert_eq!(d["options"]["num_partitions"], 2);
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(2));

    let produced = run(&[
        "produce",
        "--name",
        "events",
        "--count",
        "4",
        "--metadata",
        r#"{"x":1}"#,
        "--data-size",
        "16",
    ])
    .ok();
    assert_eq!(produced.stdout.trim(), "produced 4 events");
    let produced = ctl_stdin(
        &with_root(
            &["produce", "--name", "events", "--stdin", "--partition", "1"],
            root,
        ),
        "{\"line\":1}\n\n  {\"line\": 2}\n",
    )
    .ok();
    assert_eq!(produced.stdout.trim(), "produced 2 events");

    // First consumer sees all 6 events, with data lengths.
    let consumed = run(&[
        "consume",
        "--name",
        "events",
        "--consumer",
        "c1",
        "--data",
        "--timeout-ms",
        "300",
    ])
    .ok();
    let mut lines = consumed.lines();
    lines.sort();
    assert_eq!(lines.len(), 6, "{}", consumed.stdout);
    let with_x: Vec<_> = lines
        .iter()
        .filter(|l| l.contains(r#"{"x":1} 16"#))
        .collect();
    assert_eq!(with_x.len(), 4, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("1 ") && l.contains(r#"{"line":1} 0"#)));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("1 ") && l.ends_with(r#"{"line": 2} 0"#)));
    for line in &lines {
        let mut parts = line.splitn(3, ' ');
        let partition: usize = parts
            .next()
            .and_then(|p| p.parse().ok())
            .expect("partition");
        let _id: u64 = parts.next().and_then(|p| p.parse().ok()).expect("id");
        assert!(partition < 2);
    }

    // Everything was acknowledged: the same consumer sees nothing new.
    let again = run(&[
        "consume",
        "--name",
        "events",
        "--consumer",
        "c1",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(again.ok().stdout, "");

    // --count and --no-ack: a second consumer sees 2 events, twice.
    for _ in 0..2 {
        let some = run(&[
            "consume",
            "--name",
            "events",
            "--consumer",
            "c2",
            "--count",
            "2",
            "--no-ack",
        ]);
        assert_eq!(some.ok().lines().len(), 2);
    }
    // With acknowledgement, the next run resumes after what was printed.
    let first = run(&[
        "consume",
        "--name",
        "events",
        "--consumer",
        "c3",
        "--count",
        "3",
    ])
    .ok();
    let rest = run(&[
        "consume",
        "--name",
        "events",
        "--consumer",
        "c3",
        "--timeout-ms",
        "200",
    ]);
    assert_eq!(first.lines().len() + rest.ok().lines().len(), 6);

    // Completion: consumers stop at the end without waiting, producers are refused.
    run(&["topic", "complete", "--name", "events"]).ok();
    let d = run(&["topic", "describe", "--name", "events"]).ok();
    let d: Value = serde_json::from_str(&d.stdout).expect("JSON");
    assert_eq!(d["complete"], true);
    let start = std::time::Instant::now();
    let all = run(&[
        "consume",
        "--name",
        "events",
        "--consumer",
        "c4",
        "--follow",
    ])
    .ok();
    assert_eq!(all.lines().len(), 6);
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    run(&["produce", "--name", "events"]).fails_with("complete");
}

#[test]
fn driver_config_merges_with_command_line_winning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good");
    let decoy = dir.path().join("decoy");
    let config = dir.path().join("driver.json");
    std::fs::write(
        &config,
        serde_json::json!({"root_path": path_str(&decoy)}).to_string(),
    )
    .expect("write config");
    let topic_config = dir.path().join("topic.json");
    std::fs::write(&topic_config, r#"{"num_partitions": 3}"#).expect("write config");
    let cfg = path_str(&config);
    let tcfg = path_str(&topic_config);

    // The file alone is used...
    ctl(&[
        "topic",
        "create",
        "--name",
        "from_file",
        "--driver",
        "files",
        "--driver-config",
        cfg,
        "--topic-config",
        tcfg,
    ])
    .ok();
    // ...but the command line overrides its root_path and the topic file's partition count.
    ctl(&[
        "topic",
        "create",
        "--name",
        "from_cli",
        "--driver",
        "files",
        "--driver-config",
        cfg,
        "--driver.root_path",
        path_str(&good),
        "--topic-config",
        tcfg,
        "--topic.num_partitions",
        "2",
    ])
    .ok();
    let list = |root: &Path| {
        ctl(&with_root(&["topic", "list"], path_str(root)))
            .ok()
            .stdout
    };
    assert_eq!(list(&decoy).trim(), "from_file");
    assert_eq!(list(&good).trim(), "from_cli");
    let d = ctl(&with_root(
        &["topic", "describe", "--name", "from_cli"],
        path_str(&good),
    ))
    .ok();
    let d: Value = serde_json::from_str(&d.stdout).expect("JSON");
    assert_eq!(d["options"]["num_partitions"], 2);
    let d = ctl(&with_root(
        &["topic", "describe", "--name", "from_file"],
        path_str(&decoy),
    ))
    .ok();
    let d: Value = serde_json::from_str(&d.stdout).expect("JSON");
    assert_eq!(d["options"]["num_partitions"], 3);
}

#[test]
fn bad_topic_and_consumer_names_are_rejected() {
    // The root is a subdirectory of a private temp dir, so "escaping the root" is checked in a
    // directory nobody else writes to (not the shared /tmp).
    let dir = tempfile::tempdir().expect("tempdir");
    let root_dir = dir.path().join("root");
    std::fs::create_dir(&root_dir).expect("root dir");
    let root = path_str(&root_dir);
    ctl(&with_root(&["topic", "create", "--name", "../x"], root)).fails_with("invalid topic name");
    ctl(&with_root(&["topic", "create", "--name", "a/b"], root)).fails_with("invalid topic name");
    ctl(&with_root(&["produce", "--name", "../x"], root)).fails_with("invalid topic name");
    ctl(&with_root(&["topic", "create", "--name", "t"], root)).ok();
    ctl(&with_root(
        &["consume", "--name", "t", "--consumer", "../c"],
        root,
    ))
    .fails_with("invalid consumer name");
    ctl(&with_root(
        &["topic", "describe", "--name", "missing"],
        root,
    ))
    .fails_with("not found");
    // Nothing escaped the root.
    assert!(!dir.path().join("x").exists());
}

#[test]
fn unknown_driver_lists_known_drivers() {
    ctl(&["topic", "list", "--driver", "nope"]).fails_with("unknown driver \"nope\"");
    ctl(&["topic", "list", "--driver", "nope"]).fails_with("files");
    ctl(&["topic", "list"]).fails_with("--driver");
}

#[test]
fn malformed_config_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"root_path\": ").expect("write");
    let bad = path_str(&bad);
    ctl(&["topic", "list", "--driver", "files", "--driver-config", bad])
        .fails_with(&format!("option file {bad} is not valid JSON"));
    let root = path_str(dir.path());
    ctl(&with_root(
        &["topic", "create", "--name", "t", "--topic-config", bad],
        root,
    ))
    .fails_with("bad.json");
    let array = dir.path().join("array.json");
    std::fs::write(&array, "[1]").expect("write");
    ctl(&with_root(
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic-config",
            path_str(&array),
        ],
        root,
    ))
    .fails_with("must contain a JSON object");
    ctl(&[
        "topic",
        "list",
        "--driver",
        "files",
        "--driver-config",
        "/nonexistent/d.json",
    ])
    .fails_with("cannot read option file /nonexistent/d.json");
}

#[test]
fn unknown_and_malformed_options_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    ctl(&with_root(&["topic", "list", "--bogus"], root)).fails_with("--bogus");
    ctl(&with_root(
        &["topic", "list", "--topic.num_partitions", "2"],
        root,
    ))
    .fails_with("--topic.num_partitions is not accepted by `diaspora-ctl topic list`");
    ctl(&with_root(&["topic", "list", "--driver.root_path"], root)).fails_with("requires a value");
    ctl(&with_root(&["topic", "list", "--driver.a..b=1"], root)).fails_with("invalid option");
    ctl(&with_root(
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic.validator",
            "nope",
        ],
        root,
    ))
    .fails_with("validator");
    ctl(&with_root(&["topic", "create", "--name", "t"], root)).ok();
    ctl(&with_root(
        &["produce", "--name", "t", "--producer.batchsize", "3"],
        root,
    ))
    .fails_with("producer.batchsize");
    ctl(&with_root(
        &[
            "consume",
            "--name",
            "t",
            "--consumer",
            "c",
            "--consumer.nope=1",
        ],
        root,
    ))
    .fails_with("consumer.nope");
    ctl(&with_root(
        &["produce", "--name", "t", "--metadata", "{oops"],
        root,
    ))
    .fails_with("invalid --metadata");
    ctl(&with_root(
        &["produce", "--name", "t", "--count", "-1"],
        root,
    ))
    .fails_with("-1");
    ctl(&with_root(
        &["produce", "--name", "t", "--stdin", "--count", "2"],
        root,
    ))
    .fails_with("cannot be used with");
    let partial = ctl_stdin(
        &with_root(&["produce", "--name", "t", "--stdin"], root),
        "{\"ok\":1}\n{\"broken\":\n",
    );
    partial.fails_with("line 2 of standard input");
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["topic", "--help"],
        &["topic", "create", "--help"],
        &["topic", "list", "--help"],
        &["topic", "describe", "--help"],
        &["topic", "complete", "--help"],
        &["produce", "--help"],
        &["consume", "--help"],
    ] {
        let run = ctl(args).ok();
        assert!(
            run.stdout.contains("Usage: diaspora-ctl"),
            "{args:?}: {}",
            run.stdout
        );
    }
    assert!(ctl(&["produce", "--help"])
        .stdout
        .contains("--driver.<key>"));
}

#[test]
fn verify_reports_clean_topics_and_damaged_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    let run = |args: &[&str]| ctl(&with_root(args, root));
    run(&["topic", "create", "--name", "v"]).ok();
    run(&[
        "produce",
        "--name",
        "v",
        "--count",
        "5",
        "--data-size",
        "64",
    ])
    .ok();
    let clean = run(&["topic", "verify", "--name", "v"]).ok();
    assert!(clean.stdout.contains("\"records\": 5"), "{}", clean.stdout);
    assert!(
        clean.stdout.contains("\"problems\": []"),
        "{}",
        clean.stdout
    );

    let data = dir
        .path()
        .join("v/partitions/00000000/00000000000000000000.data");
    let mut bytes = std::fs::read(&data).expect("read data");
    bytes[2 * 64] ^= 0xff;
    std::fs::write(&data, bytes).expect("write data");
    let damaged = run(&["topic", "verify", "--name", "v"]).fails_with("1 damaged record(s)");
    assert!(
        damaged.stdout.contains("data checksum mismatch"),
        "{}",
        damaged.stdout
    );

    ctl(&["topic", "verify", "--name", "v", "--driver", "other"])
        .fails_with("only available with the files driver");
    run(&["topic", "verify", "--name", "missing"]).fails_with("not found");
}

/// `produce --stdin` refuses lines that are JSON syntax but that consumers could not parse
/// (number out of range, lone surrogate, nesting beyond the parser's limit), naming the line;
/// the events before it are stored and every stored event reads back.
#[test]
fn produce_refuses_metadata_consumers_cannot_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    ctl(&with_root(&["topic", "create", "--name", "t"], root)).ok();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for bad in [r#"{"x":1e999}"#, r#"{"s":"\ud800"}"#, deep.as_str()] {
        let input = format!("{{\"ok\":1}}\n{bad}\n{{\"ok\":2}}\n");
        let run = ctl_stdin(
            &with_root(&["produce", "--name", "t", "--stdin"], root),
            &input,
        );
        run.fails_with("line 2 of standard input")
            .fails_with("invalid JSON");
        ctl(&with_root(
            &["produce", "--name", "t", "--metadata", bad],
            root,
        ))
        .fails_with("invalid --metadata");
    }
    let consumed = ctl(&with_root(
        &[
            "consume",
            "--name",
            "t",
            "--consumer",
            "c",
            "--timeout-ms",
            "300",
        ],
        root,
    ))
    .ok();
    assert_eq!(
        consumed.lines(),
        ["0 0 {\"ok\":1}", "0 1 {\"ok\":1}", "0 2 {\"ok\":1}"],
        "only the lines before each bad one are stored"
    );
}

fn ctl_in(cwd: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd);
    run::output(c)
}

/// A root path that looks like JSON (`2024`, `true`, `null`) is a directory name, not a type
/// error; string-typed topic options (a key_hash field named `2024`) keep their text too.
#[test]
fn path_and_string_options_that_look_like_json_are_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    for root in ["2024", "true", "null", "1e3"] {
        let run = |args: &[&str]| {
            let mut v = args.to_vec();
            v.extend(["--driver", "files", "--driver.root_path", root]);
            ctl_in(dir.path(), &v)
        };
        run(&[
            "topic",
            "create",
            "--name",
            "t",
            "--topic.num_partitions",
            "4",
            "--topic.partition_selector.type",
            "key_hash",
            "--topic.partition_selector.field",
            "2024",
        ])
        .ok();
        assert!(
            dir.path().join(root).join("t").join("topic.json").is_file(),
            "topic not created under the directory {root:?}"
        );
        let produced = ctl_stdin_in(
            dir.path(),
            &[
                "produce",
                "--name",
                "t",
                "--stdin",
                "--driver",
                "files",
                "--driver.root_path",
                root,
            ],
            "{\"2024\":\"a\"}\n{\"2024\":\"a\"}\n",
        )
        .ok();
        assert_eq!(produced.stdout.trim(), "produced 2 events");
        let described = run(&["topic", "describe", "--name", "t"]).ok();
        let d: Value = serde_json::from_str(&described.stdout).expect("JSON");
        assert_eq!(d["options"]["partition_selector"]["field"], "2024");
        let per_partition: Vec<u64> = d["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["info"]["num_events"].as_u64().expect("count"))
            .collect();
        assert_eq!(per_partition.iter().sum::<u64>(), 2);
        assert!(
            per_partition.contains(&2),
            "same key, same partition: {per_partition:?}"
        );
        run(&["topic", "verify", "--name", "t"]).ok();
        let listed = run(&["topic", "list"]).ok();
        assert_eq!(listed.lines(), ["t"]);
    }
    // Quoting still works, and options that are not strings are still typed.
    ctl_in(
        dir.path(),
        &[
            "topic",
            "list",
            "--driver",
            "files",
            "--driver.root_path",
            "\"2024\"",
            "--driver.thread_count",
            "yes",
        ],
    )
    .fails_with("driver.thread_count");
}

/// Policy specs refuse keys they do not know, key_hash included.
#[test]
fn key_hash_refuses_unknown_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    ctl(&with_root(
        &[
            "topic",
            "create",
            "--name",
            "t",
            "--topic.partition_selector.type",
            "key_hash",
            "--topic.partition_selector.field",
            "k",
            "--topic.partition_selector.feild",
            "k",
        ],
        root,
    ))
    .fails_with("partition_selector.feild");
    ctl(&with_root(&["topic", "list"], root)).ok();
    assert!(ctl(&with_root(&["topic", "list"], root)).lines().is_empty());
}

fn ctl_stdin_in(cwd: &Path, args: &[&str], input: &str) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd);
    run::output_with_stdin(c, input)
}

/// An acknowledgement file whose two slots are damaged stops `consume` with an error that
/// gives the command to recover; running that command lets the consumer start over.
#[test]
fn damaged_acks_name_the_reset_command_which_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = path_str(dir.path());
    let run = |args: &[&str]| ctl(&with_root(args, root));
    run(&[
        "topic",
        "create",
        "--name",
        "t",
        "--topic.num_partitions",
        "2",
    ])
    .ok();
    run(&["produce", "--name", "t", "--count", "6"]).ok();
    let consume = || {
        run(&[
            "consume",
            "--name",
            "t",
            "--consumer",
            "c",
            "--timeout-ms",
            "300",
        ])
    };
    assert_eq!(consume().ok().lines().len(), 6);
    assert!(consume().ok().lines().is_empty(), "all acknowledged");
    let acks = dir.path().join("t/consumers/c.acks");
    let mut bytes = std::fs::read(&acks).expect("acks file");
    let slot = bytes.len() / 2;
    bytes[24] ^= 0xff;
    bytes[slot + 24] ^= 0xff;
    std::fs::write(&acks, &bytes).expect("damage both slots");
    let failed = consume().fails_with("no valid acknowledgement slot");
    let hint = format!(
        "diaspora-ctl consumer reset --name t --consumer c --driver files --driver.root_path {root}"
    );
    assert!(failed.stderr.contains(&hint), "{}", failed.stderr);
    // Run the command exactly as printed.
    let printed = failed
        .stderr
        .split('`')
        .nth(1)
        .expect("command in backquotes");
    let words: Vec<&str> = printed.split_whitespace().skip(1).collect();
    let reset = ctl(&words).ok();
    assert!(
        reset.stdout.contains("reset consumer c of topic t"),
        "{}",
        reset.stdout
    );
    assert_eq!(
        consume().ok().lines().len(),
        6,
        "starts over from the first event"
    );
    assert!(consume().ok().lines().is_empty());
    // Other consumers are untouched; the command refuses what it cannot do.
    run(&["consumer", "reset", "--name", "nope", "--consumer", "c"]).fails_with("not found");
    ctl(&[
        "consumer",
        "reset",
        "--name",
        "t",
        "--consumer",
        "c",
        "--driver",
        "other",
    ])
    .fails_with("only available with the files driver");
    run(&["consumer", "reset", "--name", "t", "--consumer", "../x"])
        .fails_with("invalid consumer name");
}
