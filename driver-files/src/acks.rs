//! Acknowledgements of a named consumer, persisted so a restarted consumer resumes after them.
//!
//! One file per consumer name, `consumers/<name>.acks`, holding two fixed-size slots written
//! alternately in place (one `pwrite` per acknowledgement, no temporary file). Each slot carries
//! a sequence number and a checksum; loading picks the valid slot with the highest sequence, so a
//! write torn by a crash only loses that one acknowledgement, never the previous one.
//!
//! ```text
//! slot (24 + 8n + 4 bytes, little-endian), slot k at offset k × slot size
//! 0       8         16       20          24                     24+8n     28+8n
//! +-------+---------+--------+-----------+----------------------+---------+
//! | magic | seq u64 | n u32  | reserved  | next offset u64 × n  | crc u32 |
//! +-------+---------+--------+-----------+----------------------+---------+
//! ```
//!
//! `next offset` of partition p is one past the last acknowledged event (0: none); `reserved`
//! must be zero; `crc` is the CRC-32 of the slot's bytes before it.
//!
//! The file is created by the first acknowledgement, not by loading: a consumer that never
//! acknowledges (`diaspora-ctl consume --no-ack`) changes nothing on disk and works on a
//! read-only tree.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{FilesError, FilesResult};

/// Magic bytes opening an acknowledgement slot.
pub const ACK_MAGIC: [u8; 8] = *b"DSPACK\0\x02";
const HEADER: usize = 24;

/// Size of one slot for `n` partitions.
pub fn slot_size(n: usize) -> usize {
    HEADER + 8 * n + 4
}

struct State {
    next: Vec<u64>,
    seq: u64,
    /// Opened for writing by the first acknowledgement.
    file: Option<File>,
}

/// The persisted acknowledgements of one consumer name.
pub struct AckStore {
    path: PathBuf,
    state: Mutex<State>,
    sync: bool,
}

impl AckStore {
    /// Loads (or starts) the acknowledgements at `path` for a topic of `partitions` partitions.
    /// With `sync`, each acknowledgement is on disk (fdatasync) before `acknowledge` returns.
    pub fn load(path: &Path, partitions: usize, sync: bool) -> FilesResult<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(FilesError::io("read", path, e)),
        };
        let size = slot_size(partitions);
        let best = bytes
            .chunks(size)
            .take(2)
            .filter_map(|slot| decode(slot, partitions).ok())
            .max_by_key(|(seq, _)| *seq);
        let (seq, next) = match best {
            Some(found) => found,
            None if bytes.is_empty() => (0, vec![0; partitions]),
            None => {
                // Say why the first slot is unusable.
                let reason = decode(&bytes[..bytes.len().min(size)], partitions)
                    .err()
                    .unwrap_or_default();
                return Err(FilesError::CorruptRecord {
                    path: path.to_owned(),
                    index: 0,
                    reason: format!("no valid acknowledgement slot ({reason})"),
                });
            }
        };
        Ok(AckStore {
            path: path.to_owned(),
            state: Mutex::new(State {
                next,
                seq,
                file: None,
            }),
            sync,
        })
    }

    /// Offset of the first unacknowledged event of each partition.
    pub fn next_offsets(&self) -> Vec<u64> {
        self.state.lock().next.clone()
    }

    /// Records that events up to `id` of `partition` were processed, and persists it.
    pub fn acknowledge(&self, partition: usize, id: u64) -> FilesResult<()> {
        let mut st = self.state.lock();
        let Some(slot) = st.next.get_mut(partition) else {
            return Err(FilesError::CorruptRecord {
                path: self.path.clone(),
                index: partition as u64,
                reason: "acknowledged partition does not exist".into(),
            });
        };
        if id < *slot {
            return Ok(());
        }
        let previous = *slot;
        *slot = id + 1;
        let seq = st.seq + 1;
        let bytes = encode(seq, &st.next);
        let offset = (seq % 2) * bytes.len() as u64;
        let written = self.writable_file(&mut st).and_then(|file| {
            file.write_all_at(&bytes, offset)?;
            if self.sync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                st.seq = seq;
                Ok(())
            }
            Err(e) => {
                st.next[partition] = previous;
                Err(FilesError::io("write", &self.path, e))
            }
        }
    }
}

impl AckStore {
    /// The file, opened (created if needed) on first use.
    fn writable_file<'a>(&self, st: &'a mut State) -> std::io::Result<&'a File> {
        if st.file.is_none() {
            st.file = Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.path)?,
            );
        }
        st.file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("acknowledgement file not open"))
    }
}

fn encode(seq: u64, next: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slot_size(next.len()));
    out.extend_from_slice(&ACK_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(next.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for n in next {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn decode(slot: &[u8], partitions: usize) -> Result<(u64, Vec<u64>), String> {
    if slot.len() < HEADER + 4 || slot[..8] != ACK_MAGIC {
        return Err("not an acknowledgement slot".into());
    }
    let n = le32(&slot[16..20]) as usize;
    if n != partitions {
        return Err(format!("holds {n} partitions, topic has {partitions}"));
    }
    if slot.len() != slot_size(n) {
        return Err("truncated slot".into());
    }
    let (body, crc) = slot.split_at(slot.len() - 4);
    if crc32fast::hash(body) != le32(crc) {
        return Err("checksum mismatch".into());
    }
    if le32(&body[20..24]) != 0 {
        return Err("reserved field is not zero".into());
    }
    Ok((
        le64(&body[8..16]),
        body[HEADER..].chunks_exact(8).map(le64).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_persist_and_only_move_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 3, false).expect("load");
        assert_eq!(s.next_offsets(), vec![0, 0, 0]);
        s.acknowledge(1, 9).expect("ack");
        s.acknowledge(1, 4).expect("older ack ignored");
        s.acknowledge(2, 0).expect("ack");
        let again = AckStore::load(&p, 3, false).expect("reload");
        assert_eq!(again.next_offsets(), vec![0, 10, 1]);
        assert!(s.acknowledge(3, 0).is_err());
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_acknowledgement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 2, true).expect("load");
        s.acknowledge(0, 5).expect("ack seq 1 -> slot 1");
        s.acknowledge(0, 7).expect("ack seq 2 -> slot 0");
        drop(s);
        let mut b = std::fs::read(&p).expect("read");
        b[HEADER] ^= 1; // tear slot 0 (the newest)
        std::fs::write(&p, &b).expect("write");
        let s = AckStore::load(&p, 2, false).expect("falls back");
        assert_eq!(s.next_offsets(), vec![6, 0]);
        // The next acknowledgement overwrites the torn slot and wins again.
        s.acknowledge(0, 8).expect("ack");
        assert_eq!(
            AckStore::load(&p, 2, false).expect("reload").next_offsets(),
            vec![9, 0]
        );
    }

    #[test]
    fn unusable_ack_file_is_an_error_not_a_silent_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        AckStore::load(&p, 2, false)
            .expect("load")
            .acknowledge(0, 5)
            .expect("ack");
        assert!(
            AckStore::load(&p, 3, false).is_err(),
            "partition count mismatch"
        );
        std::fs::write(&p, b"garbage that is not an ack file at all").expect("write");
        let e = AckStore::load(&p, 2, false).err().expect("corrupt");
        assert!(
            e.to_string().contains("no valid acknowledgement slot"),
            "{e}"
        );
    }

    #[test]
    fn random_ack_files_never_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..2_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 120) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if round % 3 == 0 && len >= 8 {
                bytes[..8].copy_from_slice(&ACK_MAGIC); // get past the magic check
            }
            std::fs::write(&p, &bytes).expect("write");
            // Either a clean load or a clean error; random bytes never pass the checksum.
            if let Ok(s) = AckStore::load(&p, 2, false) {
                assert!(
                    bytes.is_empty(),
                    "random file accepted: {:?}",
                    s.next_offsets()
                );
            }
        }
    }

    #[test]
    fn loading_creates_nothing_until_the_first_acknowledgement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 2, false).expect("load");
        assert!(!p.exists(), "loading created the file");
        s.acknowledge(1, 3).expect("ack");
        assert!(p.exists());
        assert_eq!(
            AckStore::load(&p, 2, false).expect("reload").next_offsets(),
            vec![0, 4]
        );
    }

    proptest::proptest! {
        /// Arbitrary slot bytes: decoding never panics, and accepts only what encoding makes.
        #[test]
        fn arbitrary_slots_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), n in 0usize..4, magic: bool) {
            let mut bytes = bytes;
            if magic && bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&ACK_MAGIC);
            }
            if let Ok((seq, next)) = decode(&bytes, n) {
                proptest::prop_assert_eq!(encode(seq, &next), bytes);
            }
        }

        #[test]
        fn slots_roundtrip(seq: u64, next in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..8)) {
            proptest::prop_assert_eq!(decode(&encode(seq, &next), next.len()), Ok((seq, next.clone())));
        }
    }

    #[test]
    fn reserved_field_must_be_zero() {
        let mut b = encode(1, &[1, 2]);
        b[20] = 1;
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&b, 2).expect_err("reserved").contains("reserved"));
    }
}
