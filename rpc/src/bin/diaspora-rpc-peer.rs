//! A peer process for the engine's multi-process tests: it exposes a registered buffer and
//! serves a few ops until its stdin closes (or it is killed).
//!
//! ```text
//! diaspora-rpc-peer <provider> <expose_bytes>
//! stdout: ADDR <address>
//!         REGION <hex of the encoded RemoteRegion>
//!         READY
//! ops:    1 = echo the body; 2 = sleep (u32 LE ms in the body), then echo
//!
//! diaspora-rpc-peer <provider> poll <address> <n>
//! connects to <address>, sends <n> calls of op 1 (60 s deadline), prints POLLING, then waits
//! for its stdin to close (the tests kill it with SIGKILL, calls in flight).
//!
//! diaspora-rpc-peer shm hold <address>
//! connects to <address>, takes the lock of its shm region and keeps it, prints HOLDING, then waits for
//! its stdin to close (the tests kill it with SIGKILL: a client killed inside a send to that
//! address leaves the same state).
//! ```
//! The exposed buffer holds byte `i` = `(i % 251) as u8`.

use std::io::{BufRead, Write};
use std::time::Duration;

use diaspora_rpc::{Engine, EngineConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("diaspora-rpc-peer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let provider = args
        .next()
        .ok_or("usage: diaspora-rpc-peer <provider> <expose_bytes>")?;
    let second = args.next().ok_or("missing <expose_bytes>")?;
    if second == "hold" {
        let addr: diaspora_rpc::Address = args.next().ok_or("missing <address>")?.parse()?;
        // A client of that server first (it knows us as a peer), then the lock.
        let engine = Engine::new(EngineConfig::for_provider(&provider))?;
        let _peer = engine.connect(&addr, Duration::from_secs(10)).wait()?;
        diaspora_fabric::hold_shm_region_lock(&addr, Duration::from_secs(20))?;
        println!("HOLDING");
        std::io::stdout().flush()?;
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        // The engine would wait on the lock this process holds: leave without closing it.
        std::process::exit(0);
    }
    if second == "poll" {
        let addr: diaspora_rpc::Address = args.next().ok_or("missing <address>")?.parse()?;
        let n: usize = args.next().ok_or("missing <n>")?.parse()?;
        return poll(&provider, addr, n);
    }
    let bytes: usize = second.parse()?;
    let mut config = EngineConfig::for_provider(&provider);
    config.handler_pool = diaspora_api::ThreadPool::new(2);
    let engine = Engine::new(config)?;
    engine.register_handler(1, |req, resp| resp.respond(req.body))?;
    engine.register_handler(2, |req, resp| {
        let ms = req
            .body
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms.into()));
        resp.respond(req.body)
    })?;
    let mut buf = engine.register(bytes)?;
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut encoded = Vec::new();
    buf.remote()?.encode_into(&mut encoded);
    let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ADDR {}", engine.address())?;
    writeln!(out, "REGION {hex}")?;
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);
    // Serve until the parent closes our stdin.
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(buf);
    engine.shutdown();
    println!("BYE");
    Ok(())
}

/// The client mode: `n` long calls in flight until killed.
fn poll(
    provider: &str,
    addr: diaspora_rpc::Address,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::new(EngineConfig::for_provider(provider))?;
    let peer = engine.connect(&addr, Duration::from_secs(10)).wait()?;
    let calls: Vec<_> = (0..n)
        .map(|_| engine.call(&peer, 1, vec![0; 8], Some(Duration::from_secs(60))))
        .collect();
    println!("POLLING");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(calls);
    engine.shutdown();
    Ok(())
}
