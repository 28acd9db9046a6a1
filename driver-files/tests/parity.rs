//! Parity with the upstream API (issue 13) through the files driver: user-defined and
//! built-in schema policies on real topics, upstream driver options, introspection, push
//! futures waited on at once, consumption loops, and buffer allocators filling application
//! memory.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use diaspora_api::{
    json, select_all, BatchSize, BufferAllocator, ConsumerBackend, ConsumerOptions, DataBuffer,
    DataDescriptor, DataView, Driver, DriverBackend, Error, ExternalBuffer, Metadata, NumEvents,
    Ordering, PartitionInfo, ProducerBackend, ProducerOptions, Result, ThreadPool, TopicBackend,
    TopicHandle, TopicPolicies, Validator, Value,
};
use diaspora_driver_files::{FilesDriver, FilesDriverOptions, FlushBehavior};

/// Bound of every wait that must succeed.
const T: i64 = 20_000;

fn driver(dir: &std::path::Path, extra: Value) -> Driver {
    diaspora_driver_files::register();
    let mut opts = json!({"root_path": dir});
    if let (Value::Object(o), Value::Object(e)) = (&mut opts, extra) {
        o.extend(e);
    }
    Driver::new("files", opts).expect("driver")
}

fn produce(topic: &TopicHandle, events: &[(Value, Vec<u8>)]) {
    let p = topic.producer().expect("producer");
    for (m, d) in events {
        let _ = p.push(m.clone(), d.clone());
    }
    p.flush().get().expect("flush");
}

struct MaxLen(usize);
impl Validator for MaxLen {
    fn validate(&self, m: &Metadata, _: &DataView) -> Result<()> {
        match m.as_bytes().len() {
            n if n <= self.0 => Ok(()),
            n => Err(Error::ValidationFailed(format!(
                "metadata is {n} bytes, max {}",
                self.0
            ))),
        }
    }
}
fn max_len(spec: &Value) -> Result<Arc<dyn Validator>> {
    let n = spec.get("max").and_then(Value::as_u64).unwrap_or(16) as usize;
    Ok(Arc::new(MaxLen(n)))
}

#[test]
fn validator_registered_in_code_serves_a_topic_that_reopens_with_it() {
    diaspora_api::register_validator("parity_max_len", max_len);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic(
        "t",
        json!({"validator": {"type": "parity_max_len", "max": 12}}),
    )
    .expect("create");
    let p = d
        .open_topic("t")
        .expect("open")
        .producer()
        .expect("producer");
    p.push(r#"{"a":1}"#, ()).get().expect("short enough");
    let e = p
        .push(r#"{"a":"far too long"}"#, ())
        .get()
        .expect_err("too long");
    assert!(e.to_string().contains("max 12"), "{e}");
    drop(p);
    let again = driver(dir.path(), json!({}));
    let topic = again.open_topic("t").expect("reopen");
    let e = topic
        .producer()
        .expect("producer")
        .push(r#"{"a":"far too long"}"#, ())
        .get()
        .expect_err("the reopened topic has the validator");
    assert!(e.to_string().contains("max 12"), "{e}");
    let e = again
        .create_topic("u", json!({"validator": "parity_not_registered"}))
        .expect_err("unknown");
    assert!(e.to_string().contains("parity_not_registered"), "{e}");
}

#[test]
fn json_schema_topic_rejects_events_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    let schema = json!({
        "type": "object",
        "required": ["energy"],
        "properties": {"energy": {"type": "number", "minimum": 0}}
    });
    d.create_topic(
        "t",
        json!({"validator": {"type": "schema", "schema": schema}}),
    )
    .expect("create");
    let topic = d.open_topic("t").expect("open");
    let p = topic.producer().expect("producer");
    p.push(json!({"energy": 1.5}), ()).get().expect("conforms");
    let e = p
        .push(json!({"energy": -3}), ())
        .get()
        .expect_err("negative");
    assert!(matches!(e.root(), Error::ValidationFailed(_)), "{e:?}");
    assert!(e.to_string().contains("/energy"), "{e}");
    let e = p
        .flush()
        .get()
        .expect_err("the rejection is counted by flush");
    assert!(matches!(e, Error::EventsLost { count: 1, .. }), "{e:?}");
    drop(p);
    // Reopened from topic.json, it validates the same way.
    let topic = driver(dir.path(), json!({}))
        .open_topic("t")
        .expect("reopen");
    assert!(topic
        .producer()
        .expect("p")
        .push(json!({}), ())
        .get()
        .is_err());
    // A bad schema fails create_topic and leaves no topic.
    let e = d
        .create_topic(
            "bad",
            json!({"validator": {"type": "schema", "schema": {"type": 5}}}),
        )
        .expect_err("bad schema");
    assert!(e.to_string().contains("validator.schema"), "{e}");
    assert!(!d.topic_exists("bad").expect("exists"));
    // EventBridge patterns too.
    d.create_topic(
        "eb",
        json!({"validator": {"type": "eventbridge", "schema": {"source": [{"prefix": "det"}]}}}),
    )
    .expect("create eventbridge topic");
    let p = d
        .open_topic("eb")
        .expect("open")
        .producer()
        .expect("producer");
    p.push(json!({"source": "detector"}), ())
        .get()
        .expect("matches");
    let e = p
        .push(json!({"source": "sim"}), ())
        .get()
        .expect_err("no match");
    assert!(e.to_string().contains("\"source\""), "{e}");
    let _ = p.flush().get();
}

#[test]
fn upstream_driver_options_are_accepted() {
    let o = FilesDriverOptions::from_json(&json!({
        "root_path": "/x", "flush_behavior": "on_flush", "use_file_locking": false
    }))
    .expect("an upstream config");
    assert_eq!(o.flush_behavior, FlushBehavior::OnFlush);
    assert!(!o.use_file_locking);
    for (v, want) in [
        ("buffered", FlushBehavior::Buffered),
        ("immediate", FlushBehavior::Immediate),
    ] {
        let o = FilesDriverOptions::from_json(&json!({"flush_behavior": v})).expect("ok");
        assert_eq!(o.flush_behavior, want);
    }
    let e = FilesDriverOptions::from_json(&json!({"flush_behavior": "sometimes"}))
        .expect_err("bad value");
    assert!(e.to_string().contains("driver.flush_behavior"), "{e}");
    assert!(FilesDriverOptions::from_json(&json!({"use_file_locking": "yes"})).is_err());
    // No root_path: upstream's default, `diaspora_data` in the current directory.
    let o = FilesDriverOptions::from_json(&json!({})).expect("default root");
    assert_eq!(o.root_path, std::path::PathBuf::from("diaspora_data"));
    assert_eq!(o.flush_behavior, FlushBehavior::Buffered);
}

#[test]
fn every_flush_behavior_stores_and_reads_back() {
    for behavior in ["buffered", "on_flush", "immediate"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = driver(
            dir.path(),
            json!({"flush_behavior": behavior, "use_file_locking": true}),
        );
        d.create_topic("t", json!({"num_partitions": 2}))
            .expect("create");
        let topic = d.open_topic("t").expect("open");
        let events: Vec<_> = (0..50u32)
            .map(|i| (json!({"i": i}), vec![i as u8; 10]))
            .collect();
        produce(&topic, &events);
        produce(&topic, &events[..3]);
        let c = topic.consumer("c").expect("consumer");
        let n = c.process(|_| ControlFlow::Continue(()), 200, NumEvents::infinity());
        assert_eq!(n.expect("process"), 53, "{behavior}");
    }
}

#[test]
fn root_path_defaults_to_diaspora_data_in_the_current_directory() {
    // nextest runs each test in its own process: changing the directory is local to it.
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_current_dir(dir.path()).expect("cd");
    diaspora_driver_files::register();
    let d = Driver::new("files", json!({})).expect("default root");
    d.create_topic("t", json!({})).expect("create");
    assert!(dir.path().join("diaspora_data/t/topic.json").is_file());
}

#[test]
fn introspection_of_driver_topic_producer_consumer_and_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({"thread_count": 3}));
    assert_eq!(d.default_thread_pool().size(), 3);
    d.create_topic(
        "a",
        json!({"num_partitions": 2, "validator": {"type": "required_fields", "fields": ["x"]}}),
    )
    .expect("create");
    d.create_topic("b", json!({})).expect("create");
    let listed = d.list_topics_metadata().expect("list");
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(listed["a"]["num_partitions"], 2);
    assert_eq!(listed["a"]["name"], "a");
    assert_eq!(listed["a"]["validator"]["type"], "required_fields");
    assert!(listed["b"]["path"].as_str().expect("path").ends_with("/b"));

    let topic = d.open_topic("a").expect("open");
    assert_eq!(topic.driver().name(), "files");
    let m = Metadata::from_value(json!({"y": 1}));
    assert!(topic.validator().validate(&m, &DataView::new()).is_err());
    assert!(
        topic
            .partition_selector()
            .select(&m, 2, Some(1))
            .expect("select")
            == 1
    );
    let mut bytes = Vec::new();
    topic
        .serializer()
        .serialize(&m, &mut bytes)
        .expect("serialize");
    assert_eq!(bytes, br#"{"y":1}"#);

    let p = topic.producer().expect("producer");
    assert_eq!(p.name(), "");
    assert_eq!(p.batch_size(), BatchSize::Adaptive);
    assert_eq!(p.max_num_batches(), 8);
    assert_eq!(p.ordering(), Ordering::Strict);
    assert_eq!(p.thread_pool().size(), 3, "the driver's default pool");
    assert_eq!(p.topic().name(), "a");
    let pool = ThreadPool::new(2);
    let p2 = topic
        .producer_with(
            "named",
            ProducerOptions {
                batch_size: BatchSize::Fixed(7),
                max_num_batches: 3,
                ordering: Ordering::Loose,
                thread_pool: Some(pool.clone()),
            },
        )
        .expect("producer");
    assert_eq!(p2.name(), "named");
    assert_eq!(p2.batch_size(), BatchSize::Fixed(7));
    assert_eq!(p2.max_num_batches(), 3);
    assert_eq!(p2.ordering(), Ordering::Loose);
    assert_eq!(p2.thread_pool().size(), 2);
    let _ = p.push(json!({"x": 1}), ());
    p.flush().get().expect("flush");

    let sel = select_all();
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                batch_size: BatchSize::Fixed(5),
                max_num_batches: 4,
                data_selector: Some(sel),
                partitions: Some(vec![1, 0]),
                thread_pool: Some(pool),
                ..Default::default()
            },
        )
        .expect("consumer");
    assert_eq!(c.name(), "c");
    assert_eq!(c.topic().name(), "a");
    assert_eq!(c.batch_size(), BatchSize::Fixed(5));
    assert_eq!(c.max_num_batches(), 4);
    assert_eq!(c.thread_pool().size(), 2);
    assert!(c.data_selector().is_some());
    assert!(c.data_allocator().is_none());
    assert_eq!(c.partitions(), Some(&[1usize, 0][..]));
    let e = c.pull().wait(T).expect("pull").expect("event");
    let PartitionInfo { index, info } = e.partition_info();
    assert_eq!(index, e.partition());
    assert!(
        info["path"]
            .as_str()
            .expect("path")
            .ends_with(&format!("a/partitions/{index:08}")),
        "{info}"
    );
}

#[test]
fn push_future_waited_at_once_with_a_fixed_batch_size_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let topic = d.open_topic("t").expect("open");
    let p = topic
        .producer_with(
            "",
            ProducerOptions {
                batch_size: BatchSize::Fixed(1_000),
                ..Default::default()
            },
        )
        .expect("producer");
    // Without sending on wait, each of these would time out: the batch never fills.
    for i in 0..5u64 {
        let mut f = p.push(json!({"i": i}), vec![1u8; 4]);
        let id = f
            .wait(T)
            .expect("stored")
            .expect("completed within the bound");
        assert_eq!(id, i / 2, "round robin over 2 partitions");
    }
    // Polling does not send: a future left alone completes with the batch.
    let f = p.push(json!({"i": 5}), ());
    assert!(!f.is_ready());
    p.flush().get().expect("flush");
    assert!(f.is_ready());
    assert_eq!(f.get().expect("stored"), 2);
    // A shared future can be waited on again.
    let shared = p.push(json!({"i": 6}), ()).shared();
    assert_eq!(shared.wait(T).expect("ok"), Some(3));
    assert_eq!(shared.clone().get().expect("again"), 3);
    p.flush().get().expect("flush");
    let n = topic
        .consumer("c")
        .expect("consumer")
        .process(|_| ControlFlow::Continue(()), 200, NumEvents::infinity())
        .expect("process");
    assert_eq!(n, 7, "each event stored once");
}

#[test]
fn iterating_a_consumer_ends_at_end_of_stream_or_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic("t", json!({"num_partitions": 3}))
        .expect("create");
    let topic = d.open_topic("t").expect("open");
    let events: Vec<_> = (0..30u32).map(|i| (json!({"i": i}), vec![])).collect();
    produce(&topic, &events);
    // Not complete: iteration ends when no event comes within the timeout.
    let c = topic.consumer("c").expect("consumer");
    assert_eq!(c.events(100).count(), 30);
    // Complete: `for event in &consumer` ends at end-of-stream (not yielded).
    topic.mark_as_complete().expect("complete");
    let c = topic.consumer("other").expect("consumer");
    let mut seen = Vec::new();
    for event in &c {
        let event = event.expect("event");
        seen.push(
            event.metadata().json().expect("json")["i"]
                .as_u64()
                .expect("i"),
        );
        event.acknowledge().expect("ack");
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    // Resumes after the acknowledgements: nothing left.
    assert_eq!(topic.consumer("other").expect("c").events(100).count(), 0);
}

#[test]
fn process_stops_on_break_max_events_and_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let topic = d.open_topic("t").expect("open");
    let events: Vec<_> = (0..100u32).map(|i| (json!({"i": i}), vec![])).collect();
    produce(&topic, &events);
    topic.mark_as_complete().expect("complete");

    let c = topic.consumer("inline").expect("consumer");
    let mut seen = 0u64;
    let n = c
        .process(
            |e| {
                seen += 1;
                e.acknowledge().expect("ack");
                if seen == 10 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
            T,
            NumEvents::infinity(),
        )
        .expect("process");
    assert_eq!((n, seen), (10, 10), "stopped by the processor");
    let n = c
        .process(|_| ControlFlow::Continue(()), T, NumEvents(25))
        .expect("process");
    assert_eq!(n, 25, "max_events");
    let n = c
        .process(|_| ControlFlow::Continue(()), T, NumEvents::infinity())
        .expect("process");
    assert_eq!(n, 65, "the rest, up to end-of-stream");

    let pool = ThreadPool::new(3);
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let n = topic
        .consumer("pooled")
        .expect("consumer")
        .process_with_pool(
            move |_| {
                counted.fetch_add(1, AtomicOrdering::SeqCst);
                ControlFlow::Continue(())
            },
            T,
            NumEvents::infinity(),
            &pool,
        )
        .expect("process");
    assert_eq!(n, 100);
    assert_eq!(
        count.load(AtomicOrdering::SeqCst),
        100,
        "all ran before process returned"
    );
    let n = topic
        .consumer("pooled-stop")
        .expect("consumer")
        .process_with_pool(|_| ControlFlow::Break(()), T, NumEvents::infinity(), &pool)
        .expect("process");
    assert!((1..=100).contains(&n), "{n}");
    let e = topic
        .consumer("pooled-panic")
        .expect("consumer")
        .process_with_pool(|_| panic!("processor bug"), T, NumEvents::infinity(), &pool)
        .expect_err("panicked");
    assert!(matches!(e, Error::Panicked { .. }), "{e:?}");
}

/// A preallocated array the allocator carves slices of (application memory).
struct Arena {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the arena is plain heap memory; slices handed out are disjoint.
unsafe impl Send for Arena {}
// SAFETY: as above; the test reads it only after the consumer wrote it.
unsafe impl Sync for Arena {}
impl Arena {
    fn new(len: usize) -> Arc<Self> {
        let b = vec![0xEEu8; len].into_boxed_slice();
        Arc::new(Arena {
            len: b.len(),
            ptr: Box::into_raw(b).cast(),
        })
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes allocated in `new`, freed only in drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` come from `Box::into_raw` of a boxed slice of that length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

const EVENT: usize = 64;

fn pattern(i: usize) -> Vec<u8> {
    (0..EVENT).map(|j| (i * 7 + j) as u8).collect()
}

/// Each event's selection (bytes 8..56) goes into slot `i` of the arena, in two buffers.
fn arena_allocator(arena: Arc<Arena>) -> BufferAllocator {
    Arc::new(move |m: &Metadata, d: &DataDescriptor| {
        let i = m.json()?["i"].as_u64().unwrap_or(0) as usize;
        let size = d.size() as usize;
        let base = i * size;
        assert!(base + size <= arena.len);
        let half = size / 2;
        // SAFETY: slot `i` lies in the arena, is handed out once, and the `Arc` owner keeps
        // the arena alive for as long as the event's bytes.
        let parts = unsafe {
            [
                ExternalBuffer::from_raw_parts(arena.ptr.add(base), half, arena.clone()),
                ExternalBuffer::from_raw_parts(
                    arena.ptr.add(base + half),
                    size - half,
                    arena.clone(),
                ),
            ]
        };
        Ok(parts.into_iter().map(DataBuffer::External).collect())
    })
}

fn selector() -> diaspora_api::DataSelector {
    Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.sub_view(8, 48).unwrap_or_else(|_| DataDescriptor::null())
    })
}

#[test]
fn buffer_allocator_fills_application_memory_without_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic("t", json!({"num_partitions": 2}))
        .expect("create");
    let topic = d.open_topic("t").expect("open");
    let events: Vec<_> = (0..20).map(|i| (json!({"i": i}), pattern(i))).collect();
    produce(&topic, &events);
    let arena = Arena::new(20 * 48);
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(selector()),
                buffer_allocator: Some(arena_allocator(arena.clone())),
                ..Default::default()
            },
        )
        .expect("consumer");
    let mut kept = Vec::new();
    for e in c.events(200) {
        let e = e.expect("event");
        let i = e.metadata().json().expect("json")["i"].as_u64().expect("i") as usize;
        let segs = e.data().segments();
        assert_eq!(segs.len(), 2, "one segment per buffer");
        // SAFETY: pointer arithmetic within the arena allocation.
        let slot = unsafe { arena.ptr.add(i * 48) } as usize;
        assert_eq!(
            segs[0].as_ptr() as usize,
            slot,
            "read straight into the arena"
        );
        assert_eq!(e.data().to_vec(), pattern(i)[8..56]);
        assert_eq!(&arena.bytes()[i * 48..(i + 1) * 48], &pattern(i)[8..56]);
        kept.push(e);
    }
    assert_eq!(kept.len(), 20);
    // A Vec the application owns, as one buffer; and the whole data (checksummed).
    let c = topic
        .consumer_with(
            "vec",
            ConsumerOptions {
                data_selector: Some(select_all()),
                buffer_allocator: Some(Arc::new(|_: &Metadata, d: &DataDescriptor| {
                    Ok(vec![DataBuffer::from(vec![0u8; d.size() as usize])])
                })),
                ..Default::default()
            },
        )
        .expect("consumer");
    for e in c.events(200) {
        let e = e.expect("event");
        let i = e.metadata().json().expect("json")["i"].as_u64().expect("i") as usize;
        assert_eq!(e.data().to_vec(), pattern(i));
    }
}

#[test]
fn bad_buffer_allocators_fail_their_event_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({}));
    d.create_topic("t", json!({})).expect("create");
    let topic = d.open_topic("t").expect("open");
    let events: Vec<_> = (0..3).map(|i| (json!({"i": i}), pattern(i))).collect();
    produce(&topic, &events);
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(select_all()),
                buffer_allocator: Some(Arc::new(|m: &Metadata, d: &DataDescriptor| {
                    match m.json()?["i"].as_u64() {
                        Some(0) => Ok(vec![DataBuffer::from(vec![0u8; 3])]),
                        Some(1) => Err(Error::Unsupported("no memory for event 1")),
                        _ => Ok(vec![DataBuffer::from(vec![0u8; d.size() as usize])]),
                    }
                })),
                ..Default::default()
            },
        )
        .expect("consumer");
    let e = c.pull().wait(T).expect_err("wrong size");
    assert!(
        matches!(
            e.root(),
            Error::AllocatorSize {
                expected: 64,
                got: 3
            }
        ),
        "{e:?}"
    );
    let e = c.pull().wait(T).expect_err("allocator error");
    assert!(matches!(e, Error::EventFailed { id: 1, .. }), "{e:?}");
    let ok = c.pull().wait(T).expect("pull").expect("event 2");
    assert_eq!(ok.data().to_vec(), pattern(2));
    let both = topic.consumer_with(
        "both",
        ConsumerOptions {
            data_allocator: Some(diaspora_api::default_allocator()),
            buffer_allocator: Some(arena_allocator(Arena::new(64))),
            ..Default::default()
        },
    );
    assert!(
        both.is_err(),
        "data_allocator and buffer_allocator together"
    );
}

/// The files driver seen through the trait defaults a driver without buffer-allocator
/// support gets: the API copies into the buffers.
struct NoNative(Arc<dyn TopicBackend>);
impl TopicBackend for NoNative {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn options(&self) -> Value {
        self.0.options()
    }
    fn partitions(&self) -> Result<Vec<PartitionInfo>> {
        self.0.partitions()
    }
    fn policies(&self) -> &TopicPolicies {
        self.0.policies()
    }
    fn producer(&self, name: &str, o: ProducerOptions) -> Result<Arc<dyn ProducerBackend>> {
        self.0.producer(name, o)
    }
    fn consumer(&self, name: &str, o: ConsumerOptions) -> Result<Arc<dyn ConsumerBackend>> {
        assert!(o.buffer_allocator.is_none(), "the API kept the allocator");
        self.0.consumer(name, o)
    }
    fn mark_as_complete(&self) -> Result<()> {
        self.0.mark_as_complete()
    }
    fn is_complete(&self) -> Result<bool> {
        self.0.is_complete()
    }
}
struct NoNativeDriver(FilesDriver);
impl DriverBackend for NoNativeDriver {
    fn create_topic(&self, name: &str, options: &Value) -> Result<()> {
        self.0.create_topic(name, options)
    }
    fn open_topic(&self, name: &str) -> Result<Arc<dyn TopicBackend>> {
        Ok(Arc::new(NoNative(self.0.open_topic(name)?)))
    }
    fn topic_exists(&self, name: &str) -> Result<bool> {
        self.0.topic_exists(name)
    }
    fn list_topics(&self) -> Result<Vec<String>> {
        self.0.list_topics()
    }
}

#[test]
fn drivers_without_native_buffer_allocators_get_a_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FilesDriver::new(
        FilesDriverOptions::from_json(&json!({"root_path": dir.path()})).expect("opts"),
    )
    .expect("files");
    let d = Driver::from_backend("nonative", Arc::new(NoNativeDriver(files)));
    d.create_topic("t", json!({})).expect("create");
    let topic = d.open_topic("t").expect("open");
    let events: Vec<_> = (0..5).map(|i| (json!({"i": i}), pattern(i))).collect();
    produce(&topic, &events);
    // The trait defaults: default pool inline, topic list opened one by one.
    assert_eq!(d.default_thread_pool().size(), 0);
    assert_eq!(
        d.list_topics_metadata().expect("list")["t"]["num_partitions"],
        1
    );
    let arena = Arena::new(5 * 48);
    let c = topic
        .consumer_with(
            "c",
            ConsumerOptions {
                data_selector: Some(selector()),
                buffer_allocator: Some(arena_allocator(arena.clone())),
                ..Default::default()
            },
        )
        .expect("consumer");
    let got: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    for e in c.events(200) {
        let e = e.expect("event");
        let i = e.metadata().json().expect("json")["i"].as_u64().expect("i") as usize;
        assert_eq!(e.data().segments().len(), 2);
        assert_eq!(&arena.bytes()[i * 48..(i + 1) * 48], &pattern(i)[8..56]);
        got.lock().expect("lock").push(i);
    }
    assert_eq!(got.lock().expect("lock").len(), 5);
}

#[test]
fn push_future_waited_at_once_on_an_inline_pool_completes() {
    // Adaptive batches on an inline pool are sealed at 4,096 events: before send-on-wait,
    // waiting on the first push blocked until then.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = driver(dir.path(), json!({"thread_count": 0}));
    d.create_topic("t", json!({})).expect("create");
    let p = d
        .open_topic("t")
        .expect("open")
        .producer()
        .expect("producer");
    for i in 0..3u64 {
        let mut f = p.push(json!({"i": i}), ());
        assert_eq!(f.wait(T).expect("stored"), Some(i));
    }
    p.flush().get().expect("flush");
}
