//! Produce/consume throughput through a server started in this process, with the protocol
//! client (the real client is the `fabric` driver).
//!
//! ```text
//! cargo run --release -p diaspora-server --example bench -- \
//!     PROVIDER STORAGE EVENTS_PER_BATCH DATA_BYTES BATCHES WINDOW
//! ```

use std::time::Instant;

use diaspora_proto::fetch::WANT_DATA;
use diaspora_proto::{
    decode_response, BatchTable, Fetch, FetchResponse, Message, ProduceBatch, ProduceResponse,
};
use diaspora_server::client::{Client, CALL_TIMEOUT};
use diaspora_server::config::{Args, ServerConfig};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: bench PROVIDER files|memory EVENTS_PER_BATCH DATA_BYTES BATCHES WINDOW");
        std::process::exit(2);
    }
    let num = |i: usize| -> usize { a[i].parse().unwrap_or_else(|_| panic!("argument {i}")) };
    let (provider, storage) = (a[1].clone(), a[2].clone());
    let (per_batch, data_size, batches, window) = (num(3), num(4), num(5), num(6).max(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let args = Args {
        data_dir: Some(dir.path().join("data")),
        group_file: Some(dir.path().join("group.json")),
        provider: Some(provider.clone()),
        storage: Some(storage.clone()),
        ..Args::default()
    };
    let cfg = ServerConfig::resolve(&args).expect("config");
    let server = diaspora_server::server::start(&cfg).expect("server");
    let c = Client::connect(&dir.path().join("group.json")).expect("connect");
    c.create_topic("b", "{}").expect("create");
    let t = c.open_topic("b").expect("open");

    // One batch's table and data, in `window` registered buffers reused for every batch.
    let meta = vec![b'm'; 30];
    let data = vec![7u8; data_size];
    let mut table = BatchTable::default();
    for _ in 0..per_batch {
        table.push(&meta, data_size as u32, crc32fast::hash(&data));
    }
    let mut tbytes = Vec::new();
    table.encode_into(&mut tbytes);
    let inline = tbytes.len() <= c.limits.max_inline as usize;
    let mut region = Vec::new();
    if !inline {
        region.extend_from_slice(&tbytes);
    }
    for _ in 0..per_batch {
        region.extend_from_slice(&data);
    }
    let bufs: Vec<_> = (0..window)
        .map(|_| {
            let mut b = c.engine().register(region.len().max(1)).expect("register");
            b.as_mut_slice()[..region.len()].copy_from_slice(&region);
            b
        })
        .collect();
    let peer_thread = t.placement[0].thread as usize;
    let _ = peer_thread;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut lat = Vec::new();
    while (seq as usize) < batches {
        let n = window.min(batches - seq as usize);
        let t0 = Instant::now();
        let mut pend = Vec::new();
        for b in bufs.iter().take(n) {
            let regions = if region.is_empty() {
                vec![]
            } else {
                vec![b
                    .remote()
                    .expect("remote")
                    .slice(0, region.len() as u64)
                    .expect("slice")]
            };
            let req = ProduceBatch {
                topic: "b".into(),
                partition: 0,
                producer_id: 1,
                seq,
                count: per_batch as u32,
                meta_len: table.meta.len() as u64,
                data_len: table.data_len(),
                table: inline.then(|| tbytes.clone()),
                regions,
            };
            seq += 1;
            pend.push(c.call_raw_pending(0, ProduceBatch::OP.code(), req.to_vec()));
        }
        for p in pend {
            let body = p.wait().expect("produce");
            decode_response::<ProduceResponse>(&body, &c.limits)
                .expect("decode")
                .expect("stored");
        }
        lat.push(t0.elapsed());
    }
    let prod = start.elapsed();
    let events = (batches * per_batch) as f64;
    let bytes = events * (30.0 + data_size as f64);

    // Consume everything with data into one landing buffer.
    let landing = c.engine().register(64 << 20).expect("landing");
    let start = Instant::now();
    let mut from = 0u64;
    while from < (batches * per_batch) as u64 {
        let f = Fetch {
            topic: "b".into(),
            partition: 0,
            consumer: String::new(),
            from_id: from,
            max_events: 65_536,
            max_bytes: 64 << 20,
            wait_ms: 1000,
            flags: if data_size > 0 { WANT_DATA } else { 0 },
            landing: vec![landing.remote().expect("remote")],
        };
        let body = c.call_raw(0, Fetch::OP.code(), f.to_vec()).expect("fetch");
        let r = decode_response::<FetchResponse>(&body, &c.limits)
            .expect("decode")
            .expect("fetched");
        from += r.count as u64;
    }
    let cons = start.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "{provider} {storage}: {batches} batches x {per_batch} events x {data_size} B, window {window}: \
         produce {:.0} events/s {:.1} MiB/s (window latency p50 {:?} p99 {:?}); consume {:.0} events/s {:.1} MiB/s",
        events / prod.as_secs_f64(),
        bytes / prod.as_secs_f64() / 1048576.0,
        p(0.5),
        p(0.99),
        events / cons.as_secs_f64(),
        bytes / cons.as_secs_f64() / 1048576.0,
    );
    let _ = CALL_TIMEOUT;
    drop(c);
    server.stop();
}
