//! Op codes: stable `u16` values, never reused (a retired op keeps its number). Op 0 is the
//! rpc engine's own HELLO.

/// The ops a `diaspora-server` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Authenticate with the group file's token; learn epoch and limits. Any thread.
    Hello = 1,
    /// Create a topic (rank 0, thread 0).
    TopicCreate = 2,
    /// Open a topic: options, partitions, placement (rank 0, thread 0).
    TopicOpen = 3,
    /// Whether a topic exists (rank 0, thread 0).
    TopicExists = 4,
    /// List topics, by pages (rank 0, thread 0).
    TopicList = 5,
    /// Mark a topic complete: no more events; consumers see the end of the stream.
    TopicComplete = 6,
    /// Append one batch to a partition (its owning thread).
    ProduceBatch = 7,
    /// Fetch events of a partition, long poll (its owning thread).
    Fetch = 8,
    /// Fetch selected data ranges of already fetched events (its owning thread).
    FetchData = 9,
    /// Persist a consumer's position in a partition (its owning thread).
    Commit = 10,
    /// A consumer's persisted position in a partition (its owning thread).
    Subscribe = 11,
}

impl Op {
    /// Every op, in code order.
    pub const ALL: [Op; 11] = [
        Op::Hello,
        Op::TopicCreate,
        Op::TopicOpen,
        Op::TopicExists,
        Op::TopicList,
        Op::TopicComplete,
        Op::ProduceBatch,
        Op::Fetch,
        Op::FetchData,
        Op::Commit,
        Op::Subscribe,
    ];

    /// The wire value.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The op of a wire value, if known.
    pub fn from_code(v: u16) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.code() == v)
    }

    /// Ops a client may send before [`Op::Hello`] succeeded: only Hello itself.
    pub fn needs_session(self) -> bool {
        self != Op::Hello
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_are_stable() {
        let table = [
            (Op::Hello, 1),
            (Op::TopicCreate, 2),
            (Op::TopicOpen, 3),
            (Op::TopicExists, 4),
            (Op::TopicList, 5),
            (Op::TopicComplete, 6),
            (Op::ProduceBatch, 7),
            (Op::Fetch, 8),
            (Op::FetchData, 9),
            (Op::Commit, 10),
            (Op::Subscribe, 11),
        ];
        for (op, v) in table {
            assert_eq!(op.code(), v);
            assert_eq!(Op::from_code(v), Some(op));
        }
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(12), None);
    }
}
