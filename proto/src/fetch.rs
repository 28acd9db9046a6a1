//! Consuming: [`Fetch`] (long poll), [`FetchData`] (selected ranges), [`Commit`] and
//! [`Subscribe`] (the persisted position of a consumer name).
//!
//! ```text
//! Fetch request:
//! | topic str | partition u32 | consumer str (≤ 255, may be "") | from_id u64 | max_events u32 |
//! | max_bytes u64 | wait_ms u32 | flags u16 | rsvd u16 = 0 | landing: count u32 + regions |
//!   flags: bit 0 WANT_DATA (write the events' data into the landing regions),
//!          bit 1 FROM_COMMITTED (start at the consumer's persisted position, not from_id)
//! Fetch response:
//! | first_id u64 | count u32 | flags u16 | rsvd u16 = 0 | meta_len u64 | data_len u64 |
//! | table: u32 len + bytes (empty when TABLE_IN_LANDING) |
//!   flags: bit 0 END_OF_STREAM (topic complete and every event before first_id + count read)
//!          bit 1 TABLE_IN_LANDING, bit 2 DATA_IN_LANDING
//!   landing bytes, written by RDMA before the response is sent, back to back over the
//!   regions: [table if TABLE_IN_LANDING][data of each event if DATA_IN_LANDING]
//!
//! FetchData request:  | topic str | partition u32 | ranges: count u32 + (id u64, offset u64,
//!                       len u64) × count | landing: count u32 + regions |
//! FetchData response: | total u64 |   (range i's bytes follow range i-1's in the landing)
//!
//! Commit request:     | topic str | partition u32 | consumer str (1..=255) | next_id u64 |
//! Commit response:    | next_id u64 |   (the persisted position: monotonic, never backwards)
//! Subscribe request:  | topic str | partition u32 | consumer str (1..=255) |
//! Subscribe response: | next_id u64 |
//! ```
//!
//! The server answers a fetch as soon as one event is available, or after `wait_ms` with
//! count 0. It picks `count` so that the table fits inline (or, with landing regions, the
//! table and data fit them) and `max_events`/`max_bytes` hold; a landing too small for the
//! first event is [`Status::LandingTooSmall`](crate::Status) with the needed size in `detail`.

use diaspora_rpc::wire::{Reader, WireError, Writer};
use diaspora_rpc::RemoteRegion;

use crate::region::{decode_regions, encode_regions};
use crate::table::{BatchTableRef, PER_EVENT};
use crate::{
    bad_body, name, reserved_u16, too_large, Limits, Message, Op, MAX_CONSUMER_NAME, MAX_TOPIC_NAME,
};

/// Fetch flag: write the data into the landing regions.
pub const WANT_DATA: u16 = 1;
/// Fetch flag: start at the consumer's persisted position.
pub const FROM_COMMITTED: u16 = 2;
/// Response flag: the topic is complete and everything was read.
pub const END_OF_STREAM: u16 = 1;
/// Response flag: the table is in the landing regions.
pub const TABLE_IN_LANDING: u16 = 2;
/// Response flag: the data is in the landing regions.
pub const DATA_IN_LANDING: u16 = 4;
/// Longest long poll.
pub const MAX_WAIT_MS: u32 = 600_000;

/// Request of [`Op::Fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The consumer name ("" when FROM_COMMITTED is not set and nobody commits).
    pub consumer: String,
    /// First event wanted (ignored with FROM_COMMITTED).
    pub from_id: u64,
    /// Most events (1 ..= max_fetch_events).
    pub max_events: u32,
    /// Most bytes of table + data.
    pub max_bytes: u64,
    /// Longest wait for a first event.
    pub wait_ms: u32,
    /// WANT_DATA | FROM_COMMITTED.
    pub flags: u16,
    /// Where the server writes the table (when it does not fit inline) and the data.
    pub landing: Vec<RemoteRegion>,
}

impl Message for Fetch {
    const OP: Op = Op::Fetch;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.bytes(self.topic.as_bytes())
            .u32(self.partition)
            .bytes(self.consumer.as_bytes())
            .u64(self.from_id)
            .u32(self.max_events)
            .u64(self.max_bytes)
            .u32(self.wait_ms)
            .u16(self.flags)
            .u16(0);
        encode_regions(&self.landing, &mut w);
    }

    fn decode(body: &[u8], limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let topic = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let partition = r.u32()?;
        let consumer = r.str(MAX_CONSUMER_NAME)?.to_owned();
        let from_id = r.u64()?;
        let at = r.position();
        let max_events = r.u32()?;
        if max_events == 0 {
            return Err(bad_body(at, 0));
        }
        if max_events > limits.max_fetch_events {
            return Err(too_large(
                at,
                max_events as usize,
                limits.max_fetch_events as usize,
            ));
        }
        let max_bytes = r.u64()?;
        let at = r.position();
        let wait_ms = r.u32()?;
        if wait_ms > MAX_WAIT_MS {
            return Err(too_large(at, wait_ms as usize, MAX_WAIT_MS as usize));
        }
        let at = r.position();
        let flags = r.u16()?;
        if flags & !(WANT_DATA | FROM_COMMITTED) != 0 {
            return Err(bad_body(at, flags as usize));
        }
        if flags & FROM_COMMITTED != 0 && consumer.is_empty() {
            return Err(bad_body(at, flags as usize));
        }
        reserved_u16(&mut r)?;
        let at = r.position();
        let landing = decode_regions(&mut r, limits.max_regions as usize)?;
        if flags & WANT_DATA != 0 && landing.is_empty() {
            return Err(bad_body(at, 0));
        }
        r.finish()?;
        Ok(Fetch {
            topic,
            partition,
            consumer,
            from_id,
            max_events,
            max_bytes,
            wait_ms,
            flags,
            landing,
        })
    }
}

/// Response of [`Op::Fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Id of the first event returned (the start position when count is 0).
    pub first_id: u64,
    /// Events returned.
    pub count: u32,
    /// END_OF_STREAM | TABLE_IN_LANDING | DATA_IN_LANDING.
    pub flags: u16,
    /// Total metadata bytes.
    pub meta_len: u64,
    /// Total data bytes.
    pub data_len: u64,
    /// The table when inline.
    pub table: Option<Vec<u8>>,
}

impl FetchResponse {
    /// Size of the batch table.
    pub fn table_len(&self) -> u64 {
        PER_EVENT as u64 * self.count as u64 + self.meta_len
    }

    /// Whether the stream ended.
    pub fn end_of_stream(&self) -> bool {
        self.flags & END_OF_STREAM != 0
    }
}

impl Message for FetchResponse {
    const OP: Op = Op::Fetch;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .u64(self.first_id)
            .u32(self.count)
            .u16(self.flags)
            .u16(0)
            .u64(self.meta_len)
            .u64(self.data_len)
            .bytes(self.table.as_deref().unwrap_or(&[]));
    }

    fn decode(body: &[u8], limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let first_id = r.u64()?;
        let at = r.position();
        let count = r.u32()?;
        if count > limits.max_fetch_events {
            return Err(too_large(
                at,
                count as usize,
                limits.max_fetch_events as usize,
            ));
        }
        let at = r.position();
        let flags = r.u16()?;
        if flags & !(END_OF_STREAM | TABLE_IN_LANDING | DATA_IN_LANDING) != 0 {
            return Err(bad_body(at, flags as usize));
        }
        reserved_u16(&mut r)?;
        let meta_len = r.u64()?;
        let data_len = r.u64()?;
        let at = r.position();
        let inline = r.bytes(limits.max_inline.max(u16::MAX as u32) as usize)?;
        let table_len = PER_EVENT as u64 * count as u64 + meta_len;
        let table = if flags & TABLE_IN_LANDING != 0 {
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
        r.finish()?;
        Ok(FetchResponse {
            first_id,
            count,
            flags,
            meta_len,
            data_len,
            table,
        })
    }
}

/// One selected range of one event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The event.
    pub id: u64,
    /// Offset in its data.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// Request of [`Op::FetchData`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchData {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The ranges (1 ..= max_fetch_events).
    pub ranges: Vec<Range>,
    /// Where the ranges go, back to back.
    pub landing: Vec<RemoteRegion>,
}

impl Message for FetchData {
    const OP: Op = Op::FetchData;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.bytes(self.topic.as_bytes())
            .u32(self.partition)
            .u32(u32::try_from(self.ranges.len()).unwrap_or(u32::MAX));
        for g in &self.ranges {
            w.u64(g.id).u64(g.offset).u64(g.len);
        }
        encode_regions(&self.landing, &mut w);
    }

    fn decode(body: &[u8], limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let topic = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let partition = r.u32()?;
        let at = r.position();
        let ranges = r.list(limits.max_fetch_events as usize, 24, |r| {
            Ok(Range {
                id: r.u64()?,
                offset: r.u64()?,
                len: r.u64()?,
            })
        })?;
        if ranges.is_empty() {
            return Err(bad_body(at, 0));
        }
        let at = r.position();
        let landing = decode_regions(&mut r, limits.max_regions as usize)?;
        if landing.is_empty() {
            return Err(bad_body(at, 0));
        }
        r.finish()?;
        Ok(FetchData {
            topic,
            partition,
            ranges,
            landing,
        })
    }
}

/// Response of [`Op::FetchData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchDataResponse {
    /// Bytes written into the landing regions.
    pub total: u64,
}

impl Message for FetchDataResponse {
    const OP: Op = Op::FetchData;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out).u64(self.total);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let total = r.u64()?;
        r.finish()?;
        Ok(FetchDataResponse { total })
    }
}

/// Request of [`Op::Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The consumer name.
    pub consumer: String,
    /// One past the last processed event.
    pub next_id: u64,
}

impl Message for Commit {
    const OP: Op = Op::Commit;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .bytes(self.topic.as_bytes())
            .u32(self.partition)
            .bytes(self.consumer.as_bytes())
            .u64(self.next_id);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let topic = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let partition = r.u32()?;
        let consumer = name(&mut r, MAX_CONSUMER_NAME)?.to_owned();
        let next_id = r.u64()?;
        r.finish()?;
        Ok(Commit {
            topic,
            partition,
            consumer,
            next_id,
        })
    }
}

/// Response of [`Op::Commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitResponse {
    /// The persisted position.
    pub next_id: u64,
}

impl Message for CommitResponse {
    const OP: Op = Op::Commit;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out).u64(self.next_id);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let next_id = r.u64()?;
        r.finish()?;
        Ok(CommitResponse { next_id })
    }
}

/// Request of [`Op::Subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The consumer name.
    pub consumer: String,
}

impl Message for Subscribe {
    const OP: Op = Op::Subscribe;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .bytes(self.topic.as_bytes())
            .u32(self.partition)
            .bytes(self.consumer.as_bytes());
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let topic = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let partition = r.u32()?;
        let consumer = name(&mut r, MAX_CONSUMER_NAME)?.to_owned();
        r.finish()?;
        Ok(Subscribe {
            topic,
            partition,
            consumer,
        })
    }
}

/// Response of [`Op::Subscribe`].
pub type SubscribeResponse = CommitResponse;
