//! Read-only full check of a topic's files: every record, checksum and offset.
//!
//! Consumers check what they read; this checks everything, including data nobody selected, and
//! reports problems without changing anything (it works on a read-only tree). Every offset and
//! length read from the index is range-checked; a record that cannot be read is listed as a
//! problem and the check goes on: verify never aborts on a bad record. [`crate::repair`] fixes
//! what this reports.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use diaspora_api::Result;
use serde_json::{json, Value};

use crate::error::FilesResult;
use crate::format::{record_offset, IndexRecord, RECORD_SIZE};
use crate::partition::PartitionLog;
use crate::topic::{open_partitions, TopicShared};

/// Records checked per index read.
const CHUNK_RECORDS: usize = 4096;
/// Size of the buffer metadata and data are streamed through.
const DATA_CHUNK: usize = 1 << 20;

/// What was found in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Index of the partition.
    pub partition: usize,
    /// Number of records in the index (torn tail excluded).
    pub records: u64,
    /// Bytes at the end of the index that the next writer cuts as a torn tail: a partial record
    /// and whole records that fail their checksum after the last valid one (see
    /// [`crate::tail`]). A torn tail is not an error: those events were never reported stored.
    pub torn_tail_bytes: u64,
    /// Whole records in the torn tail.
    pub torn_tail_records: u64,
    /// Records replaced by tombstones by an earlier repair (their events are lost, their ids
    /// stay used).
    pub tombstones: u64,
    /// Why the partition could not be checked at all (missing file, foreign header...).
    pub unreadable: Option<String>,
    /// Problems found, as (record, description).
    pub problems: Vec<(u64, String)>,
}

impl PartitionReport {
    /// Whether nothing is wrong (a torn tail or a tombstone is not an error: no event is
    /// served wrong).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.unreadable.is_none()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "partition": self.partition,
            "records": self.records,
            "torn_tail_bytes": self.torn_tail_bytes,
            "torn_tail_records": self.torn_tail_records,
            "tombstones": self.tombstones,
            "problems": self.problems.iter().map(|(r, p)| json!({"record": r, "problem": p})).collect::<Vec<_>>(),
        });
        if let Some(why) = &self.unreadable {
            v["unreadable"] = json!(why);
        }
        v
    }
}

/// Checks every partition of topic `name` under `root`. Fails only if the topic itself cannot
/// be opened (missing, unreadable `topic.json`); a damaged partition is reported, not raised.
pub fn verify_topic(root: &Path, name: &str) -> Result<Vec<PartitionReport>> {
    diaspora_api::validate_topic_name(name)?;
    let (dir, config) = TopicShared::read_config(root, name)?;
    Ok(open_partitions(&dir, &config)
        .into_iter()
        .enumerate()
        .map(|(i, p)| match p {
            Ok(log) => verify_partition(i, &log).unwrap_or_else(|e| PartitionReport {
                partition: i,
                unreadable: Some(e.to_string()),
                ..Default::default()
            }),
            Err(e) => PartitionReport {
                partition: i,
                unreadable: Some(e.to_string()),
                ..Default::default()
            },
        })
        .collect())
}

/// Checks one partition. Fails only if its files cannot be opened or measured.
pub fn verify_partition(index: usize, log: &PartitionLog) -> FilesResult<PartitionReport> {
    let files = log.files()?;
    let tail = log.inspect_tail()?;
    let (index_len, meta_len, data_len) = log.sizes()?;
    let records = tail.count;
    let mut report = PartitionReport {
        partition: index,
        records,
        torn_tail_bytes: index_len.saturating_sub(tail.index_len),
        torn_tail_records: tail.cut_records,
        ..Default::default()
    };
    // End of the last sound record: a record may leave a gap after it, never overlap it.
    let (mut meta_prev, mut data_prev) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK_RECORDS * RECORD_SIZE];
    let mut stream = vec![0u8; DATA_CHUNK];
    let mut id = 0u64;
    while id < records {
        let n = ((records - id) as usize).min(CHUNK_RECORDS);
        let chunk = &mut buf[..n * RECORD_SIZE];
        if let Err(e) = files.index.read_exact_at(chunk, record_offset(id)) {
            for k in 0..n as u64 {
                report
                    .problems
                    .push((id + k, format!("cannot read the index record: {e}")));
            }
            id += n as u64;
            continue;
        }
        for raw in chunk.chunks_exact(RECORD_SIZE) {
            let rec = match IndexRecord::decode(raw) {
                Err(e) => {
                    report.problems.push((id, e.to_string()));
                    id += 1;
                    continue;
                }
                Ok(rec) if rec.is_tombstone() => {
                    report.tombstones += 1;
                    id += 1;
                    continue;
                }
                Ok(rec) => rec,
            };
            if let Some(problem) = check_record(
                &rec,
                (meta_prev, data_prev),
                (meta_len, data_len),
                (&files.meta, &files.data),
                &mut stream,
            ) {
                report.problems.push((id, problem));
            }
            if rec.fits(meta_len, data_len) {
                meta_prev = meta_prev.max(rec.meta_end());
                data_prev = data_prev.max(rec.data_end());
            }
            id += 1;
        }
    }
    Ok(report)
}

/// The first problem of a checksum-valid record, if any.
fn check_record(
    rec: &IndexRecord,
    (meta_prev, data_prev): (u64, u64),
    (meta_len, data_len): (u64, u64),
    (meta, data): (&File, &File),
    stream: &mut [u8],
) -> Option<String> {
    let (Some(meta_end), Some(data_end)) = (rec.checked_meta_end(), rec.checked_data_end()) else {
        return Some("offset + length overflows: impossible record".into());
    };
    if meta_end > meta_len {
        return Some(format!(
            "metadata {}..{meta_end} is beyond the end of the metadata file ({meta_len} bytes)",
            rec.meta_offset
        ));
    }
    if data_end > data_len {
        return Some(format!(
            "data {}..{data_end} is beyond the end of the data file ({data_len} bytes)",
            rec.data_offset
        ));
    }
    if rec.meta_offset < meta_prev || rec.data_offset < data_prev {
        return Some("overlaps the previous record".into());
    }
    match stream_crc(meta, rec.meta_offset, u64::from(rec.meta_len), stream) {
        Err(e) => return Some(format!("cannot read the metadata: {e}")),
        Ok(crc) if crc != rec.meta_crc => return Some("metadata checksum mismatch".into()),
        Ok(_) => {}
    }
    match stream_crc(data, rec.data_offset, rec.data_len, stream) {
        Err(e) => Some(format!("cannot read the data: {e}")),
        Ok(crc) if crc != rec.data_crc => Some("data checksum mismatch".into()),
        Ok(_) => None,
    }
}

/// CRC-32 of `len` bytes at `offset`, read through `buf` (memory bounded whatever `len`).
fn stream_crc(file: &File, offset: u64, len: u64, buf: &mut [u8]) -> std::io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut pos = 0u64;
    while pos < len {
        let k = ((len - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..k], offset + pos)?;
        h.update(&buf[..k]);
        pos += k as u64;
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diaspora_api::{json as j, Driver};

    #[test]
    fn verify_reports_exactly_the_damaged_records() {
        crate::register();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Driver::new("files", j!({"root_path": dir.path()})).expect("driver");
        d.create_topic("t", j!({"num_partitions": 2}))
            .expect("create");
        let p = d
            .open_topic("t")
            .expect("open")
            .producer()
            .expect("producer");
        for i in 0..20u32 {
            drop(p.push(j!({"i": i}), vec![i as u8; 100]));
        }
        drop(p);
        let clean = verify_topic(dir.path(), "t").expect("verify");
        assert_eq!(clean.len(), 2);
        assert!(
            clean.iter().all(|r| r.is_clean() && r.records == 10),
            "{clean:?}"
        );

        let data = dir
            .path()
            .join("t/partitions/00000001/00000000000000000000.data");
        let mut bytes = std::fs::read(&data).expect("read");
        bytes[3 * 100 + 7] ^= 1; // event 3 of partition 1
        std::fs::write(&data, &bytes).expect("write");
        let index = dir
            .path()
            .join("t/partitions/00000000/00000000000000000000.index");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&index)
            .expect("open");
        std::io::Write::write_all(&mut f, &[0u8; 13]).expect("torn tail");

        let r = verify_topic(dir.path(), "t").expect("verify");
        assert!(r[0].is_clean());
        assert_eq!(r[0].torn_tail_bytes, 13);
        assert_eq!(
            r[1].problems,
            vec![(3, "data checksum mismatch".to_owned())]
        );
    }

    #[test]
    fn verify_of_missing_topic_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = verify_topic(dir.path(), "nope").expect_err("missing");
        assert!(e.to_string().contains("not found"), "{e}");
        assert!(verify_topic(dir.path(), "../x").is_err());
    }
}
