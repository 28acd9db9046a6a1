//! [`Event`]: what a consumer receives.

use std::sync::Arc;

use crate::data::DataView;
use crate::driver::PartitionInfo;
use crate::error::{Error, Result};
use crate::metadata::Metadata;

/// Identifier of an event inside its partition: its position in the partition's log.
pub type EventId = u64;

/// The id carried by the end-of-stream marker (see [`Event::is_no_more_events`]).
pub const NO_MORE_EVENTS: EventId = u64::MAX;

/// Records acknowledgements; implemented by drivers.
pub trait Acknowledger: Send + Sync {
    /// Records that the consumer processed every event of `partition` up to and including `id`.
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()>;
}

/// An event pulled by a consumer: id, partition, metadata and (selected) data.
///
/// One pointer wide: an event is moved several times between the storage read and the
/// application (queue, future, result), and its fields take 160 bytes; moving them was a
/// quarter of a metadata-only files consumer's time, one allocation per event is less.
#[derive(Clone)]
pub struct Event {
    inner: Box<Fields>,
}

#[derive(Clone)]
struct Fields {
    id: EventId,
    partition: usize,
    metadata: Metadata,
    data: DataView,
    acker: Option<Arc<dyn Acknowledger>>,
    /// Driver-specific details of the partition (see [`Event::partition_info`]).
    partition_info: Option<Arc<serde_json::Value>>,
}

impl Event {
    /// Builds an event (for drivers).
    pub fn new(
        id: EventId,
        partition: usize,
        metadata: Metadata,
        data: DataView,
        acker: Arc<dyn Acknowledger>,
    ) -> Self {
        Event {
            inner: Box::new(Fields {
                id,
                partition,
                metadata,
                data,
                acker: Some(acker),
                partition_info: None,
            }),
        }
    }

    /// Attaches driver-specific details of the event's partition (shared by its events),
    /// returned by [`Event::partition_info`].
    pub fn with_partition_info(mut self, info: Arc<serde_json::Value>) -> Self {
        self.inner.partition_info = Some(info);
        self
    }

    /// The end-of-stream marker returned once a completed topic has been fully consumed.
    pub fn no_more_events() -> Self {
        Event {
            inner: Box::new(Fields {
                id: NO_MORE_EVENTS,
                partition: 0,
                metadata: Metadata::from_value(serde_json::Value::Null),
                data: DataView::new(),
                acker: None,
                partition_info: None,
            }),
        }
    }

    /// Whether this is the end-of-stream marker.
    pub fn is_no_more_events(&self) -> bool {
        self.inner.id == NO_MORE_EVENTS
    }

    /// Position of the event in its partition.
    pub fn id(&self) -> EventId {
        self.inner.id
    }

    /// Partition the event belongs to.
    pub fn partition(&self) -> usize {
        self.inner.partition
    }

    /// The partition the event belongs to, with what the driver tells of it (upstream's
    /// `Event::partition()`; the files driver gives its `path`). `info` is `{}` when the driver
    /// attaches nothing.
    pub fn partition_info(&self) -> PartitionInfo {
        PartitionInfo {
            index: self.inner.partition,
            info: self
                .inner
                .partition_info
                .as_deref()
                .cloned()
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        }
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// The data selected by the consumer's data selector (empty if none).
    pub fn data(&self) -> &DataView {
        &self.inner.data
    }

    /// The event with other data (the copy fallback of buffer allocators).
    pub(crate) fn with_data(mut self, data: DataView) -> Self {
        self.inner.data = data;
        self
    }

    /// Splits the event into metadata and data.
    pub fn into_parts(self) -> (Metadata, DataView) {
        let Fields { metadata, data, .. } = *self.inner;
        (metadata, data)
    }

    /// Acknowledges this event and every earlier event of its partition for this consumer name:
    /// a restarted consumer with the same name resumes after it.
    pub fn acknowledge(&self) -> Result<()> {
        match &self.inner.acker {
            Some(a) => a.acknowledge(self.inner.partition, self.inner.id),
            None => Err(Error::Unsupported("acknowledging the end-of-stream marker")),
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_no_more_events() {
            return f.write_str("Event(NoMoreEvents)");
        }
        f.debug_struct("Event")
            .field("id", &self.inner.id)
            .field("partition", &self.inner.partition)
            .field("metadata", &self.inner.metadata)
            .field("data", &self.inner.data)
            .finish()
    }
}
