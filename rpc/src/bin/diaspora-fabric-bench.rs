//! Raw libfabric vs the engine, in one process and one run.
//!
//! ```text
//! cargo run --release -p diaspora-rpc --bin diaspora-fabric-bench -- [--secs S] [--providers 'tcp;ofi_rxm,shm']
//! ```
//!
//! For each provider it starts a target process (this binary with `--target`) that exposes an
//! 8 MiB buffer twice: through an [`Engine`] (whose progress thread serves it) and through a
//! raw endpoint driven by a plain loop (no engine), which also echoes raw messages. Then:
//!
//! - **bulk read**: 4 KiB, 64 KiB, 1 MiB, 8 MiB with 1 and 8 in flight: raw `fi_read` posted
//!   and polled directly on the safe layer (`Endpoint::post_read` + `Cq::read`) against the raw
//!   target, and `Handle::read` through the engine (submission queue + progress thread)
//!   against the engine target;
//! - **request/response**: 64 B and 4 KiB requests with 1 and 16 in flight: raw send/recv
//!   ping-pong and engine `Handle::call` round trips. As in Mercury's `hg_rate`, the payload
//!   goes one way and the response is empty (`BENCH_RPC_ECHO=1`: echoed back).
//!
//! `BENCH_RPC_SIZES=64,4064,4096` replaces the request sizes (4064 bytes plus the 32-byte
//! header is exactly shm's 4096-byte inject size).
//!
//! Every figure is printed with the engine/raw ratio. Raw and engine wait the same way: the
//! engine's default wait strategy per provider, or `BENCH_WAIT`.
//! `BENCH_BUSY_POLL=<µs>` sets the inline engine's `EngineConfig::busy_poll` (default 10).
//! `BENCH_INJECT=1` makes the target answer with `fi_inject` instead of through send buffers
//! (`EngineConfig::inject_answers`, off by default).

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diaspora_fabric::ceiling::RawEndpoint;
use diaspora_fabric::{Address, Completion, MemoryRegion, PageBuf, PeerAddr, RemoteRegion};
use diaspora_rpc::{Engine, EngineConfig, WaitStrategy};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const EXPOSED: usize = 8 << 20;
const READ_SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, 8 << 20];
const READ_QD: [usize; 2] = [1, 8];
const RPC_SIZES: [usize; 2] = [64, 4096];
const RPC_INFLIGHT: [usize; 2] = [1, 16];
const MSG_BUF: usize = 8192;
/// Bytes of the raw target's reply: what the engine's empty response puts on the wire (its
/// frame header).
const REPLY_LEN: usize = 32;

/// `BENCH_RPC_ECHO=1`: responses carry the request's payload back. By default they are empty,
/// as in Mercury's `hg_rate` (whose RPCs have an input and no output): the payload travels one
/// way, and the figures compare with Mercury's.
fn echo() -> bool {
    std::env::var_os("BENCH_RPC_ECHO").is_some_and(|v| v == "1")
}

/// `BENCH_RAW_INJECT=1`: the raw side sends with `fi_inject` (no send completion) whatever fits
/// the provider's inject size.
fn raw_inject() -> bool {
    std::env::var_os("BENCH_RAW_INJECT").is_some_and(|v| v == "1")
}

fn main() {
    if let Err(e) = run() {
        eprintln!("diaspora-fabric-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--target") {
        let provider = args.get(1).ok_or("--target needs a provider")?;
        return target(provider);
    }
    let mut secs = 1.0f64;
    let mut providers = vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().ok_or("--secs needs a value")?.parse()?,
            "--providers" => {
                providers = it
                    .next()
                    .ok_or("--providers needs a value")?
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let dur = Duration::from_secs_f64(secs);
    println!("# diaspora-fabric-bench: {secs} s per case; read figures in GiB/s, rpc figures in round trips/s");
    println!(
        "{:<12} {:<5} {:>6} {:>3} {:>10} {:>10} {:>10} {:>7} {:>7}",
        "provider", "test", "size", "qd", "raw", "engine", "inline", "eng/raw", "inl/raw"
    );
    for p in &providers {
        bench_provider(p, dur)?;
    }
    Ok(())
}

/// Keeps tcp on loopback (`FI_SOURCE` 127.0.0.1) on the raw and the engine side alike.
fn source_for(provider: &str) -> Option<&'static str> {
    provider.starts_with("tcp").then_some("127.0.0.1")
}

// ---- a raw endpoint (no engine) ----------------------------------------------------------

/// A [`RawEndpoint`] (its `ep`, `av`, `cq` through `Deref`) with the engines' idle wait.
struct RawEp {
    raw: RawEndpoint,
    /// How long to keep polling after the last completion before blocking.
    spindown: Duration,
    last_work: Cell<Instant>,
}

impl std::ops::Deref for RawEp {
    type Target = RawEndpoint;
    fn deref(&self) -> &RawEndpoint {
        &self.raw
    }
}

impl RawEp {
    fn open(provider: &str) -> Res<RawEp> {
        let raw = RawEndpoint::open(provider)?;
        // The raw side waits like the engines: the same strategy (BENCH_WAIT or the
        // provider's default), spinning for the same time after the last completion.
        let strategy = wait_override()?.unwrap_or_else(|| WaitStrategy::default_for(provider));
        let spindown = match strategy {
            WaitStrategy::Spin => Duration::MAX,
            WaitStrategy::Block => Duration::ZERO,
            WaitStrategy::SpinThenBlock { spindown } => spindown,
        };
        Ok(RawEp {
            raw,
            spindown,
            last_work: Cell::new(Instant::now()),
        })
    }

    fn reg(&self, len: usize) -> Res<MemoryRegion<PageBuf>> {
        Ok(self.raw.register(len)?)
    }

    fn poll(&self, out: &mut Vec<Completion>) -> Res<()> {
        let before = out.len();
        self.cq.read(out, 64)?;
        if out.len() > before {
            self.last_work.set(Instant::now());
        }
        Ok(())
    }

    /// Nothing completed: keep polling (yielding the core) within the spindown, then block on
    /// the CQ fd (tcp), or nap 50 µs (shm, no wait fd; the engine's `idle_poll`).
    fn idle(&self) {
        diaspora_fabric::ceiling::idle(&self.cq, self.last_work.get(), self.spindown);
    }
}

fn check(c: &Completion) -> Res<()> {
    match &c.result {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("completion failed: {e}").into()),
    }
}

/// Retries a post while it returns -FI_EAGAIN, driving progress meanwhile.
fn post_retry(
    raw: &RawEp,
    done: &mut Vec<Completion>,
    mut post: impl FnMut() -> diaspora_fabric::Result<()>,
) -> Res<()> {
    loop {
        match post() {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => raw.poll(done)?,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `BENCH_WAIT=spin|block|spin-then-block:<µs>` overrides the engines' wait strategy (client
/// and target side), to compare strategies; unset: the provider's default.
fn wait_override() -> Res<Option<WaitStrategy>> {
    let Some(v) = std::env::var_os("BENCH_WAIT") else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    Ok(Some(match v.as_ref() {
        "spin" => WaitStrategy::Spin,
        "block" => WaitStrategy::Block,
        s => match s.strip_prefix("spin-then-block:").map(str::parse::<u64>) {
            Some(Ok(us)) => WaitStrategy::SpinThenBlock {
                spindown: Duration::from_micros(us),
            },
            _ => return Err(format!("BENCH_WAIT={s}: spin, block or spin-then-block:<µs>").into()),
        },
    }))
}

/// The handler pool of the target's engine: `BENCH_POOL_SPIN=<µs>` makes its worker poll for
/// that long after each job ([`diaspora_api::ThreadPool::spinning`]); unset: the engine's
/// default (one worker polling for `DEFAULT_SPINDOWN`).
fn handler_pool() -> Res<diaspora_api::ThreadPool> {
    match std::env::var("BENCH_POOL_SPIN") {
        Err(_) => Ok(diaspora_api::ThreadPool::inline()),
        Ok(v) => {
            let us: u64 = v
                .parse()
                .map_err(|_| format!("BENCH_POOL_SPIN={v}: microseconds"))?;
            Ok(diaspora_api::ThreadPool::spinning(
                1,
                Duration::from_micros(us),
            ))
        }
    }
}

// ---- the target process ------------------------------------------------------------------

fn target(provider: &str) -> Res<()> {
    let mut config = EngineConfig::for_provider(provider);
    config.source = source_for(provider).map(str::to_owned);
    config.handler_pool = handler_pool()?;
    config.wait = wait_override()?;
    // `BENCH_INJECT=1`: answers go out with fi_inject (`EngineConfig::inject_answers`).
    config.inject_answers = std::env::var_os("BENCH_INJECT").is_some_and(|v| v == "1");
    let engine = Engine::new(config)?;
    let echo = echo();
    engine.register_handler(1, move |req, resp| {
        resp.respond(if echo { req.body } else { Vec::new() })
    })?;
    let mut ebuf = engine.register(EXPOSED)?;
    ebuf.as_mut_slice().fill(0xab);
    let raw = RawEp::open(provider)?;
    let mut rbuf = raw.reg(EXPOSED)?;
    rbuf.as_mut_slice().fill(0xcd);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ENGINE {}", engine.address())?;
    writeln!(out, "EREGION {}", hex(&encode(&ebuf.remote()?)))?;
    writeln!(out, "RAW {}", raw.ep.address()?)?;
    writeln!(out, "RREGION {}", hex(&encode(&rbuf.remote()?)))?;
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);

    let active = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (peer_tx, peer_rx) = std::sync::mpsc::channel::<Address>();
    let (a2, s2) = (active.clone(), stop.clone());
    let echo = std::thread::spawn(move || {
        if let Err(e) = raw_echo(raw, rbuf, peer_rx, a2, s2) {
            eprintln!("diaspora-fabric-bench target: raw echo failed: {e}");
        }
    });
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if let Some(a) = line.strip_prefix("RAWPEER ") {
            peer_tx.send(a.parse()?)?;
        } else if line == "RAW ON" {
            active.store(true, Ordering::SeqCst);
        } else if line == "RAW OFF" {
            active.store(false, Ordering::SeqCst);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = echo.join();
    drop(ebuf);
    engine.shutdown();
    Ok(())
}

/// Serves the raw side: keeps driving progress (reads of `_exposed` need it) and echoes every
/// message back. While not `active` it sleeps between polls so it does not steal the cores
/// from the engine cases.
fn raw_echo(
    raw: RawEp,
    _exposed: MemoryRegion<PageBuf>,
    peer_rx: std::sync::mpsc::Receiver<Address>,
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Res<()> {
    let slots = 32;
    let bufs: Vec<MemoryRegion<PageBuf>> =
        (0..slots).map(|_| raw.reg(MSG_BUF)).collect::<Res<_>>()?;
    let mut done = Vec::new();
    for (i, b) in bufs.iter().enumerate() {
        let seg = b.local_all()?;
        // SAFETY: `bufs` lives until this function returns, after the endpoint stops being
        // polled; the buffer is not touched until its completion.
        post_retry(&raw, &mut done, || unsafe {
            raw.ep.post_recv(&seg, i as u64)
        })?;
    }
    let mut peer: Option<PeerAddr> = None;
    let echo = echo();
    let inject = raw_inject();
    while !stop.load(Ordering::SeqCst) {
        if peer.is_none() {
            if let Ok(a) = peer_rx.try_recv() {
                peer = Some(raw.av.insert(&a)?);
            }
        }
        done.clear();
        raw.poll(&mut done)?;
        let mut pending = std::mem::take(&mut done);
        for c in pending.drain(..) {
            check(&c)?;
            let id = c.op_id as usize;
            if id < slots {
                // A request: answer from the same buffer (slot id + slots marks the send),
                // the whole message (BENCH_RPC_ECHO) or as many bytes as the engine's empty
                // response (its frame header).
                let p = peer.ok_or("message before RAWPEER")?;
                let reply = if echo { c.len } else { c.len.min(REPLY_LEN) };
                if inject && reply <= raw.ep.caps().inject_size {
                    let bytes = &bufs[id].as_slice()[..reply];
                    post_retry(&raw, &mut done, || raw.ep.inject(bytes, p))?;
                    let seg = bufs[id].local_all()?;
                    // SAFETY: as below; the injected bytes were copied.
                    post_retry(&raw, &mut done, || unsafe {
                        raw.ep.post_recv(&seg, id as u64)
                    })?;
                    continue;
                }
                let seg = bufs[id].local(0..reply)?;
                // SAFETY: the buffer is reposted only after this send completes.
                post_retry(&raw, &mut done, || unsafe {
                    raw.ep.post_send(&seg, p, (id + slots) as u64)
                })?;
            } else if id < 2 * slots {
                let i = id - slots;
                let seg = bufs[i].local_all()?;
                // SAFETY: as above.
                post_retry(&raw, &mut done, || unsafe {
                    raw.ep.post_recv(&seg, i as u64)
                })?;
            }
        }
        if !done.is_empty() {
            continue; // completions read while retrying posts
        }
        if active.load(Ordering::Relaxed) {
            raw.idle();
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn encode(r: &RemoteRegion) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode_into(&mut v);
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Res<Vec<u8>> {
    (0..s.len() / 2)
        .map(|i| {
            Ok(u8::from_str_radix(
                s.get(2 * i..2 * i + 2).ok_or("hex")?,
                16,
            )?)
        })
        .collect()
}

// ---- the measuring process ---------------------------------------------------------------

fn bench_provider(provider: &str, dur: Duration) -> Res<()> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--target", provider])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let (mut eaddr, mut eregion, mut raddr, mut rregion) = (None, None, None, None);
    for line in lines.by_ref() {
        let line = line?;
        let (k, v) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match k {
            "ENGINE" => eaddr = Some(v.parse::<Address>()?),
            "EREGION" => eregion = Some(RemoteRegion::decode(&unhex(v)?)?.0),
            "RAW" => raddr = Some(v.parse::<Address>()?),
            "RREGION" => rregion = Some(RemoteRegion::decode(&unhex(v)?)?.0),
            "READY" => break,
            _ => {}
        }
    }
    let (eaddr, eregion) = (eaddr.ok_or("ENGINE")?, eregion.ok_or("EREGION")?);
    let (raddr, rregion) = (raddr.ok_or("RAW")?, rregion.ok_or("RREGION")?);

    let raw = RawEp::open(provider)?;
    let rpeer = raw.av.insert(&raddr)?;
    // Diagnostic: BENCH_RAW_TO_ENGINE=1 points the raw initiator at the engine target.
    let (rpeer, rregion) = if std::env::var_os("BENCH_RAW_TO_ENGINE").is_some() {
        (raw.av.insert(&eaddr)?, eregion)
    } else {
        (rpeer, rregion)
    };
    writeln!(stdin, "RAWPEER {}", raw.ep.address()?)?;
    let mut config = EngineConfig::for_provider(provider);
    config.source = source_for(provider).map(str::to_owned);
    config.handler_pool = diaspora_api::ThreadPool::new(1);
    config.wait = wait_override()?;
    if let Ok(v) = std::env::var("BENCH_BUSY_POLL") {
        let us: u64 = v
            .parse()
            .map_err(|_| format!("BENCH_BUSY_POLL={v}: microseconds"))?;
        config.busy_poll = Duration::from_micros(us);
    }
    if let Ok(v) = std::env::var("BENCH_WAIT_SPIN") {
        let us: u64 = v
            .parse()
            .map_err(|_| format!("BENCH_WAIT_SPIN={v}: microseconds"))?;
        config.wait_spin = Duration::from_micros(us);
    }
    // BENCH_MODES=raw,thread,inline (the default: all three) picks the columns; an engine
    // not picked is not created, so its idle progress thread cannot disturb the others.
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "raw,thread,inline".into());
    let want = |m: &str| modes.split(',').any(|x| x.trim() == m);
    let connect = |config: EngineConfig| -> Res<Option<Side>> {
        let engine = Engine::new(config)?;
        let peer = engine.connect(&eaddr, Duration::from_secs(10)).wait()?;
        let bufs: Vec<_> = (0..8)
            .map(|_| engine.register(EXPOSED))
            .collect::<Result<_, _>>()?;
        Ok(Some(Side { engine, peer, bufs }))
    };
    let mut thread_side = if want("thread") {
        connect(config.clone())?
    } else {
        None
    };
    config.inline_progress = true;
    config.thread_name = "diaspora-progress-inline".into();
    let mut inline_side = if want("inline") {
        connect(config)?
    } else {
        None
    };
    let with_raw = want("raw");

    let raw_bufs: Vec<_> = (0..8).map(|_| raw.reg(EXPOSED)).collect::<Res<_>>()?;
    let mut raw_bufs = Some(raw_bufs);

    // BENCH_ONLY=read|rpc runs one half (to compare settings quickly).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    // BENCH_RPC_SIZES=64,4064 replaces the request sizes (bytes).
    let rpc_sizes: Vec<usize> = match std::env::var("BENCH_RPC_SIZES") {
        Err(_) => RPC_SIZES.to_vec(),
        Ok(v) => v
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("BENCH_RPC_SIZES={v}: comma-separated byte counts"))?,
    };
    let (reads, rpcs) = match only.as_str() {
        "read" => (&READ_SIZES[..], &[][..]),
        "rpc" => (&[][..], &rpc_sizes[..]),
        _ => (&READ_SIZES[..], &rpc_sizes[..]),
    };
    for &size in reads {
        for qd in READ_QD {
            let mut raw_gib = f64::NAN;
            if with_raw {
                writeln!(stdin, "RAW ON")?;
                let bufs = raw_bufs.take().ok_or("raw buffers")?;
                let (bufs, gib) = raw_read(&raw, bufs, rpeer, &rregion, size, qd, dur)?;
                raw_gib = gib;
                raw_bufs = Some(bufs);
                writeln!(stdin, "RAW OFF")?;
            }
            let eng_gib = side_read(&mut thread_side, &eregion, size, qd, dur)?;
            let inl_gib = side_read(&mut inline_side, &eregion, size, qd, dur)?;
            println!(
                "{:<12} {:<5} {:>6} {:>3} {:>10.3} {:>10.3} {:>10.3} {:>6.0}% {:>6.0}%",
                provider,
                "read",
                human(size),
                qd,
                raw_gib,
                eng_gib,
                inl_gib,
                100.0 * eng_gib / raw_gib,
                100.0 * inl_gib / raw_gib
            );
        }
    }
    for &size in rpcs {
        for inflight in RPC_INFLIGHT {
            // The engine's messages carry a 32-byte frame header; by default the raw
            // ping-pong sends the bare payload. BENCH_RAW_HEADER=1 adds the 32 bytes to the raw
            // messages too (same bytes on the wire).
            let extra = if std::env::var_os("BENCH_RAW_HEADER").is_some() {
                32
            } else {
                0
            };
            let mut raw_rate = f64::NAN;
            if with_raw {
                writeln!(stdin, "RAW ON")?;
                raw_rate = raw_pingpong(&raw, rpeer, size + extra, inflight, dur)?;
                writeln!(stdin, "RAW OFF")?;
            }
            let eng_rate = match &thread_side {
                Some(s) => engine_rpc(&s.engine, &s.peer, size, inflight, dur)?,
                None => f64::NAN,
            };
            let inl_rate = match &inline_side {
                Some(s) => engine_rpc(&s.engine, &s.peer, size, inflight, dur)?,
                None => f64::NAN,
            };
            println!(
                "{:<12} {:<5} {:>6} {:>3} {:>10.0} {:>10.0} {:>10.0} {:>6.0}% {:>6.0}%",
                provider,
                "rpc",
                human(size),
                inflight,
                raw_rate,
                eng_rate,
                inl_rate,
                100.0 * eng_rate / raw_rate,
                100.0 * inl_rate / raw_rate
            );
        }
    }
    for side in [thread_side, inline_side].into_iter().flatten() {
        drop(side.bufs);
        side.engine.shutdown();
    }
    drop(raw_bufs);
    drop(stdin);
    let _ = child.wait();
    Ok(())
}

fn human(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

type RawBufs = Vec<MemoryRegion<PageBuf>>;

fn raw_read(
    raw: &RawEp,
    bufs: RawBufs,
    peer: PeerAddr,
    remote: &RemoteRegion,
    size: usize,
    qd: usize,
    dur: Duration,
) -> Res<(RawBufs, f64)> {
    let region = remote.slice(0, size as u64).ok_or("slice")?;
    let mut done = Vec::new();
    let post = |i: usize, done: &mut Vec<Completion>| -> Res<()> {
        let seg = bufs[i].local(0..size)?;
        // SAFETY: `bufs` outlives every posted read: we drain all of them before returning.
        post_retry(raw, done, || unsafe {
            raw.ep.post_read(
                std::slice::from_ref(&seg),
                peer,
                std::slice::from_ref(&region),
                i as u64,
            )
        })
    };
    let t0 = Instant::now();
    let mut bytes = 0u64;
    let mut outstanding = 0;
    for i in 0..qd {
        post(i, &mut done)?;
        outstanding += 1;
    }
    let mut stopping = false;
    while outstanding > 0 {
        raw.poll(&mut done)?;
        if done.is_empty() {
            raw.idle();
            continue;
        }
        let batch: Vec<Completion> = std::mem::take(&mut done);
        for c in batch {
            check(&c)?;
            outstanding -= 1;
            bytes += size as u64;
            if !stopping && t0.elapsed() >= dur {
                stopping = true;
            }
            if !stopping {
                post(c.op_id as usize, &mut done)?;
                outstanding += 1;
            }
        }
    }
    let gib = bytes as f64 / t0.elapsed().as_secs_f64() / (1u64 << 30) as f64;
    Ok((bufs, gib))
}

type EngineBufs = Vec<diaspora_rpc::Buffer>;

/// One engine of the measuring process, connected to the target's engine.
struct Side {
    engine: Engine,
    peer: diaspora_rpc::Peer,
    bufs: EngineBufs,
}

/// `engine_read` on a side, or NaN when that mode is not run (`BENCH_MODES`).
fn side_read(
    side: &mut Option<Side>,
    remote: &RemoteRegion,
    size: usize,
    qd: usize,
    dur: Duration,
) -> Res<f64> {
    let Some(s) = side.as_mut() else {
        return Ok(f64::NAN);
    };
    let bufs = std::mem::take(&mut s.bufs);
    let (bufs, gib) = engine_read(&s.engine, bufs, &s.peer, remote, size, qd, dur)?;
    s.bufs = bufs;
    Ok(gib)
}

fn engine_read(
    engine: &Engine,
    bufs: EngineBufs,
    peer: &diaspora_rpc::Peer,
    remote: &RemoteRegion,
    size: usize,
    qd: usize,
    dur: Duration,
) -> Res<(EngineBufs, f64)> {
    let region = remote.slice(0, size as u64).ok_or("slice")?;
    let timeout = Some(Duration::from_secs(30));
    let mut spare: Vec<_> = bufs.into_iter().collect();
    let mut inflight = VecDeque::new();
    for _ in 0..qd {
        let b = spare.pop().ok_or("buffers")?;
        inflight.push_back(engine.read(peer, vec![region], b, timeout));
    }
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while let Some(p) = inflight.pop_front() {
        let b = p.wait().map_err(|e| e.error)?;
        bytes += size as u64;
        if t0.elapsed() < dur {
            inflight.push_back(engine.read(peer, vec![region], b, timeout));
        } else {
            spare.push(b);
        }
    }
    let gib = bytes as f64 / t0.elapsed().as_secs_f64() / (1u64 << 30) as f64;
    Ok((spare, gib))
}

fn raw_pingpong(
    raw: &RawEp,
    peer: PeerAddr,
    size: usize,
    inflight: usize,
    dur: Duration,
) -> Res<f64> {
    // Receives are ops 0..inflight (any reply may land in any of them), sends are ops
    // inflight..2*inflight. A send buffer is reused only after its send completion.
    let recv: Vec<_> = (0..inflight)
        .map(|_| raw.reg(MSG_BUF))
        .collect::<Res<_>>()?;
    let send: Vec<_> = (0..inflight)
        .map(|_| raw.reg(MSG_BUF))
        .collect::<Res<_>>()?;
    let mut done = Vec::new();
    let post_recv = |i: usize, done: &mut Vec<Completion>| -> Res<()> {
        let r = recv[i].local_all()?;
        // SAFETY: the buffers outlive this function, which waits for every posted op.
        post_retry(raw, done, || unsafe { raw.ep.post_recv(&r, i as u64) })
    };
    let inject = raw_inject() && size <= raw.ep.caps().inject_size;
    // True when the send needs no completion (injected).
    let post_send = |i: usize, done: &mut Vec<Completion>| -> Res<bool> {
        if inject {
            let bytes = &send[i].as_slice()[..size];
            post_retry(raw, done, || raw.ep.inject(bytes, peer))?;
            return Ok(true);
        }
        let s = send[i].local(0..size)?;
        // SAFETY: as above.
        post_retry(raw, done, || unsafe {
            raw.ep.post_send(&s, peer, (i + inflight) as u64)
        })?;
        Ok(false)
    };
    for i in 0..inflight {
        post_recv(i, &mut done)?;
    }
    let t0 = Instant::now();
    let (mut rounds, mut waiting_replies, mut sends_posted, mut owed) =
        (0u64, 0usize, 0usize, 0usize);
    let mut free_sends: Vec<usize> = Vec::new();
    for i in 0..inflight {
        if post_send(i, &mut done)? {
            free_sends.push(i);
        } else {
            sends_posted += 1;
        }
        waiting_replies += 1;
    }
    while waiting_replies > 0 || sends_posted > 0 {
        raw.poll(&mut done)?;
        if done.is_empty() {
            raw.idle();
            continue;
        }
        let batch: Vec<Completion> = std::mem::take(&mut done);
        for c in batch {
            check(&c)?;
            let id = c.op_id as usize;
            if id < inflight {
                rounds += 1;
                waiting_replies -= 1;
                // One posted receive per message in flight: repost only to send again, so
                // none is left posted (into a buffer about to be freed) at the end.
                if t0.elapsed() < dur {
                    post_recv(id, &mut done)?;
                    owed += 1;
                }
            } else {
                sends_posted -= 1;
                free_sends.push(id - inflight);
            }
            while owed > 0 {
                let Some(i) = free_sends.pop() else { break };
                owed -= 1;
                if post_send(i, &mut done)? {
                    free_sends.push(i);
                } else {
                    sends_posted += 1;
                }
                waiting_replies += 1;
            }
        }
    }
    Ok(rounds as f64 / t0.elapsed().as_secs_f64())
}

fn engine_rpc(
    engine: &Engine,
    peer: &diaspora_rpc::Peer,
    size: usize,
    inflight: usize,
    dur: Duration,
) -> Res<f64> {
    let body = vec![0x5a; size];
    let timeout = Some(Duration::from_secs(30));
    let mut pending: VecDeque<_> = engine
        .call_batch((0..inflight).map(|_| (*peer, 1, body.clone())), timeout)
        .into();
    let want_len = if echo() { size } else { 0 };
    let t0 = Instant::now();
    let mut rounds = 0u64;
    while let Some(p) = pending.pop_front() {
        let out = p.wait()?;
        if out.len() != want_len {
            return Err("wrong response length".into());
        }
        rounds += 1;
        if t0.elapsed() < dur {
            pending.push_back(engine.call(peer, 1, body.clone(), timeout));
        }
    }
    Ok(rounds as f64 / t0.elapsed().as_secs_f64())
}
