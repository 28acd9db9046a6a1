//! The engine on real providers (`tcp;ofi_rxm` and `shm` on loopback; narrow with
//! `DIASPORA_TEST_PROVIDER=shm` for example), with real peer processes (`diaspora-rpc-peer`)
//! that are killed with SIGKILL or frozen with SIGSTOP.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use diaspora_fabric::RemoteRegion;
use diaspora_rpc::wire::{self, ErrorCode, Header, Kind};
use diaspora_rpc::{Address, BulkError, Engine, EngineConfig, Peer, RpcError};

fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}

fn engine(provider: &str) -> Engine {
    let mut c = EngineConfig::for_provider(provider);
    c.handler_pool = diaspora_api::ThreadPool::new(2);
    Engine::new(c).unwrap_or_else(|e| panic!("engine on {provider}: {e}"))
}

/// A peer process; killed and reaped on drop.
struct PeerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: Address,
    region: RemoteRegion,
}

const EXPOSED: usize = 8 << 20;

impl PeerProc {
    fn spawn(provider: &str) -> PeerProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_diaspora-rpc-peer"))
            .args([provider, &EXPOSED.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn diaspora-rpc-peer");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut addr, mut region) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("peer stdout");
            if let Some(a) = line.strip_prefix("ADDR ") {
                addr = Some(a.parse::<Address>().expect("peer address"));
            } else if let Some(r) = line.strip_prefix("REGION ") {
                let bytes: Vec<u8> = (0..r.len() / 2)
                    .map(|i| u8::from_str_radix(&r[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                region = Some(RemoteRegion::decode(&bytes).expect("region").0);
            } else if line == "READY" {
                break;
            }
        }
        if addr.is_none() || region.is_none() {
            let status = wait_exit(&mut child, Duration::from_secs(10));
            panic!("{provider}: diaspora-rpc-peer did not start (exit status {status:?}; its stderr is above)");
        }
        // Keep draining stdout so the peer never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        PeerProc {
            child,
            stdin,
            addr: addr.expect("ADDR line"),
            region: region.expect("REGION line"),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill({sig})");
        if sig == libc::SIGSTOP {
            // kill returns before the target stops: wait until the kernel says it has.
            let stat = format!("/proc/{}/stat", self.child.id());
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let s = std::fs::read_to_string(&stat).unwrap_or_default();
                let state = s
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next());
                if state == Some('T') {
                    break;
                }
                assert!(Instant::now() < until, "peer did not stop: {s}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Closes stdin (clean exit) and waits for the process.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        wait_exit(&mut self.child, Duration::from_secs(20)).expect("peer exits after stdin closes")
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(s)) = diaspora_fabric::try_reap_child(child) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        // SIGKILL leaves the peer's shm names (16 MiB of tmpfs each) behind.
        let _ = diaspora_fabric::reap_child(&mut self.child);
    }
}

const SEC5: Option<Duration> = Some(Duration::from_secs(5));

fn check_pattern(bytes: &[u8], offset: usize) {
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(b, ((offset + i) % 251) as u8, "byte {i}");
    }
}

#[test]
fn calls_and_bulk_reads_and_writes_across_processes() {
    for p in providers() {
        let peer_proc = PeerProc::spawn(&p);
        let e = engine(&p);
        let peer = e
            .connect(&peer_proc.addr, Duration::from_secs(10))
            .wait()
            .expect("connect");
        assert_eq!(
            e.call(&peer, 1, b"hello".to_vec(), SEC5)
                .wait()
                .expect("echo"),
            b"hello"
        );
        // Two slices of the exposed buffer, back to back into one local buffer.
        let r = &peer_proc.region;
        let regions = vec![
            r.slice(0, 4096).expect("slice"),
            r.slice(1 << 20, 65536).expect("slice"),
        ];
        let local = e.register(4096 + 65536).expect("register");
        let local = e.read(&peer, regions, local, SEC5).wait().expect("read");
        check_pattern(&local.as_slice()[..4096], 0);
        check_pattern(&local.as_slice()[4096..], 1 << 20);
        // Write a marker into the peer and read it back.
        let mut src = e.register(16).expect("register");
        src.as_mut_slice().copy_from_slice(b"diaspora-rpc-ok!");
        let target = vec![r.slice(100, 16).expect("slice")];
        let _src = e
            .write(&peer, src, target.clone(), SEC5)
            .wait()
            .expect("write");
        let back = e
            .read(&peer, target, e.register(16).expect("register"), SEC5)
            .wait()
            .expect("read back");
        assert_eq!(back.as_slice(), b"diaspora-rpc-ok!");
        drop(back);
        e.shutdown();
        assert!(peer_proc.finish().success(), "{p}: peer exits cleanly");
    }
}

#[test]
fn a_killed_peer_fails_in_flight_reads_within_their_deadline_and_others_are_still_served() {
    for p in providers() {
        let mut victim = PeerProc::spawn(&p);
        let other = PeerProc::spawn(&p);
        let e = engine(&p);
        let vpeer = e
            .connect(&victim.addr, Duration::from_secs(10))
            .wait()
            .expect("connect victim");
        let opeer = e
            .connect(&other.addr, Duration::from_secs(10))
            .wait()
            .expect("connect other");
        let deadline = Duration::from_secs(3);
        let whole = vec![victim.region];
        let mut inflight: Vec<_> = (0..4)
            .map(|_| {
                e.read(
                    &vpeer,
                    whole.clone(),
                    e.register(EXPOSED).expect("reg"),
                    Some(deadline),
                )
            })
            .collect();
        // Let a couple complete so reads are really flowing, then kill the target mid-stream.
        for _ in 0..2 {
            let buf = inflight.remove(0).wait().expect("read before the kill");
            inflight.push(e.read(&vpeer, whole.clone(), buf, Some(deadline)));
        }
        victim.signal(libc::SIGKILL);
        let killed_at = Instant::now();
        // Reads posted after the victim is gone too (a signalled process may still run for a
        // moment, and a read posted then, at once by this thread, can still succeed on shm).
        wait_exit(&mut victim.child, Duration::from_secs(10)).expect("the victim dies");
        inflight.push(e.read(
            &vpeer,
            whole.clone(),
            e.register(EXPOSED).expect("reg"),
            Some(deadline),
        ));
        let mut failures = 0;
        for pending in inflight {
            match pending.wait() {
                Ok(_) => {} // finished before the kill took effect
                Err(BulkError { error, .. }) => {
                    assert!(
                        matches!(error, RpcError::Timeout(_) | RpcError::Transport { .. }),
                        "{p}: unexpected error {error:?}"
                    );
                    failures += 1;
                }
            }
        }
        let took = killed_at.elapsed();
        assert!(
            failures >= 1,
            "{p}: the read posted after the kill must fail"
        );
        assert!(
            took < deadline + Duration::from_secs(2),
            "{p}: failures took {took:?}"
        );
        // The engine still serves the other peer: calls and reads.
        assert_eq!(
            e.call(&opeer, 1, b"still here".to_vec(), SEC5)
                .wait()
                .expect("call"),
            b"still here"
        );
        let local = e.read(
            &opeer,
            vec![other.region.slice(0, 65536).expect("slice")],
            e.register(65536).expect("reg"),
            SEC5,
        );
        check_pattern(local.wait().expect("read from the survivor").as_slice(), 0);
        e.shutdown();
        assert!(other.finish().success());
    }
}

#[test]
fn a_read_past_its_deadline_times_out_and_its_buffer_stays_with_the_engine_until_completion() {
    for p in providers() {
        let frozen = PeerProc::spawn(&p);
        let e = engine(&p);
        let peer = e
            .connect(&frozen.addr, Duration::from_secs(10))
            .wait()
            .expect("connect");
        // A frozen target drives no progress: the read cannot complete (manual progress).
        frozen.signal(libc::SIGSTOP);
        let t0 = Instant::now();
        let local = e.register(1 << 20).expect("register");
        let r = e.read(
            &peer,
            vec![frozen.region.slice(0, 1 << 20).expect("slice")],
            local,
            Some(Duration::from_millis(300)),
        );
        // On shm, RMA goes through CMA (process_vm_readv), which needs nothing from the target:
        // the read can complete even though the peer is stopped. There the ownership-after-
        // timeout property is covered by tcp and by the mock transport's unit test.
        let read_timed_out = match r.wait() {
            Ok(_) => {
                assert_eq!(p, "shm", "a read from a stopped tcp peer cannot complete");
                eprintln!("shm: the read completed through CMA without the stopped target");
                false
            }
            Err(err) => {
                assert!(matches!(err.error, RpcError::Timeout(_)), "{p}: {err:?}");
                assert!(
                    err.buffer.is_none(),
                    "{p}: the buffer stays with the engine while the read is posted"
                );
                assert!(
                    t0.elapsed() < Duration::from_secs(3),
                    "{p}: timed out after {:?}",
                    t0.elapsed()
                );
                true
            }
        };
        // A call needs the peer on every provider: it times out, its late answer is dropped.
        let call = e
            .call(&peer, 1, b"x".to_vec(), Some(Duration::from_millis(200)))
            .wait();
        assert!(matches!(call, Err(RpcError::Timeout(_))), "{p}: {call:?}");
        assert_eq!(
            e.stats().released_late,
            0,
            "{p}: nothing freed while the read may still land"
        );
        // Thaw the peer: the late completion arrives and only then is the buffer freed.
        frozen.signal(libc::SIGCONT);
        if read_timed_out {
            let until = Instant::now() + Duration::from_secs(20);
            while e.stats().released_late == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                e.stats().released_late,
                1,
                "{p}: late completion frees the buffer"
            );
        }
        assert_eq!(
            e.call(&peer, 1, b"y".to_vec(), SEC5)
                .wait()
                .expect("call after thaw"),
            b"y"
        );
        e.shutdown();
        assert!(frozen.finish().success());
    }
}

fn frame(id: u64, session: u32, body: &[u8]) -> Vec<u8> {
    wire::encode(
        &Header {
            kind: Kind::Request,
            op: 1,
            request_id: id,
            session,
            budget_us: 0,
        },
        body,
    )
}

fn remote_code(r: Result<Vec<u8>, RpcError>) -> ErrorCode {
    match r {
        Err(RpcError::Remote { code, .. }) => code,
        other => panic!("expected an ERR reply, got {other:?}"),
    }
}

#[test]
fn malformed_truncated_oversized_and_wrong_version_frames_get_codes_or_are_dropped() {
    for p in providers() {
        let server = engine(&p);
        server
            .register_handler(1, |req, resp| resp.respond(req.body))
            .expect("handler");
        let client = engine(&p);
        let peer = client
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .expect("connect");
        let t = Duration::from_millis(500);
        let raw = |make: &dyn Fn(u64, u32) -> Vec<u8>| client.call_raw(&peer, t, make).wait();
        assert_eq!(
            raw(&|id, s| frame(id, s, b"ok")).expect("valid frame"),
            b"ok"
        );
        let wrong_version = raw(&|id, s| {
            let mut f = frame(id, s, b"x");
            f[2] = 2;
            f
        });
        assert_eq!(remote_code(wrong_version), ErrorCode::UnsupportedVersion);
        let reserved = raw(&|id, s| {
            let mut f = frame(id, s, b"x");
            f[7] = 1;
            f
        });
        assert_eq!(remote_code(reserved), ErrorCode::ReservedFlags);
        let corrupt = raw(&|id, s| {
            let mut f = frame(id, s, b"payload");
            f[35] ^= 0x10;
            f
        });
        assert_eq!(remote_code(corrupt), ErrorCode::BadChecksum);
        let oversized = raw(&|id, s| {
            let mut f = frame(id, s, b"x");
            f[24..28].copy_from_slice(&(1u32 << 30).to_le_bytes());
            f
        });
        assert_eq!(remote_code(oversized), ErrorCode::TooLarge);
        let truncated = raw(&|id, s| frame(id, s, b"0123456789")[..36].to_vec());
        assert_eq!(remote_code(truncated), ErrorCode::Truncated);
        assert_eq!(server.stats().refused, 5, "{p}");
        // Unanswerable: no magic, shorter than a header, bigger than a receive buffer.
        let dropped = server.stats().dropped;
        assert!(matches!(
            raw(&|_, _| b"not a frame at all, no magic".to_vec()),
            Err(RpcError::Timeout(_))
        ));
        assert!(matches!(
            raw(&|_, _| b"DF".to_vec()),
            Err(RpcError::Timeout(_))
        ));
        let mut unanswerable = 2;
        // A message larger than the receive buffers: the transport truncates it and the
        // engine drops it. Not on shm: libfabric 1.17's shm provider deadlocks (the sender
        // spins in fi_send on the region lock) after truncating a larger-than-posted message
        // between two endpoints of one process, a provider bug outside the engine.
        if p != "shm" {
            let big = raw(&|id, s| frame(id, s, &vec![7; 64 * 1024]));
            assert!(matches!(big, Err(RpcError::Timeout(_))), "{p}: {big:?}");
            unanswerable += 1;
        }
        let until = Instant::now() + Duration::from_secs(5);
        while server.stats().dropped < dropped + unanswerable && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.stats().dropped, dropped + unanswerable, "{p}");
        // A HELLO naming another provider gets ProviderMismatch.
        let hello = raw(&|id, _| {
            let mut body = Vec::new();
            wire::Writer::new(&mut body)
                .bytes(b"sockets")
                .bytes(client.address().bytes());
            wire::encode(
                &Header {
                    kind: Kind::Request,
                    op: 0,
                    request_id: id,
                    session: 0,
                    budget_us: 0,
                },
                &body,
            )
        });
        assert_eq!(remote_code(hello), ErrorCode::ProviderMismatch);
        // Still serving.
        assert_eq!(
            client
                .call(&peer, 1, b"alive".to_vec(), SEC5)
                .wait()
                .expect("call"),
            b"alive"
        );
    }
}

#[test]
fn clean_shutdown_fails_pending_operations_and_returns_promptly() {
    for p in providers() {
        let frozen = PeerProc::spawn(&p);
        let e = engine(&p);
        let peer: Peer = e
            .connect(&frozen.addr, Duration::from_secs(10))
            .wait()
            .expect("connect");
        frozen.signal(libc::SIGSTOP);
        let call = e.call(&peer, 1, b"never".to_vec(), None);
        let read = e.read(
            &peer,
            vec![frozen.region.slice(0, 4096).expect("slice")],
            e.register(4096).expect("reg"),
            None,
        );
        let handle = e.handle();
        let t0 = Instant::now();
        e.shutdown();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{p}: shutdown took {:?}",
            t0.elapsed()
        );
        assert!(matches!(call.wait(), Err(RpcError::ShuttingDown)), "{p}");
        // As above, a shm read may have completed through CMA; otherwise it failed.
        match read.wait() {
            Ok(_) => assert_eq!(p, "shm", "a read from a stopped tcp peer cannot complete"),
            Err(e) => assert!(matches!(e.error, RpcError::ShuttingDown), "{p}: {e:?}"),
        }
        assert!(matches!(
            handle.call(&peer, 1, vec![], None).wait(),
            Err(RpcError::ShuttingDown)
        ));
        frozen.signal(libc::SIGCONT);
        assert!(frozen.finish().success());
    }
}

#[test]
fn addresses_of_another_provider_are_refused() {
    for p in providers() {
        let e = engine(&p);
        let other = if p == "shm" { "tcp;ofi_rxm" } else { "shm" };
        let text = format!("{other}:{}", e.address().to_hex());
        let addr: Address = text.parse().expect("address parses");
        let r = e.connect(&addr, Duration::from_secs(1)).wait();
        assert!(
            matches!(r, Err(RpcError::ProviderMismatch { .. })),
            "{p}: {r:?}"
        );
        // And the printed address round-trips.
        let back: Address = e.address().to_string().parse().expect("parse");
        assert_eq!(&back, e.address());
    }
}

#[test]
fn inline_progress_calls_and_reads_across_processes() {
    for p in providers() {
        let peer_proc = PeerProc::spawn(&p);
        let mut c = EngineConfig::for_provider(&p);
        c.inline_progress = true;
        let e = Engine::new(c).expect("engine");
        let peer = e
            .connect(&peer_proc.addr, Duration::from_secs(10))
            .wait()
            .expect("connect");
        for i in 0..100u32 {
            let body = i.to_le_bytes().to_vec();
            assert_eq!(
                e.call(&peer, 1, body.clone(), SEC5).wait().expect("echo"),
                body
            );
        }
        let mut buf = e.register(1 << 20).expect("register");
        for _ in 0..10 {
            buf = e
                .read(
                    &peer,
                    vec![peer_proc.region.slice(0, 1 << 20).expect("slice")],
                    buf,
                    SEC5,
                )
                .wait()
                .expect("read");
            check_pattern(buf.as_slice(), 0);
        }
        drop(buf);
        e.shutdown();
        assert!(peer_proc.finish().success(), "{p}");
    }
}

#[test]
fn register_bytes_is_read_in_place_by_a_peer_and_refuses_to_be_written() {
    for p in providers() {
        let peer_proc = PeerProc::spawn(&p);
        let e = engine(&p);
        let peer = e
            .connect(&peer_proc.addr, Duration::from_secs(10))
            .wait()
            .expect("connect");
        // The caller's Bytes, registered without a copy, are the source of an RMA write.
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 253) as u8).collect();
        let bytes = bytes::Bytes::from(data.clone());
        let clone = bytes.clone();
        let src = e.register_bytes(bytes).expect("register_bytes");
        assert!(src.is_read_only());
        assert_eq!(src.as_slice().as_ptr(), clone.as_ptr(), "{p}: no copy");
        let target = vec![peer_proc.region.slice(4096, 65536).expect("slice")];
        let src = e
            .write(&peer, src, target.clone(), SEC5)
            .wait()
            .expect("write from registered bytes");
        let back = e
            .read(&peer, target.clone(), e.register(65536).expect("reg"), SEC5)
            .wait()
            .expect("read back");
        assert_eq!(back.as_slice(), &data[..], "{p}");
        // Reading into the read-only buffer is refused with an error, and nothing is written.
        match e.read(&peer, target, src, SEC5).wait() {
            Err(BulkError { error, buffer }) => {
                assert!(!format!("{error}").is_empty());
                if let Some(b) = buffer {
                    assert_eq!(b.as_slice(), &data[..], "{p}: untouched");
                }
            }
            Ok(_) => panic!("{p}: a read into register_bytes memory must fail"),
        }
        assert_eq!(&clone[..], &data[..]);
        assert!(e.register_bytes(bytes::Bytes::new()).is_err(), "{p}: empty");
        e.shutdown();
        assert!(peer_proc.finish().success(), "{p}: peer exits cleanly");
    }
}

/// A server answering op 1 with the request body, with `max_sessions` and `session_idle`.
fn echo_server(provider: &str, max_sessions: usize, session_idle: Duration) -> Engine {
    let mut c = EngineConfig::for_provider(provider);
    c.max_sessions = max_sessions;
    c.session_idle = session_idle;
    let server = Engine::new(c).unwrap_or_else(|e| panic!("server on {provider}: {e}"));
    server
        .register_handler(1, |req, resp| resp.respond(req.body))
        .expect("handler");
    server
}

/// Waits (10 s at most) until `server` has removed `n` callers' AV entries.
fn wait_peers_removed(server: &Engine, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().peers_removed < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn callers_that_shut_down_free_their_sessions_for_new_callers() {
    for p in providers() {
        // One session only: every new caller needs the previous one's GOODBYE.
        let server = echo_server(&p, 1, Duration::from_secs(3600));
        for round in 0..4 {
            let client = engine(&p);
            let peer = client
                .connect(server.address(), Duration::from_secs(10))
                .wait()
                .unwrap_or_else(|e| panic!("{p}: caller {round} refused: {e}"));
            let out = client
                .call(&peer, 1, vec![round; 16], Some(Duration::from_secs(10)))
                .wait()
                .unwrap_or_else(|e| panic!("{p}: call {round}: {e}"));
            assert_eq!(out, vec![round; 16]);
            client.shutdown();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.stats().sessions_closed < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.stats().sessions_closed, 4, "{p}");
        // Their AV entries went too (fi_av_remove once nothing was posted to them), and the
        // endpoint still serves a new caller afterwards.
        wait_peers_removed(&server, 4);
        let s = server.stats();
        assert_eq!(
            (s.peers, s.peers_removed, s.peers_remove_failed),
            (0, 4, 0),
            "{p}"
        );
        let client = engine(&p);
        let peer = client
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: caller after removals refused: {e}"));
        let out = client
            .call(&peer, 1, vec![7; 16], Some(Duration::from_secs(10)))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: call after removals: {e}"));
        assert_eq!(out, vec![7; 16]);
        assert_eq!(server.stats().peers, 1, "{p}");
        client.shutdown();
        server.shutdown();
    }
}

/// Two sessions from one caller endpoint share one AV entry at the server (libfabric merges
/// identical addresses, and shm's removal unmaps the peer whatever the count): ending one of
/// them (eviction here) must leave the other served.
#[test]
fn ending_one_of_two_sessions_of_one_caller_keeps_the_other_served() {
    for p in providers() {
        let idle = Duration::from_millis(300);
        let server = echo_server(&p, 2, idle);
        let echo = |e: &Engine, peer: &Peer, what: &str| {
            let out = e
                .call(peer, 1, b"ping".to_vec(), Some(Duration::from_secs(10)))
                .wait()
                .unwrap_or_else(|err| panic!("{p}: {what}: {err}"));
            assert_eq!(out, b"ping", "{p}: {what}");
        };
        let caller = engine(&p);
        let connect = |e: &Engine| {
            e.connect(server.address(), Duration::from_secs(10))
                .wait()
                .unwrap_or_else(|err| panic!("{p}: connect: {err}"))
        };
        let first = connect(&caller);
        echo(&caller, &first, "first session");
        let second = connect(&caller);
        assert_ne!(first.session(), second.session(), "{p}");
        std::thread::sleep(idle + Duration::from_millis(100));
        echo(&caller, &second, "second session"); // only the first one stays idle
        let newcomer = engine(&p);
        let third = connect(&newcomer); // evicts the first session
        wait_peers_removed(&server, 1);
        let s = server.stats();
        assert_eq!((s.sessions_evicted, s.peers_removed), (1, 1), "{p}");
        echo(
            &caller,
            &second,
            "second session after the first one's entry went",
        );
        echo(&newcomer, &third, "newcomer");
        newcomer.shutdown();
        caller.shutdown();
        server.shutdown();
    }
}

/// A caller that is an endpoint of this process, closed without a GOODBYE (it keeps no
/// session list), is evicted later: its AV entry must go without `fi_av_remove` touching the
/// closed endpoint (on shm that writes into its unmapped region), and the server goes on.
#[test]
fn evicting_a_closed_in_process_caller_is_safe() {
    for p in providers() {
        let idle = Duration::from_millis(200);
        let server = echo_server(&p, 1, idle);
        let mut cc = EngineConfig::for_provider(&p);
        cc.max_sessions = 0; // forgets its sessions: no GOODBYE at shutdown
        let gone = Engine::new(cc).unwrap_or_else(|e| panic!("client on {p}: {e}"));
        let peer = gone
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: connect: {e}"));
        let out = gone
            .call(&peer, 1, b"x".to_vec(), Some(Duration::from_secs(10)))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: call: {e}"));
        assert_eq!(out, b"x");
        gone.shutdown();
        std::thread::sleep(idle + Duration::from_millis(100));
        let next = engine(&p);
        let np = next
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: newcomer refused: {e}"));
        wait_peers_removed(&server, 1);
        let s = server.stats();
        assert_eq!((s.sessions_evicted, s.peers_removed), (1, 1), "{p}");
        let out = next
            .call(&np, 1, b"y".to_vec(), Some(Duration::from_secs(10)))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: newcomer's call: {e}"));
        assert_eq!(out, b"y");
        next.shutdown();
        server.shutdown();
    }
}
