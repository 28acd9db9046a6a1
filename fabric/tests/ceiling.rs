//! The raw read ceiling on real providers (`tcp;ofi_rxm` and `shm` on loopback; narrow with
//! `DIASPORA_TEST_PROVIDER`): it reads what it says, lands where it says, and refuses what it
//! cannot measure. Figures are not checked here (timings belong in benchmarks).

mod util;

use std::time::Duration;

use diaspora_fabric::ceiling::{measure_read, CeilingError, Landing, ReadSpec};
use util::providers;

fn spec(provider: &str, size: usize, in_flight: usize, bytes: u64, landing: Landing) -> ReadSpec {
    ReadSpec {
        provider: provider.to_owned(),
        size,
        in_flight,
        bytes,
        landing,
        deadline: Duration::from_secs(60),
        populate: false,
    }
}

#[test]
fn reads_every_byte_asked_into_reused_and_fresh_memory() {
    for p in providers() {
        for landing in [Landing::Reused, Landing::Fresh] {
            // 3 MiB + 1 byte in 64 KiB reads: rounded up to 49 whole reads.
            let c = measure_read(&spec(&p, 64 << 10, 8, (3 << 20) + 1, landing))
                .unwrap_or_else(|e| panic!("{p} {landing:?}: {e}"));
            assert_eq!(c.bytes, 49 * (64 << 10), "{p} {landing:?}");
            assert!(c.seconds > 0.0 && c.bytes_per_sec().is_finite(), "{c:?}");
        }
    }
}

#[test]
fn fewer_bytes_than_slots_still_fills_every_slot_once() {
    for p in providers() {
        let c = measure_read(&spec(&p, 4096, 8, 1, Landing::Fresh)).expect("ceiling");
        assert_eq!(c.bytes, 8 * 4096, "{p}");
    }
}

#[test]
fn empty_transfers_and_no_slots_are_refused() {
    for (size, in_flight) in [(0, 8), (4096, 0)] {
        let e = measure_read(&spec(
            "tcp;ofi_rxm",
            size,
            in_flight,
            1 << 20,
            Landing::Reused,
        ))
        .expect_err("refused");
        assert!(matches!(e, CeilingError::BadSpec(_)), "{e}");
    }
    let e = measure_read(&spec("tcp;ofi_rxm", 1 << 20, 1, u64::MAX, Landing::Fresh))
        .expect_err("refused");
    assert!(matches!(e, CeilingError::BadSpec(_)), "{e}");
}

#[test]
fn an_unknown_provider_is_a_fabric_error() {
    let e = measure_read(&spec("no-such-provider", 4096, 1, 4096, Landing::Reused))
        .expect_err("no such provider");
    assert!(matches!(e, CeilingError::Fabric(_)), "{e}");
}

#[test]
fn populated_fresh_landing_reads_every_byte_too() {
    for p in providers() {
        let mut s = spec(&p, 64 << 10, 8, 2 << 20, Landing::Fresh);
        s.populate = true;
        let c = measure_read(&s).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(c.bytes, 2 << 20, "{p}");
    }
}
