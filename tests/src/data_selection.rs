//! Data selection: consumers choose per event which bytes to fetch (none by default), and where
//! they land (custom allocator).

use std::sync::{Arc, Mutex};

use diaspora_api::{
    json, Bytes, BytesMut, ConsumerOptions, DataAllocator, DataDescriptor, DataSelector, DataView,
    Metadata, TopicHandle,
};

use crate::util::{
    assert_nothing_more, create_topic, data_consumer, flush, meta_u64, pattern, pull_n,
};
use crate::DriverFixture;

const EVENTS: u64 = 8;
const SIZE: usize = 1000;

/// A 1-partition topic with [`EVENTS`] events of [`SIZE`] bytes (`pattern(i, SIZE)`),
/// metadata `{"i": i, "want": i is even}`.
fn setup(f: &dyn DriverFixture) -> (diaspora_api::Driver, TopicHandle) {
    let driver = f.driver();
    let topic = create_topic(&driver, "data", 1);
    let producer = topic.producer().expect("producer");
    for i in 0..EVENTS {
        drop(producer.push(json!({"i": i, "want": i % 2 == 0}), pattern(i, SIZE)));
    }
    flush(&producer);
    (driver, topic)
}

/// Consumes the [`EVENTS`] events with `selector` and checks each event's data is
/// `expect(i, full_data)`.
fn check_selection(
    f: &dyn DriverFixture,
    name: &str,
    selector: DataSelector,
    expect: impl Fn(u64, &[u8]) -> Vec<u8>,
) {
    let (_driver, topic) = setup(f);
    let seen_sizes = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_sizes.clone();
    let recording: DataSelector = Arc::new(move |m: &Metadata, d: &DataDescriptor| {
        seen.lock()
            .expect("selector lock")
            .push((d.size(), d.total_size()));
        selector(m, d)
    });
    let consumer = topic
        .consumer_with(
            name,
            ConsumerOptions {
                data_selector: Some(recording),
                ..Default::default()
            },
        )
        .expect("consumer with selector");
    for (i, e) in (0..EVENTS).zip(pull_n(&consumer, EVENTS as usize)) {
        assert_eq!(e.id(), i);
        assert_eq!(meta_u64(&e, "i"), i, "metadata is always delivered");
        let want = expect(i, &pattern(i, SIZE));
        assert_eq!(
            e.data().len(),
            want.len() as u64,
            "{name}: data size of event {i}"
        );
        assert!(e.data().to_vec() == want, "{name}: data bytes of event {i}");
    }
    assert_nothing_more(&consumer, name);
    let sizes = seen_sizes.lock().expect("lock").clone();
    assert!(
        sizes.len() >= EVENTS as usize,
        "{name}: selector called {} times for {EVENTS} events",
        sizes.len()
    );
    for (size, total) in sizes {
        assert_eq!(
            (size, total),
            (SIZE as u64, SIZE as u64),
            "{name}: the selector must get a descriptor of the whole data"
        );
    }
}

/// Without a selector, consumers get metadata only.
pub fn default_consumer_gets_metadata_only(f: &dyn DriverFixture) {
    let (_driver, topic) = setup(f);
    let consumer = topic.consumer("meta_only").expect("consumer");
    for (i, e) in (0..EVENTS).zip(pull_n(&consumer, EVENTS as usize)) {
        assert_eq!(
            e.metadata().json().expect("JSON"),
            &json!({"i": i, "want": i % 2 == 0})
        );
        assert!(e.data().is_empty(), "default consumer must not fetch data");
    }
}

/// `select_all` fetches every byte.
pub fn select_all_returns_everything(f: &dyn DriverFixture) {
    check_selection(f, "all", diaspora_api::select_all(), |_, d| d.to_vec());
}

/// `sub_view(100, 50)` fetches bytes 100..150.
pub fn sub_view_selection(f: &dyn DriverFixture) {
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.sub_view(100, 50)
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    check_selection(f, "sub_view", sel, |_, d| d[100..150].to_vec());
}

/// `strided_view(10, 5, 8, 12)` fetches 5 blocks of 8 bytes at 10, 30, 50, 70, 90.
pub fn strided_view_selection(f: &dyn DriverFixture) {
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.strided_view(10, 5, 8, 12)
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    check_selection(f, "strided_view", sel, |_, d| {
        (0..5)
            .flat_map(|b| d[10 + 20 * b..18 + 20 * b].to_vec())
            .collect()
    });
}

/// `unstructured_view` fetches ranges in the given (non-sorted) order.
pub fn unstructured_view_selection(f: &dyn DriverFixture) {
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.unstructured_view(&[(500, 10), (0, 5), (990, 10), (3, 4)])
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    check_selection(f, "unstructured_view", sel, |_, d| {
        [&d[500..510], &d[0..5], &d[990..1000], &d[3..7]].concat()
    });
}

/// A sub-view of a strided view selects within the strided bytes.
pub fn composed_view_selection(f: &dyn DriverFixture) {
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.strided_view(0, 10, 4, 96)
            .and_then(|s| s.sub_view(2, 30))
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    check_selection(f, "strided_sub_view", sel, |_, d| {
        let strided: Vec<u8> = (0..10)
            .flat_map(|b| d[100 * b..100 * b + 4].to_vec())
            .collect();
        strided[2..32].to_vec()
    });
}

/// A selector returning `DataDescriptor::null()` fetches nothing; selectors see the metadata
/// and can decide per event.
pub fn null_selection_and_metadata_driven_selector(f: &dyn DriverFixture) {
    let none: DataSelector = Arc::new(|_: &Metadata, _: &DataDescriptor| DataDescriptor::null());
    check_selection(f, "null", none, |_, _| Vec::new());
    let by_meta: DataSelector = Arc::new(|m: &Metadata, d: &DataDescriptor| {
        let want = m
            .json()
            .ok()
            .and_then(|v| v.get("want").and_then(|w| w.as_bool()))
            .unwrap_or(false);
        if want {
            d.clone()
        } else {
            DataDescriptor::null()
        }
    });
    // The topic was created and filled by `check_selection` above.
    let driver = f.driver();
    let topic = crate::util::open_topic(&driver, "data");
    let consumer = topic
        .consumer_with(
            "by_meta",
            ConsumerOptions {
                data_selector: Some(by_meta),
                ..Default::default()
            },
        )
        .expect("consumer");
    for (i, e) in (0..EVENTS).zip(pull_n(&consumer, EVENTS as usize)) {
        let want = if i % 2 == 0 {
            pattern(i, SIZE)
        } else {
            Vec::new()
        };
        assert!(
            e.data().to_vec() == want,
            "metadata-driven selection, event {i}"
        );
    }
}

/// A custom allocator provides the buffer the data lands in.
pub fn custom_allocator_receives_data(f: &dyn DriverFixture) {
    let (_driver, topic) = setup(f);
    let buffers: Arc<Mutex<Vec<(usize, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let recorded = buffers.clone();
    let allocator: DataAllocator = Arc::new(move |_: &Metadata, d: &DataDescriptor| {
        // Pre-filled with a marker so unwritten bytes are detected.
        let buf = BytesMut::from(vec![0xEEu8; d.size() as usize].as_slice());
        recorded
            .lock()
            .expect("allocator lock")
            .push((buf.as_ptr() as usize, buf.len()));
        buf
    });
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.sub_view(200, 64)
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    let consumer = topic
        .consumer_with(
            "alloc",
            ConsumerOptions {
                data_selector: Some(sel),
                data_allocator: Some(allocator),
                ..Default::default()
            },
        )
        .expect("consumer with allocator");
    let events = pull_n(&consumer, EVENTS as usize);
    let buffers = buffers.lock().expect("lock").clone();
    assert!(
        buffers.len() >= EVENTS as usize,
        "allocator called {} times for {EVENTS} events",
        buffers.len()
    );
    for (i, e) in (0..EVENTS).zip(events) {
        assert!(
            e.data().to_vec() == pattern(i, SIZE)[200..264],
            "event {i}: selected bytes"
        );
        let segs = e.data().segments();
        assert_eq!(
            segs.len(),
            1,
            "event {i}: data should be the allocator's one buffer"
        );
        let ptr = segs[0].as_ptr() as usize;
        assert!(
            buffers.iter().any(|&(p, len)| p == ptr && len == 64),
            "event {i}: data is not in a buffer provided by the allocator"
        );
    }
}

/// Data pushed as several segments is stored and read back concatenated.
pub fn multi_segment_push_reads_back_concatenated(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "segments", 1);
    let producer = topic.producer().expect("producer");
    let body = pattern(99, 300);
    let view = DataView::from_segments([
        Bytes::from_static(b"head-"),
        Bytes::new(),
        Bytes::from(body.clone()),
        Bytes::from_static(b"-tail"),
    ]);
    let whole = [b"head-".as_slice(), &body, b"-tail"].concat();
    for i in 0..3u64 {
        drop(producer.push(json!({"i": i}), view.clone()));
    }
    flush(&producer);
    let all = data_consumer(&topic, "all");
    for e in pull_n(&all, 3) {
        assert!(
            e.data().to_vec() == whole,
            "event {}: concatenated data",
            e.id()
        );
    }
    // A range spanning the segment boundaries.
    let sel: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        d.sub_view(2, 306)
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    let across = topic
        .consumer_with(
            "across",
            ConsumerOptions {
                data_selector: Some(sel),
                ..Default::default()
            },
        )
        .expect("consumer");
    for e in pull_n(&across, 3) {
        assert!(
            e.data().to_vec() == whole[2..308],
            "event {}: range across segments",
            e.id()
        );
    }
}

/// Events without data come back empty even with `select_all`.
pub fn empty_data_with_select_all(f: &dyn DriverFixture) {
    let driver = f.driver();
    let topic = create_topic(&driver, "empty", 1);
    let producer = topic.producer().expect("producer");
    drop(producer.push(json!({"i": 0}), ()));
    drop(producer.push(json!({"i": 1}), vec![7u8; 3]));
    drop(producer.push(json!({"i": 2}), Vec::<u8>::new()));
    flush(&producer);
    let consumer = data_consumer(&topic, "all");
    let got: Vec<Vec<u8>> = pull_n(&consumer, 3)
        .iter()
        .map(|e| e.data().to_vec())
        .collect();
    assert_eq!(got, vec![Vec::new(), vec![7u8; 3], Vec::new()]);
}

/// An 8 MiB event between small ones round-trips intact, fully and by sub-view.
pub fn large_event_round_trip(f: &dyn DriverFixture) {
    const BIG: usize = 8 << 20;
    let driver = f.driver();
    let topic = create_topic(&driver, "large", 1);
    let producer = topic.producer().expect("producer");
    let big = pattern(12345, BIG);
    drop(producer.push(json!({"i": 0}), vec![1u8; 10]));
    drop(producer.push(json!({"i": 1}), big.clone()));
    drop(producer.push(json!({"i": 2}), vec![2u8; 10]));
    flush(&producer);
    let consumer = data_consumer(&topic, "all");
    let events = pull_n(&consumer, 3);
    assert!(
        events[0].data().to_vec() == vec![1u8; 10],
        "small event before"
    );
    assert_eq!(events[1].data().len(), BIG as u64, "large event size");
    assert!(events[1].data().to_vec() == big, "large event bytes");
    assert!(
        events[2].data().to_vec() == vec![2u8; 10],
        "small event after"
    );

    let tail: DataSelector = Arc::new(|_: &Metadata, d: &DataDescriptor| {
        let n = d.size().min(4096);
        d.sub_view(d.size() - n, n)
            .unwrap_or_else(|_| DataDescriptor::null())
    });
    let tails = topic
        .consumer_with(
            "tail",
            ConsumerOptions {
                data_selector: Some(tail),
                ..Default::default()
            },
        )
        .expect("consumer");
    let events = pull_n(&tails, 3);
    assert!(
        events[1].data().to_vec() == big[BIG - 4096..],
        "last 4 KiB of the large event"
    );
}

/// Multi-segment selections (strided on even events, unstructured and unordered on odd ones)
/// read into a custom allocator's buffer put every byte at its place in that buffer.
pub fn custom_allocator_receives_multi_segment_selections(f: &dyn DriverFixture) {
    let (_driver, topic) = setup(f);
    let buffers: Arc<Mutex<Vec<(usize, usize)>>> = Arc::new(Mutex::new(Vec::new()));
    let recorded = buffers.clone();
    let allocator: DataAllocator = Arc::new(move |_: &Metadata, d: &DataDescriptor| {
        // Pre-filled with a marker so unwritten or misplaced bytes are detected.
        let buf = BytesMut::from(vec![0xEEu8; d.size() as usize].as_slice());
        recorded
            .lock()
            .expect("allocator lock")
            .push((buf.as_ptr() as usize, buf.len()));
        buf
    });
    const RANGES: [(u64, u64); 4] = [(900, 50), (10, 20), (500, 1), (31, 7)];
    let sel: DataSelector = Arc::new(|m: &Metadata, d: &DataDescriptor| {
        let even = m.json().ok().and_then(|v| v["i"].as_u64()).unwrap_or(1) & 1 == 0;
        let view = if even {
            d.strided_view(3, 5, 7, 11)
        } else {
            d.unstructured_view(&RANGES)
        };
        view.unwrap_or_else(|_| DataDescriptor::null())
    });
    let consumer = topic
        .consumer_with(
            "alloc-multi",
            ConsumerOptions {
                data_selector: Some(sel),
                data_allocator: Some(allocator),
                ..Default::default()
            },
        )
        .expect("consumer with allocator");
    let events = pull_n(&consumer, EVENTS as usize);
    let buffers = buffers.lock().expect("lock").clone();
    for (i, e) in (0..EVENTS).zip(events) {
        let full = pattern(i, SIZE);
        let expected: Vec<u8> = if i % 2 == 0 {
            (0..5)
                .flat_map(|b| full[3 + 18 * b..10 + 18 * b].to_vec())
                .collect()
        } else {
            RANGES
                .iter()
                .flat_map(|&(o, l)| full[o as usize..(o + l) as usize].to_vec())
                .collect()
        };
        assert!(
            e.data().to_vec() == expected,
            "event {i}: selected bytes at the wrong offsets"
        );
        let segs = e.data().segments();
        assert_eq!(segs.len(), 1, "event {i}: one allocator buffer");
        let ptr = segs[0].as_ptr() as usize;
        assert!(
            buffers
                .iter()
                .any(|&(p, len)| p == ptr && len == expected.len()),
            "event {i}: data is not in a buffer provided by the allocator"
        );
    }
}
