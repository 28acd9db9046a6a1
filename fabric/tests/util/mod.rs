//! Helpers of the loopback tests: provider selection, a node (fabric..endpoint), and progress
//! loops bounded by deadlines.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use diaspora_fabric::{
    Av, Completion, Cq, CqOptions, Domain, Endpoint, Error, Fabric, Hints, Info,
};

/// Every wait of these tests is bounded by this.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Providers under test: `DIASPORA_TEST_PROVIDER` (comma-separated) or both loopback ones.
pub fn providers() -> Vec<String> {
    match std::env::var("DIASPORA_TEST_PROVIDER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => vec!["tcp;ofi_rxm".to_owned(), "shm".to_owned()],
    }
}

/// Loopback hints for a provider (tcp bound to 127.0.0.1, an ephemeral port).
pub fn hints(provider: &str) -> Hints {
    let h = Hints::provider(provider);
    if provider.starts_with("tcp") {
        h.with_source("127.0.0.1")
    } else {
        h
    }
}

/// `Info` for the provider, or `None` (printed) when the provider is absent on this machine.
pub fn info(h: &Hints) -> Option<Info> {
    match Info::get(h) {
        Ok(i) => Some(i),
        Err(Error::Getinfo { err, .. }) if err.errno == 61 => {
            eprintln!(
                "SKIP: provider {:?} is not available here ({err})",
                h.provider
            );
            None
        }
        Err(e) => panic!("fi_getinfo for {:?}: {e}", h.provider),
    }
}

/// One endpoint with everything under it.
pub struct Node {
    pub fabric: Fabric,
    pub domain: Domain,
    pub cq: Cq,
    pub av: Av,
    pub ep: Endpoint,
    pub done: Vec<Completion>,
}

impl Node {
    pub fn new(info: &Info) -> Node {
        let fabric = Fabric::open(info).expect("fabric");
        let domain = Domain::open(&fabric).expect("domain");
        let cq = Cq::open(&domain, &CqOptions::default()).expect("cq");
        let av = Av::open(&domain).expect("av");
        let ep = Endpoint::open(&domain, &cq, &av).expect("endpoint");
        Node {
            fabric,
            domain,
            cq,
            av,
            ep,
            done: Vec::new(),
        }
    }

    /// Reads this node's CQ once (drives progress).
    pub fn poll(&mut self) {
        self.cq.read(&mut self.done, 64).expect("cq read");
    }

    /// Removes and returns the completion of `op_id`, if read.
    pub fn take(&mut self, op_id: u64) -> Option<Completion> {
        let i = self.done.iter().position(|c| c.op_id == op_id)?;
        Some(self.done.swap_remove(i))
    }
}

/// Polls every node until `who` has the completion of `op_id`; panics at the deadline.
pub fn wait_for(nodes: &mut [&mut Node], who: usize, op_id: u64) -> Completion {
    wait_for_any(nodes, who, &[op_id])
}

/// Polls every node until `who` has a completion of one of `op_ids`; panics at the deadline.
pub fn wait_for_any(nodes: &mut [&mut Node], who: usize, op_ids: &[u64]) -> Completion {
    let start = Instant::now();
    loop {
        for n in nodes.iter_mut() {
            n.poll();
        }
        for &op_id in op_ids {
            if let Some(c) = nodes[who].take(op_id) {
                return c;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no completion for ops {op_ids:?} within {DEADLINE:?}; unclaimed: {:?}",
            nodes.iter().map(|n| &n.done).collect::<Vec<_>>()
        );
        std::thread::yield_now();
    }
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Posts with `post(nodes[0])`, retrying on `-FI_EAGAIN` while every node drives progress
/// (tcp;ofi_rxm returns it until the connection is established); panics at the deadline or on
/// another error.
pub fn retry(nodes: &mut [&mut Node], mut post: impl FnMut(&Node) -> Result<(), Error>) {
    let start = Instant::now();
    loop {
        match post(&*nodes[0]) {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                for n in nodes.iter_mut() {
                    n.poll();
                }
                assert!(start.elapsed() < DEADLINE, "still {e} after {DEADLINE:?}");
            }
            Err(e) => panic!("post failed: {e}"),
        }
    }
}
