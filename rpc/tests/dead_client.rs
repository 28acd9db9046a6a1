//! Issue 7: a client process killed with SIGKILL while the server holds its long calls must not
//! take the server down for everyone else (`tcp;ofi_rxm` and `shm`; narrow with
//! `DIASPORA_TEST_PROVIDER`). The server is an engine in this process; the dying client is a
//! real `diaspora-rpc-peer poll` process; the answers to it are sent after it died.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use diaspora_rpc::{Engine, EngineConfig, SessionEnd};

fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}

fn engine(provider: &str, send_buffers: usize) -> Engine {
    let mut c = EngineConfig::for_provider(provider);
    c.handler_pool = diaspora_api::ThreadPool::new(2);
    c.send_buffers = send_buffers;
    c.send_timeout = Duration::from_secs(2);
    Engine::new(c).unwrap_or_else(|e| panic!("engine on {provider}: {e}"))
}

const SEC10: Option<Duration> = Some(Duration::from_secs(10));

/// Op 1 holds its call (the responder goes to the receiver given back), op 2 echoes.
fn hold_and_echo(server: &Engine) -> std::sync::mpsc::Receiver<diaspora_rpc::Responder> {
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| {
            let _ = tx.send(resp);
        })
        .expect("handler 1");
    server
        .register_handler(2, |req, resp| resp.respond(req.body))
        .expect("handler 2");
    rx
}

/// The responders of `polls` held calls (10 s at most for each to arrive).
fn held_calls(
    p: &str,
    rx: &std::sync::mpsc::Receiver<diaspora_rpc::Responder>,
    polls: usize,
) -> Vec<diaspora_rpc::Responder> {
    (0..polls)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{p}: long call did not reach the server"))
        })
        .collect()
}

/// Starts a `diaspora-rpc-peer poll` client of `server` with `polls` long calls in flight and
/// waits until it says so (`POLLING`); the caller kills it.
fn spawn_poller(p: &str, server: &Engine, polls: usize) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_diaspora-rpc-peer"))
        .args([p, "poll", &server.address().to_string(), &polls.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn diaspora-rpc-peer poll");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "POLLING")),
        "{p}: the polling client did not start (stderr above)"
    );
    child
}

#[test]
fn a_client_killed_with_long_calls_held_does_not_stop_the_server_serving_new_clients() {
    for p in providers() {
        // Fewer send buffers than answers owed to the dead client.
        let server = engine(&p, 4);
        let rx = hold_and_echo(&server);
        let polls = 8;
        let mut child = spawn_poller(&p, &server, polls);
        let held = held_calls(&p, &rx, polls);
        child.kill().expect("SIGKILL the client");
        // SIGKILL leaves its shm names behind: removed before the reap.
        diaspora_fabric::reap_child(&mut child).expect("reap the client");
        // The long polls end: their answers go to a dead peer.
        for resp in held {
            resp.respond(vec![1; 64]);
        }
        // New clients must be served, now and after the stuck answers expired.
        for round in 0..3 {
            let client = engine(&p, 16);
            let peer = client
                .connect(server.address(), Duration::from_secs(10))
                .wait()
                .unwrap_or_else(|e| panic!("{p}: round {round}: new client not served: {e}"));
            for i in 0..8u8 {
                let r = client.call(&peer, 2, vec![i; 32], SEC10).wait();
                assert_eq!(r.expect("echo"), vec![i; 32], "{p}: round {round}");
            }
            client.shutdown();
            std::thread::sleep(Duration::from_millis(1500));
        }
        server.shutdown();
    }
}

#[test]
fn the_session_of_a_killed_client_goes_to_a_new_caller_once_idle() {
    for p in providers() {
        // One session: the killed client holds it and never says goodbye.
        let mut c = EngineConfig::for_provider(&p);
        c.max_sessions = 1;
        c.session_idle = Duration::from_millis(500);
        let server = Engine::new(c).unwrap_or_else(|e| panic!("server on {p}: {e}"));
        server
            .register_handler(2, |req, resp| resp.respond(req.body))
            .expect("handler 2");
        let mut child = spawn_poller(&p, &server, 0);
        child.kill().expect("SIGKILL the client");
        // SIGKILL leaves its shm names behind: removed before the reap.
        diaspora_fabric::reap_child(&mut child).expect("reap the client");
        std::thread::sleep(Duration::from_millis(700));
        let client = engine(&p, 16);
        let peer = client
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: the killed client's session was not given up: {e}"));
        let out = client
            .call(&peer, 2, vec![7; 32], SEC10)
            .wait()
            .unwrap_or_else(|e| panic!("{p}: call: {e}"));
        assert_eq!(out, vec![7; 32]);
        assert_eq!(server.stats().sessions_evicted, 1, "{p}");
        client.shutdown();
        server.shutdown();
    }
}

/// shm: a client killed inside a send to the server holds the server's region lock; every
/// other client's send to the server then spun for ever inside the provider, so the server
/// served nobody. Now the server's engine releases its own region lock once it has been held
/// for 2 s, and new clients are served.
#[test]
fn a_client_killed_holding_the_servers_shm_lock_does_not_stop_it_serving_others() {
    let p = "shm";
    if !providers().iter().any(|x| x == p) {
        return;
    }
    let server = engine(p, 16);
    server
        .register_handler(2, |req, resp| resp.respond(req.body))
        .expect("handler 2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_diaspora-rpc-peer"))
        .args([p, "hold", &server.address().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn diaspora-rpc-peer hold");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let holding = lines.any(|l| l.is_ok_and(|l| l == "HOLDING"));
    assert!(holding, "the holding client did not start (stderr above)");
    let released_before = diaspora_fabric::shm_locks_released();
    child.kill().expect("SIGKILL the client");
    diaspora_fabric::reap_child(&mut child).expect("reap the client");

    // On a thread with a deadline: without the release, the new client's progress thread
    // spins inside the provider, so not even its connect deadline can fire.
    let addr = server.address().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The default send timeout: the first send waits in the provider until the lock goes
        // (2 s after it was taken).
        let client = Engine::new(EngineConfig::for_provider(p)).expect("client engine");
        let served = (|| {
            let peer = client
                .connect(&addr, Duration::from_secs(10))
                .wait()
                .map_err(|e| format!("a new client was not served: {e}"))?;
            for i in 0..8u8 {
                let r = client.call(&peer, 2, vec![i; 32], SEC10).wait();
                if r.map_err(|e| e.to_string())? != vec![i; 32] {
                    return Err(format!("echo {i} came back wrong"));
                }
            }
            Ok::<(), String>(())
        })();
        client.shutdown();
        let _ = tx.send(served);
    });
    let Ok(served) = rx.recv_timeout(Duration::from_secs(30)) else {
        // The server's engine is stuck too (its own progress spins on the same lock): leave it
        // behind rather than hang in its shutdown.
        std::mem::forget(server);
        panic!("a new client still inside the provider after 30 s (the server's lock stayed held)");
    };
    served.expect("served");
    assert!(
        diaspora_fabric::shm_locks_released() > released_before,
        "the server's lock was released"
    );
    server.shutdown();
}

/// A client killed (SIGKILL) while the server holds its long calls, with sessions to spare
/// (no newcomer evicts it): the server learns of it within the session expiry, since the
/// client's keepalives stop, and its session listener runs (a server releases the long polls
/// it held there) and the client's AV entry goes. While alive, the client keeps its session
/// however long its calls are held.
#[test]
fn a_killed_clients_session_expires_and_its_long_calls_are_released() {
    for p in providers() {
        let expiry = Duration::from_millis(1500);
        let mut c = EngineConfig::for_provider(&p);
        c.handler_pool = diaspora_api::ThreadPool::new(2);
        c.session_expiry = Some(expiry);
        let server = Engine::new(c).unwrap_or_else(|e| panic!("server on {p}: {e}"));
        let (ended_tx, ended_rx) = std::sync::mpsc::channel::<(u32, SessionEnd)>();
        let ended_tx = std::sync::Mutex::new(ended_tx);
        server.on_session_end(move |s, why| {
            let _ = ended_tx.lock().map(|t| t.send((s, why)));
        });
        let rx = hold_and_echo(&server);
        let polls = 4;
        let mut child = spawn_poller(&p, &server, polls);
        let held = held_calls(&p, &rx, polls);
        // Alive for 2.5 expiries with its calls held and nothing else sent: still served
        // (a keepalive every 300 ms).
        assert!(
            ended_rx.recv_timeout(expiry * 5 / 2).is_err(),
            "{p}: a live client's session ended: {:?}",
            server.stats()
        );
        assert!(server.stats().keepalives_received >= 5, "{p}");
        let peers = server.stats().peers;
        child.kill().expect("SIGKILL the client");
        diaspora_fabric::reap_child(&mut child).expect("reap the client");
        let ended = ended_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{p}: the killed client's session never ended"));
        assert_eq!(ended, (held[0].session(), SessionEnd::Expired), "{p}");
        assert_eq!(server.stats().sessions_expired, 1, "{p}");
        // Its entry goes once nothing posted to it is outstanding.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while server.stats().peers >= peers && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = server.stats();
        assert!(s.peers < peers && s.peers_removed >= 1, "{p}: {s:?}");
        // Answering the dead session's calls is harmless; others are served.
        for resp in held {
            resp.respond(vec![1; 64]);
        }
        let client = engine(&p, 16);
        let peer = client
            .connect(server.address(), Duration::from_secs(10))
            .wait()
            .unwrap_or_else(|e| panic!("{p}: new client not served: {e}"));
        let out = client.call(&peer, 2, vec![5; 32], SEC10).wait();
        assert_eq!(out.expect("echo"), vec![5; 32], "{p}");
        client.shutdown();
        server.shutdown();
    }
}
