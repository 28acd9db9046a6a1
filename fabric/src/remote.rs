//! [`RemoteRegion`]: the plain-data descriptor of a registered region that a peer can read or
//! write, and its wire encoding.
//!
//! # Encoding (little-endian, 20 + key_len bytes)
//!
//! ```text
//!  0      1         2        4                 12                20
//!  +------+---------+--------+-----------------+-----------------+----------------+
//!  | ver  | key_len | rsvd=0 | addr (u64 LE)   | len (u64 LE)    | key[key_len]   |
//!  | =1   | 0..=32  | u16    |                 |                 |                |
//!  +------+---------+--------+-----------------+-----------------+----------------+
//! ```
//!
//! * `addr` is what the peer passes as the RMA address: the virtual address under
//!   `FI_MR_VIRT_ADDR`, else the offset from the region's start (see [`crate::MrPolicy`]).
//! * The key is `key_len` raw bytes; a 64-bit key (`mr_key_size` 8, every provider without
//!   `FI_MR_RAW`) is its 8 little-endian bytes. Longer keys (up to [`MAX_KEY_LEN`]) have room
//!   here but `FI_MR_RAW` is refused by the layer until supported.
//! * The reserved field must be 0. The descriptor carries no checksum of its own: it travels
//!   inside checksummed RPC frames.
//!
//! Decoding never panics and never allocates; errors carry a stable [`DecodeError::code`].

/// Longest key the descriptor can carry.
pub const MAX_KEY_LEN: usize = 32;
/// Version byte of the encoding.
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;

/// A remote region: address, length and key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteRegion {
    addr: u64,
    len: u64,
    key_len: u8,
    key: [u8; MAX_KEY_LEN],
}

/// A malformed encoded [`RemoteRegion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the header or the key needs.
    #[error("remote region truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Unknown version byte.
    #[error("remote region version {0} is not supported (expected {VERSION})")]
    Version(u8),
    /// `key_len` above [`MAX_KEY_LEN`].
    #[error("remote region key length {0} exceeds {MAX_KEY_LEN}")]
    KeyTooLong(u8),
    /// The reserved field is not zero.
    #[error("remote region reserved field is {0:#x}, must be 0")]
    Reserved(u16),
    /// `addr + len` overflows.
    #[error("remote region addr {addr:#x} + len {len} overflows")]
    Overflow {
        /// Address.
        addr: u64,
        /// Length.
        len: u64,
    },
}

impl DecodeError {
    /// Stable numeric code (never reused).
    pub fn code(&self) -> u16 {
        match self {
            DecodeError::Truncated { .. } => 1,
            DecodeError::Version(_) => 2,
            DecodeError::KeyTooLong(_) => 3,
            DecodeError::Reserved(_) => 4,
            DecodeError::Overflow { .. } => 5,
        }
    }
}

impl RemoteRegion {
    /// A region with a 64-bit key. `None` if `addr + len` overflows.
    pub fn new(addr: u64, len: u64, key: u64) -> Option<Self> {
        Self::with_key_bytes(addr, len, &key.to_le_bytes())
    }

    /// A region with a raw key of up to [`MAX_KEY_LEN`] bytes. `None` if the key is too long or
    /// `addr + len` overflows.
    pub fn with_key_bytes(addr: u64, len: u64, key_bytes: &[u8]) -> Option<Self> {
        if key_bytes.len() > MAX_KEY_LEN || addr.checked_add(len).is_none() {
            return None;
        }
        let mut key = [0u8; MAX_KEY_LEN];
        key[..key_bytes.len()].copy_from_slice(key_bytes);
        Some(RemoteRegion {
            addr,
            len,
            key_len: key_bytes.len() as u8,
            key,
        })
    }

    /// RMA address of the first byte.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw key bytes.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }

    /// The key as the `u64` fi_read/fi_write take; `None` if it is longer than 8 bytes.
    pub fn key_u64(&self) -> Option<u64> {
        let k = self.key_bytes();
        if k.len() > 8 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..k.len()].copy_from_slice(k);
        Some(u64::from_le_bytes(b))
    }

    /// The sub-region `[offset, offset + len)`; `None` if it is not inside this region.
    pub fn slice(&self, offset: u64, len: u64) -> Option<Self> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(RemoteRegion {
            addr: self.addr.checked_add(offset)?,
            len,
            ..*self
        })
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + usize::from(self.key_len)
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(VERSION);
        out.push(self.key_len);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(self.key_bytes());
    }

    /// Decodes one region from the front of `buf`; returns it and the bytes used.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let header: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            })?;
        let [version, key_len, r0, r1, a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, l4, l5, l6, l7] =
            *header;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        if usize::from(key_len) > MAX_KEY_LEN {
            return Err(DecodeError::KeyTooLong(key_len));
        }
        let reserved = u16::from_le_bytes([r0, r1]);
        if reserved != 0 {
            return Err(DecodeError::Reserved(reserved));
        }
        let addr = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let len = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
        let used = HEADER_LEN + usize::from(key_len);
        let key_bytes = buf.get(HEADER_LEN..used).ok_or(DecodeError::Truncated {
            need: used,
            have: buf.len(),
        })?;
        let region = Self::with_key_bytes(addr, len, key_bytes)
            .ok_or(DecodeError::Overflow { addr, len })?;
        Ok((region, used))
    }
}

impl std::fmt::Debug for RemoteRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegion")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("key", &crate::address::hex(self.key_bytes()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_documented_layout() {
        let r = RemoteRegion::new(0x1122_3344_5566_7788, 4096, 0xabcd).expect("region");
        let mut v = Vec::new();
        r.encode_into(&mut v);
        assert_eq!(v.len(), 28);
        assert_eq!(&v[..4], &[1, 8, 0, 0]);
        assert_eq!(&v[4..12], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&v[12..20], &4096u64.to_le_bytes());
        assert_eq!(&v[20..28], &0xabcdu64.to_le_bytes());
        assert_eq!(RemoteRegion::decode(&v), Ok((r, 28)));
    }

    #[test]
    fn rejects_bad_fields_with_stable_codes() {
        let r = RemoteRegion::new(8, 8, 1).expect("region");
        let mut v = Vec::new();
        r.encode_into(&mut v);
        let mut bad = v.clone();
        bad[0] = 2;
        assert_eq!(RemoteRegion::decode(&bad).map_err(|e| e.code()), Err(2));
        let mut bad = v.clone();
        bad[1] = 33;
        assert_eq!(RemoteRegion::decode(&bad).map_err(|e| e.code()), Err(3));
        let mut bad = v.clone();
        bad[2] = 1;
        assert_eq!(RemoteRegion::decode(&bad).map_err(|e| e.code()), Err(4));
        let mut bad = v.clone();
        bad[4..12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(RemoteRegion::decode(&bad).map_err(|e| e.code()), Err(5));
        assert_eq!(
            RemoteRegion::decode(&v[..27]),
            Err(DecodeError::Truncated { need: 28, have: 27 })
        );
        assert_eq!(RemoteRegion::decode(&v[..3]).map_err(|e| e.code()), Err(1));
    }

    #[test]
    fn slice_stays_inside() {
        let r = RemoteRegion::new(1000, 100, 7).expect("region");
        let s = r.slice(10, 90).expect("inside");
        assert_eq!((s.addr(), s.len(), s.key_u64()), (1010, 90, Some(7)));
        assert!(r.slice(10, 91).is_none());
        assert!(r.slice(u64::MAX, 2).is_none());
    }

    #[test]
    fn long_keys_have_room_but_no_u64() {
        let r = RemoteRegion::with_key_bytes(0, 1, &[9u8; 16]).expect("region");
        assert_eq!(r.key_bytes(), &[9u8; 16]);
        assert_eq!(r.key_u64(), None);
        assert!(RemoteRegion::with_key_bytes(0, 1, &[0u8; 33]).is_none());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok((r, used)) = RemoteRegion::decode(&bytes) {
                prop_assert!(used <= bytes.len());
                let mut v = Vec::new();
                r.encode_into(&mut v);
                prop_assert_eq!(&v[..], &bytes[..used]);
            }
        }

        #[test]
        fn roundtrip(addr in any::<u64>(), len in any::<u64>(), key in proptest::collection::vec(any::<u8>(), 0..=32), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Some(r) = RemoteRegion::with_key_bytes(addr, len, &key) {
                let mut v = Vec::new();
                r.encode_into(&mut v);
                let n = v.len();
                v.extend_from_slice(&tail);
                prop_assert_eq!(RemoteRegion::decode(&v), Ok((r, n)));
            } else {
                prop_assert!(addr.checked_add(len).is_none());
            }
        }
    }
}
