//! Read-only full check of a topic's files: every record, checksum and offset.
//!
//! Consumers check what they read; this checks everything, including data nobody selected, and
//! reports problems without repairing anything (a torn tail is cut by the next writer).

use std::os::unix::fs::FileExt;
use std::path::Path;

use diaspora_api::Result;
use serde_json::{json, Value};

use crate::error::{FilesError, FilesResult};
use crate::format::{record_count, record_offset, IndexRecord, INDEX_HEADER_SIZE, RECORD_SIZE};
use crate::partition::PartitionLog;
use crate::topic::TopicShared;

/// Records checked per index read.
const CHUNK_RECORDS: usize = 4096;
/// Size of the buffer data is streamed through.
const DATA_CHUNK: usize = 1 << 20;

/// What was found in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Index of the partition.
    pub partition: usize,
    /// Number of records in the index.
    pub records: u64,
    /// Bytes of an incomplete record at the end of the index (cut by the next append).
    pub torn_tail_bytes: u64,
    /// Problems found, as (record, description).
    pub problems: Vec<(u64, String)>,
}

impl PartitionReport {
    /// Whether nothing is wrong (a torn tail is not an error: no event is lost or served).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "partition": self.partition,
            "records": self.records,
            "torn_tail_bytes": self.torn_tail_bytes,
            "problems": self.problems.iter().map(|(r, p)| json!({"record": r, "problem": p})).collect::<Vec<_>>(),
        })
    }
}

/// Checks every partition of topic `name` under `root`.
pub fn verify_topic(root: &Path, name: &str) -> Result<Vec<PartitionReport>> {
    diaspora_api::validate_topic_name(name)?;
    let topic = TopicShared::open(root, name, diaspora_api::ThreadPool::inline())?;
    topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| verify_partition(i, p).map_err(Into::into))
        .collect()
}

/// Checks one partition.
pub fn verify_partition(index: usize, log: &PartitionLog) -> FilesResult<PartitionReport> {
    let (index_file, meta_file, data_file) = log.files();
    let (index_len, meta_len, data_len) = log.sizes()?;
    let records = record_count(index_len);
    let mut report = PartitionReport {
        partition: index,
        records,
        torn_tail_bytes: index_len.saturating_sub(INDEX_HEADER_SIZE) % RECORD_SIZE as u64,
        problems: Vec::new(),
    };
    let (mut meta_expected, mut data_expected) = (0u64, 0u64);
    let mut buf = vec![0u8; CHUNK_RECORDS * RECORD_SIZE];
    let mut data_buf = vec![0u8; DATA_CHUNK];
    let mut id = 0u64;
    while id < records {
        let n = ((records - id) as usize).min(CHUNK_RECORDS);
        let chunk = &mut buf[..n * RECORD_SIZE];
        index_file
            .read_exact_at(chunk, record_offset(id))
            .map_err(|e| FilesError::io("read", log.dir(), e))?;
        for raw in chunk.chunks_exact(RECORD_SIZE) {
            let mut problem = |what: String| report.problems.push((id, what));
            match IndexRecord::decode(raw) {
                Err(e) => problem(format!("index record fails its check ({e:?})")),
                Ok(rec) => {
                    if rec.meta_offset != meta_expected || rec.data_offset != data_expected {
                        problem("offsets do not follow the previous record".into());
                    }
                    meta_expected = rec.meta_end();
                    data_expected = rec.data_end();
                    if rec.meta_end() > meta_len || rec.data_end() > data_len {
                        problem("points beyond the end of the metadata or data file".into());
                    } else {
                        let mut meta = vec![0u8; rec.meta_len as usize];
                        meta_file
                            .read_exact_at(&mut meta, rec.meta_offset)
                            .map_err(|e| FilesError::io("read", log.dir(), e))?;
                        if crc32fast::hash(&meta) != rec.meta_crc {
                            problem("metadata checksum mismatch".into());
                        }
                        let mut h = crc32fast::Hasher::new();
                        let mut pos = 0u64;
                        while pos < rec.data_len {
                            let k = ((rec.data_len - pos) as usize).min(DATA_CHUNK);
                            data_file
                                .read_exact_at(&mut data_buf[..k], rec.data_offset + pos)
                                .map_err(|e| FilesError::io("read", log.dir(), e))?;
                            h.update(&data_buf[..k]);
                            pos += k as u64;
                        }
                        if h.finalize() != rec.data_crc {
                            problem("data checksum mismatch".into());
                        }
                    }
                }
            }
            id += 1;
        }
    }
    Ok(report)
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
            .join("t/partitions/00001/00000000000000000000.data");
        let mut bytes = std::fs::read(&data).expect("read");
        bytes[3 * 100 + 7] ^= 1; // event 3 of partition 1
        std::fs::write(&data, &bytes).expect("write");
        let index = dir
            .path()
            .join("t/partitions/00000/00000000000000000000.index");
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
