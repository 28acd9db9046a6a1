#![allow(clippy::unwrap_used)] // tests: a panic is a failure with its message
//! Issue 7: a consumer process killed with SIGKILL while its long-poll fetches are held by a
//! real `diaspora-server` must not make the server unreachable for new clients (every
//! provider of `DIASPORA_TEST_PROVIDER`, default tcp;ofi_rxm and shm). The consumer process
//! is this test binary re-executed on [`dying_consumer_child`].

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::providers;
use common::server::ServerProcess;
use diaspora_api::{json, Driver};

const CHILD_ENV: &str = "DIASPORA_DEAD_CLIENT_GROUP_FILE";

fn driver(group_file: &std::path::Path, timeout_ms: u64) -> Driver {
    diaspora_driver_fabric::register();
    Driver::new(
        "fabric",
        json!({"group_file": group_file, "timeout_ms": timeout_ms}),
    )
    .expect("fabric driver")
}

/// The child: pulls from an empty topic forever (its fetches are long polls held by the
/// server) until it is killed. Without the environment variable it does nothing.
#[test]
fn dying_consumer_child() {
    let Ok(group) = std::env::var(CHILD_ENV) else {
        return;
    };
    let d = driver(std::path::Path::new(&group), 30_000);
    let topic = d.open_topic("t").unwrap();
    eprintln!("child: topic open");
    let c = topic.consumer("dying").unwrap();
    eprintln!("child: consumer");
    let mut announced = false;
    loop {
        let _ = c.pull().wait(100);
        if !announced {
            println!("POLLING");
            std::io::stdout().flush().unwrap();
            announced = true;
        }
    }
}

#[test]
fn a_consumer_killed_with_fetches_held_does_not_make_the_server_unreachable() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let (data, group) = (dir.path().join("data"), dir.path().join("group.json"));
        let _server = ServerProcess::start(&provider, &data, &group);
        eprintln!("{provider}: server up");
        {
            let d = driver(&group, 10_000);
            d.create_topic("t", json!({"num_partitions": 1})).unwrap();
            eprintln!("{provider}: topic created");
        }
        for round in 0..2 {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["dying_consumer_child", "--exact", "--nocapture"])
                .env(CHILD_ENV, &group)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert!(
                lines.any(|l| l.is_ok_and(|l| l == "POLLING")),
                "{provider}: the consumer child did not start"
            );
            eprintln!("{provider}: round {round}: child polling");
            // Let it keep a few long polls in flight, then SIGKILL it.
            std::thread::sleep(Duration::from_millis(300));
            child.kill().unwrap();
            // SIGKILL leaves its shm names behind: removed before the reap.
            diaspora_fabric::reap_child(&mut child).unwrap();
            // The held fetches are answered to a dead peer; a new client is served.
            std::thread::sleep(Duration::from_millis(500));
            eprintln!("{provider}: round {round}: child killed");
            let d = driver(&group, 10_000);
            let topic = d.open_topic("t").unwrap_or_else(|e| {
                panic!("{provider}: round {round}: new client not served: {e}")
            });
            eprintln!("{provider}: round {round}: topic opened");
            let producer = topic.producer().unwrap();
            producer
                .push(json!({ "round": round }), vec![round as u8; 16])
                .get()
                .unwrap_or_else(|e| panic!("{provider}: round {round}: push: {e}"));
            eprintln!("{provider}: round {round}: pushed");
            let c = topic.consumer(&format!("fresh{round}")).unwrap();
            let e = c.pull().wait(10_000).unwrap().expect("an event");
            assert_eq!(e.metadata().json().unwrap()["round"], 0);
        }
    }
}
