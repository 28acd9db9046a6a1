//! Real `diaspora-server` processes on loopback (`tcp;ofi_rxm` and `shm`, or the providers in
//! `DIASPORA_TEST_PROVIDER`), driven by the protocol test client.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diaspora_proto::{GroupFile, Status};
use diaspora_server::client::{Client, ClientError};

fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}

/// A server process; killed and reaped on drop.
struct Server {
    child: Option<Child>,
    group: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(provider: &str, data: &Path, group: &Path, extra: &[&str]) -> Server {
        let log = data.with_extension(format!("log{}", std::process::id()));
        let _ = std::fs::remove_file(group);
        let child = Command::new(env!("CARGO_BIN_EXE_diaspora-server"))
            .arg("--data-dir")
            .arg(data)
            .arg("--group-file")
            .arg(group)
            .args(["--provider", provider])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut s = Server {
            child: Some(child),
            group: group.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(group) {
                if let Ok(g) = GroupFile::parse(&text) {
                    if g.ranks[0].pid == pid {
                        break;
                    }
                }
            }
            if let Some(st) = diaspora_fabric::try_reap_child(s.child.as_mut().unwrap()).unwrap() {
                panic!("server exited early ({st}): {}", s.stderr());
            }
            assert!(Instant::now() < deadline, "no group file: {}", s.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn group(&self) -> GroupFile {
        GroupFile::parse(&std::fs::read_to_string(&self.group).unwrap()).unwrap()
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill has no memory-safety preconditions; pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = diaspora_fabric::try_reap_child(child).unwrap() {
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = diaspora_fabric::reap_child(child);
                panic!("server did not exit within {within:?}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap (removing the shm names it leaves behind).
    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // SIGKILL leaves the server's shm names (16 MiB of tmpfs each) behind.
            let _ = diaspora_fabric::reap_child(&mut c);
        }
    }
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> diaspora_proto::ProtoError {
    match r {
        Err(ClientError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn events(n: usize, tag: u8, data: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("{{\"i\":{i},\"t\":{tag}}}").into_bytes(),
                vec![tag ^ i as u8; data],
            )
        })
        .collect()
}

#[test]
fn server_writes_a_0600_group_file_serves_and_stops_cleanly_on_sigterm() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &["--threads", "2"]);
        let mode = std::fs::metadata(&group).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "group file mode");
        let g = s.group();
        assert_eq!(g.provider, provider);
        assert_eq!(g.ranks[0].threads.len(), 2);

        let c = Client::connect(&group).unwrap();
        assert_eq!(c.epoch, g.epoch);
        c.create_topic("t", r#"{"num_partitions": 3}"#).unwrap();
        assert!(c.topic_exists("t").unwrap());
        assert!(!c.topic_exists("u").unwrap());
        assert_eq!(c.list_topics().unwrap().names, ["t"]);
        let e = refused(c.create_topic("t", "{}"));
        assert_eq!(e.status, Status::TopicExists);
        let e = refused(c.create_topic("v", r#"{"num_partitions": 0}"#));
        assert_eq!(e.status, Status::InvalidOptions, "{e}");
        let e = refused(c.open_topic("nope"));
        assert_eq!(e.status, Status::TopicNotFound);
        let t = c.open_topic("t").unwrap();
        assert_eq!(t.placement.len(), 3);
        assert_eq!(t.placement[1].thread, 1);

        for p in 0..3 {
            let r = c
                .produce(&t, "t", p, 1, 0, &events(10, p as u8, 100))
                .unwrap();
            assert_eq!(r.first_id, 0);
            let (f, got) = c.fetch(&t, "t", p, "c", Some(0), 100, 0, 1 << 20).unwrap();
            assert_eq!(f.count, 10);
            assert_eq!(
                got,
                events(10, p as u8, 100)
                    .into_iter()
                    .enumerate()
                    .map(|(i, (m, d))| diaspora_server::client::Fetched {
                        id: i as u64,
                        meta: m,
                        data: d
                    })
                    .collect::<Vec<_>>()
            );
        }
        // The wrong thread refuses a partition it does not own.
        let e = refused(c.call::<_, diaspora_proto::ProduceResponse>(
            0,
            &c.produce_request("t", 1, 9, 0, &events(1, 0, 1)).unwrap().0,
        ));
        assert_eq!(e.status, Status::WrongThread);

        s.signal(libc::SIGTERM);
        let st = s.wait_exit(Duration::from_secs(30));
        assert!(st.success(), "exit status {st}: {}", s.stderr());
        assert!(
            s.stderr()
                .contains("stopped; stored 3 batches (30 events) in 3 appends"),
            "{}",
            s.stderr()
        );
        assert!(group.exists(), "the group file stays");
        // The data dir is a files-driver root: verify passes.
        let report = diaspora_driver_files::verify_topic(&data, "t").unwrap();
        assert!(format!("{report:?}").contains("10"), "{report:?}");
    }
}

#[test]
fn a_wrong_or_missing_token_is_refused_and_nothing_else_is_served() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let mut c = Client::connect_unauthenticated(&group).unwrap();
        let e = refused(c.create_topic("t", "{}"));
        assert_eq!(e.status, Status::Unauthorized);
        assert!(e.message.contains("Hello"), "{e}");
        for bad in ["", "00000000000000000000000000000000", "not a token"] {
            let e = refused(c.hello(bad));
            assert_eq!(e.status, Status::Unauthorized, "{bad:?}");
            assert!(e.message.contains("token"), "{e}");
        }
        let e = refused(c.open_topic("t"));
        assert_eq!(e.status, Status::Unauthorized);
        let token = c.group.token.clone();
        c.hello(&token).unwrap();
        c.create_topic("t", "{}").unwrap();
    }
}

#[test]
fn a_batch_that_overtakes_its_predecessor_waits_for_it_instead_of_being_refused() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        // Batch 1 reaches the server first (another connection), batch 0 150 ms later: the
        // server holds batch 1 (within REORDER_GRACE) and stores both in order.
        let g2 = group.clone();
        let later = std::thread::spawn(move || {
            let c2 = Client::connect(&g2).unwrap();
            let t2 = c2.open_topic("t").unwrap();
            c2.produce(&t2, "t", 0, 5, 1, &events(2, 3, 10))
        });
        std::thread::sleep(Duration::from_millis(150));
        let first = c.produce(&t, "t", 0, 5, 0, &events(3, 0, 10)).unwrap();
        assert_eq!(first.first_id, 0);
        let second = later.join().unwrap().expect("held, then stored");
        assert_eq!(second.first_id, 3);
        let (f, got) = c.fetch(&t, "t", 0, "", Some(0), 100, 0, 1 << 20).unwrap();
        assert_eq!(f.count, 5);
        assert_eq!(got[3].meta, events(1, 3, 0)[0].0);
    }
}

#[test]
fn batches_are_ordered_by_seq_and_resends_are_stored_once() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        assert_eq!(
            c.produce(&t, "t", 0, 5, 0, &events(3, 0, 10))
                .unwrap()
                .first_id,
            0
        );
        let e = refused(c.produce(&t, "t", 0, 5, 0, &events(3, 0, 10)));
        assert_eq!((e.status, e.detail), (Status::Duplicate, 0));
        let e = refused(c.produce(&t, "t", 0, 5, 2, &events(3, 2, 10)));
        assert_eq!((e.status, e.detail), (Status::OutOfOrder, 1));
        assert_eq!(
            c.produce(&t, "t", 0, 5, 1, &events(3, 1, 10))
                .unwrap()
                .first_id,
            3
        );
        // Another producer interleaves; a large batch takes its table through the region.
        assert_eq!(
            c.produce(&t, "t", 0, 6, 0, &events(2000, 9, 0))
                .unwrap()
                .first_id,
            6
        );
        let (f, got) = c
            .fetch(&t, "t", 0, "", Some(0), 10_000, 0, 1 << 20)
            .unwrap();
        assert_eq!(f.count, 2006);
        assert_eq!(got[3].meta, events(1, 1, 0)[0].0);
        // Empty poll, then a long poll woken by a produce.
        let (f, _) = c.fetch(&t, "t", 0, "", Some(2006), 10, 0, 0).unwrap();
        assert_eq!(f.count, 0);
        let group2 = group.clone();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let c2 = Client::connect(&group2).unwrap();
            let t2 = c2.open_topic("t").unwrap();
            c2.produce(&t2, "t", 0, 7, 0, &events(1, 7, 5)).unwrap()
        });
        let (f, got) = c
            .fetch(&t, "t", 0, "", Some(2006), 10, 10_000, 1024)
            .unwrap();
        assert_eq!((f.count, got[0].data.clone()), (1, vec![7u8; 5]));
        waker.join().unwrap();
        // Commits are monotonic and give the consumer's start.
        assert_eq!(c.commit(&t, "t", 0, "c", 5).unwrap(), 5);
        assert_eq!(c.commit(&t, "t", 0, "c", 2).unwrap(), 5);
        assert_eq!(c.position(&t, "t", 0, "c").unwrap(), 5);
        let (f, _) = c.fetch(&t, "t", 0, "c", None, 1, 0, 0).unwrap();
        assert_eq!(f.first_id, 5);
        let e = refused(c.commit(&t, "t", 0, "c", 1_000_000));
        assert_eq!(e.status, Status::BadRequest);
        for bad in ["../../escape", "a/b", ".hidden"] {
            let e = refused(c.commit(&t, "t", 0, bad, 1));
            assert_eq!(e.status, Status::BadRequest, "{bad}: {e}");
        }
        assert!(!dir.path().join("escape.acks").exists());
        // Completion: no more produce, end of stream once read.
        c.complete_topic("t").unwrap();
        let e = refused(c.produce(&t, "t", 0, 5, 2, &events(1, 0, 1)));
        assert_eq!(e.status, Status::Complete);
        let (f, _) = c.fetch(&t, "t", 0, "", Some(2007), 10, 5_000, 0).unwrap();
        assert!(f.end_of_stream());
    }
}

#[test]
fn malformed_and_oversized_requests_get_error_replies_and_the_server_keeps_serving() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        let garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 7],
            vec![0xff; 200],
            {
                // A produce claiming 4 G events.
                let mut b = c.produce_request("t", 0, 1, 0, &events(1, 0, 1)).unwrap().0;
                b.count = u32::MAX;
                diaspora_proto::Message::to_vec(&b)
            },
            {
                // A produce claiming 2^60 bytes of data.
                let mut b = c.produce_request("t", 0, 1, 0, &events(1, 0, 1)).unwrap().0;
                b.data_len = 1 << 60;
                diaspora_proto::Message::to_vec(&b)
            },
        ];
        for op in diaspora_proto::Op::ALL {
            for body in &garbage {
                let r = c.call_raw(0, op.code(), body.clone()).unwrap();
                let d =
                    diaspora_proto::decode_response::<diaspora_proto::admin::Empty>(&r, &c.limits)
                        .unwrap();
                let e = d.unwrap_err();
                assert!(
                    matches!(
                        e.status,
                        Status::BadRequest | Status::TooLarge | Status::Unauthorized
                    ),
                    "{op:?}: {e}"
                );
            }
        }
        // A region pointing at memory the client never registered: a transfer error.
        let (mut b, _buf) = c
            .produce_request("t", 0, 1, 0, &events(1, 0, 1000))
            .unwrap();
        b.regions = vec![diaspora_proto::RemoteRegion::new(0x1000, 1000, 0xdead).unwrap()];
        // (On tcp;ofi_rxm the rpc engine does not complete a read of an unknown key within the
        // deadline: the call times out. Either way the server must keep serving.)
        match c.call_within::<_, diaspora_proto::ProduceResponse>(0, &b, Duration::from_secs(2)) {
            Err(ClientError::Refused(e)) => assert_eq!(e.status, Status::Transfer, "{e}"),
            Err(ClientError::Rpc(diaspora_rpc::RpcError::Timeout(_))) => {}
            other => panic!("a read of an unregistered region: {other:?}"),
        }
        // A CRC that does not match the data.
        let (mut b, buf) = c.produce_request("t", 0, 2, 0, &events(1, 0, 10)).unwrap();
        let mut tbl = b.table.take().unwrap();
        let n = tbl.len();
        tbl[8] ^= 1; // first data CRC
        let _ = n;
        b.table = Some(tbl);
        let e = refused(c.call::<_, diaspora_proto::ProduceResponse>(0, &b));
        assert_eq!(e.status, Status::CrcMismatch, "{e}");
        drop(buf);
        // Still serving, and the failed seq 0 can be sent again.
        assert_eq!(
            c.produce(&t, "t", 0, 2, 0, &events(2, 0, 10))
                .unwrap()
                .first_id,
            0
        );
    }
}

#[test]
fn kill_9_mid_stream_then_restart_reloads_data_acks_and_seq_state() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &[]);
        let epoch1 = s.group().epoch;
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", r#"{"num_partitions": 1, "sync": true}"#)
            .unwrap();
        let t = c.open_topic("t").unwrap();
        let mut acked = Vec::new();
        for seq in 0..20u64 {
            let r = c
                .produce(&t, "t", 0, 42, seq, &events(5, seq as u8, 64))
                .unwrap();
            acked.push(r.first_id);
        }
        assert_eq!(c.commit(&t, "t", 0, "cons", 37).unwrap(), 37);
        // Keep producing from another thread while the server is killed.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let group2 = group.clone();
        let streaming = std::thread::spawn(move || {
            let c2 = Client::connect(&group2).unwrap();
            let t2 = c2.open_topic("t").unwrap();
            ready_tx.send(()).unwrap();
            let mut stored = 0u64;
            for seq in 0..100_000u64 {
                match c2.produce(&t2, "t", 0, 43, seq, &events(3, 1, 64)) {
                    Ok(_) => stored = seq + 1,
                    Err(_) => break,
                }
            }
            stored
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.kill9();
        let stored43 = streaming.join().unwrap();
        drop(c);

        let s2 = Server::start(&provider, &data, &group, &[]);
        let epoch2 = s2.group().epoch;
        assert_ne!(epoch1, epoch2, "a restarted server has a new epoch");
        let c = Client::connect(&group).unwrap();
        let t = c.open_topic("t").unwrap();
        // Acknowledgements survived.
        assert_eq!(c.position(&t, "t", 0, "cons").unwrap(), 37);
        // Sequence state survived: resending stored batches is a duplicate with its id.
        let e = refused(c.produce(&t, "t", 0, 42, 19, &events(5, 19, 64)));
        assert_eq!((e.status, e.detail), (Status::Duplicate, acked[19]));
        let e = refused(c.produce(&t, "t", 0, 42, 5, &events(5, 5, 64)));
        assert_eq!(e.status, Status::Duplicate);
        assert_eq!(
            c.produce(&t, "t", 0, 42, 20, &events(5, 20, 64))
                .unwrap()
                .count,
            5
        );
        // Producer 43 resends from its last acknowledged batch: each batch stored once.
        let mut seq = stored43;
        loop {
            match c.produce(&t, "t", 0, 43, seq, &events(3, 1, 64)) {
                Ok(_) => break,
                Err(ClientError::Refused(e)) if e.status == Status::Duplicate => seq += 1,
                Err(e) => panic!("resend of {seq}: {e}"),
            }
        }
        // Every event is there exactly once: 20 + 1 batches of 5 from 42, seq+1 batches of 3.
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let (f, got) = c.fetch(&t, "t", 0, "", Some(from), 10_000, 0, 0).unwrap();
            if f.count == 0 {
                break;
            }
            from += f.count as u64;
            all.extend(got);
        }
        assert_eq!(
            all.len() as u64,
            21 * 5 + (seq + 1) * 3,
            "stored43 {stored43} seq {seq}"
        );
        let report = diaspora_driver_files::verify_topic(&data, "t").unwrap();
        assert!(!format!("{report:?}").contains("rror"), "{report:?}");
    }
}

#[test]
fn a_producer_killed_while_the_server_reads_from_it_does_not_stop_the_server() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_diaspora-test-producer"))
            .arg(&group)
            .arg("t")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..3 {
            assert!(lines.next().unwrap().unwrap().starts_with("stored"));
        }
        child.kill().unwrap();
        diaspora_fabric::reap_child(&mut child).unwrap();
        // Everyone else is still served.
        for seq in 0..5 {
            c.produce(&t, "t", 0, 77, seq, &events(2, 3, 1000)).unwrap();
        }
        let (f, _) = c.fetch(&t, "t", 0, "", Some(0), 10_000, 0, 0).unwrap();
        assert!(f.count >= 3 * 4 + 10, "{}", f.count);
    }
}

#[test]
fn batches_in_flight_together_are_stored_in_seq_order_by_group_commits() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", r#"{"sync": true}"#).unwrap();
        let t = c.open_topic("t").unwrap();
        // Four producers, each with 16 batches in flight at once.
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let group = group.clone();
                std::thread::spawn(move || {
                    let c = Client::connect(&group).unwrap();
                    let t = c.open_topic("t").unwrap();
                    let mut ids = Vec::new();
                    for round in 0..4u64 {
                        let r = c
                            .produce_pipelined(
                                &t,
                                "t",
                                0,
                                100 + p,
                                round * 16..round * 16 + 16,
                                &events(4, p as u8, 256),
                            )
                            .unwrap();
                        ids.extend(r.into_iter().map(|r| r.unwrap().first_id));
                    }
                    (p, ids)
                })
            })
            .collect();
        let mut total = 0;
        for h in producers {
            let (p, ids) = h.join().unwrap();
            assert_eq!(ids.len(), 64);
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "producer {p}: ids follow seq order: {ids:?}"
            );
            total += ids.len() * 4;
        }
        let mut from = 0;
        let mut seen = std::collections::HashMap::<u8, usize>::new();
        loop {
            let (f, got) = c.fetch(&t, "t", 0, "", Some(from), 10_000, 0, 0).unwrap();
            if f.count == 0 {
                break;
            }
            from += f.count as u64;
            for e in got {
                let v: serde_json::Value = serde_json::from_slice(&e.meta).unwrap();
                *seen.entry(v["t"].as_u64().unwrap() as u8).or_default() += 1;
            }
        }
        assert_eq!(from as usize, total, "every batch stored once");
        assert!(seen.values().all(|&n| n == 256), "{seen:?}");
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(Duration::from_secs(30)).success());
        eprintln!("{}", s.stderr());
    }
}

#[test]
fn sigterm_while_producing_loses_no_acknowledged_batch() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let group2 = group.clone();
        let streaming = std::thread::spawn(move || {
            let c = Client::connect(&group2).unwrap();
            let t = c.open_topic("t").unwrap();
            ready_tx.send(()).unwrap();
            let mut acked = 0u64;
            for seq in 0..1_000_000u64 {
                match c.produce_pipelined(&t, "t", 0, 1, seq * 4..seq * 4 + 4, &events(8, 1, 512)) {
                    Ok(r) => {
                        for x in r {
                            match x {
                                Ok(_) => acked += 1,
                                Err(_) => return acked,
                            }
                        }
                    }
                    Err(_) => return acked,
                }
            }
            acked
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.signal(libc::SIGTERM);
        let st = s.wait_exit(Duration::from_secs(30));
        assert!(st.success(), "{st}: {}", s.stderr());
        let acked = streaming.join().unwrap();
        assert!(acked > 0);
        drop(c);
        let _s2 = Server::start(&provider, &data, &group, &[]);
        let c = Client::connect(&group).unwrap();
        let t = c.open_topic("t").unwrap();
        let mut from = 0;
        loop {
            let (f, _) = c.fetch(&t, "t", 0, "", Some(from), 10_000, 0, 0).unwrap();
            if f.count == 0 {
                break;
            }
            from += f.count as u64;
        }
        // Every acknowledged batch is stored; a batch stored but not acknowledged (answered
        // ShuttingDown late) may be there too, never a partial one.
        assert!(
            from >= acked * 8,
            "stored {from} events, {acked} batches acknowledged"
        );
        assert_eq!(from % 8, 0);
    }
}

#[test]
fn memory_storage_and_a_config_file_with_pinned_cores() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let cfg = dir.path().join("server.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"storage": "memory", "cores": "0-1", "provider": "{provider}", "credits": 3}}"#
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        let _s = Server::start(
            &provider,
            &data,
            &group,
            &["--config", cfg.to_str().unwrap()],
        );
        let c = Client::connect(&group).unwrap();
        let g = c.group.clone();
        assert_eq!(
            g.ranks[0]
                .threads
                .iter()
                .map(|t| t.core)
                .collect::<Vec<_>>(),
            [Some(0), Some(1)]
        );
        assert_eq!(c.limits.credits, 3);
        c.create_topic("m", r#"{"num_partitions": 2}"#).unwrap();
        let t = c.open_topic("m").unwrap();
        for p in 0..2 {
            c.produce(&t, "m", p, 1, 0, &events(5, 1, 10)).unwrap();
            let (f, got) = c.fetch(&t, "m", p, "", Some(0), 10, 0, 4096).unwrap();
            assert_eq!((f.count, got[4].data.clone()), (5, vec![1 ^ 4; 10]));
        }
        assert!(
            !data.join("m").exists(),
            "memory storage writes no topic files"
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"storage": "memory", "treads": 2}"#).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_diaspora-server"))
            .args([
                "--data-dir",
                "/nonexistent",
                "--group-file",
                "/nonexistent/g",
                "--config",
            ])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("treads"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn fetch_data_returns_selected_ranges_of_several_events_in_one_rpc() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("group.json");
        let _s = Server::start(&provider, &dir.path().join("data"), &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        let evs: Vec<(Vec<u8>, Vec<u8>)> = (0..4u8)
            .map(|i| (vec![i], (0..100u8).map(|b| b ^ i).collect()))
            .collect();
        c.produce(&t, "t", 0, 1, 0, &evs).unwrap();
        // Metadata only first (no landing), then the selected ranges.
        let (f, got) = c.fetch(&t, "t", 0, "", Some(0), 10, 0, 0).unwrap();
        assert_eq!(
            (f.count, got[2].meta.clone(), got[2].data.len()),
            (4, vec![2], 0)
        );
        use diaspora_proto::Range;
        let ranges = vec![
            Range {
                id: 1,
                offset: 10,
                len: 5,
            },
            Range {
                id: 3,
                offset: 0,
                len: 3,
            },
            Range {
                id: 0,
                offset: 99,
                len: 1,
            },
        ];
        let bytes = c.fetch_data(&t, "t", 0, ranges, 64).unwrap();
        let mut want = evs[1].1[10..15].to_vec();
        want.extend_from_slice(&evs[3].1[..3]);
        want.push(evs[0].1[99]);
        assert_eq!(bytes, want);
        // Out of an event's data, an unknown event, a landing too small: refusals.
        let e = refused(c.fetch_data(
            &t,
            "t",
            0,
            vec![Range {
                id: 0,
                offset: 95,
                len: 10,
            }],
            64,
        ));
        assert_eq!(e.status, Status::BadRequest, "{e}");
        let e = refused(c.fetch_data(
            &t,
            "t",
            0,
            vec![Range {
                id: 9,
                offset: 0,
                len: 1,
            }],
            64,
        ));
        assert_eq!(e.status, Status::BadRequest, "{e}");
        let e = refused(c.fetch_data(
            &t,
            "t",
            0,
            vec![Range {
                id: 0,
                offset: 0,
                len: 100,
            }],
            10,
        ));
        assert_eq!(e.status, Status::TooLarge, "{e}");
    }
}

#[test]
fn fetches_stop_at_a_gap_left_by_a_torn_append_and_serve_the_rest_after_it() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", "{}").unwrap();
        let t = c.open_topic("t").unwrap();
        c.produce(&t, "t", 0, 1, 0, &events(3, 1, 50)).unwrap();
        drop(c);
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(Duration::from_secs(30)).success());
        // A writer killed after writing data and metadata but before the index: bytes
        // after the end of the log that no record covers.
        let part = data.join("t/partitions/00000000");
        for ext in ["data", "meta"] {
            let path = part.join(format!("00000000000000000000.{ext}"));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            std::io::Write::write_all(&mut f, &[0xee; 33]).unwrap();
        }
        let _s = Server::start(&provider, &data, &group, &[]);
        let c = Client::connect(&group).unwrap();
        let t = c.open_topic("t").unwrap();
        assert_eq!(
            c.produce(&t, "t", 0, 1, 1, &events(2, 2, 50))
                .unwrap()
                .first_id,
            3
        );
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let (f, got) = c
                .fetch(&t, "t", 0, "", Some(from), 100, 0, 1 << 16)
                .unwrap();
            if f.count == 0 {
                break;
            }
            from += f.count as u64;
            all.extend(got);
        }
        let want: Vec<_> = events(3, 1, 50)
            .into_iter()
            .chain(events(2, 2, 50))
            .collect();
        assert_eq!(
            all.iter()
                .map(|e| (e.meta.clone(), e.data.clone()))
                .collect::<Vec<_>>(),
            want
        );
    }
}

/// A client (kept on its own thread) that parks a one-minute poll on partition 0 of `t`;
/// gives back how many events answered it.
fn park_a_live_poll(group: &Path) -> std::thread::JoinHandle<u32> {
    let staying = Client::connect(group).unwrap();
    let t = staying.open_topic("t").unwrap();
    std::thread::spawn(move || {
        let r = staying.fetch(&t, "t", 0, "", Some(0), 10, 60_000, 0);
        r.unwrap().0.count
    })
}

/// SIGTERMs `s` and checks its last words: one fetch answered (the live poll) and one long
/// poll released (not answered at shutdown).
fn stops_having_released_one_poll(s: &mut Server, provider: &str) {
    s.signal(libc::SIGTERM);
    let st = s.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "exit status {st}: {}", s.stderr());
    assert!(
        s.stderr().contains(
            "answered 1 fetches, refused 0 unauthenticated and 0 malformed requests, released 1 long polls of closed sessions"
        ),
        "{provider}: {}",
        s.stderr()
    );
}

#[test]
fn a_client_that_closes_gives_up_its_long_polls_at_once_and_live_ones_are_served() {
    use diaspora_proto::fetch::Fetch;
    use diaspora_proto::Message;
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &[]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", r#"{"num_partitions": 1}"#).unwrap();
        let t = c.open_topic("t").unwrap();
        let thread = c.owner(&t.placement, 0);
        let poll = Fetch {
            topic: "t".into(),
            partition: 0,
            consumer: String::new(),
            from_id: 0,
            max_events: 10,
            max_bytes: u64::MAX,
            wait_ms: 60_000,
            flags: 0,
            landing: vec![],
        };
        // A client parks a one-minute poll on the empty partition, then closes (GOODBYE).
        let leaving = Client::connect(&group).unwrap();
        let pending = leaving.call_raw_pending(thread, Fetch::OP.code(), poll.to_vec());
        // A live client parks one too.
        let live = park_a_live_poll(&group);
        // Both polls reach the server before the GOODBYE (they are sent first on their
        // connections; the pause lets the live one be parked too).
        std::thread::sleep(Duration::from_millis(300));
        drop(leaving);
        let gone = pending.wait();
        assert!(gone.is_err(), "{gone:?}");
        std::thread::sleep(Duration::from_millis(300));
        // The live poll is still held, and is answered by the next event.
        assert!(!live.is_finished(), "the live poll ended early");
        c.produce(&t, "t", 0, 1, 0, &events(1, 0, 10)).unwrap();
        assert_eq!(live.join().unwrap(), 1);
        // Released by the GOODBYE, not answered at shutdown: 1 fetch answered (the live one).
        stops_having_released_one_poll(&mut s, &provider);
    }
}

/// Issue 7: a consumer killed (SIGKILL) while the server holds its long poll never says
/// GOODBYE. Its keepalives stop, so the server ends its session within `--session-expiry-ms`
/// and releases the poll, while a live client's poll, parked past the expiry, is still held
/// and answered by the next event.
#[test]
fn a_consumer_killed_during_a_long_poll_loses_it_once_its_session_expires() {
    for provider in providers() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let group = dir.path().join("group.json");
        let mut s = Server::start(&provider, &data, &group, &["--session-expiry-ms", "1500"]);
        let c = Client::connect(&group).unwrap();
        c.create_topic("t", r#"{"num_partitions": 1}"#).unwrap();
        let t = c.open_topic("t").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_diaspora-test-producer"))
            .arg(&group)
            .arg("t")
            .arg("poll")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "POLLING", "{provider}");
        let live = park_a_live_poll(&group);
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        diaspora_fabric::reap_child(&mut child).unwrap();
        // The dead session ends within 1.5 s (plus a check of the sessions every 0.15 s);
        // the live one (keepalives every 0.3 s) stays.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!live.is_finished(), "{provider}: the live poll ended early");
        c.produce(&t, "t", 0, 1, 0, &events(1, 0, 10)).unwrap();
        assert_eq!(live.join().unwrap(), 1, "{provider}");
        // Released when the session expired, not answered at shutdown, and logged.
        stops_having_released_one_poll(&mut s, &provider);
        assert!(
            s.stderr().contains(
                "expired: nothing heard from its client for the session expiry; released 1 long polls"
            ),
            "{provider}: {}",
            s.stderr()
        );
    }
}
