//! Engine logic on the in-process mock transport (no provider needed). The same behaviours are
//! tested on real providers in `rpc/tests/`.

use std::time::{Duration, Instant};

use super::*;
use crate::mock_net::{MockNet, World};
use crate::wire::{self, frame, Header, Kind};
use crate::WaitStrategy;

pub(super) type E = Engine<MockNet>;

pub(super) fn config() -> EngineConfig {
    EngineConfig {
        provider: "mock".into(),
        wait: Some(WaitStrategy::Block),
        idle_poll: Duration::from_micros(200),
        handler_pool: diaspora_api::ThreadPool::new(2),
        recv_buffers: 8,
        eager_size: 1024,
        ..EngineConfig::default()
    }
}

fn pair(world: &World) -> (E, E, Peer) {
    pair_with(world, false)
}

/// A server and a client; with `inline`, the client's callers drive progress themselves.
fn pair_with(world: &World, inline: bool) -> (E, E, Peer) {
    let mut c = config();
    c.inline_progress = inline;
    pair_configured(world, c)
}

/// A server and a client with the configuration `c`, connected.
fn pair_configured(world: &World, c: EngineConfig) -> (E, E, Peer) {
    let server = E::with_net(world.endpoint("server"), config()).unwrap();
    let client = E::with_net(world.endpoint("client"), c).unwrap();
    let peer = client
        .connect(server.address(), Duration::from_secs(5))
        .wait()
        .unwrap();
    (server, client, peer)
}

const SEC: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn call_round_trips_through_a_handler_on_the_pool() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    server
        .register_handler(1, |req, resp| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            assert_ne!(
                name, "diaspora-progress",
                "handlers must not run on the progress thread"
            );
            let mut body = req.body;
            body.reverse();
            resp.respond(body);
        })
        .unwrap();
    let out = client.call(&peer, 1, b"abc".to_vec(), SEC).wait().unwrap();
    assert_eq!(out, b"cba");
    let batch = client.call_batch((0..20u8).map(|i| (peer, 1, vec![i, 0])), SEC);
    for (i, p) in batch.into_iter().enumerate() {
        assert_eq!(p.wait().unwrap(), vec![0, i as u8]);
    }
    assert_eq!(server.stats().served, 21);
}

#[test]
fn unknown_ops_failing_and_panicking_handlers_get_stable_codes() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    server
        .register_handler(2, |_, resp| resp.fail("no such topic"))
        .unwrap();
    server
        .register_handler(3, |_, _resp| panic!("handler bug"))
        .unwrap();
    server.register_handler(4, |_, resp| drop(resp)).unwrap();
    let code = |op| match client.call(&peer, op, vec![], SEC).wait() {
        Err(RpcError::Remote { code, message }) => (code, message),
        other => panic!("op {op}: {other:?}"),
    };
    assert_eq!(code(9).0, ErrorCode::UnknownOp);
    assert_eq!(code(2), (ErrorCode::HandlerFailed, "no such topic".into()));
    assert_eq!(code(3).0, ErrorCode::HandlerPanicked);
    assert_eq!(code(4).0, ErrorCode::HandlerFailed);
    assert!(matches!(
        server.register_handler(0, |_, _| {}),
        Err(RpcError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.call(&peer, 0, vec![], SEC).wait(),
        Err(RpcError::InvalidArgument(_))
    ));
    let big = vec![0; client.max_body() + 1];
    assert!(matches!(
        client.call(&peer, 2, big, SEC).wait(),
        Err(RpcError::TooLarge { .. })
    ));
}

#[test]
fn a_call_past_its_deadline_times_out_and_the_late_answer_is_dropped() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let t0 = Instant::now();
    let r = client
        .call(&peer, 1, vec![], Some(Duration::from_millis(50)))
        .wait();
    assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let resp = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // The caller told the server with a CANCEL: the late answer is not even sent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().cancels == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(server.stats().cancels, 1);
    resp.respond(b"late".to_vec());
    // The engine still serves the next call.
    server
        .register_handler(2, |_, resp| resp.respond(vec![7]))
        .unwrap();
    assert_eq!(client.call(&peer, 2, vec![], SEC).wait().unwrap(), vec![7]);
}

#[test]
fn cancelled_calls_fail_with_cancelled() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let p = client.call(&peer, 1, vec![], SEC);
    let _held = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    client.cancel(p.id());
    assert!(matches!(p.wait(), Err(RpcError::Cancelled)));
}

#[test]
fn bulk_read_and_write_move_the_buffer_in_and_hand_it_back() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    // The "producer" (server here) exposes two regions; the client pulls both into one buffer.
    let mut a = server.register(100).unwrap();
    let mut b = server.register(50).unwrap();
    a.as_mut_slice().fill(1);
    b.as_mut_slice().fill(2);
    let regions = vec![a.remote().unwrap(), b.remote().unwrap()];
    let local = client.register(200).unwrap();
    let local = client
        .read(&peer, regions.clone(), local, SEC)
        .wait()
        .unwrap();
    assert!(local.as_slice()[..100].iter().all(|&x| x == 1));
    assert!(local.as_slice()[100..150].iter().all(|&x| x == 2));
    let mut local = local;
    local.as_mut_slice().fill(9);
    let local = client.write(&peer, local, regions, SEC).wait().unwrap();
    assert_eq!(local.len(), 200);
    assert!(a.as_slice().iter().chain(b.as_slice()).all(|&x| x == 9));
    // A buffer too small for the regions comes straight back with the error.
    let small = client.register(10).unwrap();
    let err = client
        .read(&peer, vec![a.remote().unwrap()], small, SEC)
        .wait()
        .unwrap_err();
    assert!(matches!(err.error, RpcError::TooLarge { .. }));
    assert_eq!(err.buffer.map(|b| b.len()), Some(10));
}

#[test]
fn a_timed_out_read_keeps_its_buffer_until_the_transport_completes() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let src = server.register(64).unwrap();
    let before = world.registered("client");
    let local = client.register(64).unwrap();
    assert_eq!(world.registered("client"), before + 1);
    world.stall("server");
    let r = client
        .read(
            &peer,
            vec![src.remote().unwrap()],
            local,
            Some(Duration::from_millis(30)),
        )
        .wait();
    assert!(matches!(
        r,
        Err(BulkError {
            error: RpcError::Timeout(_),
            buffer: None
        })
    ));
    // The read is still posted: the engine still owns (and keeps registered) its buffer.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(world.registered("client"), before + 1);
    // The transport completes late; only now does the engine free the buffer.
    world.release("server");
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.registered("client") != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(world.registered("client"), before);
    assert_eq!(client.stats().released_late, 1);
}

#[test]
fn a_dead_peer_fails_the_read_and_the_engine_keeps_serving_others() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let other = E::with_net(world.endpoint("other"), config()).unwrap();
    other
        .register_handler(1, |_, resp| resp.respond(vec![1]))
        .unwrap();
    let other_peer = client
        .connect(other.address(), Duration::from_secs(5))
        .wait()
        .unwrap();
    let src = server.register(64).unwrap();
    world.stall("server");
    let local = client.register(64).unwrap();
    let p = client.read(&peer, vec![src.remote().unwrap()], local, SEC);
    world.kill("server");
    let err = p.wait().unwrap_err();
    assert!(
        matches!(err.error, RpcError::Transport { what: "read", .. }),
        "{err:?}"
    );
    assert!(
        err.buffer.is_some(),
        "the transport is done: the buffer comes back"
    );
    assert_eq!(
        client.call(&other_peer, 1, vec![], SEC).wait().unwrap(),
        vec![1]
    );
}

fn raw(
    client: &E,
    peer: &Peer,
    make: impl FnOnce(u64, u32) -> Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    client
        .call_raw(peer, Duration::from_millis(300), make)
        .wait()
}

fn valid(id: u64, session: u32, body: &[u8]) -> Vec<u8> {
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

fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body_len = bytes.len() - frame::HEADER_LEN;
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..28]);
    h.update(&bytes[frame::HEADER_LEN..frame::HEADER_LEN + body_len.min(bytes.len() - 32)]);
    let crc = h.finalize();
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn malformed_frames_get_stable_error_codes_or_are_dropped() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    server
        .register_handler(1, |_, resp| resp.respond(vec![]))
        .unwrap();
    let code = |r: Result<Vec<u8>, RpcError>| match r {
        Err(RpcError::Remote { code, .. }) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        raw(&client, &peer, |id, s| valid(id, s, b"ok")).unwrap(),
        Vec::<u8>::new()
    );
    let r = raw(&client, &peer, |id, s| {
        let mut f = valid(id, s, b"x");
        f[2] = 9;
        f
    });
    assert_eq!(code(r), ErrorCode::UnsupportedVersion);
    let r = raw(&client, &peer, |id, s| {
        let mut f = valid(id, s, b"x");
        f[6] = 0x80;
        reseal(f)
    });
    assert_eq!(code(r), ErrorCode::ReservedFlags);
    let r = raw(&client, &peer, |id, s| {
        let mut f = valid(id, s, b"xyz");
        f[33] ^= 1;
        f
    });
    assert_eq!(code(r), ErrorCode::BadChecksum);
    let r = raw(&client, &peer, |id, s| {
        let mut f = valid(id, s, b"x");
        f[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        f
    });
    assert_eq!(code(r), ErrorCode::TooLarge);
    let r = raw(&client, &peer, |id, s| {
        valid(id, s, b"hello")[..34].to_vec()
    });
    assert_eq!(code(r), ErrorCode::Truncated);
    assert_eq!(server.stats().refused, 5);
    // No magic: no ids to answer to, dropped. Shorter than a header: dropped. Larger than a
    // receive buffer: truncated by the transport, dropped.
    let dropped = server.stats().dropped;
    assert!(matches!(
        raw(&client, &peer, |_, _| b"XXgarbage".repeat(8)),
        Err(RpcError::Timeout(_))
    ));
    assert!(matches!(
        raw(&client, &peer, |_, _| vec![b'D', b'F', 1]),
        Err(RpcError::Timeout(_))
    ));
    assert!(matches!(
        raw(&client, &peer, |id, s| valid(id, s, &[0; 4096])),
        Err(RpcError::Timeout(_))
    ));
    assert_eq!(server.stats().dropped, dropped + 3);
    // An unknown session cannot be answered either.
    assert!(matches!(
        raw(&client, &peer, |id, s| valid(id, s ^ 0xffff, b"")),
        Err(RpcError::Timeout(_))
    ));
    // The server still serves.
    assert_eq!(
        client.call(&peer, 1, vec![], SEC).wait().unwrap(),
        Vec::<u8>::new()
    );
}

#[test]
fn shutdown_fails_pending_operations_and_later_submissions() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let pending = client.call(&peer, 1, vec![], None);
    let _held = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let handle = client.handle();
    let t0 = Instant::now();
    client.shutdown();
    assert!(matches!(pending.wait(), Err(RpcError::ShuttingDown)));
    assert!(matches!(
        handle.call(&peer, 1, vec![], None).wait(),
        Err(RpcError::ShuttingDown)
    ));
    assert!(matches!(handle.register(10), Err(RpcError::ShuttingDown)));
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(server);
}

#[test]
fn connecting_to_another_provider_is_refused() {
    let world = World::default();
    let client = E::with_net(world.endpoint("client"), config()).unwrap();
    let addr = crate::Address::new("shm", b"server".to_vec()).unwrap();
    let r = client.connect(&addr, Duration::from_secs(1)).wait();
    assert!(matches!(r, Err(RpcError::ProviderMismatch { .. })), "{r:?}");
}

#[test]
fn inline_progress_serves_calls_bulk_transfers_deadlines_and_shutdown() {
    inline_scenario(None);
}

/// The busy window (`EngineConfig::busy_poll`) outlasts every wait here: waits still end on
/// their outcome, their deadline and shutdown (the busy polls check them as the yields do).
#[test]
fn inline_progress_with_a_busy_window_longer_than_every_wait() {
    inline_scenario(Some(Duration::from_secs(3600)));
}

#[test]
fn inline_progress_without_a_busy_window() {
    inline_scenario(Some(Duration::ZERO));
}

fn inline_scenario(busy_poll: Option<Duration>) {
    let world = World::default();
    let mut c = config();
    c.inline_progress = true;
    if let Some(b) = busy_poll {
        c.busy_poll = b;
    }
    let (server, client, peer) = pair_configured(&world, c);
    server
        .register_handler(1, |req, resp| resp.respond(req.body))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(2, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    for i in 0..50u8 {
        assert_eq!(client.call(&peer, 1, vec![i], SEC).wait().unwrap(), vec![i]);
    }
    let batch = client.call_batch((0..16u8).map(|i| (peer, 1, vec![i])), SEC);
    for (i, p) in batch.into_iter().enumerate().rev() {
        assert_eq!(p.wait().unwrap(), vec![i as u8]);
    }
    // Waiting from several threads at once.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let client = &client;
            s.spawn(move || {
                for i in 0..20u8 {
                    assert_eq!(
                        client.call(&peer, 1, vec![t, i], SEC).wait().unwrap(),
                        vec![t, i]
                    );
                }
            });
        }
    });
    let mut src = server.register(64).unwrap();
    src.as_mut_slice().fill(3);
    let buf = client
        .read(
            &peer,
            vec![src.remote().unwrap()],
            client.register(64).unwrap(),
            SEC,
        )
        .wait()
        .unwrap();
    assert!(buf.as_slice().iter().all(|&b| b == 3));
    let t0 = Instant::now();
    let r = client
        .call(&peer, 2, vec![], Some(Duration::from_millis(50)))
        .wait();
    assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let _held = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let p = client.call(&peer, 2, vec![], None);
    let p = p.wait_timeout(Duration::from_millis(20)).unwrap_err();
    let handle = client.handle();
    client.shutdown();
    assert!(matches!(p.wait(), Err(RpcError::ShuttingDown)));
    assert!(matches!(
        handle.call(&peer, 1, vec![], None).wait(),
        Err(RpcError::ShuttingDown)
    ));
}

/// Known issue 14: with inline progress, dropping a `Buffer` while holding a lock must not run
/// completion callbacks on the dropping thread (one that takes the same lock deadlocked the
/// fabric driver). The answer is held back until the client's progress thread naps, so the
/// drop is the first thing that could reap it.
#[test]
fn inline_progress_never_runs_callbacks_in_a_buffer_drop() {
    let world = World::default();
    let mut c = config();
    c.inline_progress = true;
    c.idle_poll = Duration::from_secs(5); // the progress thread naps long between polls
    let (server, client, peer) = pair_configured(&world, c);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(2, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let lock = Arc::new(parking_lot::Mutex::new(0u32));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let buf = client.register(64).unwrap();
            let held = lock.lock();
            let l2 = lock.clone();
            let d2 = done_tx.clone();
            client.call(&peer, 2, vec![], SEC).on_complete(move |r| {
                *l2.lock() += 1; // the lock the dropping thread holds
                d2.send(r.map(|b| b.len())).unwrap();
            });
            let resp = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(50)); // the client naps
            resp.respond(vec![7; 3]);
            std::thread::sleep(Duration::from_millis(50)); // the answer waits in its queue
            drop(buf); // under `held`
            drop(held);
            done_tx.send(Ok(usize::MAX)).unwrap();
            client
        })
    };
    let mut seen = Vec::new();
    for _ in 0..2 {
        match done_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => seen.push(r.unwrap()),
            Err(_) => panic!("deadlock: a buffer drop ran a callback that takes its lock"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![3, usize::MAX]);
    assert_eq!(*lock.lock(), 1);
    worker.join().unwrap().shutdown();
    server.shutdown();
}

/// With inline progress a command queued while nobody waits (a cancel here) must wake the
/// progress thread even from its spin-window nap, which does not mark it asleep: the
/// sleeping flag alone lost that wake-up, and the cancel waited out the nap.
#[test]
fn inline_progress_takes_a_queued_cancel_at_once() {
    let world = World::default();
    let mut c = config();
    c.inline_progress = true;
    // The progress thread's nap, which within its spin window it takes without marking
    // itself asleep.
    c.idle_poll = Duration::from_secs(5);
    c.wait = Some(WaitStrategy::SpinThenBlock {
        spindown: Duration::from_secs(3600),
    });
    let (server, client, peer) = pair_configured(&world, c);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(2, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let p = client.call(&peer, 2, vec![], SEC);
    let id = p.id();
    p.on_complete(move |r| done_tx.send(r).unwrap());
    let _held = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the progress thread naps
    let t0 = Instant::now();
    client.cancel(id);
    let r = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the cancel was never taken");
    assert!(matches!(r, Err(RpcError::Cancelled)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the cancel waited {:?} for the progress thread's nap",
        t0.elapsed()
    );
    client.shutdown();
    server.shutdown();
}

/// Issue 7 (rpc 2): answers to a peer whose sends answer `-FI_EAGAIN` forever (rxm towards a
/// client killed with its long polls held) must neither stall the endpoint nor take its send
/// buffers: a new client is served at once, and the stuck frames are dropped after
/// `send_timeout`.
#[test]
fn answers_to_a_peer_refusing_sends_do_not_stall_other_clients() {
    let world = World::default();
    let mut sc = config();
    sc.send_buffers = 4;
    sc.send_timeout = Duration::from_millis(300);
    let server = E::with_net(world.endpoint("server"), sc).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    server
        .register_handler(2, |req, resp| resp.respond(req.body))
        .unwrap();
    let dying = E::with_net(world.endpoint("dying"), config()).unwrap();
    let dpeer = dying
        .connect(server.address(), Duration::from_secs(5))
        .wait()
        .unwrap();
    // More long polls than the server has send buffers.
    let polls: Vec<_> = (0..8)
        .map(|_| dying.call(&dpeer, 1, vec![], Some(Duration::from_secs(60))))
        .collect();
    let held: Vec<_> = (0..8)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    world.refuse_sends("dying");
    for resp in held {
        resp.respond(vec![0; 16]);
    }
    for round in 0..3 {
        let fresh = E::with_net(world.endpoint(&format!("fresh{round}")), config()).unwrap();
        let peer = fresh
            .connect(server.address(), Duration::from_secs(5))
            .wait()
            .expect("a new client is served while another peer refuses sends");
        for i in 0..8u8 {
            assert_eq!(fresh.call(&peer, 2, vec![i], SEC).wait().unwrap(), vec![i]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(polls);
}

/// Issue 7 (rpc 1): an engine whose CANCEL to a dead peer is refused (`-FI_EAGAIN` forever)
/// still connects to a new server.
#[test]
fn an_engine_that_talked_to_a_dead_peer_connects_to_a_new_one() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    let (tx, rx) = std::sync::mpsc::channel();
    server
        .register_handler(1, move |_, resp| tx.send(resp).unwrap())
        .unwrap();
    let p = client.call(&peer, 1, vec![], Some(Duration::from_millis(100)));
    let _held = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    world.refuse_sends("server");
    assert!(matches!(p.wait(), Err(RpcError::Timeout(_))));
    let other = E::with_net(world.endpoint("other"), config()).unwrap();
    other
        .register_handler(1, |_, resp| resp.respond(vec![1]))
        .unwrap();
    let other_peer = client
        .connect(other.address(), Duration::from_secs(5))
        .wait()
        .expect("connect after a peer died");
    assert_eq!(
        client.call(&other_peer, 1, vec![], SEC).wait().unwrap(),
        vec![1]
    );
}

#[test]
fn register_bytes_regions_are_pulled_by_the_peer_and_reads_into_them_fail() {
    let world = World::default();
    let (server, client, peer) = pair(&world);
    // The producer (client) registers its caller's Bytes; the server pulls them.
    let a = client
        .register_bytes(bytes::Bytes::from(vec![5u8; 300]))
        .unwrap();
    let b = client
        .register_bytes(bytes::Bytes::from_static(b"tail"))
        .unwrap();
    assert!(a.is_read_only() && b.is_read_only());
    let mut owned = client.register(8).unwrap();
    assert!(!owned.is_read_only());
    owned.as_mut_slice().fill(1);
    let server_peer = server
        .connect(client.address(), Duration::from_secs(5))
        .wait()
        .unwrap();
    let into = server.register(304).unwrap();
    let into = server
        .read(
            &server_peer,
            vec![a.remote().unwrap(), b.remote().unwrap()],
            into,
            SEC,
        )
        .wait()
        .unwrap();
    assert!(into.as_slice()[..300].iter().all(|&x| x == 5));
    assert_eq!(&into.as_slice()[300..], b"tail");
    // A read-only buffer is never a destination: the read fails and the bytes are unchanged.
    let r = client
        .read(&peer, vec![owned.remote().unwrap()], a, SEC)
        .wait();
    match r {
        Err(e) => {
            if let Some(buf) = e.buffer {
                assert!(buf.as_slice().iter().all(|&x| x == 5));
            }
        }
        Ok(_) => panic!("a read into register_bytes memory must fail"),
    }
    let mut b = b;
    assert!(
        b.as_mut_slice().is_empty(),
        "no mutable view of shared bytes"
    );
    assert!(matches!(
        client.register_bytes(bytes::Bytes::new()),
        Err(RpcError::InvalidArgument(_))
    ));
}
