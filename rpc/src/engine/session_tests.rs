//! Session lifecycle on the mock transport: GOODBYE frees a caller's session, idle sessions
//! make room for new callers when every session is in use, and nobody else can close a
//! session.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::tests::{config, E};
use super::*;
use crate::mock_net::World;
use crate::net::Net;
use crate::wire::{self, Header, Kind, Writer};

const SHORT: Duration = Duration::from_millis(300);

fn server(world: &World, max_sessions: usize, session_idle: Duration) -> E {
    let mut c = config();
    c.max_sessions = max_sessions;
    c.session_idle = session_idle;
    let server = E::with_net(world.endpoint("server"), c).unwrap();
    server
        .register_handler(1, |req, resp| resp.respond(req.body))
        .unwrap();
    server
}

fn client(world: &World, name: &str) -> E {
    E::with_net(world.endpoint(name), config()).unwrap()
}

/// Connects `client` to `server` (the handshake must succeed within 5 s).
fn connect(client: &E, server: &E) -> Peer {
    client
        .connect(server.address(), Duration::from_secs(5))
        .wait()
        .unwrap_or_else(|e| panic!("the handshake failed: {e}"))
}

fn echo(client: &E, peer: &Peer, timeout: Duration) -> Result<Vec<u8>, RpcError> {
    client.call(peer, 1, b"ping".to_vec(), Some(timeout)).wait()
}

#[test]
fn a_caller_that_shuts_down_frees_its_session_for_the_next_one() {
    let world = World::default();
    // One session, and callers are never idle long enough to be evicted: only GOODBYE frees.
    let server = server(&world, 1, Duration::from_secs(3600));
    for round in 0..3 {
        let c = client(&world, &format!("client-{round}"));
        let peer = c
            .connect(server.address(), Duration::from_secs(5))
            .wait()
            .unwrap_or_else(|e| panic!("caller {round} was refused its session: {e}"));
        assert_eq!(echo(&c, &peer, Duration::from_secs(5)).unwrap(), b"ping");
        c.shutdown();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().sessions_closed < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = server.stats();
    assert_eq!((stats.sessions_closed, stats.sessions_evicted), (3, 0));
}

#[test]
fn with_every_session_in_use_a_caller_takes_the_place_of_one_idle_for_session_idle() {
    let world = World::default();
    let idle = Duration::from_millis(400);
    let server = server(&world, 1, idle);
    let first = client(&world, "first");
    let first_peer = connect(&first, &server);
    let second = client(&world, "second");
    // The only session was just used: the newcomer is refused (its HELLO is dropped).
    assert_eq!(
        echo(&first, &first_peer, Duration::from_secs(5)).unwrap(),
        b"ping"
    );
    let refused = second.connect(server.address(), SHORT).wait();
    assert!(matches!(refused, Err(RpcError::Timeout(_))), "{refused:?}");
    // Once the first caller has been idle for `session_idle`, the newcomer takes its place.
    std::thread::sleep(idle + Duration::from_millis(100));
    let second_peer = connect(&second, &server);
    assert_eq!(
        echo(&second, &second_peer, Duration::from_secs(5)).unwrap(),
        b"ping"
    );
    assert_eq!(server.stats().sessions_evicted, 1);
    // The evicted caller's requests are dropped: it times out (and would connect again).
    let gone = echo(&first, &first_peer, SHORT);
    assert!(matches!(gone, Err(RpcError::Timeout(_))), "{gone:?}");
}

#[test]
fn a_session_with_a_request_in_flight_is_not_evicted_however_long_it_runs() {
    let world = World::default();
    let idle = Duration::from_millis(200);
    let server = server(&world, 1, idle);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = parking_lot::Mutex::new(release_rx);
    server
        .register_handler(2, move |req, resp| {
            let _ = release_rx.lock().recv_timeout(Duration::from_secs(10));
            resp.respond(req.body)
        })
        .unwrap();
    let first = client(&world, "first");
    let peer = connect(&first, &server);
    let long = first.call(&peer, 2, b"long".to_vec(), Some(Duration::from_secs(10)));
    std::thread::sleep(idle * 2);
    let second = client(&world, "second");
    let refused = second.connect(server.address(), SHORT).wait();
    assert!(matches!(refused, Err(RpcError::Timeout(_))), "{refused:?}");
    release_tx.send(()).unwrap();
    assert_eq!(long.wait().unwrap(), b"long");
    assert_eq!(server.stats().sessions_evicted, 0);
}

#[test]
fn a_goodbye_without_the_session_secret_is_dropped() {
    let world = World::default();
    let server = server(&world, 4, Duration::from_secs(3600));
    let c = client(&world, "client");
    let peer = connect(&c, &server);
    for body in [&b""[..], &[0u8; 8][..], &[0u8; 9][..]] {
        let dropped = server.stats().dropped;
        let goodbye = |_id: u64, session: u32| {
            wire::encode(
                &Header {
                    kind: Kind::Goodbye,
                    op: 0,
                    request_id: 0,
                    session,
                    budget_us: 0,
                },
                body,
            )
        };
        // No answer comes to a GOODBYE: the raw call times out.
        let r = c.call_raw(&peer, SHORT, goodbye).wait();
        assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");
        assert_eq!(server.stats().dropped, dropped + 1, "body {body:?}");
        // The session still serves its caller.
        assert_eq!(echo(&c, &peer, Duration::from_secs(5)).unwrap(), b"ping");
    }
    assert_eq!(server.stats().sessions_closed, 0);
}

/// The sessions that end, as the server's listener learns of them: id, why, and whether the
/// server's counters already counted that end when the listener ran (a test that reads the
/// counters once told must find it counted).
fn session_ends(server: &E) -> mpsc::Receiver<(u32, SessionEnd, bool)> {
    let (tx, rx) = mpsc::channel();
    let tx = parking_lot::Mutex::new(tx);
    let handle = server.handle();
    let told = parking_lot::Mutex::new([0u64; 3]);
    server.on_session_end(move |s, why| {
        let stats = handle.stats();
        let (i, counted) = match why {
            SessionEnd::Goodbye => (0, stats.sessions_closed),
            SessionEnd::Evicted => (1, stats.sessions_evicted),
            SessionEnd::Expired => (2, stats.sessions_expired),
        };
        let mut told = told.lock();
        told[i] += 1;
        let _ = tx.lock().send((s, why, counted >= told[i]));
    });
    rx
}

#[test]
fn the_session_listener_learns_of_goodbyes_and_evictions_with_the_ids_responders_carry() {
    let world = World::default();
    let idle = Duration::from_millis(200);
    let server = server(&world, 1, idle);
    let ended_rx = session_ends(&server);
    // Op 2 holds its responder (a long poll) and reports the session it belongs to.
    let held: Arc<parking_lot::Mutex<Vec<Responder<crate::mock_net::MockNet>>>> = Arc::default();
    let (seen_tx, seen_rx) = mpsc::channel::<u32>();
    let seen_tx = parking_lot::Mutex::new(seen_tx);
    let h = held.clone();
    server
        .register_handler(2, move |_req, resp| {
            // Held before it is reported: the test answers what it holds once told.
            let session = resp.session();
            h.lock().push(resp);
            let _ = seen_tx.lock().send(session);
        })
        .unwrap();

    // GOODBYE: the caller shuts down while its request is held.
    let first = client(&world, "first");
    let peer = connect(&first, &server);
    let _long = first.call(&peer, 2, b"poll".to_vec(), Some(Duration::from_secs(30)));
    let s1 = seen_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        ended_rx.recv_timeout(SHORT).is_err(),
        "a live session was reported ended"
    );
    first.shutdown();
    assert_eq!(
        ended_rx.recv_timeout(Duration::from_secs(5)),
        Ok((s1, SessionEnd::Goodbye, true))
    );

    // Eviction: an idle session gives its place to a newcomer, and the listener is told.
    let second = client(&world, "second");
    let peer2 = connect(&second, &server);
    let _long2 = second.call(&peer2, 2, b"poll".to_vec(), Some(Duration::from_secs(30)));
    let s2 = seen_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_ne!(s1, s2, "a session id was reused");
    // A held request keeps its session from being evicted: answer it, then idle.
    for r in held.lock().drain(..) {
        r.respond(Vec::new());
    }
    std::thread::sleep(idle + Duration::from_millis(100));
    let third = client(&world, "third");
    connect(&third, &server);
    assert_eq!(
        ended_rx.recv_timeout(Duration::from_secs(5)),
        Ok((s2, SessionEnd::Evicted, true))
    );
    assert_eq!(server.stats().sessions_evicted, 1);
}

/// Waits (5 s at most) until `f` holds for the server's counters; gives them back.
fn stats_until(server: &E, f: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = server.stats();
        if f(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Issue 7: a long-running server kept one AV entry per caller it ever served. Entries now go
/// when their session ends (GOODBYE, eviction) and when a HELLO is refused after its insert.
#[test]
fn callers_leave_the_address_vector_once_their_sessions_end() {
    let world = World::default();
    let idle = Duration::from_millis(200);
    let server = server(&world, 2, idle);
    for round in 0..4 {
        let c = client(&world, &format!("bye-{round}"));
        let peer = connect(&c, &server);
        assert_eq!(echo(&c, &peer, Duration::from_secs(5)).unwrap(), b"ping");
        c.shutdown();
    }
    let s = stats_until(&server, |s| s.peers_removed == 4);
    assert_eq!((s.peers, s.peers_removed, s.peers_remove_failed), (0, 4, 0));

    // Eviction: both sessions idle, a third caller takes the place of the one idle longest.
    let a = client(&world, "a");
    let pa = connect(&a, &server);
    echo(&a, &pa, Duration::from_secs(5)).unwrap();
    let b = client(&world, "b");
    let pb = connect(&b, &server);
    echo(&b, &pb, Duration::from_secs(5)).unwrap();
    std::thread::sleep(idle + Duration::from_millis(100));
    let c = client(&world, "c");
    let pc = connect(&c, &server);
    let s = stats_until(&server, |s| s.peers_removed == 5);
    assert_eq!((s.sessions_evicted, s.peers, s.peers_removed), (1, 2, 5));

    // A HELLO refused after its address went in (another provider) leaves nothing behind.
    let refused = server.stats().refused;
    let hello = |id: u64, _session: u32| {
        let mut body = Vec::new();
        Writer::new(&mut body).bytes(b"bogus").bytes(b"c");
        let h = Header {
            kind: Kind::Request,
            op: OP_HELLO,
            request_id: id,
            session: 0,
            budget_us: 0,
        };
        wire::encode(&h, &body)
    };
    let r = c.call_raw(&pc, Duration::from_secs(5), hello).wait();
    assert!(
        matches!(
            r,
            Err(RpcError::Remote {
                code: wire::ErrorCode::ProviderMismatch,
                ..
            })
        ),
        "the refusal must be answered before the entry goes: {r:?}"
    );
    let s = stats_until(&server, |s| s.peers_removed == 6);
    assert_eq!((s.refused, s.peers, s.peers_removed), (refused + 1, 2, 6));
    // The live sessions still serve.
    assert_eq!(echo(&c, &pc, Duration::from_secs(5)).unwrap(), b"ping");
    assert_eq!(echo(&b, &pb, Duration::from_secs(5)).unwrap(), b"ping");
}

/// An ended session's entry stays while a transfer from its caller's memory is in flight
/// (libfabric leaves operations to a removed address undefined), goes once it completes, and
/// a handler that uses the caller's peer afterwards gets an error, not some other peer.
#[test]
fn an_entry_stays_while_a_transfer_to_its_peer_is_in_flight() {
    let world = World::default();
    let idle = Duration::from_millis(200);
    let server = server(&world, 1, idle);
    type Remote = <crate::mock_net::MockNet as Net>::Remote;
    let remote: Arc<parking_lot::Mutex<Option<Remote>>> = Arc::default();
    let (tx, rx) = mpsc::channel();
    let tx = parking_lot::Mutex::new(tx);
    let (h, r) = (server.handle(), remote.clone());
    server
        .register_handler(3, move |req, resp| {
            let Some(src) = r.lock().clone() else {
                return resp.respond(b"no remote".to_vec());
            };
            let into = h.register(64).unwrap();
            let read = h.read(&req.peer, vec![src], into, Some(Duration::from_secs(30)));
            let _ = tx.lock().send((req.peer, read));
            resp.respond(Vec::new()); // answered: the session is idle while the read runs
        })
        .unwrap();
    let a = client(&world, "a");
    let pa = connect(&a, &server);
    let mut src = a.register(64).unwrap();
    src.as_mut_slice().fill(9);
    *remote.lock() = Some(src.remote().unwrap());
    world.stall("a");
    let call = a.call(&pa, 3, Vec::new(), Some(Duration::from_secs(5)));
    assert_eq!(call.wait().unwrap(), b"");
    let (old_peer, read) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::sleep(idle + Duration::from_millis(100));
    let b = client(&world, "b");
    let pb = connect(&b, &server); // evicts a's session
    assert_eq!(server.stats().sessions_evicted, 1);
    std::thread::sleep(Duration::from_millis(200)); // several reaps
    let s = server.stats();
    assert_eq!(
        (s.peers, s.peers_removed),
        (2, 0),
        "removed while a read from it was in flight"
    );
    world.release("a");
    let landed = read.wait().unwrap();
    assert!(landed.as_slice().iter().all(|&x| x == 9));
    let s = stats_until(&server, |s| s.peers_removed == 1);
    assert_eq!((s.peers, s.peers_removed), (1, 1));
    let late = server
        .read(
            &old_peer,
            vec![src.remote().unwrap()],
            server.register(64).unwrap(),
            Some(Duration::from_secs(5)),
        )
        .wait();
    assert!(late.is_err(), "a read through a removed peer must fail");
    assert_eq!(echo(&b, &pb, Duration::from_secs(5)).unwrap(), b"ping");
}

/// A connect that fails leaves no AV entry behind on the caller (retries against a dead or
/// full server would pile them up).
#[test]
fn a_failed_connect_leaves_no_entry_at_the_caller() {
    let world = World::default();
    let server = server(&world, 1, Duration::from_secs(3600));
    let first = client(&world, "first");
    let _p = connect(&first, &server); // takes the only session, never idle long enough
    let second = client(&world, "second");
    for round in 0..3 {
        let r = second.connect(server.address(), SHORT).wait();
        assert!(matches!(r, Err(RpcError::Timeout(_))), "{round}: {r:?}");
    }
    let s = stats_until(&second, |s| s.peers_removed == 3);
    assert_eq!((s.peers, s.peers_removed, s.peers_remove_failed), (0, 3, 0));
}

/// A server whose sessions expire after `expiry` without word from their callers.
fn expiring_server(world: &World, expiry: Duration) -> E {
    let mut c = config();
    c.session_expiry = Some(expiry);
    let server = E::with_net(world.endpoint("server"), c).unwrap();
    server
        .register_handler(1, |req, resp| resp.respond(req.body))
        .unwrap();
    server
}

/// A live caller that sends nothing for several expiries keeps its session: its progress
/// thread sends the keepalives the HELLO answer asked for (fails without them: the session
/// expires and the last call times out).
#[test]
fn a_live_caller_keeps_its_session_past_the_expiry_with_keepalives() {
    live_caller_keeps_its_session(false);
}

/// The same with a caller that drives progress inline: while none of its threads waits,
/// its progress thread sends the keepalives.
#[test]
fn an_idle_inline_progress_caller_keeps_its_session_too() {
    live_caller_keeps_its_session(true);
}

fn live_caller_keeps_its_session(inline: bool) {
    let world = World::default();
    let expiry = Duration::from_millis(300);
    let server = expiring_server(&world, expiry);
    let mut cc = config();
    cc.inline_progress = inline;
    let c = E::with_net(world.endpoint("client"), cc).unwrap();
    let peer = connect(&c, &server);
    assert_eq!(echo(&c, &peer, Duration::from_secs(5)).unwrap(), b"ping");
    std::thread::sleep(expiry * 4);
    assert_eq!(echo(&c, &peer, Duration::from_secs(5)).unwrap(), b"ping");
    let s = server.stats();
    assert_eq!(s.sessions_expired, 0, "{s:?}");
    // A keepalive every 60 ms for 1.2 s.
    assert!(s.keepalives_received >= 5, "{s:?}");
    assert!(c.stats().keepalives_sent >= s.keepalives_received);
}

/// A caller that dies while the server holds its long call (it never says GOODBYE, and no
/// newcomer needs its place) loses its session once the expiry passes: the session listener
/// learns of it (a server releases the long polls it held), and its AV entry goes.
#[test]
fn a_killed_callers_session_expires_with_its_long_call() {
    let world = World::default();
    let expiry = Duration::from_millis(300);
    let server = expiring_server(&world, expiry);
    let ended_rx = session_ends(&server);
    let (held_tx, held_rx) = mpsc::channel::<Responder<crate::mock_net::MockNet>>();
    let held_tx = parking_lot::Mutex::new(held_tx);
    server
        .register_handler(2, move |_req, resp| {
            let _ = held_tx.lock().send(resp);
        })
        .unwrap();
    let c = client(&world, "doomed");
    let peer = connect(&c, &server);
    let _long = c.call(&peer, 2, b"poll".to_vec(), Some(Duration::from_secs(30)));
    let held = held_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // Alive, with its call held, for two expiries: still served.
    assert!(
        ended_rx.recv_timeout(expiry * 2).is_err(),
        "a live caller's session expired"
    );
    world.kill("doomed");
    let ended = ended_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the dead caller's session did not expire");
    assert_eq!(ended, (held.session(), SessionEnd::Expired, true));
    let s = stats_until(&server, |s| s.peers_removed == 1);
    assert_eq!(
        (
            s.sessions_expired,
            s.sessions_closed,
            s.peers,
            s.peers_removed
        ),
        (1, 0, 0, 1),
        "{s:?}"
    );
    // Answering the dead session's call is harmless.
    held.respond(Vec::new());
    let other = client(&world, "other");
    let po = connect(&other, &server);
    assert_eq!(echo(&other, &po, Duration::from_secs(5)).unwrap(), b"ping");
}

/// A keepalive without the session's secret is dropped and keeps nothing alive.
#[test]
fn a_keepalive_without_the_session_secret_is_dropped() {
    let world = World::default();
    let server = expiring_server(&world, Duration::from_secs(3600));
    let c = client(&world, "client");
    let peer = connect(&c, &server);
    for body in [&b""[..], &[0u8; 8][..], &[0u8; 9][..]] {
        let before = server.stats();
        let keepalive = |_id: u64, session: u32| {
            let h = Header {
                kind: Kind::Keepalive,
                op: 0,
                request_id: 0,
                session,
                budget_us: 0,
            };
            wire::encode(&h, body)
        };
        // No answer comes to a KEEPALIVE: the raw call times out.
        let r = c.call_raw(&peer, SHORT, keepalive).wait();
        assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");
        let after = server.stats();
        assert_eq!(after.dropped, before.dropped + 1, "body {body:?}");
        assert_eq!(after.keepalives_received, before.keepalives_received);
    }
}

/// Requests carry only the session id, which another peer can name: they do not keep a
/// silent caller's session alive (fails if they refresh it: the killed caller's session
/// never expires while the other peer keeps sending on it).
#[test]
fn requests_on_a_dead_callers_session_from_another_peer_do_not_keep_it_alive() {
    let world = World::default();
    let expiry = Duration::from_millis(300);
    let server = expiring_server(&world, expiry);
    let victim = client(&world, "victim");
    let pv = connect(&victim, &server);
    world.kill("victim");
    let other = client(&world, "other");
    let po = connect(&other, &server);
    let forged = |id: u64, _own: u32| {
        let h = Header {
            kind: Kind::Request,
            op: 1,
            request_id: id,
            session: pv.session,
            budget_us: 0,
        };
        wire::encode(&h, b"keep it")
    };
    let until = Instant::now() + Duration::from_secs(5);
    while server.stats().sessions_expired == 0 && Instant::now() < until {
        // Answered to the victim's address: nothing comes back here.
        let _ = other
            .call_raw(&po, Duration::from_millis(30), forged)
            .wait();
    }
    assert_eq!(server.stats().sessions_expired, 1, "{:?}", server.stats());
    assert_eq!(echo(&other, &po, Duration::from_secs(5)).unwrap(), b"ping");
}
