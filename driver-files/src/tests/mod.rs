//! Unit tests that need the driver's internals: user policies that panic, injected store
//! panics, the consumer's read counters.

mod batch_caps;
mod flush_behavior;
mod memory;
mod panics;
mod partition_log;
mod prefetch;
mod push_many;
mod span_reads;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diaspora_api::{
    json, Driver, DriverBackend, Result, ThreadPool, TopicBackend, TopicHandle, TopicPolicies,
    Value,
};

use crate::topic::{FilesTopic, TopicShared};

/// Bound of every wait that must succeed.
pub const TIMEOUT_MS: i64 = 20_000;

/// A files driver whose topics get the given policies instead of those of their options.
struct PolicyDriver {
    root: PathBuf,
    edit: Arc<dyn Fn(&mut TopicPolicies) + Send + Sync>,
}

impl DriverBackend for PolicyDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        crate::topic::create_topic(&self.root, name, options)
    }
    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        let mut shared = TopicShared::open(&self.root, name, ThreadPool::new(2))?;
        let only = Arc::get_mut(&mut shared).expect("a freshly opened topic is not shared");
        (self.edit)(&mut only.policies);
        Ok(Arc::new(FilesTopic {
            shared,
            consumer_read: Default::default(),
        }))
    }
    fn topic_exists(&self, name: &str) -> Result<bool> {
        Ok(self.root.join(name).exists())
    }
    fn list_topics(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Creates topic "t" with `partitions` partitions under `root` and opens it with `edit` applied
/// to its policies.
pub fn topic_with(
    root: &Path,
    partitions: usize,
    edit: impl Fn(&mut TopicPolicies) + Send + Sync + 'static,
) -> TopicHandle {
    let driver = Driver::from_backend(
        "files",
        Arc::new(PolicyDriver {
            root: root.to_owned(),
            edit: Arc::new(edit),
        }),
    );
    driver
        .create_topic("t", json!({ "num_partitions": partitions }))
        .expect("create topic");
    driver.open_topic("t").expect("open topic")
}

/// Writes `events` (metadata, data) to topic "t" with one partition under `root`, flushed.
pub fn write_events(root: &Path, events: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let topic = topic_with(root, 1, |_| {});
    let producer = topic.producer().expect("producer");
    for (meta, data) in events {
        drop(producer.push(meta, data));
    }
    settle(producer.flush(), "flush").expect("flush");
}

/// Consumer "c" of topic "t" under `root`, as the driver builds it (its internals visible).
pub fn files_consumer(
    root: &Path,
    options: diaspora_api::ConsumerOptions,
) -> crate::consumer::FilesConsumer {
    let shared = TopicShared::open(root, "t", ThreadPool::inline()).expect("open");
    crate::consumer::FilesConsumer::new(shared, "c", options).expect("consumer")
}

/// Waits (bounded) for a future; `Err` if it failed, panics if it timed out.
pub fn settle<T>(mut f: diaspora_api::Future<T>, what: &str) -> Result<T> {
    match f.wait(TIMEOUT_MS) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => panic!("{what}: still pending after {TIMEOUT_MS} ms (hung)"),
        Err(e) => Err(e),
    }
}
