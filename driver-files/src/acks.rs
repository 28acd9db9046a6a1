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
//! Several consumers may share a name while consuming different partitions (one consumer per
//! MPI rank, `partitions: [rank]`), in one process or several. An acknowledgement is therefore
//! a read-merge-write under an exclusive `flock` on the file: the newest valid slot is read,
//! only the acknowledged partition's offset is changed (and only forward), and the result is
//! written into the other slot with the next sequence number. The format is the one of
//! earlier versions (files written before stay readable, and the other way round).
//!
//! The file is created by the first acknowledgement, not by opening a consumer, so a consumer
//! that never acknowledges leaves no trace. A file whose two slots are both damaged is an error
//! that says how to recover: [`reset`] (`diaspora-ctl consumer reset`) restarts the consumer
//! name from the first event of every partition.
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{FilesError, FilesResult};
use crate::sys::FileLock;

/// Magic bytes opening an acknowledgement slot.
pub const ACK_MAGIC: [u8; 8] = *b"DSPACK\0\x02";
const HEADER: usize = 24;

/// Size of one slot for `n` partitions.
pub fn slot_size(n: usize) -> usize {
    HEADER + 8 * n + 4
}

/// The newest valid slot of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    seq: u64,
    /// Slot position (0 or 1) it was read from.
    position: u64,
    next: Vec<u64>,
}

/// What the file holds: nothing yet, or its newest valid slot.
fn read_slots(file: &File, path: &Path, partitions: usize) -> FilesResult<Option<Found>> {
    let size = slot_size(partitions);
    // Never more than two slots, whatever the file's length.
    let mut bytes = vec![0u8; 2 * size];
    let mut len = 0;
    while len < bytes.len() {
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(FilesError::io("read", path, e)),
        }
    }
    bytes.truncate(len);
    if bytes.is_empty() {
        return Ok(None);
    }
    let best = bytes
        .chunks(size)
        .zip(0u64..)
        .filter_map(|(slot, position)| {
            decode(slot, partitions).ok().map(|(seq, next)| Found {
                seq,
                position,
                next,
            })
        })
        .max_by_key(|f| f.seq);
    match best {
        Some(found) => Ok(Some(found)),
        None => {
            // Say why the first slot is unusable.
            let reason = decode(&bytes[..bytes.len().min(size)], partitions)
                .err()
                .unwrap_or_default();
            Err(FilesError::DamagedAcks {
                path: path.to_owned(),
                reason: format!("no valid acknowledgement slot ({reason})"),
                reset: reset_hint(path),
            })
        }
    }
}

/// The command that resets the consumer of the acks file at `path`
/// (`<root>/<topic>/consumers/<name>.acks`).
fn reset_hint(path: &Path) -> String {
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let topic_dir = path.parent().and_then(Path::parent);
    let topic = topic_dir
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned());
    let root = topic_dir
        .and_then(Path::parent)
        .map(|r| shell_word(&r.display().to_string()));
    match (name, topic, root) {
        (Some(name), Some(topic), Some(root)) => format!(
            "diaspora-ctl consumer reset --name {topic} --consumer {name} --driver files \
             --driver.root_path {root}"
        ),
        _ => format!("diaspora_driver_files::acks::reset on {}", path.display()),
    }
}

/// `text` as one shell word (single-quoted unless it is plainly safe).
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn open_rw(path: &Path) -> FilesResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| FilesError::io("open", path, e))
}

/// Writes `next` as the slot following `previous` (the other position, the next sequence).
fn write_slot(
    file: &File,
    path: &Path,
    previous: Option<&Found>,
    next: &[u64],
    sync: bool,
) -> FilesResult<()> {
    let seq = previous.map_or(1, |f| f.seq + 1);
    let position = match previous {
        Some(f) => 1 - f.position,
        None => seq % 2,
    };
    let bytes = encode(seq, next);
    file.write_all_at(&bytes, position * bytes.len() as u64)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
        .map_err(|e| FilesError::io("write", path, e))
}

struct State {
    /// Next offset per partition of the topic, as last read or written by this store.
    next: Vec<u64>,
    /// The file, opened (and created) by the first acknowledgement.
    file: Option<File>,
}

/// The persisted acknowledgements of one consumer name, for the partitions one consumer owns.
pub struct AckStore {
    path: PathBuf,
    partitions: usize,
    owned: Vec<usize>,
    state: Mutex<State>,
    sync: bool,
}

impl AckStore {
    /// Loads the acknowledgements at `path` for a topic of `partitions` partitions, of which
    /// this consumer owns `owned` (the only ones it may acknowledge). The file is not created
    /// until the first acknowledgement. With `sync`, each acknowledgement is on disk
    /// (fdatasync) before `acknowledge` returns.
    pub fn load(path: &Path, partitions: usize, owned: &[usize], sync: bool) -> FilesResult<Self> {
        let found = match File::open(path) {
            Ok(file) => {
                let _lock =
                    FileLock::lock(&file, false).map_err(|e| FilesError::io("lock", path, e))?;
                read_slots(&file, path, partitions)?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(FilesError::io("open", path, e)),
        };
        if let Some(&partition) = owned.iter().find(|&&p| p >= partitions) {
            return Err(FilesError::NotConsumed {
                path: path.to_owned(),
                partition,
            });
        }
        Ok(AckStore {
            path: path.to_owned(),
            partitions,
            owned: owned.to_vec(),
            state: Mutex::new(State {
                next: found.map_or_else(|| vec![0; partitions], |f| f.next),
                file: None,
            }),
            sync,
        })
    }

    /// Offset of the first unacknowledged event of each partition of the topic, as loaded
    /// (or as acknowledged through this store since).
    pub fn next_offsets(&self) -> Vec<u64> {
        self.state.lock().next.clone()
    }

    /// Records that events up to `id` of `partition` were processed, and persists it, merged
    /// with what other consumers of the same name wrote for other partitions. Never moves an
    /// offset backwards.
    pub fn acknowledge(&self, partition: usize, id: u64) -> FilesResult<()> {
        if !self.owned.contains(&partition) {
            return Err(FilesError::NotConsumed {
                path: self.path.clone(),
                partition,
            });
        }
        let wanted = id.saturating_add(1);
        let mut guard = self.state.lock();
        let State { next: known, file } = &mut *guard;
        if wanted <= known[partition] {
            return Ok(());
        }
        let file = match file {
            Some(f) => f,
            None => file.insert(open_rw(&self.path)?),
        };
        // Serializes with every other store of this name, in this process or another.
        let _lock =
            FileLock::lock(file, true).map_err(|e| FilesError::io("lock", &self.path, e))?;
        let found = read_slots(file, &self.path, self.partitions)?;
        let mut next = found
            .as_ref()
            .map_or_else(|| vec![0; self.partitions], |f| f.next.clone());
        if next[partition] < wanted {
            next[partition] = wanted;
            write_slot(file, &self.path, found.as_ref(), &next, self.sync)?;
        } // else another consumer of this name got further on this partition
        *known = next;
        Ok(())
    }
}

/// Resets the acknowledgements at `path` (a topic of `partitions` partitions) so the consumer
/// name restarts from the first event of every partition, whatever the file holds (two damaged
/// slots included). Meant for when no consumer of that name runs: one that does keeps its
/// in-memory position and writes it back with its next acknowledgement.
pub fn reset(path: &Path, partitions: usize, sync: bool) -> FilesResult<()> {
    let file = open_rw(path)?;
    let _lock = FileLock::lock(&file, true).map_err(|e| FilesError::io("lock", path, e))?;
    let found = read_slots(&file, path, partitions).ok().flatten();
    write_slot(&file, path, found.as_ref(), &vec![0; partitions], sync)?;
    // The other slot: an older state, or garbage; either way, never newer than the reset.
    let size = slot_size(partitions) as u64;
    file.set_len(2 * size)
        .map_err(|e| FilesError::io("truncate", path, e))?;
    Ok(())
}

/// Resets consumer `consumer` of topic `topic` under `root` (see [`reset`]): its next run
/// starts from the first event of every partition. Returns the acknowledgement file's path.
pub fn reset_consumer(root: &Path, topic: &str, consumer: &str) -> diaspora_api::Result<PathBuf> {
    diaspora_api::validate_topic_name(topic)?;
    diaspora_api::validate_consumer_name(consumer)?;
    let config = crate::topic::load_config(root, topic)?;
    let path = root
        .join(topic)
        .join("consumers")
        .join(format!("{consumer}.acks"));
    reset(&path, config.num_partitions, true)?;
    Ok(path)
}

/// Reads the acknowledgements at `path` without changing anything: the next offset of each
/// partition, all zero when the file does not exist.
pub fn read(path: &Path, partitions: usize) -> FilesResult<Vec<u64>> {
    match File::open(path) {
        Ok(file) => {
            let _lock =
                FileLock::lock(&file, false).map_err(|e| FilesError::io("lock", path, e))?;
            Ok(
                read_slots(&file, path, partitions)?
                    .map_or_else(|| vec![0; partitions], |f| f.next),
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(vec![0; partitions]),
        Err(e) => Err(FilesError::io("open", path, e)),
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
        let s = AckStore::load(&p, 3, &[0, 1, 2], false).expect("load");
        assert_eq!(s.next_offsets(), vec![0, 0, 0]);
        s.acknowledge(1, 9).expect("ack");
        s.acknowledge(1, 4).expect("older ack ignored");
        s.acknowledge(2, 0).expect("ack");
        let again = AckStore::load(&p, 3, &[0, 1, 2], false).expect("reload");
        assert_eq!(again.next_offsets(), vec![0, 10, 1]);
        assert!(s.acknowledge(3, 0).is_err());
    }

    #[test]
    fn a_missing_file_reads_as_nothing_acknowledged_but_other_open_errors_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read(&dir.path().join("none.acks"), 2).expect("read"),
            [0, 0]
        );
        // A path under a regular file: ENOTDIR, not NotFound.
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        assert_unusable(&file.join("c.acks"));
    }

    /// Both ways of reading the acknowledgements at `p` fail with an I/O error.
    fn assert_unusable(p: &Path) {
        assert!(matches!(read(p, 2), Err(FilesError::Io { .. })));
        assert!(matches!(
            AckStore::load(p, 2, &[0, 1], false),
            Err(FilesError::Io { .. })
        ));
    }

    #[test]
    fn an_unreadable_acknowledgement_file_is_an_error_not_a_hang() {
        // A directory opens but every read fails (EISDIR): reported, never retried forever.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        std::fs::create_dir(&p).expect("mkdir");
        assert_unusable(&p);
    }

    #[test]
    fn an_acknowledgement_another_store_already_wrote_is_not_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let a = AckStore::load(&p, 2, &[0, 1], false).expect("load a");
        let b = AckStore::load(&p, 2, &[0, 1], false).expect("load b");
        a.acknowledge(0, 4).expect("a acks");
        let before = std::fs::read(&p).expect("read");
        b.acknowledge(0, 4).expect("b acks the same event");
        assert_eq!(std::fs::read(&p).expect("read"), before, "nothing to write");
        assert_eq!(b.next_offsets(), [5, 0], "b learns the merged state");
        b.acknowledge(0, 5).expect("b gets further");
        assert_eq!(read(&p, 2).expect("read"), [6, 0]);
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_acknowledgement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 2, &[0, 1], true).expect("load");
        s.acknowledge(0, 5).expect("ack seq 1 -> slot 1");
        s.acknowledge(0, 7).expect("ack seq 2 -> slot 0");
        drop(s);
        let mut b = std::fs::read(&p).expect("read");
        b[HEADER] ^= 1; // tear slot 0 (the newest)
        std::fs::write(&p, &b).expect("write");
        let s = AckStore::load(&p, 2, &[0, 1], false).expect("falls back");
        assert_eq!(s.next_offsets(), vec![6, 0]);
        // The next acknowledgement overwrites the torn slot and wins again.
        s.acknowledge(0, 8).expect("ack");
        assert_eq!(
            AckStore::load(&p, 2, &[0, 1], false)
                .expect("reload")
                .next_offsets(),
            vec![9, 0]
        );
    }

    #[test]
    fn unusable_ack_file_is_an_error_not_a_silent_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        AckStore::load(&p, 2, &[0, 1], false)
            .expect("load")
            .acknowledge(0, 5)
            .expect("ack");
        assert!(
            AckStore::load(&p, 3, &[0, 1, 2], false).is_err(),
            "partition count mismatch"
        );
        std::fs::write(&p, b"garbage that is not an ack file at all").expect("write");
        let e = AckStore::load(&p, 2, &[0, 1], false)
            .err()
            .expect("corrupt");
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
            if let Ok(s) = AckStore::load(&p, 2, &[0, 1], false) {
                assert!(
                    bytes.is_empty(),
                    "random file accepted: {:?}",
                    s.next_offsets()
                );
            }
        }
    }

    #[test]
    fn a_file_damaged_under_a_running_consumer_fails_its_acks_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 2, &[0, 1], false).expect("load");
        s.acknowledge(0, 1).expect("ack");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..500u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if round % 2 == 0 && len >= 8 {
                bytes[..8].copy_from_slice(&ACK_MAGIC);
            }
            std::fs::write(&p, &bytes).expect("write");
            // Never a silent overwrite of what other consumers of the name wrote.
            let e = s.acknowledge(1, 10 + round).expect_err("damaged file");
            assert!(e.to_string().contains("consumer reset"), "{e}");
            assert_eq!(
                std::fs::read(&p).expect("read"),
                bytes,
                "file left as it was"
            );
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

    #[test]
    fn stores_of_one_name_on_different_partitions_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let a = AckStore::load(&p, 3, &[0], false).expect("load a");
        let b = AckStore::load(&p, 3, &[2], false).expect("load b");
        a.acknowledge(0, 4).expect("ack a");
        b.acknowledge(2, 9).expect("ack b");
        a.acknowledge(0, 6).expect("ack a again");
        assert_eq!(read(&p, 3).expect("read"), vec![7, 0, 10]);
        // Only owned partitions may be acknowledged.
        let e = a.acknowledge(2, 100).expect_err("not owned");
        assert!(
            e.to_string()
                .contains("partition 2 is not one this consumer consumes"),
            "{e}"
        );
        assert_eq!(read(&p, 3).expect("read"), vec![7, 0, 10]);
        // A second store on the same partition never moves it backwards.
        let c = AckStore::load(&p, 3, &[2], false).expect("load c");
        b.acknowledge(2, 20).expect("ack b");
        c.acknowledge(2, 15).expect("stale ack is a no-op");
        assert_eq!(read(&p, 3).expect("read"), vec![7, 0, 21]);
        assert_eq!(c.next_offsets()[2], 21, "the store learns the newer offset");
    }

    #[test]
    fn reset_hint_quotes_odd_roots() {
        let hint = reset_hint(Path::new("/data/my root/it's/t/consumers/c.acks"));
        assert!(
            hint.ends_with(r"--driver.root_path '/data/my root/it'\''s'"),
            "{hint}"
        );
        assert!(reset_hint(Path::new("/d/t/consumers/c.acks")).ends_with("root_path /d"));
    }

    #[test]
    fn loading_creates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let s = AckStore::load(&p, 2, &[0, 1], false).expect("load");
        assert!(
            !p.exists(),
            "the file is created by the first acknowledgement"
        );
        s.acknowledge(1, 0).expect("ack");
        assert_eq!(read(&p, 2).expect("read"), vec![0, 1]);
    }

    #[test]
    fn files_of_earlier_versions_still_load() {
        // Written as earlier versions did: seq 1 in slot 1, seq 2 in slot 0.
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.acks");
        let mut bytes = encode(2, &[5, 8]);
        bytes.extend_from_slice(&encode(1, &[5, 3]));
        std::fs::write(&p, &bytes).expect("write");
        let s = AckStore::load(&p, 2, &[1], false).expect("load");
        assert_eq!(s.next_offsets(), vec![5, 8]);
        s.acknowledge(1, 8).expect("ack");
        let after = std::fs::read(&p).expect("read");
        assert_eq!(
            &after[..slot_size(2)],
            &encode(2, &[5, 8])[..],
            "newest slot kept"
        );
        assert_eq!(decode(&after[slot_size(2)..], 2), Ok((3, vec![5, 9])));
    }

    #[test]
    fn two_damaged_slots_say_how_to_recover_and_reset_recovers() {
        let root = tempfile::tempdir().expect("tempdir");
        let consumers = root.path().join("topic").join("consumers");
        std::fs::create_dir_all(&consumers).expect("mkdir");
        let p = consumers.join("c.acks");
        let s = AckStore::load(&p, 2, &[0, 1], false).expect("load");
        s.acknowledge(0, 5).expect("ack");
        s.acknowledge(1, 5).expect("ack");
        drop(s);
        let mut b = std::fs::read(&p).expect("read");
        b[HEADER] ^= 1;
        b[slot_size(2) + HEADER] ^= 1;
        std::fs::write(&p, &b).expect("write");
        let msg = AckStore::load(&p, 2, &[0, 1], false)
            .err()
            .expect("both slots damaged")
            .to_string();
        assert!(msg.contains("no valid acknowledgement slot"), "{msg}");
        assert!(
            msg.contains("diaspora-ctl consumer reset --name topic --consumer c"),
            "{msg}"
        );
        assert!(msg.contains(&root.path().display().to_string()), "{msg}");
        reset(&p, 2, true).expect("reset");
        let s = AckStore::load(&p, 2, &[0, 1], false).expect("loads after reset");
        assert_eq!(s.next_offsets(), vec![0, 0]);
        s.acknowledge(1, 2).expect("ack after reset");
        assert_eq!(read(&p, 2).expect("read"), vec![0, 3]);
        // Resetting a healthy file goes back to the start too, and outranks its slots.
        reset(&p, 2, false).expect("reset");
        assert_eq!(read(&p, 2).expect("read"), vec![0, 0]);
        std::fs::write(&p, vec![0xee; 4 * slot_size(2)]).expect("garbage, too long");
        reset(&p, 2, false).expect("reset garbage");
        assert_eq!(
            std::fs::metadata(&p).expect("stat").len(),
            2 * slot_size(2) as u64
        );
        assert_eq!(read(&p, 2).expect("read"), vec![0, 0]);
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
}
