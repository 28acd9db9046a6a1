//! Producer sequence state of one partition: for each producer, its last stored batches, so
//! a resent batch is answered `Duplicate` instead of being stored twice, across restarts.
//!
//! One file per partition, `producers.state` in the partition's directory, holding two slots
//! written alternately in place (the acknowledgement files' scheme): loading picks the valid
//! slot with the highest sequence, so a write torn by a crash loses only that write.
//!
//! ```text
//! slot k at offset k × SLOT_SIZE (little-endian)
//! 0        8         16      20          24                       24+40n    28+40n
//! +--------+---------+-------+-----------+------------------------+---------+
//! | magic  | seq u64 | n u32 | rsvd u32  | entry × n (40 bytes)   | crc u32 |
//! +--------+---------+-------+-----------+------------------------+---------+
//! entry: | producer_id u64 | last_seq u64 | last_first u64 | last_count u32 | rsvd u32 |
//!        | prev_first u64 (u64::MAX: unknown) |
//! ```
//!
//! `crc` is the CRC-32 of the slot's bytes before it; reserved fields are zero.
//!
//! The state is written **before** the batches it describes are appended (an intent): after a
//! crash, an entry whose batch is not (wholly) in the log (`last_first + last_count > count`)
//! is rolled back to its previous batch, so the producer's resend is stored, not refused.
//! At most [`MAX_PRODUCERS`] producers are remembered per partition (the least recently
//! used is forgotten: its next resend of an old batch would be stored again).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Magic bytes opening a slot.
pub const MAGIC: [u8; 8] = *b"DSPSEQ\0\x01";
/// Producers remembered per partition.
pub const MAX_PRODUCERS: usize = 1024;
const HEADER: usize = 24;
const ENTRY: usize = 40;
/// Size of one slot.
pub const SLOT_SIZE: usize = HEADER + ENTRY * MAX_PRODUCERS + 4;
/// File name in the partition directory.
pub const FILE_NAME: &str = "producers.state";

/// What is known of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// Sequence number of its last stored batch.
    pub last_seq: u64,
    /// First id of that batch.
    pub last_first: u64,
    /// Events in that batch.
    pub last_count: u32,
    /// First id of the batch before (u64::MAX: unknown).
    pub prev_first: u64,
    /// For eviction: a logical clock of the last use.
    pub used: u64,
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeqStateError {
    /// A system call failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Both slots are damaged.
    #[error("producer state {path} is damaged in both slots (delete it to forget the producers' sequence numbers; resent batches may then be stored twice)")]
    Damaged {
        /// The file.
        path: PathBuf,
    },
}

/// The state table (pure: encode/decode and the rules), plus its file.
#[derive(Debug)]
pub struct SeqState {
    map: HashMap<u64, ProducerState>,
    clock: u64,
    slot_seq: u64,
    file: Option<(File, PathBuf)>,
    sync: bool,
}

impl SeqState {
    /// An empty state kept in memory only (memory storage).
    pub fn in_memory() -> Self {
        SeqState {
            map: HashMap::new(),
            clock: 0,
            slot_seq: 0,
            file: None,
            sync: false,
        }
    }

    /// Loads the state of the partition in `dir`, whose log holds `count` events, rolling
    /// back entries whose batch is not in the log.
    pub fn load(dir: &Path, count: u64, sync: bool) -> Result<Self, SeqStateError> {
        let path = dir.join(FILE_NAME);
        let io = |op, source| SeqStateError::Io {
            op,
            path: path.clone(),
            source,
        };
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io("open", e)),
        };
        let mut st = SeqState::in_memory();
        st.sync = sync;
        if let Some(f) = &file {
            let len = f.metadata().map_err(|e| io("stat", e))?.len();
            let mut best: Option<(u64, Vec<(u64, ProducerState)>)> = None;
            for k in 0..2u64 {
                if len < (k + 1) * HEADER as u64 {
                    continue;
                }
                let mut buf = vec![0u8; SLOT_SIZE];
                let got =
                    read_up_to(f, &mut buf, k * SLOT_SIZE as u64).map_err(|e| io("read", e))?;
                if let Some((seq, entries)) = decode_slot(&buf[..got]) {
                    if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, entries));
                    }
                }
            }
            match best {
                Some((seq, entries)) => {
                    st.slot_seq = seq;
                    for (id, mut p) in entries {
                        if p.last_first.saturating_add(p.last_count as u64) > count {
                            // Intent not carried out: the batch is not (wholly) stored.
                            if p.last_seq == 0 || p.prev_first == u64::MAX {
                                if p.last_seq == 0 {
                                    continue;
                                }
                                p.last_first = u64::MAX;
                            } else {
                                p.last_first = p.prev_first;
                            }
                            p.last_seq -= 1;
                            p.last_count = 0;
                            p.prev_first = u64::MAX;
                        }
                        st.clock += 1;
                        p.used = st.clock;
                        st.map.insert(id, p);
                    }
                }
                None if len > 0 => return Err(SeqStateError::Damaged { path }),
                None => {}
            }
        }
        st.file = Some(match file {
            Some(f) => (f, path),
            None => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| io("create", e))?;
                (f, path)
            }
        });
        Ok(st)
    }

    /// What is known of `producer`.
    pub fn get(&self, producer: u64) -> Option<&ProducerState> {
        self.map.get(&producer)
    }

    /// The next sequence number expected of `producer` (0 for an unknown producer).
    pub fn expected(&self, producer: u64) -> u64 {
        self.map.get(&producer).map_or(0, |p| p.last_seq + 1)
    }

    /// Records that batch `seq` of `producer` starts at `first` with `count` events.
    pub fn record(&mut self, producer: u64, seq: u64, first: u64, count: u32) {
        self.clock += 1;
        let prev_first = match self.map.get(&producer) {
            Some(p) if p.last_seq + 1 == seq => p.last_first,
            _ => u64::MAX,
        };
        if !self.map.contains_key(&producer) && self.map.len() >= MAX_PRODUCERS {
            if let Some((&old, _)) = self.map.iter().min_by_key(|(_, p)| p.used) {
                self.map.remove(&old);
            }
        }
        self.map.insert(
            producer,
            ProducerState {
                last_seq: seq,
                last_first: first,
                last_count: count,
                prev_first,
                used: self.clock,
            },
        );
    }

    /// A copy of the table (to undo [`record`](Self::record)s whose append failed).
    pub fn snapshot(&self) -> HashMap<u64, ProducerState> {
        self.map.clone()
    }

    /// Puts back a [`snapshot`](Self::snapshot).
    pub fn restore(&mut self, map: HashMap<u64, ProducerState>) {
        self.map = map;
    }

    /// Writes the table into the older slot (durably when `sync`).
    pub fn persist(&mut self) -> Result<(), SeqStateError> {
        let Some((file, path)) = &self.file else {
            return Ok(());
        };
        self.slot_seq += 1;
        let buf = encode_slot(self.slot_seq, self.map.iter().map(|(k, v)| (*k, *v)));
        let at = (self.slot_seq % 2) * SLOT_SIZE as u64;
        let io = |op, source| SeqStateError::Io {
            op,
            path: path.clone(),
            source,
        };
        file.write_all_at(&buf, at).map_err(|e| io("write", e))?;
        if self.sync {
            file.sync_data().map_err(|e| io("sync", e))?;
        }
        Ok(())
    }
}

/// Encodes one slot.
pub fn encode_slot(seq: u64, entries: impl Iterator<Item = (u64, ProducerState)>) -> Vec<u8> {
    let mut body = Vec::with_capacity(HEADER + 64 * ENTRY);
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    let mut n = 0u32;
    for (id, p) in entries.take(MAX_PRODUCERS) {
        n += 1;
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&p.last_seq.to_le_bytes());
        body.extend_from_slice(&p.last_first.to_le_bytes());
        body.extend_from_slice(&p.last_count.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&p.prev_first.to_le_bytes());
    }
    body[16..20].copy_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// Decodes one slot; `None` if it is not a valid slot.
pub fn decode_slot(b: &[u8]) -> Option<(u64, Vec<(u64, ProducerState)>)> {
    if b.len() < HEADER + 4 || b[..8] != MAGIC || b[20..24] != [0; 4] {
        return None;
    }
    let u64_at = |i: usize| Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let seq = u64_at(8)?;
    let n = u32_at(16)? as usize;
    if n > MAX_PRODUCERS {
        return None;
    }
    let end = HEADER + n * ENTRY;
    let crc = u32_at(end)?;
    if crc32fast::hash(&b[..end]) != crc {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let e = HEADER + i * ENTRY;
        if u32_at(e + 28)? != 0 {
            return None;
        }
        out.push((
            u64_at(e)?,
            ProducerState {
                last_seq: u64_at(e + 8)?,
                last_first: u64_at(e + 16)?,
                last_count: u32_at(e + 24)?,
                prev_first: u64_at(e + 32)?,
                used: 0,
            },
        ));
    }
    Some((seq, out))
}

fn read_up_to(f: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn state_survives_reload_and_rolls_back_unstored_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeqState::load(dir.path(), 0, false).unwrap();
        s.record(7, 0, 0, 10);
        s.record(7, 1, 10, 5);
        s.record(9, 0, 15, 1);
        s.persist().unwrap();
        // Log has all 16 events.
        let s2 = SeqState::load(dir.path(), 16, false).unwrap();
        assert_eq!(s2.expected(7), 2);
        assert_eq!(s2.get(7).unwrap().last_first, 10);
        assert_eq!(s2.expected(9), 1);
        // The log lost the last batches (crash between intent and append).
        let s3 = SeqState::load(dir.path(), 12, false).unwrap();
        assert_eq!(s3.expected(7), 1, "batch 1 of producer 7 is not stored");
        assert_eq!(s3.get(7).unwrap().last_first, 0);
        assert_eq!(s3.expected(9), 0, "producer 9's only batch is not stored");
    }

    #[test]
    fn a_torn_newer_slot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeqState::load(dir.path(), 0, false).unwrap();
        s.record(1, 0, 0, 1);
        s.persist().unwrap(); // slot 1
        s.record(1, 1, 1, 1);
        s.persist().unwrap(); // slot 0
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all_at(&[0xff; 8], 30).unwrap();
        let s2 = SeqState::load(dir.path(), 2, false).unwrap();
        assert_eq!(s2.expected(1), 1);
        f.write_all_at(&[0xff; 8], SLOT_SIZE as u64 + 30).unwrap();
        let e = SeqState::load(dir.path(), 2, false).unwrap_err();
        assert!(e.to_string().contains("damaged in both slots"), "{e}");
    }

    #[test]
    fn the_least_recently_used_producer_is_forgotten() {
        let mut s = SeqState::in_memory();
        for p in 0..MAX_PRODUCERS as u64 + 1 {
            s.record(p, 0, p, 1);
        }
        assert_eq!(s.expected(0), 0);
        assert_eq!(s.expected(MAX_PRODUCERS as u64), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_slots_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_slot(&b);
        }

        #[test]
        fn slots_round_trip(entries in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>()), 0..20), seq in any::<u64>()) {
            let e: Vec<_> = entries.iter().map(|&(id, a, b, c, d)| (id, ProducerState { last_seq: a, last_first: b, last_count: c, prev_first: d, used: 0 })).collect();
            let (s, got) = decode_slot(&encode_slot(seq, e.clone().into_iter())).unwrap();
            prop_assert_eq!(s, seq);
            prop_assert_eq!(got, e);
        }
    }
}
