//! A minimal in-memory driver, registered as "memory": a baseline measuring what the API itself
//! costs (validation, partition selection, futures, events) without any storage, to compare
//! real drivers against. Events are kept in memory for the life of the process, so memory grows
//! with the number of events (unlike a real driver).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use diaspora_api::{
    Acknowledger, BytesMut, ConsumerBackend, ConsumerOptions, DataDescriptor, DataSelector,
    DataView, DriverBackend, Error, Event, EventId, Future, Metadata, PartitionInfo,
    ProducerBackend, ProducerOptions, Result, TopicBackend, TopicPolicies, Value, Waitable,
};

/// Registers the "memory" driver.
pub fn register() {
    diaspora_api::register_driver("memory", |_| Ok(Arc::new(MemDriver::default())));
}

#[derive(Default)]
struct MemDriver {
    topics: Mutex<BTreeMap<String, Arc<MemTopic>>>,
}

type Log = Mutex<Vec<(Metadata, DataView)>>;

struct MemTopic {
    name: String,
    options: Value,
    policies: TopicPolicies,
    partitions: Vec<Log>,
    complete: AtomicBool,
    /// Next event to read, per (consumer name, partition).
    acks: Mutex<HashMap<(String, usize), EventId>>,
}

impl DriverBackend for MemDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        let mut topics = lock(&self.topics);
        if topics.contains_key(name) {
            return Err(Error::TopicExists(name.to_owned()));
        }
        let n = options
            .get("num_partitions")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1) as usize;
        let topic = MemTopic {
            name: name.to_owned(),
            options: options.clone(),
            policies: TopicPolicies::from_options(options)?,
            partitions: (0..n).map(|_| Log::default()).collect(),
            complete: AtomicBool::new(false),
            acks: Mutex::new(HashMap::new()),
        };
        topics.insert(name.to_owned(), Arc::new(topic));
        Ok(())
    }
    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        match lock(&self.topics).get(name) {
            Some(t) => Ok(Arc::new(TopicRef(t.clone()))),
            None => Err(Error::TopicNotFound(name.to_owned())),
        }
    }
    fn topic_exists(&self, name: &str) -> Result<bool> {
        Ok(lock(&self.topics).contains_key(name))
    }
    fn list_topics(&self) -> Result<Vec<String>> {
        Ok(lock(&self.topics).keys().cloned().collect())
    }
}

impl TopicBackend for TopicRef {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn options(&self) -> Value {
        self.0.options.clone()
    }
    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        Ok((0..self.0.partitions.len())
            .map(|index| PartitionInfo {
                index,
                info: Value::from(lock(&self.0.partitions[index]).len()),
            })
            .collect())
    }
    fn policies(&self) -> &TopicPolicies {
        &self.0.policies
    }
    fn producer(&self, _: &str, _: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        Ok(Arc::new(MemProducer {
            topic: self.0.clone(),
        }))
    }
    fn consumer(&self, name: &str, options: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        let topic = self.0.clone();
        let partitions = options
            .partitions
            .clone()
            .unwrap_or_else(|| (0..topic.partitions.len()).collect());
        if let Some(&bad) = partitions.iter().find(|&&p| p >= topic.partitions.len()) {
            return Err(Error::InvalidPartition {
                index: bad,
                count: topic.partitions.len(),
            });
        }
        let next = {
            let acks = lock(&topic.acks);
            partitions
                .iter()
                .map(|&p| acks.get(&(name.to_owned(), p)).copied().unwrap_or(0))
                .collect()
        };
        Ok(Arc::new(MemConsumer(Arc::new(ConsumerState {
            topic,
            name: name.to_owned(),
            selector: options.data_selector,
            partitions,
            next: Mutex::new(next),
            turn: AtomicUsize::new(0),
        }))))
    }
    fn mark_as_complete(&self) -> Result<()> {
        self.0.complete.store(true, Ordering::Release);
        Ok(())
    }
    fn is_complete(&self) -> Result<bool> {
        Ok(self.0.complete.load(Ordering::Acquire))
    }
}

/// What `open_topic` hands out: an owning handle, so producers and consumers can keep the topic.
struct TopicRef(Arc<MemTopic>);

struct MemProducer {
    topic: Arc<MemTopic>,
}

impl ProducerBackend for MemProducer {
    fn push(
        &self,
        metadata: Metadata,
        data: DataView,
        partition: Option<usize>,
    ) -> Future<EventId> {
        let n = self.topic.partitions.len();
        let p = match self
            .topic
            .policies
            .select_partition(&metadata, n, partition)
        {
            Ok(p) => p,
            Err(e) => return Future::failed(e),
        };
        let mut log = lock(&self.topic.partitions[p]);
        log.push((metadata, data));
        Future::ready(log.len() as EventId - 1)
    }
    fn flush(&self) -> Future<()> {
        Future::ready(())
    }
}

struct ConsumerState {
    topic: Arc<MemTopic>,
    name: String,
    selector: Option<DataSelector>,
    partitions: Vec<usize>,
    next: Mutex<Vec<EventId>>,
    turn: AtomicUsize,
}

struct MemConsumer(Arc<ConsumerState>);

impl ConsumerBackend for MemConsumer {
    fn pull(&self) -> Future<Event> {
        match self.0.try_pull() {
            Some(e) => Future::ready(e),
            None => Future::pending(Box::new(Poll(self.0.clone()))),
        }
    }
}

impl ConsumerState {
    fn try_pull(self: &Arc<Self>) -> Option<Event> {
        let mut next = lock(&self.next);
        let k = self.partitions.len();
        for i in 0..k {
            let slot = (self.turn.fetch_add(1, Ordering::Relaxed) + i) % k;
            let p = self.partitions[slot];
            let log = lock(&self.topic.partitions[p]);
            let id = next[slot];
            if let Some((m, d)) = log.get(id as usize) {
                next[slot] += 1;
                let data = self.select(m, d);
                let acker: Arc<dyn Acknowledger> = self.clone();
                return Some(Event::new(id, p, m.clone(), data, acker));
            }
        }
        if self.topic.complete.load(Ordering::Acquire) {
            return Some(Event::no_more_events());
        }
        None
    }

    fn select(&self, m: &Metadata, d: &DataView) -> DataView {
        let Some(selector) = &self.selector else {
            return DataView::new();
        };
        let desc = selector(m, &DataDescriptor::new(Default::default(), d.len()));
        if desc.size() == d.len() && desc.flatten().len() <= 1 {
            return d.clone();
        }
        let mut out = BytesMut::zeroed(desc.size() as usize);
        let mut at = 0;
        for s in desc.flatten() {
            at += d.copy_to(s.offset, &mut out[at..at + s.len as usize]);
        }
        DataView::from(out.freeze())
    }
}

impl Acknowledger for ConsumerState {
    fn acknowledge(&self, partition: usize, id: EventId) -> Result<()> {
        lock(&self.topic.acks).insert((self.name.clone(), partition), id + 1);
        Ok(())
    }
}

struct Poll(Arc<ConsumerState>);

impl Waitable<Event> for Poll {
    fn wait_until(&mut self, deadline: Option<Instant>) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.0.try_pull() {
                return Some(Ok(e));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    fn is_ready(&self) -> bool {
        false
    }
}

/// Locks, ignoring poisoning (a panicking benchmark thread aborts the run anyway).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
