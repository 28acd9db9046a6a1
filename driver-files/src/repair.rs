//! Explicit repair of a topic's damaged records, never reusing an event id.
//!
//! Nothing repairs silently: writers only cut a torn tail (see [`crate::tail`]), consumers
//! report damaged events as corrupted and move on, `verify` lists them. Repair is the one place
//! where damaged records change, and its rule is:
//!
//! 1. the torn tail is cut, as the next writer would;
//! 2. every record `verify` reports (own checksum fails, offsets overflow or point past the end
//!    of a file, overlap with the previous record, metadata or data checksum mismatch) is
//!    replaced **in place** by a *tombstone* (see [`crate::format`]): its id stays used, so ids
//!    only grow and a consumer's acknowledgements keep meaning the same events. Consumers then
//!    report the id as "removed by topic repair" instead of a checksum error; `verify` counts
//!    tombstones and reports the partition clean;
//! 3. damaged metadata and data bytes are left where they are (not reclaimed), and nothing else
//!    moves. The index is fsynced after each tombstone.
//!
//! A partition whose files are missing or whose index header is foreign is not repaired (that
//! is not a damaged record but a damaged partition): the error says so.

use std::path::Path;

use diaspora_api::Result;
use serde_json::{json, Value};

use crate::error::FilesResult;
use crate::format::IndexRecord;
use crate::partition::PartitionLog;
use crate::topic::{open_partitions, TopicShared};
use crate::verify::verify_partition;

/// What repair did to one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Index of the partition.
    pub partition: usize,
    /// Whole records cut from the torn tail.
    pub cut_records: u64,
    /// Bytes cut from the end of the index (torn tail, partial record included).
    pub cut_bytes: u64,
    /// Records replaced by tombstones, with the problem each had.
    pub tombstoned: Vec<(u64, String)>,
}

impl RepairReport {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "partition": self.partition,
            "cut_records": self.cut_records,
            "cut_bytes": self.cut_bytes,
            "tombstoned": self.tombstoned.iter().map(|(r, p)| json!({"record": r, "problem": p})).collect::<Vec<_>>(),
        })
    }
}

/// Repairs every partition of topic `name` under `root` (see the module documentation).
pub fn repair_topic(root: &Path, name: &str) -> Result<Vec<RepairReport>> {
    diaspora_api::validate_topic_name(name)?;
    let (dir, config) = TopicShared::read_config(root, name)?;
    open_partitions(&dir, &config)
        .into_iter()
        .enumerate()
        .map(|(i, p)| Ok(repair_partition(i, &p?)?))
        .collect()
}

/// Repairs one partition.
pub fn repair_partition(index: usize, log: &PartitionLog) -> FilesResult<RepairReport> {
    let (before, _, _) = log.sizes()?;
    let tail = log.recover_tail()?;
    let mut report = RepairReport {
        partition: index,
        cut_records: tail.cut_records,
        cut_bytes: before.saturating_sub(tail.index_len),
        tombstoned: Vec::new(),
    };
    let found = verify_partition(index, log)?;
    let mut last = None;
    for (id, problem) in found.problems {
        if last == Some(id) {
            continue; // one tombstone per record, whatever the number of problems
        }
        last = Some(id);
        log.rewrite_record(id, &IndexRecord::tombstone(0, 0))?;
        report.tombstoned.push((id, problem));
    }
    Ok(report)
}
