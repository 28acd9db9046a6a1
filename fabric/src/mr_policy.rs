//! The memory-registration rules, as pure logic over the `mr_mode` bits the provider returned.
//!
//! | bit | rule |
//! |---|---|
//! | `FI_MR_VIRT_ADDR` | a remote peer addresses a region by its virtual address; otherwise by the offset from its start (0) |
//! | `FI_MR_PROV_KEY` | the key is chosen by the provider (`fi_mr_key` after registration); otherwise the application requests a key unique within the domain, never reused during the domain's lifetime ([`KeyAllocator`]) |
//! | `FI_MR_LOCAL` | every local buffer of an operation (send/recv buffers, read destinations, write sources) must be registered and its `fi_mr_desc` passed |
//! | `FI_MR_ENDPOINT` | a region must be bound to the endpoint (`fi_mr_bind`) and enabled (`fi_mr_enable`) before use |
//! | `FI_MR_ALLOCATED` | only real allocations (non-empty, backed by memory) may be registered |
//! | `FI_MR_RAW` | keys are raw byte strings (`fi_mr_raw_attr`); **not supported yet**: refused with [`PolicyError::RawKeysUnsupported`] |
//!
//! Loopback providers here return only `FI_MR_VIRT_ADDR` (shm) or nothing (tcp), so the unit
//! tests below force every bit.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flags;

/// A broken registration rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The provider returned `FI_MR_RAW` (keys longer than 64 bits); this layer does not map raw
    /// keys yet.
    #[error("the provider requires FI_MR_RAW (raw keys), which this layer does not support yet")]
    RawKeysUnsupported,
    /// `FI_MR_ALLOCATED`: an empty buffer is not an allocation.
    #[error("FI_MR_ALLOCATED: cannot register an empty buffer")]
    EmptyBuffer,
    /// The per-domain requested-key space is exhausted (keys are never reused).
    #[error("requested memory keys exhausted for this domain (keys are never reused)")]
    KeysExhausted,
    /// `FI_MR_ENDPOINT`: the region is used before `bind(endpoint)`.
    #[error("FI_MR_ENDPOINT: the region must be bound to the endpoint before use")]
    NotBound,
    /// A remote key longer than 64 bits cannot be used by fi_read/fi_write without FI_MR_RAW.
    #[error("remote key of {0} bytes needs FI_MR_RAW support")]
    LongKey(usize),
}

/// The provider's `mr_mode` bits with the rules derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MrPolicy {
    bits: u64,
}

/// Where a region's key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `FI_MR_PROV_KEY`: read `fi_mr_key` after registration.
    Provider,
    /// The application requests this key (unique per domain).
    Requested(u64),
}

impl MrPolicy {
    /// The bits the layer asks for in hints: everything it knows how to honour.
    pub const REQUESTED: u64 = flags::MR_LOCAL
        | flags::MR_VIRT_ADDR
        | flags::MR_ALLOCATED
        | flags::MR_PROV_KEY
        | flags::MR_ENDPOINT;

    /// Rules for the `mr_mode` the provider returned. Refuses `FI_MR_RAW`.
    pub fn new(mr_mode: u64) -> Result<Self, PolicyError> {
        if mr_mode & flags::MR_RAW != 0 {
            return Err(PolicyError::RawKeysUnsupported);
        }
        Ok(MrPolicy { bits: mr_mode })
    }

    /// The raw bits.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// `FI_MR_VIRT_ADDR`: the address a peer uses for byte `offset` of a region at `vaddr`.
    pub fn remote_addr(&self, vaddr: u64, offset: u64) -> u64 {
        if self.bits & flags::MR_VIRT_ADDR != 0 {
            vaddr.wrapping_add(offset)
        } else {
            offset
        }
    }

    /// `FI_MR_PROV_KEY`: where the key of the next registration comes from.
    pub fn key_source(&self, keys: &KeyAllocator) -> Result<KeySource, PolicyError> {
        if self.bits & flags::MR_PROV_KEY != 0 {
            Ok(KeySource::Provider)
        } else {
            keys.next().map(KeySource::Requested)
        }
    }

    /// `FI_MR_LOCAL`: local buffers must carry their `fi_mr_desc`.
    pub fn needs_local_desc(&self) -> bool {
        self.bits & flags::MR_LOCAL != 0
    }

    /// `FI_MR_ENDPOINT`: regions must be bound to an endpoint and enabled.
    pub fn needs_bind(&self) -> bool {
        self.bits & flags::MR_ENDPOINT != 0
    }

    /// `FI_MR_ALLOCATED`: is a buffer of `len` bytes registrable? (Empty buffers never are: an
    /// empty `Vec` has a dangling pointer.)
    pub fn check_registrable(&self, len: usize) -> Result<(), PolicyError> {
        if len == 0 {
            return Err(PolicyError::EmptyBuffer);
        }
        Ok(())
    }

    /// Is a region usable now (`bound` = `fi_mr_bind` + `fi_mr_enable` done)?
    pub fn check_usable(&self, bound: bool) -> Result<(), PolicyError> {
        if self.needs_bind() && !bound {
            return Err(PolicyError::NotBound);
        }
        Ok(())
    }
}

/// Per-domain requested keys: monotonically increasing, never reused within the domain's life.
#[derive(Debug, Default)]
pub struct KeyAllocator {
    next: AtomicU64,
}

impl KeyAllocator {
    /// Starts at key 1 (some providers reserve 0).
    pub fn new() -> Self {
        KeyAllocator {
            next: AtomicU64::new(1),
        }
    }

    /// Starts at `first` (tests).
    pub fn starting_at(first: u64) -> Self {
        KeyAllocator {
            next: AtomicU64::new(first),
        }
    }

    /// The next unused key.
    pub fn next(&self) -> Result<u64, PolicyError> {
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| k.checked_add(1))
            .map_err(|_exhausted_at_max| PolicyError::KeysExhausted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virt_addr_sends_address_else_offset() {
        let v = MrPolicy::new(flags::MR_VIRT_ADDR).expect("policy");
        assert_eq!(v.remote_addr(0x7000_0000, 16), 0x7000_0010);
        let o = MrPolicy::new(0).expect("policy");
        assert_eq!(o.remote_addr(0x7000_0000, 16), 16);
        assert_eq!(o.remote_addr(0x7000_0000, 0), 0);
    }

    #[test]
    fn prov_key_reads_provider_key_else_unique_requested_keys() {
        let keys = KeyAllocator::new();
        let p = MrPolicy::new(flags::MR_PROV_KEY).expect("policy");
        assert_eq!(p.key_source(&keys), Ok(KeySource::Provider));
        let a = MrPolicy::new(0).expect("policy");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            match a.key_source(&keys).expect("key") {
                KeySource::Requested(k) => assert!(seen.insert(k), "key {k} reused"),
                KeySource::Provider => panic!("expected a requested key"),
            }
        }
    }

    #[test]
    fn requested_keys_never_wrap() {
        let keys = KeyAllocator::starting_at(u64::MAX - 1);
        assert_eq!(keys.next(), Ok(u64::MAX - 1));
        assert_eq!(keys.next(), Err(PolicyError::KeysExhausted));
        assert_eq!(keys.next(), Err(PolicyError::KeysExhausted));
    }

    #[test]
    fn local_requires_descriptors() {
        assert!(MrPolicy::new(flags::MR_LOCAL)
            .expect("p")
            .needs_local_desc());
        assert!(!MrPolicy::new(flags::MR_VIRT_ADDR)
            .expect("p")
            .needs_local_desc());
    }

    #[test]
    fn endpoint_requires_bind_before_use() {
        let p = MrPolicy::new(flags::MR_ENDPOINT).expect("p");
        assert!(p.needs_bind());
        assert_eq!(p.check_usable(false), Err(PolicyError::NotBound));
        assert_eq!(p.check_usable(true), Ok(()));
        let q = MrPolicy::new(0).expect("p");
        assert_eq!(q.check_usable(false), Ok(()));
    }

    #[test]
    fn allocated_refuses_empty_buffers() {
        let p = MrPolicy::new(flags::MR_ALLOCATED).expect("p");
        assert_eq!(p.check_registrable(0), Err(PolicyError::EmptyBuffer));
        assert_eq!(p.check_registrable(1), Ok(()));
    }

    #[test]
    fn raw_keys_refused_clearly() {
        let e = MrPolicy::new(flags::MR_RAW | flags::MR_VIRT_ADDR).expect_err("raw");
        assert_eq!(e, PolicyError::RawKeysUnsupported);
        assert!(e.to_string().contains("FI_MR_RAW"));
    }

    #[test]
    fn all_bits_together() {
        let p = MrPolicy::new(MrPolicy::REQUESTED).expect("p");
        assert!(p.needs_local_desc() && p.needs_bind());
        assert_eq!(p.remote_addr(100, 1), 101);
        assert_eq!(p.key_source(&KeyAllocator::new()), Ok(KeySource::Provider));
    }
}
