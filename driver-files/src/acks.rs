//! Acknowledgements of a named consumer, persisted so a restarted consumer resumes after them.
//!
//! One file per consumer name, `consumers/<name>.acks`, replaced atomically (write to a
//! temporary file, then rename) at each acknowledgement:
//!
//! ```text
//! 0       8          12          16                     16+8n     20+8n
//! +-------+----------+-----------+----------------------+---------+
//! | magic | n u32    | reserved  | next offset u64 × n  | crc u32 |
//! +-------+----------+-----------+----------------------+---------+
//! ```
//!
//! `next offset` of partition p is one past the last acknowledged event (0: none); `reserved`
//! must be zero; `crc` is the CRC-32 of everything before it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{FilesError, FilesResult};

/// Magic bytes opening an acknowledgement file.
pub const ACK_MAGIC: [u8; 8] = *b"DSPACK\0\x01";
const HEADER: usize = 16;

/// The persisted acknowledgements of one consumer name.
pub struct AckStore {
    path: PathBuf,
    next: Mutex<Vec<u64>>,
    sync: bool,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl AckStore {
    /// Loads (or starts) the acknowledgements at `path` for a topic of `partitions` partitions.
    /// With `sync`, each acknowledgement is on disk (fsync) before `acknowledge` returns.
    pub fn load(path: &Path, partitions: usize, sync: bool) -> FilesResult<Self> {
        let next = match fs::read(path) {
            Ok(bytes) => {
                decode(&bytes, partitions).map_err(|reason| FilesError::CorruptRecord {
                    path: path.to_owned(),
                    index: 0,
                    reason,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![0; partitions],
            Err(e) => return Err(FilesError::io("read", path, e)),
        };
        Ok(AckStore {
            path: path.to_owned(),
            next: Mutex::new(next),
            sync,
        })
    }

    /// Offset of the first unacknowledged event of each partition.
    pub fn next_offsets(&self) -> Vec<u64> {
        self.next.lock().clone()
    }

    /// Records that events up to `id` of `partition` were processed, and persists it.
    pub fn acknowledge(&self, partition: usize, id: u64) -> FilesResult<()> {
        let mut next = self.next.lock();
        let Some(slot) = next.get_mut(partition) else {
            return Err(FilesError::CorruptRecord {
                path: self.path.clone(),
                index: partition as u64,
                reason: "acknowledged partition does not exist".into(),
            });
        };
        if id < *slot {
            return Ok(());
        }
        *slot = id + 1;
        self.persist(&next)
    }

    fn persist(&self, next: &[u64]) -> FilesResult<()> {
        let tmp = self.path.with_extension(format!(
            "acks.tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let bytes = encode(next);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if self.sync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            FilesError::io("write", &self.path, e)
        })
    }
}

fn encode(next: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 8 * next.len() + 4);
    out.extend_from_slice(&ACK_MAGIC);
    out.extend_from_slice(&(next.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for n in next {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(b: &[u8], partitions: usize) -> Result<Vec<u64>, String> {
    if b.len() < HEADER + 4 || b[..8] != ACK_MAGIC {
        return Err("not an acknowledgement file".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let mut c = [0u8; 4];
    c.copy_from_slice(crc);
    if crc32fast::hash(body) != u32::from_le_bytes(c) {
        return Err("checksum mismatch".into());
    }
    let mut w = [0u8; 4];
    w.copy_from_slice(&body[8..12]);
    let n = u32::from_le_bytes(w) as usize;
    w.copy_from_slice(&body[12..16]);
    if u32::from_le_bytes(w) != 0 {
        return Err("reserved field is not zero".into());
    }
    if n != partitions || body.len() != HEADER + 8 * n {
        return Err(format!("holds {n} partitions, topic has {partitions}"));
    }
    Ok(body[HEADER..]
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
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
    fn corrupted_ack_file_is_an_error_not_a_silent_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        AckStore::load(&p, 2, true)
            .expect("load")
            .acknowledge(0, 5)
            .expect("ack");
        let mut b = fs::read(&p).expect("read");
        b[HEADER] ^= 1;
        fs::write(&p, &b).expect("write");
        let e = AckStore::load(&p, 2, true).err().expect("corrupt");
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(AckStore::load(&p, 3, false).is_err());
    }

    #[test]
    fn reserved_field_must_be_zero() {
        let mut b = encode(&[1, 2]);
        b[12] = 1;
        let n = b.len() - 4;
        let crc = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&b, 2).expect_err("reserved").contains("reserved"));
    }
}
