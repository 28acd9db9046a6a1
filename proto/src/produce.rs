//! [`ProduceBatch`]: append one batch of events to a partition.
//!
//! ```text
//! request:
//! | topic str | partition u32 | producer_id u64 | seq u64 | count u32 | flags u16 | rsvd u16=0 |
//! | meta_len u64 | data_len u64 | table: u32 len + bytes (empty when TABLE_IN_REGION) |
//! | regions: count u32 + RemoteRegion × count |
//!
//! flags: bit 0 TABLE_IN_REGION; other bits reserved (0).
//! table     = BatchTable of `count` events, 12 × count + meta_len bytes
//! regions   = the producer's registered memory, read back to back by the server:
//!             [table if TABLE_IN_REGION][data of event 0][data of event 1]...
//!             their lengths add up exactly to (TABLE_IN_REGION ? table : 0) + data_len
//!
//! response: | first_id u64 | count u32 | credits u32 |
//! ```
//!
//! Sequence numbers are per (producer_id, topic, partition), starting at 0, one per batch. The
//! server stores batch `seq` only after `seq - 1`: a batch already stored is answered
//! [`Status::Duplicate`](crate::Status) with its first id (a resend is stored once); a batch
//! ahead of the next expected one is answered [`Status::OutOfOrder`](crate::Status) with the
//! expected seq. Every length and count is checked against the [`Limits`] by the decoder,
//! before the server allocates the buffer it reads into.

use diaspora_rpc::wire::{Reader, WireError, Writer};
use diaspora_rpc::RemoteRegion;

use crate::region::{decode_regions, encode_regions, total_len};
use crate::table::{BatchTableRef, PER_EVENT};
use crate::{bad_body, name, too_large, Limits, Message, Op, MAX_TOPIC_NAME};

/// Flag: the batch table is in the region, in front of the data.
pub const TABLE_IN_REGION: u16 = 1;

/// Request of [`Op::ProduceBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceBatch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Random id of the producer instance.
    pub producer_id: u64,
    /// Batch sequence number of this producer in this partition (0, 1, 2, ...).
    pub seq: u64,
    /// Number of events (≥ 1).
    pub count: u32,
    /// Total metadata bytes.
    pub meta_len: u64,
    /// Total data bytes.
    pub data_len: u64,
    /// The encoded batch table when inline; `None` when it is in the region.
    pub table: Option<Vec<u8>>,
    /// The producer's regions.
    pub regions: Vec<RemoteRegion>,
}

impl ProduceBatch {
    /// Size of the encoded batch table.
    pub fn table_len(&self) -> u64 {
        PER_EVENT as u64 * self.count as u64 + self.meta_len
    }

    /// Bytes the server reads from the regions.
    pub fn region_len(&self) -> u64 {
        let table = if self.table.is_some() {
            0
        } else {
            self.table_len()
        };
        table + self.data_len
    }
}

impl Message for ProduceBatch {
    const OP: Op = Op::ProduceBatch;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        let flags = if self.table.is_some() {
            0
        } else {
            TABLE_IN_REGION
        };
        w.bytes(self.topic.as_bytes())
            .u32(self.partition)
            .u64(self.producer_id)
            .u64(self.seq)
            .u32(self.count)
            .u16(flags)
            .u16(0)
            .u64(self.meta_len)
            .u64(self.data_len)
            .bytes(self.table.as_deref().unwrap_or(&[]));
        encode_regions(&self.regions, &mut w);
    }

    fn decode(body: &[u8], limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let topic = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let partition = r.u32()?;
        let producer_id = r.u64()?;
        let seq = r.u64()?;
        let at = r.position();
        let count = r.u32()?;
        if count == 0 {
            return Err(bad_body(at, 0));
        }
        if count > limits.max_batch_events {
            return Err(too_large(
                at,
                count as usize,
                limits.max_batch_events as usize,
            ));
        }
        let at = r.position();
        let flags = r.u16()?;
        if flags & !TABLE_IN_REGION != 0 {
            return Err(bad_body(at, flags as usize));
        }
        crate::reserved_u16(&mut r)?;
        let at = r.position();
        let meta_len = r.u64()?;
        let data_len = r.u64()?;
        let table_len = (PER_EVENT as u64 * count as u64).saturating_add(meta_len);
        let in_region = flags & TABLE_IN_REGION != 0;
        let region_need = data_len.saturating_add(if in_region { table_len } else { 0 });
        let total = table_len.saturating_add(data_len);
        if total > limits.max_batch_bytes {
            return Err(too_large(
                at,
                usize::try_from(total).unwrap_or(usize::MAX),
                usize::try_from(limits.max_batch_bytes).unwrap_or(usize::MAX),
            ));
        }
        let at = r.position();
        let inline = r.bytes(limits.max_inline as usize)?;
        let table = if in_region {
            if !inline.is_empty() {
                return Err(bad_body(at, inline.len()));
            }
            None
        } else {
            if inline.len() as u64 != table_len {
                return Err(bad_body(at, inline.len()));
            }
            let t = BatchTableRef::parse(inline, count as usize)
                .map_err(|e| WireError::new(e.code, at + 4 + e.offset, e.need, e.have))?;
            if t.total_data_len() != data_len {
                return Err(bad_body(at, inline.len()));
            }
            Some(inline.to_vec())
        };
        let at = r.position();
        let regions = decode_regions(&mut r, limits.max_regions as usize)?;
        if total_len(&regions) != region_need {
            return Err(bad_body(
                at,
                usize::try_from(total_len(&regions)).unwrap_or(usize::MAX),
            ));
        }
        if region_need == 0 && !regions.is_empty() {
            return Err(bad_body(at, regions.len()));
        }
        r.finish()?;
        Ok(ProduceBatch {
            topic,
            partition,
            producer_id,
            seq,
            count,
            meta_len,
            data_len,
            table,
            regions,
        })
    }
}

/// Response of [`Op::ProduceBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResponse {
    /// Id of the batch's first event (the others follow).
    pub first_id: u64,
    /// Events stored.
    pub count: u32,
    /// Batches the producer may have in flight on this partition from now on.
    pub credits: u32,
}

impl Message for ProduceResponse {
    const OP: Op = Op::ProduceBatch;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .u64(self.first_id)
            .u32(self.count)
            .u32(self.credits);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let v = ProduceResponse {
            first_id: r.u64()?,
            count: r.u32()?,
            credits: r.u32()?,
        };
        r.finish()?;
        Ok(v)
    }
}
