//! Two real processes: the test binary re-executes itself as the target (`child_target`), which
//! prints its address and a region descriptor as hex; the parent reads and writes that memory
//! and sends it a message, while the child keeps driving progress.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use diaspora_fabric::{Access, Address, MemoryRegion, PageBuf, RemoteRegion, UNKNOWN_OP};
use util::{hints, info, pattern, providers, retry, wait_for, wait_for_any, Node, DEADLINE};

const CHILD_ENV: &str = "DIASPORA_FABRIC_CHILD";
/// In the child: `own` takes its own shm region's lock, `peer:<hex address>` the lock of that
/// peer's region, then it prints `CHILD-HOLDING` and waits to be killed, as a process killed
/// inside the provider's critical section would leave it.
const HOLD_ENV: &str = "DIASPORA_FABRIC_CHILD_HOLD";
const REGION: usize = 256 * 1024;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Not a test on its own: the body of the child process. Without the environment it returns.
#[test]
#[ignore = "helper re-executed by other tests"]
fn child_target() {
    let Ok(provider) = std::env::var(CHILD_ENV) else {
        return;
    };
    let info = info(&hints(&provider)).expect("provider present in child");
    let mut n = Node::new(&info);
    let mut buf = PageBuf::new(REGION).expect("alloc");
    buf.copy_from_slice(&pattern(REGION, 42));
    let target = MemoryRegion::register(&n.domain, buf, Access::REMOTE_READ | Access::REMOTE_WRITE)
        .expect("reg");
    let rbuf = MemoryRegion::register(&n.domain, vec![0u8; 64], Access::RECV).expect("reg");
    // SAFETY: rbuf lives until the process exits, after its completion is read.
    unsafe {
        n.ep.post_recv(&rbuf.local_all().expect("seg"), 1)
            .expect("recv")
    };
    let mut desc = Vec::new();
    target.remote().expect("remote").encode_into(&mut desc);
    println!(
        "CHILD-READY {} {}",
        n.ep.address().expect("addr"),
        hex(&desc)
    );
    std::io::stdout().flush().expect("flush");
    if let Ok(hold) = std::env::var(HOLD_ENV) {
        let whose = match hold.strip_prefix("peer:") {
            Some(hex) => {
                let peer = Address::from_hex(&provider, hex).expect("peer address");
                n.av.insert(&peer).expect("insert the peer");
                peer
            }
            None => n.ep.address().expect("addr"),
        };
        diaspora_fabric::hold_shm_region_lock(&whose, DEADLINE).expect("take the region lock");
        println!("CHILD-HOLDING");
        std::io::stdout().flush().expect("flush");
        std::thread::sleep(DEADLINE);
        std::process::exit(2);
    }
    let start = Instant::now();
    loop {
        n.poll();
        if let Some(c) = n.take(1) {
            c.result.expect("recv ok");
            assert_eq!(&rbuf.as_slice()[..c.len], b"bye");
            let want = pattern(REGION / 2, 77);
            let ok = target.as_slice()[..REGION / 2] == want[..]
                && target.as_slice()[REGION / 2..] == pattern(REGION, 42)[REGION / 2..];
            std::process::exit(if ok { 0 } else { 3 });
        }
        if start.elapsed() > DEADLINE {
            std::process::exit(2);
        }
    }
}

fn spawn_child(provider: &str) -> (Child, mpsc::Receiver<String>) {
    spawn_child_with(provider, None)
}

fn spawn_child_with(provider: &str, hold: Option<&str>) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    if let Some(h) = hold {
        cmd.env(HOLD_ENV, h);
    }
    let mut child = cmd
        .args([
            "--exact",
            "child_target",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, provider)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line of the child that contains `what`.
fn line_with(rx: &mpsc::Receiver<String>, what: &str) {
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("child line {what} within the deadline"));
        if line.contains(what) {
            return;
        }
    }
}

/// Waits for the child's READY line: its address and region.
fn ready(rx: &mpsc::Receiver<String>) -> (Address, RemoteRegion) {
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = rx
            .recv_timeout(left)
            .expect("child READY line within the deadline");
        // libtest prints "test child_target ... " before the child's own output on that line.
        if let Some((_, rest)) = line.split_once("CHILD-READY ") {
            let (addr, desc) = rest.split_once(' ').expect("two fields");
            let (region, _) = RemoteRegion::decode(&unhex(desc)).expect("descriptor");
            return (addr.parse().expect("address"), region);
        }
    }
}

/// The child, killed and reaped on drop unless the test reaped it. Reaps go through
/// `diaspora_fabric::reap_child`, which removes its shm names (16 MiB of tmpfs each; a killed
/// child runs no exit handler) before the pid is free, and only then: a child reaped already is
/// neither signalled nor has its names removed again.
struct KillOnDrop(Child);

impl KillOnDrop {
    /// The exit status once the child has exited (reaping it), `None` while it runs.
    fn try_reap(&mut self) -> Option<std::process::ExitStatus> {
        diaspora_fabric::try_reap_child(&mut self.0).expect("try_wait")
    }

    /// Waits for the child to exit and reaps it.
    fn reap(&mut self) -> std::process::ExitStatus {
        diaspora_fabric::reap_child(&mut self.0).expect("reap the child")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = diaspora_fabric::reap_child(&mut self.0);
    }
}

#[test]
fn two_processes_read_write_and_send_across() {
    for p in providers() {
        let Some(info) = info(&hints(&p)) else {
            continue;
        };
        let (child, rx) = spawn_child(&p);
        let mut child = KillOnDrop(child);
        let (addr, region) = ready(&rx);
        assert_eq!(addr.provider(), p);
        let mut n = Node::new(&info);
        let peer = n.av.insert(&addr).expect("insert child");

        // Read all of the child's region.
        let mut local = MemoryRegion::register(
            &n.domain,
            PageBuf::new(REGION).expect("alloc"),
            Access::READ | Access::WRITE | Access::SEND,
        )
        .expect("reg");
        // SAFETY: `local` outlives the wait for completion 10.
        retry(&mut [&mut n], |n| unsafe {
            n.ep.post_read(&[local.local_all().expect("seg")], peer, &[region], 10)
        });
        wait_for(&mut [&mut n], 0, 10)
            .result
            .expect("read from child");
        assert!(
            local.as_slice() == &pattern(REGION, 42)[..],
            "{p}: read bytes differ"
        );

        // Write the first half, then tell the child to check it.
        local.as_mut_slice()[..REGION / 2].copy_from_slice(&pattern(REGION / 2, 77));
        let half = region.slice(0, REGION as u64 / 2).expect("slice");
        // SAFETY: as above, completion 11.
        retry(&mut [&mut n], |n| unsafe {
            n.ep.post_write(
                &[local.local(0..REGION / 2).expect("seg")],
                peer,
                &[half],
                11,
            )
        });
        wait_for(&mut [&mut n], 0, 11)
            .result
            .expect("write to child");
        let mut bye = MemoryRegion::register(&n.domain, vec![0u8; 3], Access::SEND).expect("reg");
        bye.as_mut_slice().copy_from_slice(b"bye");
        // SAFETY: `bye` outlives the wait for completion 12.
        retry(&mut [&mut n], |n| unsafe {
            n.ep.post_send(&bye.local_all().expect("seg"), peer, 12)
        });
        wait_for(&mut [&mut n], 0, 12)
            .result
            .expect("send to child");

        let start = Instant::now();
        let status = loop {
            n.poll();
            if let Some(s) = child.try_reap() {
                break s;
            }
            assert!(start.elapsed() < DEADLINE, "{p}: child did not exit");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(
            status.code(),
            Some(0),
            "{p}: child saw wrong bytes or timed out"
        );
    }
}

/// How long posts may keep returning `-FI_EAGAIN` after the peer is known dead before the test
/// takes that as the provider's way of showing the death (shm: the dead peer's command queue is
/// full and nobody drains it). Not a timing assertion: the test only needs a bounded wait.
const EAGAIN_AS_DEATH: std::time::Duration = std::time::Duration::from_secs(1);

#[test]
fn reads_from_a_killed_peer_fail_without_hanging() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    for p in providers() {
        let Some(info) = info(&hints(&p)) else {
            continue;
        };
        let (child, rx) = spawn_child(&p);
        let mut child = KillOnDrop(child);
        let (addr, region) = ready(&rx);
        let mut n = Node::new(&info);
        let peer = n.av.insert(&addr).expect("insert child");
        const DEPTH: usize = 8;
        let chunk = REGION / DEPTH;
        let local = MemoryRegion::register(
            &n.domain,
            PageBuf::new(REGION).expect("alloc"),
            Access::READ,
        )
        .expect("reg");
        let post = |n: &Node, id: u64| {
            let slot = (id as usize) % DEPTH;
            let r = region
                .slice((slot * chunk) as u64, chunk as u64)
                .expect("slice");
            // SAFETY: `local` outlives every completion on the success path: the loop below
            // reads all of them before the explicit drops at the end (a failing assertion
            // unwinds, and the test is lost anyway).
            unsafe {
                n.ep.post_read(
                    &[local.local(slot * chunk..(slot + 1) * chunk).expect("seg")],
                    peer,
                    &[r],
                    id,
                )
            }
        };
        // Keep DEPTH reads in flight; another thread kills the child with SIGKILL meanwhile.
        // Posting goes on until the death shows (a failed post or completion, or posts that
        // only return EAGAIN once the child is dead); then the reads still in flight must all
        // complete, within the deadline.
        let pid = libc::pid_t::try_from(child.0.id()).expect("pid");
        let killed = Arc::new(AtomicBool::new(false));
        let killer = {
            let killed = killed.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                // SAFETY: kill(2) on our own child's pid (not reaped yet, so not reused).
                let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                assert_eq!(rc, 0, "kill -9 the child");
                killed.store(true, Ordering::SeqCst);
            })
        };
        let mut next = 0u64;
        let mut in_flight = 0usize;
        let (mut ok, mut failed, mut dead) = (0usize, Vec::new(), None::<&str>);
        let mut eagain_since: Option<Instant> = None;
        let start = Instant::now();
        loop {
            while dead.is_none() && in_flight < DEPTH {
                match post(&n, next) {
                    Ok(()) => {
                        next += 1;
                        in_flight += 1;
                        eagain_since = None;
                    }
                    Err(e) if e.is_retryable() => {
                        if killed.load(Ordering::SeqCst) {
                            let since = *eagain_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > EAGAIN_AS_DEATH {
                                dead = Some("posts return EAGAIN forever");
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        eprintln!("{p}: post failed: {e}");
                        dead = Some("a post failed");
                    }
                }
            }
            n.poll();
            for c in n.done.drain(..) {
                in_flight = in_flight.saturating_sub(1);
                match c.result {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed.push(e);
                        dead.get_or_insert("a read failed");
                    }
                }
            }
            if dead.is_some() && in_flight == 0 {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{p}: {in_flight} reads still pending (ok {ok}, failed {}, death seen: {dead:?})",
                failed.len()
            );
        }
        killer.join().expect("killer thread");
        let status = child.reap();
        assert!(
            status.code().is_none(),
            "{p}: the child was killed by a signal"
        );
        eprintln!(
            "{p}: {ok} reads ok, {} failed around kill -9; death seen as: {dead:?}; first error: {:?}",
            failed.len(),
            failed.first().map(|e| e.to_string())
        );
        if p.starts_with("tcp") {
            assert!(
                !failed.is_empty(),
                "{p}: the death must surface as failed reads"
            );
        }
        // A new read to the dead peer fails (at post or in its completion) or is refused with
        // EAGAIN (shm), within the deadline.
        let start = Instant::now();
        let id = next;
        loop {
            match post(&n, id) {
                Ok(()) => {
                    // shm 1.17 reports this error without its context (UNKNOWN_OP).
                    let c = wait_for_any(&mut [&mut n], 0, &[id, UNKNOWN_OP]);
                    let e = c.result.expect_err("a read from a dead process must fail");
                    eprintln!("{p}: read after death: {e}");
                    break;
                }
                Err(e) if e.is_retryable() => {
                    n.poll();
                    if p == "shm" && start.elapsed() > EAGAIN_AS_DEATH {
                        eprintln!("{p}: read after death: posts keep returning EAGAIN");
                        break;
                    }
                    assert!(
                        start.elapsed() < DEADLINE,
                        "{p}: post after death keeps returning EAGAIN"
                    );
                }
                Err(e) => {
                    eprintln!("{p}: post after death: {e}");
                    break;
                }
            }
        }
        drop(n);
        drop(local);
    }
}

/// Runs `f` on its own thread and waits for its result at most `DEADLINE`: a call that spins
/// inside the provider fails the test with `what` instead of hanging it (the spinning thread
/// is left behind; the process ends with the test binary).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: still inside the provider after {DEADLINE:?}"))
}

/// Kills `child` with SIGKILL and reaps it (removing its shm names).
fn kill_and_reap(child: &mut KillOnDrop) {
    child.0.kill().expect("kill -9 the child");
    let status = child.reap();
    assert!(status.code().is_none(), "the child was killed by a signal");
}

/// shm: a peer killed while it held its own region's lock (as a process killed inside its
/// progress does: 1 kill in about 100 in `reads_from_a_killed_peer_fail_without_hanging`) left
/// every read from it spinning in `pthread_spin_lock` inside `fi_read` for ever. Now the lock
/// is released once its owner is dead, and the read fails.
#[test]
fn reads_from_a_peer_killed_holding_its_region_lock_fail_instead_of_spinning() {
    let p = "shm";
    let Some(info) = info(&hints(p)) else {
        return;
    };
    let (child, rx) = spawn_child_with(p, Some("own"));
    let mut child = KillOnDrop(child);
    let (addr, region) = ready(&rx);
    let mut n = Node::new(&info);
    let peer = n.av.insert(&addr).expect("insert child");
    line_with(&rx, "CHILD-HOLDING");
    // Read before the kill: a dead owner's lock may go at the monitor's next sample.
    let released_before = diaspora_fabric::shm_locks_released();
    kill_and_reap(&mut child);

    let outcome = within_deadline("a read from a peer that died holding its lock", move || {
        let local = MemoryRegion::register(
            &n.domain,
            PageBuf::new(REGION).expect("alloc"),
            Access::READ,
        )
        .expect("reg");
        let start = Instant::now();
        let outcome = loop {
            // SAFETY: `local` outlives the completion: the loop waits for it (or for the post's
            // failure) before `local` is dropped.
            let r = unsafe {
                n.ep.post_read(&[local.local_all().expect("seg")], peer, &[region], 5)
            };
            match r {
                Ok(()) => {
                    let c = wait_for_any(&mut [&mut n], 0, &[5, UNKNOWN_OP]);
                    break c.result.map_err(|e| e.to_string());
                }
                Err(e) if e.is_retryable() => {
                    n.poll();
                    if start.elapsed() > EAGAIN_AS_DEATH {
                        break Err("posts keep returning EAGAIN".to_owned());
                    }
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        drop(local);
        drop(n);
        outcome
    });
    let e = outcome.expect_err("a read from a dead process must fail");
    eprintln!("{p}: read from a peer that died holding its lock: {e}");
    assert!(
        diaspora_fabric::shm_locks_released() > released_before,
        "the dead peer's lock was released"
    );
}

/// shm: a client killed in the middle of a send holds the *receiver's* region lock, and every
/// other client's send to that receiver then spun for ever inside the provider
/// (`smr_send_name`, `smr_generic_msg`): a server reached by shm served nobody any more. Now
/// the receiver releases its own lock once it has been stuck for 2 s and one of its peers (the
/// killed client) died, and the next client's message gets through. (The next client is an
/// endpoint of this process here: the lock and the spin are the same as between processes.)
#[test]
fn a_peer_killed_holding_our_region_lock_does_not_stop_others_reaching_us() {
    let p = "shm";
    let Some(info) = info(&hints(p)) else {
        return;
    };
    let server = Node::new(&info);
    let ours = server.ep.address().expect("our address");
    let hold = format!("peer:{}", ours.to_hex());
    let (killed, krx) = spawn_child_with(p, Some(&hold));
    let mut killed = KillOnDrop(killed);
    // The dying client is a peer of the server (as a server's callers are: it answers them):
    // its death is what explains the server's stuck lock.
    let (caddr, _) = ready(&krx);
    server.av.insert(&caddr).expect("insert the client");
    line_with(&krx, "CHILD-HOLDING");
    // Read before the kill: a dead owner's lock may go at the monitor's next sample.
    let released_before = diaspora_fabric::shm_locks_released();
    kill_and_reap(&mut killed);

    let got = within_deadline(
        "a message to a receiver whose lock a dead peer held",
        move || {
            let mut server = server;
            let mut client = Node::new(&info);
            let to_server = client.av.insert(&ours).expect("insert the server");
            let rbuf =
                MemoryRegion::register(&server.domain, vec![0u8; 64], Access::RECV).expect("reg");
            // SAFETY: `rbuf` outlives the wait for completion 7.
            unsafe {
                server
                    .ep
                    .post_recv(&rbuf.local_all().expect("seg"), 7)
                    .expect("recv")
            };
            let mut msg =
                MemoryRegion::register(&client.domain, vec![0u8; 5], Access::SEND).expect("reg");
            msg.as_mut_slice().copy_from_slice(b"hello");
            // SAFETY: `msg` outlives the wait for completion 8.
            retry(&mut [&mut client, &mut server], |n| unsafe {
                n.ep.post_send(&msg.local_all().expect("seg"), to_server, 8)
            });
            let c = wait_for(&mut [&mut server, &mut client], 0, 7);
            c.result.expect("the message reached the server");
            wait_for(&mut [&mut server, &mut client], 1, 8)
                .result
                .expect("send completed");
            let got = rbuf.as_slice()[..c.len].to_vec();
            drop((rbuf, msg));
            drop((client, server));
            got
        },
    );
    assert_eq!(got, b"hello");
    assert!(
        diaspora_fabric::shm_locks_released() > released_before,
        "our own lock was released"
    );
}
