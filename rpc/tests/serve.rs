//! The serving worker (an engine whose handler pool is left inline, the default) on real
//! providers, in one process: handlers run on the worker, never on the progress thread; a
//! handler that blocks stops neither progress (a peer's RMA read of this engine's memory, which
//! needs the target to drive progress on tcp;ofi_rxm and shm) nor shutdown; handlers issue
//! their own bulk transfers; a panic ends the handler, not the worker. Narrow with
//! `DIASPORA_TEST_PROVIDER=shm`.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use diaspora_fabric::RemoteRegion;
use diaspora_rpc::wire::ErrorCode;
use diaspora_rpc::{Engine, EngineConfig, RpcError, WaitStrategy};

fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}

const SEC5: Option<Duration> = Some(Duration::from_secs(5));
const OP_ECHO: u16 = 1;
const OP_BLOCK: u16 = 2;
const OP_PULL: u16 = 3;
const OP_PANIC: u16 = 4;

fn encode(r: &RemoteRegion) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode_into(&mut v);
    v
}

/// FNV-1a: what the pulling handler answers instead of the bytes (which exceed a body).
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn remote_code(r: Result<Vec<u8>, RpcError>) -> ErrorCode {
    match r {
        Err(RpcError::Remote { code, .. }) => code,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// A server engine with the default (serving worker) handlers, for each wait strategy that
/// lets the worker lead (spin, spin-then-block) and one that does not (block).
fn server(provider: &str, wait: Option<WaitStrategy>) -> Engine {
    let mut c = EngineConfig::for_provider(provider);
    c.wait = wait;
    c.thread_name = "serve-test-progress".into();
    Engine::new(c).unwrap_or_else(|e| panic!("server engine on {provider}: {e}"))
}

#[test]
fn the_serving_worker_serves_and_progress_goes_on_while_a_handler_blocks() {
    let waits = [None, Some(WaitStrategy::Spin), Some(WaitStrategy::Block)];
    for p in providers() {
        for wait in waits {
            let what = format!("{p} {wait:?}");
            let server = server(&p, wait);
            let mut cc = EngineConfig::for_provider(&p);
            cc.handler_pool = diaspora_api::ThreadPool::new(1);
            let client = Engine::new(cc).expect("client engine");

            server
                .register_handler(OP_ECHO, |req, resp| {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    if name == "serve-test-progress" {
                        return resp.fail("ran on the progress thread");
                    }
                    let mut body = req.body;
                    body.reverse();
                    resp.respond(body);
                })
                .expect("register");
            let (started_tx, started_rx) = mpsc::channel::<()>();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let started_tx = Mutex::new(started_tx);
            let release_rx = Mutex::new(release_rx);
            server
                .register_handler(OP_BLOCK, move |_, resp| {
                    let _ = started_tx.lock().expect("lock").send(());
                    let released = release_rx
                        .lock()
                        .expect("lock")
                        .recv_timeout(Duration::from_secs(10));
                    resp.respond(if released.is_ok() { b"done" } else { b"late" }.to_vec());
                })
                .expect("register");
            let h = server.handle();
            server
                .register_handler(OP_PULL, move |req, resp| {
                    // The server's produce pattern: read the caller's memory from the handler.
                    let Ok((region, _)) = RemoteRegion::decode(&req.body) else {
                        return resp.fail("bad region");
                    };
                    let Ok(len) = usize::try_from(region.len()) else {
                        return resp.fail("region too long");
                    };
                    let into = match h.register(len) {
                        Ok(b) => b,
                        Err(e) => return resp.fail(&e.to_string()),
                    };
                    match h.read(&req.peer, vec![region], into, SEC5).wait() {
                        Ok(buf) => resp.respond(digest(buf.as_slice()).to_le_bytes().to_vec()),
                        Err(e) => resp.fail(&e.error.to_string()),
                    }
                })
                .expect("register");
            server
                .register_handler(OP_PANIC, |_, _| panic!("handler bug (expected)"))
                .expect("register");

            let peer = client
                .connect(server.address(), Duration::from_secs(10))
                .wait()
                .expect("connect");
            for i in 0..200u32 {
                let body = i.to_le_bytes().to_vec();
                let mut want = body.clone();
                want.reverse();
                let got = client.call(&peer, OP_ECHO, body, SEC5).wait();
                assert_eq!(got.expect("echo"), want, "{what}");
            }
            let batch = client.call_batch((0..64u8).map(|i| (peer, OP_ECHO, vec![i, 0])), SEC5);
            for (i, c) in batch.into_iter().enumerate() {
                assert_eq!(c.wait().expect("batch echo"), vec![0, i as u8], "{what}");
            }

            // A panic ends the handler with HandlerPanicked; the worker serves on.
            let r = client.call(&peer, OP_PANIC, vec![], SEC5).wait();
            assert_eq!(remote_code(r), ErrorCode::HandlerPanicked, "{what}");
            let got = client.call(&peer, OP_ECHO, b"ab".to_vec(), SEC5).wait();
            assert_eq!(got.expect("echo after a panic"), b"ba", "{what}");

            // A handler pulls the caller's memory.
            let mut src = client.register(256 << 10).expect("register");
            for (i, b) in src.as_mut_slice().iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            let body = encode(&src.remote().expect("remote"));
            let got = client.call(&peer, OP_PULL, body, SEC5).wait();
            let want = digest(src.as_slice()).to_le_bytes().to_vec();
            assert_eq!(got.expect("pull"), want, "{what}");

            // While a handler blocks, the server still drives progress: the client reads the
            // server's memory (which needs the target's progress on both providers).
            let mut exposed = server.register(1 << 20).expect("register");
            exposed.as_mut_slice().fill(0x5a);
            let region = exposed.remote().expect("remote");
            let blocked = client.call(&peer, OP_BLOCK, vec![], SEC5);
            started_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the blocking handler started");
            let local = client.register(1 << 20).expect("register");
            let local = client
                .read(&peer, vec![region], local, SEC5)
                .wait()
                .unwrap_or_else(|e| panic!("{what}: read while a handler blocks: {}", e.error));
            assert!(local.as_slice().iter().all(|&b| b == 0x5a), "{what}");
            release_tx.send(()).expect("release");
            assert_eq!(blocked.wait().expect("blocked call"), b"done", "{what}");

            // Shutdown while a handler blocks: returns once the handler ends; the call it was
            // serving fails on the client within its deadline.
            let blocked = client.call(&peer, OP_BLOCK, vec![], Some(Duration::from_secs(1)));
            started_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the blocking handler started again");
            let releaser = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                let _ = release_tx.send(());
            });
            drop(exposed);
            server.shutdown();
            releaser.join().expect("releaser");
            assert!(blocked.wait().is_err(), "{what}: answered after shutdown");
            drop((src, local));
            client.shutdown();
        }
    }
}
