//! Loading drivers from shared libraries: `Driver::new("name:lib.so")`, the `LD_LIBRARY_PATH`
//! search for `lib<name>.so`, and the errors for a missing library, a library without the
//! entry symbol, and a library without the asked-for driver.
//!
//! The library is this package's cdylib; every test runs `cargo build -p diaspora-dylib-driver`
//! first (bounded wait), so it is never a stale library from an earlier build. The search test runs in a child process (the
//! test binary re-executed) so `LD_LIBRARY_PATH` is set before the program starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use diaspora_api::{json, Driver, Error};

const LIB: &str = "libdiaspora_dylib_driver.so";
const CHILD_ENV: &str = "DIASPORA_DYLIB_CHILD_ROOT";

/// The profile directory holding this test binary (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps")
        .to_path_buf()
}

/// The driver library, (re)built by cargo first: `cargo nextest run --workspace` does not
/// rebuild a cdylib that no test binary links, so a library left by an earlier build of another
/// `diaspora-api` would be loaded (and refused for its ABI) if its mere presence were trusted.
/// When it is fresh the build is a no-op.
fn library() -> PathBuf {
    let path = profile_dir().join(LIB);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir().parent().expect("target dir").to_path_buf();
    let mut child = Command::new(cargo)
        .args(["build", "-p", "diaspora-dylib-driver", "--target-dir"])
        .arg(&target_dir)
        .spawn()
        .expect("run cargo build");
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        if let Some(status) = child.try_wait().expect("poll cargo") {
            assert!(
                status.success(),
                "cargo build -p diaspora-dylib-driver failed"
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("building {LIB} took more than 100 s (is the build directory locked?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// Creates a topic through `driver`, produces and consumes two events.
fn round_trip(driver: &Driver) {
    driver
        .create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let topic = driver.open_topic("t").expect("open");
    let producer = topic.producer().expect("producer");
    producer
        .push(json!({"n": 1}), vec![1u8, 2, 3])
        .get()
        .expect("push");
    producer.push(json!({"n": 2}), ()).get().expect("push");
    producer.flush().get().expect("flush");
    let consumer = topic.consumer("c").expect("consumer");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = consumer
            .pull()
            .wait(10_000)
            .expect("pull")
            .expect("event within 10 s");
        seen.push(e.metadata().json().expect("json")["n"].as_u64().expect("n"));
        e.acknowledge().expect("ack");
    }
    seen.sort_unstable();
    assert_eq!(seen, [1, 2]);
    assert_eq!(driver.list_topics().expect("list"), ["t"]);
}

#[test]
fn name_colon_library_loads_the_driver() {
    let lib = library();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = format!("dyfiles:{}", lib.display());
    let driver = Driver::new(&spec, json!({"root_path": dir.path()})).expect("load the library");
    assert_eq!(driver.name(), "dyfiles");
    round_trip(&driver);
    // Loaded once, registered under its names: later calls need no library.
    assert!(diaspora_api::registered_drivers().contains(&"dyfiles".to_owned()));
    let again = Driver::new("dyfiles", json!({"root_path": dir.path()})).expect("registered");
    assert_eq!(again.list_topics().expect("list"), ["t"]);
    // Loading the same library again is harmless.
    Driver::new(&spec, json!({"root_path": dir.path()})).expect("load again");
    // Driver options are still checked by the loaded driver.
    let e = Driver::new(&spec, json!({"root_path": dir.path(), "bogus": 1}))
        .err()
        .expect("bad option");
    assert!(e.to_string().contains("driver.bogus"), "{e}");
}

#[test]
fn a_library_without_the_driver_is_named_with_what_it_has() {
    let lib = library();
    let e = Driver::new(&format!("other:{}", lib.display()), json!({}))
        .err()
        .expect("no such driver in it");
    let msg = e.to_string();
    assert!(matches!(e, Error::DriverLibrary { .. }), "{e:?}");
    assert!(msg.contains("registers no driver \"other\""), "{msg}");
    assert!(msg.contains("dyfiles"), "{msg}");
}

#[test]
fn missing_library_and_missing_symbol_are_clear_errors() {
    let e = Driver::new("x:/nonexistent/dir/libx.so", json!({}))
        .err()
        .expect("missing library");
    let msg = e.to_string();
    assert!(matches!(e, Error::DriverLibrary { .. }), "{e:?}");
    assert!(msg.contains("/nonexistent/dir/libx.so"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
    // A real shared library that is not a driver library: the C library itself.
    let e = Driver::new("x:libc.so.6", json!({}))
        .err()
        .expect("missing symbol");
    let msg = e.to_string();
    assert!(msg.contains("libc.so.6"), "{msg}");
    assert!(msg.contains("no symbol diaspora_register_driver"), "{msg}");
    let e = Driver::new(":libc.so.6", json!({})).err().expect("no name");
    assert!(e.to_string().contains("names no driver"), "{e}");
}

/// A library whose stamp differs from the host's (here: the host plays another diaspora-api
/// version, then another compiler) is refused before anything of it is called, and the error
/// names both sides. (That it registers nothing is checked by the api's unit test
/// `library_entry_refuses_another_stamp_and_registers_nothing`: other tests of this binary may
/// run in the same process and register the library's drivers.)
#[test]
fn a_library_built_for_another_abi_is_refused() {
    use diaspora_api::dylib::{load_driver_library_as, AbiStamp};
    let lib = library();
    let shown = lib.display().to_string();
    let mut other_api = AbiStamp::current();
    other_api.api_version = [0; 32];
    other_api.api_version[..5].copy_from_slice(b"9.9.9");
    let mut other_rustc = AbiStamp::current();
    other_rustc.rustc_version = [0; 96];
    other_rustc.rustc_version[..11].copy_from_slice(b"rustc 0.0.0");
    let mut other_layout = AbiStamp::current();
    other_layout.layout ^= 1;
    for host in [other_api, other_rustc, other_layout] {
        let msg = load_driver_library_as(&shown, host)
            .expect_err("refused")
            .to_string();
        assert!(msg.contains("built for another ABI"), "{msg}");
        assert!(
            msg.contains(&AbiStamp::current().describe()),
            "library side: {msg}"
        );
        assert!(msg.contains(&host.describe()), "host side: {msg}");
    }
}

/// Not a test on its own: run by `ld_library_path_is_searched_for_lib_name_so` with
/// `LD_LIBRARY_PATH` set. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_search() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    assert!(
        !diaspora_api::registered_drivers().contains(&"diaspora_dylib_driver".to_owned()),
        "nothing is registered before the search"
    );
    let driver = Driver::new("diaspora_dylib_driver", json!({"root_path": root}))
        .expect("found on the path");
    round_trip(&driver);
    let e = Driver::new("no_such_driver_xyz", json!({}))
        .err()
        .expect("not on the path");
    let msg = e.to_string();
    assert!(matches!(e, Error::UnknownDriver { .. }), "{e:?}");
    assert!(
        msg.contains("no libno_such_driver_xyz.so in LD_LIBRARY_PATH"),
        "{msg}"
    );
    let dir = std::env::var("LD_LIBRARY_PATH").expect("set");
    assert!(msg.contains(&dir), "{msg}");
}

#[test]
fn ld_library_path_is_searched_for_lib_name_so() {
    let lib = library();
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the library in a directory of its own, after one that does not exist.
    let libs = dir.path().join("libs");
    std::fs::create_dir(&libs).expect("mkdir");
    std::fs::copy(&lib, libs.join(LIB)).expect("copy library");
    let path = format!("{}:{}", dir.path().join("none").display(), libs.display());
    let status = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_search",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LD_LIBRARY_PATH", &path)
        .env(CHILD_ENV, dir.path().join("root"))
        .status()
        .expect("run child");
    assert!(status.success(), "child failed: {status}");
}

/// The `topics.rst` example: a topic whose validator, partition selector and serializer come
/// from a policy library; reopened by another driver instance, it has them again.
#[test]
fn policy_library_policies_serve_a_topic_and_reopen_with_it() {
    diaspora_driver_files_register();
    let lib = library();
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = Driver::new("files", json!({"root_path": dir.path()})).expect("driver");
    let l = lib.display();
    driver
        .create_topic(
            "energy",
            json!({
                "num_partitions": 4,
                "validator": {"type": format!("energy_validator:{l}"), "energy_max": 99},
                "partition_selector": {"type": format!("energy_partition_selector:{l}"), "energy_max": 99},
                "serializer": format!("energy_serializer:{l}"),
            }),
        )
        .expect("create with library policies");
    {
        let topic = driver.open_topic("energy").expect("open");
        let producer = topic.producer().expect("producer");
        let e = producer
            .push(json!({"energy": 120}), ())
            .get()
            .expect_err("above energy_max");
        assert!(e.to_string().contains("above energy_max 99"), "{e}");
        for energy in [5u64, 30, 60, 95] {
            producer
                .push(json!({"energy": energy}), ())
                .get()
                .expect("push");
        }
        let _ = producer.flush().get();
    }
    let reopened = Driver::new("files", json!({"root_path": dir.path()})).expect("driver");
    let topic = reopened.open_topic("energy").expect("reopen");
    let counts: Vec<u64> = topic
        .partitions()
        .expect("partitions")
        .iter()
        .map(|p| p.info["num_events"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, [1, 1, 1, 1], "the energy selector spread them");
    let e = topic
        .producer()
        .expect("producer")
        .push(json!({"energy": 100}), ())
        .get()
        .expect_err("the reopened topic validates too");
    assert!(e.to_string().contains("energy_max"), "{e}");
    let consumer = topic.consumer("c").expect("consumer");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = consumer.pull().wait(10_000).expect("pull").expect("event");
        seen.push(
            ev.metadata().json().expect("json")["energy"]
                .as_u64()
                .expect("energy"),
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, [5, 30, 60, 95], "the 1-byte serializer round-trips");
    // A policy the library does not have is named with what it has.
    let e = driver
        .create_topic("t2", json!({"validator": format!("nope:{l}")}))
        .expect_err("no such validator");
    let msg = e.to_string();
    assert!(msg.contains("registers no validator \"nope\""), "{msg}");
    assert!(msg.contains("energy_validator"), "{msg}");
    let e = driver
        .create_topic("t3", json!({"serializer": "x:libc.so.6"}))
        .expect_err("not a policy library");
    assert!(
        e.to_string()
            .contains("no symbol diaspora_register_policies"),
        "{e}"
    );
}

fn diaspora_driver_files_register() {
    diaspora_driver_files::register();
}
