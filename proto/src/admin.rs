//! Topic administration, served by rank 0, thread 0.
//!
//! ```text
//! TopicCreate   request:  | name str | options str (JSON object) |        response: ||
//! TopicOpen     request:  | name str |
//!               response: | options str (JSON, with num_partitions and policies) | complete u8 |
//!                           | placement: count u32 + count × (rank u32, thread u32) |
//! TopicExists   request:  | name str |                                   response: | exists u8 |
//! TopicList     request:  | after str (names sorted; "" = from the start) |
//!               response: | names: count u32 + count × str | more u8 |
//! TopicComplete request:  | name str |                                   response: ||
//! ```
//!
//! `str` is `u32 len + UTF-8`; names are 1 to 255 bytes. Options are at most the frame's body
//! size. Placement entry p is the (rank, thread) whose address receives partition p's
//! produce, fetch, commit and subscribe requests.

use diaspora_rpc::wire::{Reader, WireError, Writer};

use crate::{bad_body, name, Limits, Message, Op, MAX_TOPIC_NAME};

/// Longest options JSON.
pub const MAX_OPTIONS: usize = 64 * 1024;
/// Most partitions of a topic (the files driver's limit).
pub const MAX_PARTITIONS: usize = 65_536;
/// Most names in one [`TopicListResponse`].
pub const MAX_LIST: usize = 1024;

/// Where one partition is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Placement {
    /// The rank (index into the group file's `ranks`).
    pub rank: u32,
    /// The progress thread (index into that rank's `threads`).
    pub thread: u32,
}

macro_rules! name_only {
    ($(#[$m:meta])* $t:ident, $op:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $t {
            /// The topic.
            pub name: String,
        }

        impl Message for $t {
            const OP: Op = $op;

            fn encode(&self, out: &mut Vec<u8>) {
                Writer::new(out).bytes(self.name.as_bytes());
            }

            fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
                let mut r = Reader::new(body);
                let name = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
                r.finish()?;
                Ok($t { name })
            }
        }
    };
}

name_only!(
    /// Request of [`Op::TopicOpen`].
    TopicOpen,
    Op::TopicOpen
);
name_only!(
    /// Request of [`Op::TopicExists`].
    TopicExists,
    Op::TopicExists
);
name_only!(
    /// Request of [`Op::TopicComplete`]; the response body is empty.
    TopicComplete,
    Op::TopicComplete
);

/// Request of [`Op::TopicCreate`]; the response body is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCreate {
    /// The topic.
    pub name: String,
    /// Topic options as JSON text (the files driver's: num_partitions, sync, validator,
    /// partition_selector, serializer).
    pub options: String,
}

impl Message for TopicCreate {
    const OP: Op = Op::TopicCreate;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out)
            .bytes(self.name.as_bytes())
            .bytes(self.options.as_bytes());
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let name = name(&mut r, MAX_TOPIC_NAME)?.to_owned();
        let options = r.str(MAX_OPTIONS)?.to_owned();
        r.finish()?;
        Ok(TopicCreate { name, options })
    }
}

/// An empty body (responses of create and complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl Message for Empty {
    const OP: Op = Op::TopicCreate;

    fn encode(&self, _out: &mut Vec<u8>) {}

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        Reader::new(body).finish()?;
        Ok(Empty)
    }
}

/// Response of [`Op::TopicOpen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOpenResponse {
    /// The topic's options (JSON text, as stored in its `topic.json`).
    pub options: String,
    /// Whether the topic is complete.
    pub complete: bool,
    /// Where each partition is served (its length is the number of partitions).
    pub placement: Vec<Placement>,
}

impl Message for TopicOpenResponse {
    const OP: Op = Op::TopicOpen;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.bytes(self.options.as_bytes())
            .u8(self.complete as u8)
            .u32(u32::try_from(self.placement.len()).unwrap_or(u32::MAX));
        for p in &self.placement {
            w.u32(p.rank).u32(p.thread);
        }
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let options = r.str(MAX_OPTIONS)?.to_owned();
        let complete = bool_u8(&mut r)?;
        let placement = r.list(MAX_PARTITIONS, 8, |r| {
            Ok(Placement {
                rank: r.u32()?,
                thread: r.u32()?,
            })
        })?;
        if placement.is_empty() {
            return Err(bad_body(r.position(), 0));
        }
        r.finish()?;
        Ok(TopicOpenResponse {
            options,
            complete,
            placement,
        })
    }
}

/// Response of [`Op::TopicExists`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicExistsResponse {
    /// Whether it exists.
    pub exists: bool,
}

impl Message for TopicExistsResponse {
    const OP: Op = Op::TopicExists;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out).u8(self.exists as u8);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let exists = bool_u8(&mut r)?;
        r.finish()?;
        Ok(TopicExistsResponse { exists })
    }
}

/// Request of [`Op::TopicList`]: names after `after`, in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicList {
    /// The last name of the previous page ("" for the first page).
    pub after: String,
}

impl Message for TopicList {
    const OP: Op = Op::TopicList;

    fn encode(&self, out: &mut Vec<u8>) {
        Writer::new(out).bytes(self.after.as_bytes());
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let after = r.str(MAX_TOPIC_NAME)?.to_owned();
        r.finish()?;
        Ok(TopicList { after })
    }
}

/// Response of [`Op::TopicList`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicListResponse {
    /// Names, sorted.
    pub names: Vec<String>,
    /// Whether more names follow (ask again with `after` = the last name).
    pub more: bool,
}

impl Message for TopicListResponse {
    const OP: Op = Op::TopicList;

    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u32(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        for n in &self.names {
            w.bytes(n.as_bytes());
        }
        w.u8(self.more as u8);
    }

    fn decode(body: &[u8], _limits: &Limits) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let names = r.list(MAX_LIST, 5, |r| Ok(name(r, MAX_TOPIC_NAME)?.to_owned()))?;
        let more = bool_u8(&mut r)?;
        r.finish()?;
        Ok(TopicListResponse { names, more })
    }
}

pub(crate) fn bool_u8(r: &mut Reader<'_>) -> Result<bool, WireError> {
    let at = r.position();
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(bad_body(at, v as usize)),
    }
}
